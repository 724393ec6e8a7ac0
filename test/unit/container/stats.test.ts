/**
 * StatsCollector over real record stores in a temp dir and a fake cgroup v1 tree (no root): live vs
 * exited containers, pod cgroup vs summed containers, the usage_nano_cores rate, writable layer usage,
 * and metrics whose label values line up with their descriptors. Also the pure pieces: the CPU rate and
 * /proc/net/dev parsing. Pod network through a real netns needs root and is covered by the e2e suite.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { ContainerRecords, type ContainerState } from '../../../src/container/record.js';
import type { ContainerFilter } from '../../../src/container/service.js';
import { CpuRates, StatsCollector, parseNetDev, usageNanoCores } from '../../../src/container/stats.js';
import { isSkiffError } from '../../../src/errdefs.js';
import { silentLogger } from '../../../src/log.js';
import type { ContainerConfig } from '../../../src/oci/spec/container-config.js';
import { type SandboxConfig, SandboxRecords } from '../../../src/sandbox/record.js';
import type { SandboxFilter } from '../../../src/sandbox/service.js';

const S = 1_000_000_000n;

describe('usageNanoCores (containerd getUsageNanoCores)', () => {
  it('is Δusage/Δt in nano-cores', () => {
    // 0.5 s of CPU over 2 s = a quarter core.
    expect(
      usageNanoCores({ usageNs: 10n * S, atNs: 100n * S }, { usageNs: 10n * S + S / 2n, atNs: 102n * S }),
    ).toBe(250_000_000n);
    // Two full cores.
    expect(usageNanoCores({ usageNs: 0n, atNs: 0n }, { usageNs: 4n * S, atNs: 2n * S })).toBe(2n * S);
  });

  it('is undefined for a non-positive interval or a counter that went backwards', () => {
    expect(usageNanoCores({ usageNs: 1n, atNs: 5n }, { usageNs: 2n, atNs: 5n })).toBeUndefined();
    expect(usageNanoCores({ usageNs: 1n, atNs: 5n }, { usageNs: 2n, atNs: 4n })).toBeUndefined();
    expect(usageNanoCores({ usageNs: 9n, atNs: 1n }, { usageNs: 2n, atNs: 5n })).toBeUndefined();
  });
});

describe('CpuRates', () => {
  it('has no rate on the first sample, then the rate since the previous one', () => {
    const r = new CpuRates(S);
    expect(r.observe('a', { usageNs: 0n, atNs: 0n })).toBeUndefined();
    expect(r.observe('a', { usageNs: S, atNs: 10n * S })).toBe(S / 10n);
    expect(r.observe('a', { usageNs: 3n * S, atNs: 20n * S })).toBe(S / 5n);
    // Keys are independent.
    expect(r.observe('b', { usageNs: 3n * S, atNs: 20n * S })).toBeUndefined();
  });

  it('reuses the last rate for a sample closer than the minimum interval, keeping the baseline', () => {
    const r = new CpuRates(S);
    r.observe('a', { usageNs: 0n, atNs: 0n });
    expect(r.observe('a', { usageNs: 2n * S, atNs: 10n * S })).toBe(S / 5n);
    // 1 ms later, a burst: not a rate over 1 ms.
    expect(r.observe('a', { usageNs: 2n * S + S / 100n, atNs: 10n * S + 1_000_000n })).toBe(S / 5n);
    // The next real sample is measured from the kept baseline (t = 10 s).
    expect(r.observe('a', { usageNs: 4n * S, atNs: 20n * S })).toBe(S / 5n);
  });

  it('resets the baseline when the counter goes backwards', () => {
    const r = new CpuRates(S);
    r.observe('a', { usageNs: 10n * S, atNs: 0n });
    expect(r.observe('a', { usageNs: 2n * S, atNs: 10n * S })).toBeUndefined();
    expect(r.observe('a', { usageNs: 3n * S, atNs: 20n * S })).toBe(S / 10n);
  });

  it('forgets keys not seen for maxAge', () => {
    const r = new CpuRates(S, 100n * S);
    r.observe('old', { usageNs: 0n, atNs: 0n });
    r.observe('new', { usageNs: 0n, atNs: 200n * S });
    expect(r.size).toBe(1);
  });
});

describe('parseNetDev', () => {
  const text = [
    'Inter-|   Receive                                                |  Transmit',
    ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
    '    lo:     640       8    0    0    0     0          0         0      640       8    0    0    0     0       0          0',
    '  eth0:  123456     100    2    0    0     0          0         0    65432      90    1    0    0     0       0          0',
    'net1: 5 1 0 0 0 0 0 0 7 1 3 0 0 0 0 0',
    '',
  ].join('\n');

  it('reads bytes and errors per interface, without loopback', () => {
    expect(parseNetDev(text)).toEqual([
      { name: 'eth0', rxBytes: 123456n, rxErrors: 2n, txBytes: 65432n, txErrors: 1n },
      { name: 'net1', rxBytes: 5n, rxErrors: 0n, txBytes: 7n, txErrors: 3n },
    ]);
  });

  it('skips malformed lines', () => {
    expect(parseNetDev('eth0: 1 2 3\nfoo\n')).toEqual([]);
  });
});

// ----------------------------------------------------------------------------------------- the collector

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-stats-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function files(dir: string, entries: Record<string, string>): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, text] of Object.entries(entries)) await writeFile(join(dir, name), text);
}

/** A v1 cgroup: cpuacct, memory, pids. */
async function v1Cgroup(
  cgRoot: string,
  path: string,
  v: { cpuNs: bigint; usage: number; inactiveFile: number; rss: number; pids: number; limit?: number },
): Promise<void> {
  await files(join(cgRoot, 'cpuacct', path), { 'cpuacct.usage': `${v.cpuNs}\n` });
  await files(join(cgRoot, 'memory', path), {
    'memory.usage_in_bytes': `${v.usage}\n`,
    'memory.limit_in_bytes': `${v.limit ?? '9223372036854771712'}\n`,
    'memory.stat': `total_rss ${v.rss}\ntotal_inactive_file ${v.inactiveFile}\ntotal_pgfault 10\ntotal_pgmajfault 1\n`,
  });
  await files(join(cgRoot, 'pids', path), { 'pids.current': `${v.pids}\n` });
}

function sandboxConfig(name: string, cgroupParent: string): SandboxConfig {
  return {
    name,
    namespace: 'default',
    uid: `uid-${name}`,
    attempt: 0,
    hostname: name,
    logDirectory: '',
    dns: undefined,
    portMappings: [],
    labels: { app: name },
    annotations: { note: 'x' },
    cgroupParent,
    sysctls: {},
    namespaces: { network: 'pod', pid: 'container', ipc: 'pod', targetId: '' },
    privileged: false,
    runtimeHandler: '',
  };
}

async function fixture(opts: { fsUsageTtlMs?: number } = {}) {
  const dir = await tempDir();
  const root = join(dir, 'root');
  const cgRoot = join(dir, 'cg');
  const crecords = new ContainerRecords(root);
  const srecords = new SandboxRecords(root);
  await crecords.load();
  await srecords.load();
  const labelsMatch = (have: Record<string, string>, want: Record<string, string> = {}) =>
    Object.entries(want).every(([k, v]) => have[k] === v);
  const containers = {
    records: crecords,
    status: (id: string) => crecords.resolve(id),
    list: (f: ContainerFilter = {}) =>
      crecords
        .list()
        .filter(
          (r) =>
            (!f.id || r.metadata.id.startsWith(f.id)) &&
            (!f.sandboxId || r.metadata.sandboxId.startsWith(f.sandboxId)) &&
            labelsMatch(r.metadata.config.labels, f.labels),
        ),
  };
  const sandboxes = {
    status: (id: string) => srecords.resolve(id),
    list: (f: SandboxFilter = {}) =>
      srecords
        .list()
        .filter(
          (r) =>
            (!f.id || r.metadata.id.startsWith(f.id)) &&
            (!f.state || r.status.state === f.state) &&
            labelsMatch(r.metadata.config.labels, f.labels),
        ),
  };
  const collector = new StatsCollector({
    containers,
    sandboxes,
    cgroupDriver: 'cgroupfs',
    cgroupV2: false,
    cgroupRoot: cgRoot,
    log: silentLogger(),
    fsUsageTtlMs: opts.fsUsageTtlMs ?? 0,
    cpuRateMinIntervalMs: 0,
  });

  const addSandbox = async (id: string, cgroupParent = '', state: 'ready' | 'notready' = 'ready') => {
    await mkdir(srecords.dirOf(id), { recursive: true });
    await srecords.create({
      metadata: {
        version: 1,
        id,
        config: sandboxConfig(id, cgroupParent),
        createdAt: '1',
        runtimeHandler: 'runc',
      },
      status: { version: 1, state, ips: [], namespaces: {} },
    });
  };
  const addContainer = async (
    id: string,
    sandboxId: string,
    state: ContainerState,
    labels: Record<string, string> = {},
  ) => {
    const config = {
      name: `ctr-${id}`,
      attempt: 1,
      labels,
      annotations: { a: 'b' },
    } as unknown as ContainerConfig;
    await mkdir(crecords.dirOf(id), { recursive: true });
    await crecords.create({
      metadata: {
        version: 1,
        id,
        sandboxId,
        config,
        imageId: 'sha256:img',
        chainId: 'sha256:chain',
        imageName: 'docker.io/library/busybox:latest',
        imageRef: 'sha256:img',
        logPath: '',
        runtimeHandler: 'runc',
        stopSignal: 'SIGTERM',
        cgroupsPath: `/skiff/${id}`,
        user: { uid: 0, gid: 0, additionalGids: [] },
        createdAt: String(Date.now() * 1e6),
      },
      status: {
        version: 1,
        state,
        pid: 0,
        startedAt: '0',
        finishedAt: '0',
        exitCode: 0,
        reason: '',
        message: '',
      },
    });
    await files(join(crecords.dirOf(id), 'upper', 'etc'), { motd: 'x'.repeat(10_000) });
  };
  return { root, cgRoot, collector, crecords, addSandbox, addContainer };
}

function expectNotFound(err: unknown): void {
  expect(isSkiffError(err, 'not-found')).toBe(true);
}

describe('StatsCollector: containers', () => {
  it('reports a running container from its cgroup, with the writable layer', async () => {
    const f = await fixture();
    await f.addSandbox('pod1');
    await f.addContainer('c1', 'pod1', 'running');
    await v1Cgroup(f.cgRoot, '/skiff/c1', {
      cpuNs: 5n * S,
      usage: 3_000_000,
      inactiveFile: 1_000_000,
      rss: 1_500_000,
      pids: 4,
      limit: 4_000_000,
    });
    const s = await f.collector.containerStats('c1');
    expect(s.container.metadata.id).toBe('c1');
    expect(s.cpu?.usageCoreNanoSeconds).toBe(5n * S);
    expect(s.cpu?.usageNanoCores).toBeUndefined(); // first sample
    expect(s.memory).toMatchObject({
      usageBytes: 3_000_000n,
      workingSetBytes: 2_000_000n,
      availableBytes: 2_000_000n,
      rssBytes: 1_500_000n,
      pageFaults: 10n,
      majorPageFaults: 1n,
    });
    expect(s.processes).toBe(4n);
    expect(s.writableLayer.mountpoint).toBe(f.root);
    // upper/, etc/, motd: three inodes; at least the file's 10 000 bytes of blocks.
    expect(s.writableLayer.inodesUsed).toBe(3n);
    expect(s.writableLayer.usedBytes).toBeGreaterThanOrEqual(10_000n);

    await v1Cgroup(f.cgRoot, '/skiff/c1', {
      cpuNs: 6n * S,
      usage: 3_000_000,
      inactiveFile: 0,
      rss: 0,
      pids: 1,
    });
    const again = await f.collector.containerStats('c1');
    expect(again.cpu?.usageNanoCores).toBeGreaterThan(0n);
  });

  it('reports an exited container without cpu or memory, as containerd does', async () => {
    const f = await fixture();
    await f.addSandbox('pod1');
    await f.addContainer('gone', 'pod1', 'exited');
    // Even a leftover cgroup is not read for an exited container.
    await v1Cgroup(f.cgRoot, '/skiff/gone', { cpuNs: 1n, usage: 1, inactiveFile: 0, rss: 1, pids: 0 });
    const s = await f.collector.containerStats('gone');
    expect(s.cpu).toBeUndefined();
    expect(s.memory).toBeUndefined();
    expect(s.processes).toBeUndefined();
    expect(s.writableLayer.inodesUsed).toBe(3n);
  });

  it('reports a running container whose cgroup is gone without cpu or memory', async () => {
    const f = await fixture();
    await f.addSandbox('pod1');
    await f.addContainer('c1', 'pod1', 'running');
    const s = await f.collector.containerStats('c1');
    expect(s.cpu).toBeUndefined();
    expect(s.memory).toBeUndefined();
  });

  it('answers not-found for an unknown container', async () => {
    const f = await fixture();
    await f.collector.containerStats('nope').then(() => expect.fail('expected not-found'), expectNotFound);
  });

  it('filters by id prefix, sandbox and labels', async () => {
    const f = await fixture();
    await f.addSandbox('pod1');
    await f.addSandbox('pod2');
    await f.addContainer('aa1', 'pod1', 'running', { tier: 'web' });
    await f.addContainer('bb2', 'pod1', 'exited', { tier: 'db' });
    await f.addContainer('cc3', 'pod2', 'running', { tier: 'web' });
    const ids = async (filter: Parameters<StatsCollector['listContainerStats']>[0]) =>
      (await f.collector.listContainerStats(filter)).map((s) => s.container.metadata.id).sort();
    expect(await ids({})).toEqual(['aa1', 'bb2', 'cc3']);
    expect(await ids({ id: 'bb' })).toEqual(['bb2']);
    expect(await ids({ sandboxId: 'pod1' })).toEqual(['aa1', 'bb2']);
    expect(await ids({ labels: { tier: 'web' } })).toEqual(['aa1', 'cc3']);
  });

  it('reuses a measured writable layer within its TTL', async () => {
    const f = await fixture({ fsUsageTtlMs: 60_000 });
    await f.addSandbox('pod1');
    await f.addContainer('c1', 'pod1', 'exited');
    const first = await f.collector.containerStats('c1');
    await files(join(f.crecords.dirOf('c1'), 'upper'), { more: 'y' });
    const second = await f.collector.containerStats('c1');
    expect(second.writableLayer).toEqual(first.writableLayer);
  });
});

describe('StatsCollector: pods', () => {
  it('reads the pod cgroup when cgroup_parent is set', async () => {
    const f = await fixture();
    await f.addSandbox('pod1', '/kubepods/besteffort/pod1');
    await f.addContainer('c1', 'pod1', 'running');
    await v1Cgroup(f.cgRoot, '/kubepods/besteffort/pod1', {
      cpuNs: 9n * S,
      usage: 8_000_000,
      inactiveFile: 0,
      rss: 7_000_000,
      pids: 6,
    });
    await v1Cgroup(f.cgRoot, '/skiff/c1', { cpuNs: 2n * S, usage: 1, inactiveFile: 0, rss: 1, pids: 2 });
    const p = await f.collector.podSandboxStats('pod1');
    expect(p.sandbox.metadata.id).toBe('pod1');
    expect(p.cpu?.usageCoreNanoSeconds).toBe(9n * S);
    expect(p.memory?.usageBytes).toBe(8_000_000n);
    expect(p.memory?.availableBytes).toBeUndefined(); // unlimited
    expect(p.process.count).toBe(6n);
    expect(p.network).toBeUndefined(); // no pinned netns in this fixture
    expect(p.containers.map((c) => c.container.metadata.id)).toEqual(['c1']);
  });

  it('sums live containers when there is no pod cgroup', async () => {
    const f = await fixture();
    await f.addSandbox('pod1');
    await f.addContainer('c1', 'pod1', 'running');
    await f.addContainer('c2', 'pod1', 'running');
    await f.addContainer('c3', 'pod1', 'exited');
    await v1Cgroup(f.cgRoot, '/skiff/c1', { cpuNs: 1n * S, usage: 100, inactiveFile: 10, rss: 50, pids: 1 });
    await v1Cgroup(f.cgRoot, '/skiff/c2', { cpuNs: 2n * S, usage: 200, inactiveFile: 20, rss: 60, pids: 2 });
    await v1Cgroup(f.cgRoot, '/skiff/c3', { cpuNs: 9n * S, usage: 900, inactiveFile: 0, rss: 0, pids: 9 });
    const p = await f.collector.podSandboxStats('pod1');
    expect(p.cpu?.usageCoreNanoSeconds).toBe(3n * S);
    expect(p.memory).toMatchObject({ usageBytes: 300n, workingSetBytes: 270n, rssBytes: 110n });
    expect(p.process.count).toBe(3n);
    expect(p.containers).toHaveLength(3);
  });

  it('answers not-found for an unknown pod and unavailable for one not ready; lists only ready ones', async () => {
    const f = await fixture();
    await f.addSandbox('ready1');
    await f.addSandbox('down1', '', 'notready');
    await f.collector.podSandboxStats('nope').then(() => expect.fail('expected not-found'), expectNotFound);
    await f.collector.podSandboxStats('down1').then(
      () => expect.fail('expected unavailable'),
      (err: unknown) => {
        expect(isSkiffError(err, 'unavailable')).toBe(true);
      },
    );
    const all = await f.collector.listPodSandboxStats();
    expect(all.map((p) => p.sandbox.metadata.id)).toEqual(['ready1']);
    expect(await f.collector.listPodSandboxStats({ labels: { app: 'other' } })).toEqual([]);
  });
});

describe('StatsCollector: metrics', () => {
  it('describes every metric it emits, with label values matching the keys', async () => {
    const f = await fixture();
    await f.addSandbox('pod1');
    await f.addContainer('c1', 'pod1', 'running');
    await f.addContainer('c2', 'pod1', 'exited');
    await v1Cgroup(f.cgRoot, '/skiff/c1', {
      cpuNs: 7n * S + 5n,
      usage: 1000,
      inactiveFile: 100,
      rss: 500,
      pids: 3,
    });
    const descriptors = f.collector.listMetricDescriptors();
    const byName = new Map(descriptors.map((d) => [d.name, d]));
    expect(byName.size).toBe(descriptors.length);

    const [pod, ...rest] = await f.collector.listPodSandboxMetrics();
    expect(rest).toEqual([]);
    expect(pod?.podSandboxId).toBe('pod1');
    // The exited container has no metrics.
    expect(pod?.containerMetrics.map((c) => c.containerId)).toEqual(['c1']);
    const metrics = pod?.containerMetrics[0]?.metrics ?? [];
    for (const m of metrics) {
      expect(byName.get(m.name)?.labelKeys.length, m.name).toBe(m.labelValues.length);
    }
    const value = (name: string) => metrics.find((m) => m.name === name);
    expect(value('container_cpu_usage_seconds_total')).toMatchObject({
      kind: 'counter',
      value: 7n,
      labelValues: ['c1', 'ctr-c1', 'docker.io/library/busybox:latest', 'total'],
    });
    expect(value('container_memory_working_set_bytes')).toMatchObject({ kind: 'gauge', value: 900n });
    expect(value('container_memory_usage_bytes')?.value).toBe(1000n);
    expect(value('container_memory_rss')?.value).toBe(500n);
    expect(value('container_processes')?.value).toBe(3n);
    expect(value('container_fs_usage_bytes')?.value).toBeGreaterThanOrEqual(10_000n);
    const lastSeen = value('container_last_seen')?.value ?? 0n;
    expect(Number(lastSeen)).toBeCloseTo(Date.now() / 1000, -1);
  });
});
