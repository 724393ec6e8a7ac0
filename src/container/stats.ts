/**
 * Container and pod stats (ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats) and
 * the cAdvisor-style metrics kubelet reads over the CRI (ListMetricDescriptors, ListPodSandboxMetrics).
 *
 * Sources, sampled when asked (no background loop: kubelet already polls every ~10 s):
 * - CPU, memory, pids, PSI: the cgroup runc created from the spec's `linux.cgroupsPath` (src/oci/cgroups.ts).
 *   Only a container that has not exited is read: an exited container keeps its attributes and writable
 *   layer but has no cpu/memory, as containerd reports it (internal/cri/server/container_stats_list.go:
 *   no task metrics → only attributes and writable layer).
 * - usage_nano_cores: the CPU counter's rate since the previous sample of the same cgroup, containerd's
 *   getUsageNanoCores (absent on the first sample), see `CpuRates`.
 * - Writable layer: `du` of `<root>/containers/<id>/upper`, cached briefly (containerd refreshes snapshot
 *   usage every 10 s as well); fsId.mountpoint is skiff's root, the filesystem holding the layer.
 * - Pod: the sandbox's cgroup_parent cgroup (kubelet's pod cgroup) when set and present, else the sum of
 *   its containers; process count from the pod cgroup's pids.current (CRI-O), else the sum (containerd).
 * - Pod network: `/proc/<pid>/net/dev` of a process in the pod's netns (see `podNetwork` for why not
 *   nsenter first); host-network pods report none, as containerd's with an empty netns path.
 */
import { stat, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { SkiffError, messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';
import { type CgroupDriver, type CgroupStats, type Psi, readCgroupStats } from '../oci/cgroups.js';
import type { SandboxRecord } from '../sandbox/record.js';
import type { SandboxService } from '../sandbox/service.js';
import { diskUsage } from '../snapshot/usage.js';
import { run, stderrTail } from '../util/exec.js';
import type { ContainerRecord } from './record.js';
import type { ContainerService } from './service.js';

// ------------------------------------------------------------------------------------------- domain types

export interface CpuStats {
  /** Unix ns. */
  timestamp: bigint;
  usageCoreNanoSeconds: bigint;
  /** Rate since the previous sample; undefined on the first one. */
  usageNanoCores: bigint | undefined;
  psi?: Psi;
}

export interface MemoryStats {
  timestamp: bigint;
  usageBytes: bigint;
  workingSetBytes: bigint;
  /** limit − working set when limited (kubelet pkg/kubelet/stats/helper.go), else undefined. */
  availableBytes: bigint | undefined;
  rssBytes: bigint;
  pageFaults: bigint;
  majorPageFaults: bigint;
  psi?: Psi;
}

export interface IoStats {
  timestamp: bigint;
  psi: Psi;
}

export interface FsUsage {
  timestamp: bigint;
  mountpoint: string;
  usedBytes: bigint;
  inodesUsed: bigint;
}

export interface ContainerStatsSample {
  container: ContainerRecord;
  timestamp: bigint;
  cpu?: CpuStats;
  memory?: MemoryStats;
  io?: IoStats;
  /** pids.current of the container's cgroup. */
  processes?: bigint;
  writableLayer: FsUsage;
}

export interface InterfaceStats {
  name: string;
  rxBytes: bigint;
  rxErrors: bigint;
  txBytes: bigint;
  txErrors: bigint;
}

export interface NetworkStats {
  timestamp: bigint;
  /** eth0, else the first interface (containerd). */
  defaultInterface: InterfaceStats | undefined;
  /** Every interface but loopback. */
  interfaces: InterfaceStats[];
}

export interface PodStatsSample {
  sandbox: SandboxRecord;
  timestamp: bigint;
  cpu?: CpuStats;
  memory?: MemoryStats;
  io?: IoStats;
  process: { timestamp: bigint; count: bigint };
  network?: NetworkStats;
  containers: ContainerStatsSample[];
}

export interface StatsContainerFilter {
  id?: string;
  sandboxId?: string;
  labels?: Record<string, string>;
}

export interface StatsPodFilter {
  id?: string;
  labels?: Record<string, string>;
}

export type MetricKind = 'counter' | 'gauge';

export interface MetricDescriptor {
  name: string;
  help: string;
  labelKeys: string[];
}

export interface MetricSample {
  name: string;
  /** Unix ns. */
  timestamp: bigint;
  kind: MetricKind;
  /** One value per label key of the metric's descriptor, in order. */
  labelValues: string[];
  value: bigint;
}

export interface PodMetrics {
  podSandboxId: string;
  metrics: MetricSample[];
  containerMetrics: { containerId: string; metrics: MetricSample[] }[];
}

// ------------------------------------------------------------------------------------------- cpu rate

export interface CpuSample {
  /** Cumulative CPU time, ns. */
  usageNs: bigint;
  /** When it was read, ns on a monotonic clock. */
  atNs: bigint;
}

/**
 * containerd's getUsageNanoCores: (Δusage / Δt) × 1e9 — CPU-nanoseconds per second, i.e. nano-cores.
 * undefined when the interval is not positive or the counter went backwards (a new cgroup under the key).
 */
export function usageNanoCores(prev: CpuSample, cur: CpuSample): bigint | undefined {
  const dt = cur.atNs - prev.atNs;
  if (dt <= 0n || cur.usageNs < prev.usageNs) return undefined;
  return ((cur.usageNs - prev.usageNs) * 1_000_000_000n) / dt;
}

/**
 * The previous CPU sample per key (a container's or a pod's cgroup) and the rate it gave.
 *
 * Two refinements over containerd: a sample closer than `minIntervalNs` to the previous one returns the
 * previous rate and keeps the older baseline, so two pollers (kubelet's summary and metrics endpoints, or a
 * `crictl stats` beside them) do not turn each other's rates into noise over a few milliseconds; and a
 * counter that went backwards resets the baseline (containerd keeps the old one, so a pod whose summed
 * usage dropped with a removed container would report nothing until it climbed back).
 */
export class CpuRates {
  private readonly last = new Map<string, { sample: CpuSample; rate: bigint | undefined }>();
  private lastPruneNs = 0n;

  constructor(
    private readonly minIntervalNs = 1_000_000_000n,
    /** Keys unseen this long are dropped (removed containers). */
    private readonly maxAgeNs = 600_000_000_000n,
  ) {}

  observe(key: string, cur: CpuSample): bigint | undefined {
    const prev = this.last.get(key);
    if (
      prev &&
      cur.atNs >= prev.sample.atNs &&
      cur.atNs - prev.sample.atNs < this.minIntervalNs &&
      cur.usageNs >= prev.sample.usageNs
    ) {
      return prev.rate;
    }
    const rate = prev ? usageNanoCores(prev.sample, cur) : undefined;
    this.last.set(key, { sample: cur, rate });
    this.prune(cur.atNs);
    return rate;
  }

  get size(): number {
    return this.last.size;
  }

  private prune(nowNs: bigint): void {
    if (nowNs - this.lastPruneNs < this.maxAgeNs / 10n) return;
    this.lastPruneNs = nowNs;
    for (const [key, v] of this.last) if (nowNs - v.sample.atNs > this.maxAgeNs) this.last.delete(key);
  }
}

// ------------------------------------------------------------------------------------------- /proc/net/dev

/**
 * /proc/net/dev (proc(5)): two header lines, then `name: rx_bytes rx_packets rx_errs rx_drop rx_fifo
 * rx_frame rx_compressed rx_multicast tx_bytes tx_packets tx_errs …`. Loopback is left out, as containerd
 * and cAdvisor leave it out of pod network stats.
 */
export function parseNetDev(text: string): InterfaceStats[] {
  const out: InterfaceStats[] = [];
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    const f = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/);
    if (!name || name === 'lo' || f.length < 16 || !f.every((x) => /^\d+$/.test(x))) continue;
    const n = (i: number) => BigInt(f[i] ?? '0');
    out.push({ name, rxBytes: n(0), rxErrors: n(2), txBytes: n(8), txErrors: n(10) });
  }
  return out;
}

// ------------------------------------------------------------------------------------------- metrics

/** CRI-O's base label keys (internal/lib/stats/metrics.go): pods use id, "POD", "". */
const BASE_LABELS = ['id', 'name', 'image'];

/**
 * The metrics skiff produces, named and described as CRI-O's (internal/lib/stats/descriptors.go), which
 * took them from cAdvisor. Kubelet builds a Prometheus descriptor from each and pairs every metric's label
 * values with these keys by position, so the two must match exactly (CRI-O appends a group name to the
 * values beyond the keys; skiff does not).
 */
const DESCRIPTORS: readonly MetricDescriptor[] = [
  {
    name: 'container_cpu_usage_seconds_total',
    help: 'Cumulative CPU time consumed in seconds.',
    labelKeys: [...BASE_LABELS, 'cpu'],
  },
  {
    name: 'container_memory_usage_bytes',
    help: 'Current memory usage in bytes, including all memory regardless of when it was accessed',
    labelKeys: BASE_LABELS,
  },
  {
    name: 'container_memory_working_set_bytes',
    help: 'Current working set in bytes.',
    labelKeys: BASE_LABELS,
  },
  { name: 'container_memory_rss', help: 'Size of RSS in bytes.', labelKeys: BASE_LABELS },
  {
    name: 'container_processes',
    help: 'Number of processes running inside the container.',
    labelKeys: BASE_LABELS,
  },
  {
    name: 'container_fs_usage_bytes',
    help: 'Current filesystem usage in bytes.',
    labelKeys: BASE_LABELS,
  },
  {
    name: 'container_network_receive_bytes_total',
    help: 'Cumulative count of bytes received',
    labelKeys: [...BASE_LABELS, 'interface'],
  },
  {
    name: 'container_network_receive_errors_total',
    help: 'Cumulative count of errors encountered while receiving',
    labelKeys: [...BASE_LABELS, 'interface'],
  },
  {
    name: 'container_network_transmit_bytes_total',
    help: 'Cumulative count of bytes transmitted',
    labelKeys: [...BASE_LABELS, 'interface'],
  },
  {
    name: 'container_network_transmit_errors_total',
    help: 'Cumulative count of errors encountered while transmitting',
    labelKeys: [...BASE_LABELS, 'interface'],
  },
  {
    name: 'container_last_seen',
    help: 'Last time a container was seen by the exporter',
    labelKeys: BASE_LABELS,
  },
];

/** The metrics of one sampled pod: network at pod level (CRI-O), the rest per live container. */
export function podMetricsOf(p: PodStatsSample): PodMetrics {
  const podLabels = [p.sandbox.metadata.id, 'POD', ''];
  const metrics: MetricSample[] = [];
  const t = p.network?.timestamp ?? p.timestamp;
  for (const i of p.network?.interfaces ?? []) {
    const labels = [...podLabels, i.name];
    metrics.push(
      metric('container_network_receive_bytes_total', t, 'counter', labels, i.rxBytes),
      metric('container_network_receive_errors_total', t, 'counter', labels, i.rxErrors),
      metric('container_network_transmit_bytes_total', t, 'counter', labels, i.txBytes),
      metric('container_network_transmit_errors_total', t, 'counter', labels, i.txErrors),
    );
  }
  const containerMetrics = [];
  for (const c of p.containers) {
    // Like CRI-O, only containers with a live cgroup: an exited one has nothing current to report.
    if (!c.cpu || !c.memory) continue;
    const m = c.container.metadata;
    const labels = [m.id, m.config.name, m.imageName];
    const ms = [
      // The CRI carries integers, so whole seconds (CRI-O divides the same way); "total" as cAdvisor
      // labels the all-CPU series.
      metric(
        'container_cpu_usage_seconds_total',
        c.cpu.timestamp,
        'counter',
        [...labels, 'total'],
        c.cpu.usageCoreNanoSeconds / 1_000_000_000n,
      ),
      metric('container_memory_usage_bytes', c.memory.timestamp, 'gauge', labels, c.memory.usageBytes),
      metric(
        'container_memory_working_set_bytes',
        c.memory.timestamp,
        'gauge',
        labels,
        c.memory.workingSetBytes,
      ),
      metric('container_memory_rss', c.memory.timestamp, 'gauge', labels, c.memory.rssBytes),
      metric(
        'container_fs_usage_bytes',
        c.writableLayer.timestamp,
        'gauge',
        labels,
        c.writableLayer.usedBytes,
      ),
      // cAdvisor: the time of this scrape, in Unix seconds.
      metric('container_last_seen', c.timestamp, 'gauge', labels, c.timestamp / 1_000_000_000n),
    ];
    if (c.processes !== undefined) {
      ms.push(metric('container_processes', c.timestamp, 'gauge', labels, c.processes));
    }
    containerMetrics.push({ containerId: m.id, metrics: ms });
  }
  return { podSandboxId: p.sandbox.metadata.id, metrics, containerMetrics };
}

function metric(
  name: string,
  timestamp: bigint,
  kind: MetricKind,
  labelValues: string[],
  value: bigint,
): MetricSample {
  return { name, timestamp, kind, labelValues, value };
}

// ------------------------------------------------------------------------------------------- collector

export interface StatsCollectorOptions {
  containers: Pick<ContainerService, 'list' | 'status' | 'records'>;
  sandboxes: Pick<SandboxService, 'list' | 'status'>;
  cgroupDriver: CgroupDriver;
  cgroupV2: boolean;
  log?: Logger;
  /** Where cgroup hierarchies are mounted (tests: a fake tree). */
  cgroupRoot?: string;
  /** How long a writable layer's measured usage is reused; walking a big layer is not free. */
  fsUsageTtlMs?: number;
  /** Samples closer than this reuse the previous CPU rate (see `CpuRates`); default 1 s. */
  cpuRateMinIntervalMs?: number;
}

/** Samples in flight at once in a listing: enough to overlap I/O, few enough not to flood libuv. */
const PARALLEL = 8;
const DEFAULT_FS_TTL_MS = 10_000;
const NSENTER_TIMEOUT_MS = 5_000;

interface CgroupSample {
  stats: CgroupStats;
  timestamp: bigint;
  usageNanoCores: bigint | undefined;
}

export class StatsCollector {
  readonly rates: CpuRates;
  private readonly fsCache = new Map<string, { at: number; value: Promise<FsUsage> }>();
  /** The filesystem holding writable layers: skiff's root (records live in `<root>/containers`). */
  private readonly mountpoint: string;

  constructor(private readonly o: StatsCollectorOptions) {
    this.rates = new CpuRates(BigInt(o.cpuRateMinIntervalMs ?? 1000) * 1_000_000n);
    this.mountpoint = dirname(o.containers.records.dir);
  }

  // ------------------------------------------------------------------------------------------ containers

  /** ContainerStats: not-found for an unknown id (or prefix). */
  async containerStats(idOrPrefix: string): Promise<ContainerStatsSample> {
    return this.sampleContainer(this.o.containers.status(idOrPrefix));
  }

  async listContainerStats(filter: StatsContainerFilter = {}): Promise<ContainerStatsSample[]> {
    this.pruneFsCache();
    const records = this.o.containers.list({
      id: filter.id,
      sandboxId: filter.sandboxId,
      labels: filter.labels,
    });
    return mapLimit(records, PARALLEL, (r) => this.sampleContainer(r));
  }

  // ------------------------------------------------------------------------------------------ pods

  /**
   * PodSandboxStats: not-found for an unknown id; unavailable for a sandbox that is not ready (containerd
   * answers the same: its namespaces and cgroups may be gone).
   */
  async podSandboxStats(idOrPrefix: string): Promise<PodStatsSample> {
    const sb = this.o.sandboxes.status(idOrPrefix);
    if (sb.status.state !== 'ready') {
      throw new SkiffError(
        'unavailable',
        `pod sandbox stats of "${sb.metadata.id}": the sandbox is not ready (${sb.status.reason ?? 'stopped'})`,
      );
    }
    return this.samplePod(sb);
  }

  /** ListPodSandboxStats: ready sandboxes only (containerd skips the others). */
  async listPodSandboxStats(filter: StatsPodFilter = {}): Promise<PodStatsSample[]> {
    this.pruneFsCache();
    const pods = this.o.sandboxes.list({ id: filter.id, labels: filter.labels, state: 'ready' });
    return mapLimit(pods, 2, (sb) => this.samplePod(sb));
  }

  // ------------------------------------------------------------------------------------------ metrics

  listMetricDescriptors(): MetricDescriptor[] {
    return DESCRIPTORS.map((d) => ({ ...d, labelKeys: [...d.labelKeys] }));
  }

  async listPodSandboxMetrics(): Promise<PodMetrics[]> {
    return (await this.listPodSandboxStats()).map(podMetricsOf);
  }

  // ------------------------------------------------------------------------------------------ sampling

  private async sampleContainer(r: ContainerRecord): Promise<ContainerStatsSample> {
    const id = r.metadata.id;
    // An exited container's cgroup is deleted with its runtime container, or soon will be; what is left
    // (page cache charged to it) is not usage of anything running.
    const live = r.status.state !== 'exited' && r.metadata.cgroupsPath !== '';
    const [cg, writableLayer] = await Promise.all([
      live ? this.readCgroup(r.metadata.cgroupsPath, `container:${id}`, id) : undefined,
      this.writableLayer(id),
    ]);
    const timestamp = cg?.timestamp ?? nowNs();
    return { container: r, timestamp, ...fromCgroup(cg), writableLayer };
  }

  private async samplePod(sb: SandboxRecord): Promise<PodStatsSample> {
    const id = sb.metadata.id;
    const records = this.o.containers.list({ sandboxId: id }).filter((r) => r.metadata.sandboxId === id);
    const [containers, network] = await Promise.all([
      mapLimit(records, PARALLEL, (r) => this.sampleContainer(r)),
      this.podNetwork(sb, records),
    ]);
    const parent = sb.metadata.config.cgroupParent;
    const cg = parent ? await this.readCgroup(parent, `pod:${id}`, id) : undefined;
    const timestamp = cg?.timestamp ?? nowNs();
    const own = cg ? fromCgroup(cg) : this.sumContainers(id, containers, timestamp);
    const count = cg?.stats.pids?.current ?? containers.reduce((n, c) => n + (c.processes ?? 0n), 0n);
    return {
      sandbox: sb,
      timestamp,
      cpu: own.cpu,
      memory: own.memory,
      io: own.io,
      process: { timestamp, count },
      network,
      containers,
    };
  }

  /** A pod without its own cgroup: the sum of its live containers (no limit, no PSI to sum). */
  private sumContainers(
    podId: string,
    containers: ContainerStatsSample[],
    timestamp: bigint,
  ): Pick<ContainerStatsSample, 'cpu' | 'memory' | 'io'> {
    const live = containers.filter((c) => c.cpu && c.memory);
    if (live.length === 0) return {};
    const sum = (f: (c: ContainerStatsSample) => bigint) => live.reduce((n, c) => n + f(c), 0n);
    const usageCoreNanoSeconds = sum((c) => c.cpu?.usageCoreNanoSeconds ?? 0n);
    return {
      cpu: {
        timestamp,
        usageCoreNanoSeconds,
        usageNanoCores: this.rates.observe(`pod-sum:${podId}`, {
          usageNs: usageCoreNanoSeconds,
          atNs: process.hrtime.bigint(),
        }),
      },
      memory: {
        timestamp,
        usageBytes: sum((c) => c.memory?.usageBytes ?? 0n),
        workingSetBytes: sum((c) => c.memory?.workingSetBytes ?? 0n),
        availableBytes: undefined,
        rssBytes: sum((c) => c.memory?.rssBytes ?? 0n),
        pageFaults: sum((c) => c.memory?.pageFaults ?? 0n),
        majorPageFaults: sum((c) => c.memory?.majorPageFaults ?? 0n),
      },
    };
  }

  /** Reads a cgroup and its CPU rate; a malformed path or an unreadable file is logged, not thrown. */
  private async readCgroup(cgroupsPath: string, key: string, id: string): Promise<CgroupSample | undefined> {
    let stats;
    try {
      stats = await readCgroupStats(cgroupsPath, this.o.cgroupDriver, {
        v2: this.o.cgroupV2,
        root: this.o.cgroupRoot,
      });
    } catch (err) {
      this.o.log?.warn('reading cgroup stats failed', { id, cgroupsPath, error: messageOf(err) });
      return undefined;
    }
    if (!stats) return undefined;
    const usageNanoCores = this.rates.observe(key, {
      usageNs: stats.cpu.usageCoreNanoSeconds,
      atNs: process.hrtime.bigint(),
    });
    return { stats, timestamp: nowNs(), usageNanoCores };
  }

  // ------------------------------------------------------------------------------------------ disk

  /** The writable layer's usage; a failed walk reports zero (containerd: no snapshot usage → zero). */
  private writableLayer(id: string): Promise<FsUsage> {
    const ttl = this.o.fsUsageTtlMs ?? DEFAULT_FS_TTL_MS;
    const hit = this.fsCache.get(id);
    const now = Date.now();
    if (hit && now - hit.at < ttl) return hit.value;
    const value = diskUsage(join(this.o.containers.records.dirOf(id), 'upper')).then(
      (u) => ({
        timestamp: nowNs(),
        mountpoint: this.mountpoint,
        usedBytes: BigInt(u.bytes),
        inodesUsed: BigInt(u.inodes),
      }),
      (err: unknown) => {
        this.o.log?.warn('measuring writable layer failed', { containerId: id, error: messageOf(err) });
        this.fsCache.delete(id);
        return { timestamp: nowNs(), mountpoint: this.mountpoint, usedBytes: 0n, inodesUsed: 0n };
      },
    );
    this.fsCache.set(id, { at: now, value });
    return value;
  }

  private pruneFsCache(): void {
    for (const id of this.fsCache.keys()) {
      if (!this.o.containers.records.get(id)) this.fsCache.delete(id);
    }
  }

  // ------------------------------------------------------------------------------------------ network

  /**
   * The pod's interface counters. Cheapest first: `/proc/<pid>/net/dev` shows the netns of `<pid>`
   * (proc(5)), so for a pod with a live process (the infra process holding its PID namespace, or a running
   * container) it is one file read, against a fork and exec of nsenter and cat per pod per poll. The process
   * is checked to be in the pinned netns by comparing the nsfs inode (what `ip netns identify` compares)
   * before and after the read, which also rules out a reused PID. A pod with no live process (no shared
   * PID namespace and no container running) falls back to `nsenter --net=<pin> cat /proc/net/dev`.
   */
  private async podNetwork(
    sb: SandboxRecord,
    containers: ContainerRecord[],
  ): Promise<NetworkStats | undefined> {
    const pin = sb.status.namespaces.net;
    // No pinned netns: a host-network pod, whose interfaces are the node's, not the pod's.
    if (!pin) return undefined;
    try {
      const pids = [
        sb.status.infra?.pid ?? 0,
        ...containers
          .filter((r) => r.status.state === 'running' || r.status.state === 'created')
          .map((r) => r.status.pid),
      ].filter((p) => p > 0);
      const text = (await netDevViaProc(pin, pids)) ?? (await netDevViaNsenter(pin));
      const interfaces = parseNetDev(text);
      return {
        timestamp: nowNs(),
        defaultInterface: interfaces.find((i) => i.name === 'eth0') ?? interfaces[0],
        interfaces,
      };
    } catch (err) {
      this.o.log?.warn('reading pod network stats failed', {
        sandboxId: sb.metadata.id,
        netns: pin,
        error: messageOf(err),
      });
      return undefined;
    }
  }
}

async function netDevViaProc(pin: string, pids: number[]): Promise<string | undefined> {
  const ns = await stat(pin);
  const inPod = async (pid: number) => {
    const s = await stat(`/proc/${pid}/ns/net`);
    return s.ino === ns.ino && s.dev === ns.dev;
  };
  for (const pid of pids) {
    try {
      if (!(await inPod(pid))) continue;
      const text = await readFile(`/proc/${pid}/net/dev`, 'utf8');
      if (await inPod(pid)) return text;
    } catch {
      // The process exited meanwhile: try the next one.
    }
  }
  return undefined;
}

async function netDevViaNsenter(pin: string): Promise<string> {
  const res = await run('nsenter', [`--net=${pin}`, '--', 'cat', '/proc/net/dev'], {
    timeoutMs: NSENTER_TIMEOUT_MS,
  });
  if (res.code !== 0) {
    throw new SkiffError(
      'unknown',
      `nsenter --net=${pin} cat /proc/net/dev failed (${res.signal ?? String(res.code)}): ${stderrTail(res.stderr)}`,
    );
  }
  return res.stdout;
}

// ------------------------------------------------------------------------------------------- helpers

/** Domain cpu/memory/io/processes of a cgroup sample (nothing when there is none). */
function fromCgroup(
  cg: CgroupSample | undefined,
): Pick<ContainerStatsSample, 'cpu' | 'memory' | 'io' | 'processes'> {
  if (!cg) return {};
  const { stats, timestamp } = cg;
  const m = stats.memory;
  return {
    cpu: {
      timestamp,
      usageCoreNanoSeconds: stats.cpu.usageCoreNanoSeconds,
      usageNanoCores: cg.usageNanoCores,
      psi: stats.psi?.cpu,
    },
    memory: {
      timestamp,
      usageBytes: m.usageBytes,
      workingSetBytes: m.workingSetBytes,
      availableBytes:
        m.limitBytes === undefined
          ? undefined
          : m.limitBytes > m.workingSetBytes
            ? m.limitBytes - m.workingSetBytes
            : 0n,
      rssBytes: m.rssBytes,
      pageFaults: m.pageFaults,
      majorPageFaults: m.majorPageFaults,
      psi: stats.psi?.memory,
    },
    io: stats.psi?.io ? { timestamp, psi: stats.psi.io } : undefined,
    processes: stats.pids?.current,
  };
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}
