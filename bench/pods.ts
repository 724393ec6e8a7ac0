/**
 * The pod and container benchmark of `npm run bench` (run by bench/main.ts after the pull benchmark;
 * `BENCH_ONLY=pods` runs it alone): skiff vs containerd (CRI plugin), side by side, reported as ratios.
 *
 * Both runtimes run on their own sockets and dirs (roots on the scratch ext4 as in the pull benchmark,
 * state on a tmpfs as /run is on a node), each with a CNI bridge network of its own: containerd with a
 * conflist in its own conf dir (bridge `cbr-bench` 10.90.0.0/16 + host-local, portmap; the CRI plugin
 * adds loopback itself) and a pause image from the loopback registry (bench/pause.ts); skiff with its
 * built-in default network (the same plugin list) on `sbr-bench` 10.91.0.0/16 and an empty conf dir.
 * Images (busybox, pause) are pulled before anything is timed. Workloads, each alternating the runtimes:
 *
 * 1. RunPodSandbox latency: N sequential (each then stopped and removed, untimed), and C concurrent.
 * 2. Pod to running container: RunPodSandbox → CreateContainer → StartContainer (`sleep 3600`), timed
 *    from the first call to the last response, N sequential and C concurrent.
 * 3. Memory with M running pods (one `sleep 3600` container each), on freshly restarted daemons: RSS and
 *    PSS summed over the runtime's processes (skiff: its node process and every conmon; containerd:
 *    containerd, every containerd-shim-runc-v2 and every pause), found from the PIDs the runtimes record.
 * 4. ListContainers latency with L containers (the M pods get (L − M) / M more, created, not started).
 *
 * Env: BENCH_POD_RUNS (50), BENCH_POD_CONCURRENCY (20), BENCH_POD_ROUNDS (concurrent batches per
 * runtime, 2), BENCH_POD_WARMUP (3), BENCH_MEM_PODS (50), BENCH_LIST_CONTAINERS (500), BENCH_LIST_CALLS
 * (50), plus BENCH_FS, BENCH_WRITE and BENCH_SKIFF_NODE_ARGS as for the pull benchmark.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  ContainerConfig,
  ContainerState,
  ListContainersResponse,
  NamespaceMode,
  PodSandboxConfig,
} from '../src/cri/gen/runtime/v1/api.js';
import { pushImage } from '../test/fixtures/image-builder.js';
import { startRegistry } from '../test/fixtures/registry.js';
import {
  DIRS,
  commandLine,
  envInt,
  fsDescription,
  fsModeFromEnv,
  loadAverage,
  log,
  preflight,
  prepareDirs,
  refuseLiveBench,
  removeBenchDirs,
  repoRoot,
  withCleanup,
} from './common.js';
import {
  type ContainerdNetwork,
  type Runtime,
  type SkiffNetwork,
  startContainerd,
  startSkiff,
} from './daemons.js';
import { buildBusyboxImage, buildPauseImage } from './pause.js';
import {
  type MemGroup,
  type MemSample,
  type Noise,
  type Percentiles,
  type PodResults,
  type RuntimeName,
  SETUP_PARALLEL,
  renderPodReport,
} from './pods-report.js';
import {
  allPids,
  cmdline,
  descendants,
  killPid,
  netnsInode,
  output,
  otherCpuSince,
  parentPid,
  processTicks,
  pssKiB,
  run,
  statusKiB,
} from './proc.js';
import { median, writeReport } from './report.js';
import { Helper } from '../src/util/helper.js';

const SKIFF_NET: Omit<SkiffNetwork, 'confDir'> = { bridge: 'sbr-bench', subnet: '10.91.0.0/16' };
const CONTAINERD_NET: ContainerdNetwork = {
  name: 'skiff-bench-containerd',
  bridge: 'cbr-bench',
  subnet: '10.90.0.0/16',
};
const BRIDGES = [SKIFF_NET.bridge, CONTAINERD_NET.bridge];
const NAMESPACE = 'skiff-bench';
const CALL_DEADLINE_MS = 120_000;
/** Memory: wait this long after the last pod started, then take this many samples this far apart. */
const MEM_SETTLE_MS = 10_000;
const MEM_SAMPLES = 5;
const MEM_SAMPLE_EVERY_MS = 1_000;
/** libcni's cache of results (containerd's go-cni uses the default). */
const CNI_CACHE = '/var/lib/cni/results';

const POD_ENV = [
  'BENCH_ONLY',
  'BENCH_POD_RUNS',
  'BENCH_POD_CONCURRENCY',
  'BENCH_POD_ROUNDS',
  'BENCH_POD_WARMUP',
  'BENCH_MEM_PODS',
  'BENCH_LIST_CONTAINERS',
  'BENCH_LIST_CALLS',
  'BENCH_FS',
  'BENCH_WRITE',
  'BENCH_SKIFF_NODE_ARGS',
] as const;

/** One runtime under test; `rt` changes when the daemon is restarted. */
interface Side {
  name: RuntimeName;
  rt: Runtime;
  start(): Promise<Runtime>;
  /** Parent of the pods' log directories. */
  logBase: string;
  /** Every sandbox ID this runtime returned (for leftover cleanup). */
  sandboxes: Set<string>;
}

interface Pod {
  id: string;
  config: PodSandboxConfig;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function withLog<T>(side: Side, what: string, p: Promise<T>): Promise<T> {
  return p.catch(async (err: unknown) => {
    throw new Error(
      `${side.name}: ${what} failed: ${String(err)}\n--- ${side.rt.logPath} ---\n${await side.rt.logTail()}`,
    );
  });
}

/** Runs `f` over `items`, at most `n` at a time; the first failure is thrown once all settled. */
async function pool<T>(n: number, items: readonly T[], f: (t: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const errors: unknown[] = [];
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++]!;
      await f(item).catch((e: unknown) => errors.push(e));
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  if (errors.length) throw errors[0];
}

let podCounter = 0;

/** A pod as kubelet asks for one: own network, IPC and UTS namespaces, a PID namespace per container. */
async function podConfig(side: Side, label: string): Promise<PodSandboxConfig> {
  const name = `${label}-${podCounter++}`;
  const logDirectory = join(side.logBase, name);
  await mkdir(logDirectory, { recursive: true }); // kubelet makes it before RunPodSandbox
  return PodSandboxConfig.fromPartial({
    metadata: { name, uid: `uid-${name}-${process.pid}`, namespace: NAMESPACE, attempt: 0 },
    hostname: name,
    logDirectory,
    labels: { app: 'skiff-bench', workload: label },
    linux: {
      securityContext: {
        namespaceOptions: {
          network: NamespaceMode.POD,
          pid: NamespaceMode.CONTAINER,
          ipc: NamespaceMode.POD,
        },
      },
    },
  });
}

function containerConfig(image: string, name: string, command: string[]): ContainerConfig {
  return ContainerConfig.fromPartial({
    metadata: { name, attempt: 0 },
    image: { image },
    command,
    logPath: `${name}_0.log`,
    labels: { app: 'skiff-bench' },
    linux: {
      securityContext: {
        namespaceOptions: {
          network: NamespaceMode.POD,
          pid: NamespaceMode.CONTAINER,
          ipc: NamespaceMode.POD,
        },
      },
    },
  });
}

async function runPod(side: Side, config: PodSandboxConfig): Promise<Pod> {
  const { podSandboxId } = await withLog(
    side,
    'RunPodSandbox',
    side.rt.cri.runtime.runPodSandbox({ config, runtimeHandler: '' }, { deadlineMs: CALL_DEADLINE_MS }),
  );
  side.sandboxes.add(podSandboxId);
  return { id: podSandboxId, config };
}

async function createContainer(side: Side, pod: Pod, config: ContainerConfig): Promise<string> {
  const { containerId } = await withLog(
    side,
    'CreateContainer',
    side.rt.cri.runtime.createContainer(
      { podSandboxId: pod.id, config, sandboxConfig: pod.config },
      { deadlineMs: CALL_DEADLINE_MS },
    ),
  );
  return containerId;
}

async function startContainer(side: Side, id: string): Promise<void> {
  await withLog(
    side,
    'StartContainer',
    side.rt.cri.runtime.startContainer({ containerId: id }, { deadlineMs: CALL_DEADLINE_MS }),
  );
}

async function removePod(side: Side, id: string): Promise<void> {
  const cri = side.rt.cri.runtime;
  await withLog(
    side,
    'StopPodSandbox',
    cri.stopPodSandbox({ podSandboxId: id }, { deadlineMs: CALL_DEADLINE_MS }),
  );
  await withLog(
    side,
    'RemovePodSandbox',
    cri.removePodSandbox({ podSandboxId: id }, { deadlineMs: CALL_DEADLINE_MS }),
  );
}

async function removeAllPods(side: Side): Promise<void> {
  const { items } = await side.rt.cri.runtime.listPodSandbox({ filter: undefined });
  await pool(SETUP_PARALLEL, items, (p) => removePod(side, p.id));
}

/** One timed operation on a fresh pod: its time (and its steps' times), and the pod to remove afterwards. */
type PodOp = (side: Side, label: string) => Promise<OpResult>;

interface OpResult {
  ms: number;
  podId: string;
  /** Each RPC's time, when the operation makes several calls. */
  steps?: Record<string, number>;
}

const runPodOp: PodOp = async (side, label) => {
  const config = await podConfig(side, label);
  const t0 = performance.now();
  const pod = await runPod(side, config);
  return { ms: performance.now() - t0, podId: pod.id };
};

function podToRunningOp(image: string): PodOp {
  return async (side, label) => {
    const config = await podConfig(side, label);
    const cConfig = containerConfig(image, 'sleep', ['sleep', '3600']);
    const t0 = performance.now();
    const pod = await runPod(side, config);
    const t1 = performance.now();
    const id = await createContainer(side, pod, cConfig);
    const t2 = performance.now();
    await startContainer(side, id);
    const t3 = performance.now();
    const steps = { RunPodSandbox: t1 - t0, CreateContainer: t2 - t1, StartContainer: t3 - t2 };
    return { ms: t3 - t0, podId: pod.id, steps };
  };
}

export interface Sequential {
  ms: Map<RuntimeName, number[]>;
  /** Per runtime, per step: the measured runs' step times. */
  steps: Map<RuntimeName, Record<string, number[]>>;
  /** The measured runs' pods (removed by now), per runtime. */
  podIds: Map<RuntimeName, string[]>;
}

/** `runs` timed operations one after another per runtime, alternating the runtimes (and who goes first). */
async function sequential(
  sides: readonly Side[],
  what: string,
  warmup: number,
  runs: number,
  op: PodOp,
): Promise<Sequential> {
  const out: Sequential = {
    ms: new Map(sides.map((s) => [s.name, []])),
    steps: new Map(sides.map((s) => [s.name, {}])),
    podIds: new Map(sides.map((s) => [s.name, []])),
  };
  for (let i = 0; i < warmup + runs; i++) {
    const order = i % 2 === 0 ? sides : [...sides].reverse();
    for (const side of order) {
      const r = await op(side, what);
      await removePod(side, r.podId);
      if (i < warmup) continue;
      out.ms.get(side.name)!.push(r.ms);
      out.podIds.get(side.name)!.push(r.podId);
      const steps = out.steps.get(side.name)!;
      for (const [k, v] of Object.entries(r.steps ?? {})) (steps[k] ??= []).push(v);
    }
  }
  for (const s of sides) log(`${what} ${s.name}: median ${median(out.ms.get(s.name)!).toFixed(1)} ms`);
  return out;
}

/** `rounds` batches of `n` operations started at once per runtime, alternating the runtimes. */
async function concurrent(
  sides: readonly Side[],
  what: string,
  rounds: number,
  n: number,
  op: PodOp,
): Promise<{ ms: Map<RuntimeName, number[]>; batchMs: Map<RuntimeName, number[]> }> {
  const ms = new Map<RuntimeName, number[]>(sides.map((s) => [s.name, []]));
  const batchMs = new Map<RuntimeName, number[]>(sides.map((s) => [s.name, []]));
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? sides : [...sides].reverse();
    for (const side of order) {
      const t0 = performance.now();
      const results = await Promise.allSettled(Array.from({ length: n }, () => op(side, what)));
      const wall = performance.now() - t0;
      const failed = results.find((x) => x.status === 'rejected');
      const done = results.flatMap((x) => (x.status === 'fulfilled' ? [x.value] : []));
      await pool(SETUP_PARALLEL, done, (x) => removePod(side, x.podId));
      if (failed) throw failed.reason;
      ms.get(side.name)!.push(...done.map((x) => x.ms));
      batchMs.get(side.name)!.push(wall);
      log(`${what} ${side.name} round ${r + 1}/${rounds}: all ${n} in ${wall.toFixed(0)} ms`);
    }
  }
  return { ms, batchMs };
}

function readPid(path: string): number | undefined {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** The runtime's processes by group, found from the PIDs it records, plus the containers' init PIDs. */
interface Procs {
  groups: Record<MemGroup, number[]>;
  containerInits: number[];
}

/**
 * skiff: its node process (and any child it has), and each container's conmon (`runtime/conmon.pid`,
 * checked against its command line); container inits from `runtime/pidfile`.
 */
function skiffProcs(rt: Runtime, containerIds: readonly string[]): Procs {
  const monitors: number[] = [];
  const inits: number[] = [];
  for (const id of containerIds) {
    const dir = join(rt.state, 'containers', id, 'runtime');
    const conmon = readPid(join(dir, 'conmon.pid'));
    if (conmon === undefined || !cmdline(conmon).includes(id))
      throw new Error(`skiff: no live conmon recorded in ${dir}/conmon.pid`);
    monitors.push(conmon);
    const init = readPid(join(dir, 'pidfile'));
    if (init !== undefined) inits.push(init);
  }
  const daemon = [rt.pid, ...descendants(rt.pid)];
  return { groups: { daemon, monitors, infra: [] }, containerInits: inits };
}

/**
 * containerd: itself (and any child), each sandbox's pause (`init.pid` in the sandbox's task bundle dir)
 * and its parent, the pod's shim (checked: a containerd-shim-runc-v2 whose `-address` is this containerd's
 * socket); container inits from `init.pid` in each container's bundle dir.
 */
function containerdProcs(rt: Runtime, sandboxIds: readonly string[], containerIds: readonly string[]): Procs {
  const tasks = join(rt.state, 'io.containerd.runtime.v2.task', 'k8s.io');
  const socket = join(rt.state, 'containerd.sock');
  const shims = new Set<number>();
  const pauses: number[] = [];
  for (const id of sandboxIds) {
    const pause = readPid(join(tasks, id, 'init.pid'));
    if (pause === undefined) throw new Error(`containerd: no pause PID in ${tasks}/${id}/init.pid`);
    pauses.push(pause);
    const shim = parentPid(pause);
    const argv = shim === undefined ? [] : cmdline(shim);
    if (shim === undefined || !isShimOf(argv, socket))
      throw new Error(
        `containerd: the parent of pause ${pause} (${argv.join(' ')}) is not a shim of ${socket}`,
      );
    shims.add(shim);
  }
  const inits = containerIds.flatMap((id) => readPid(join(tasks, id, 'init.pid')) ?? []);
  const daemon = [rt.pid, ...descendants(rt.pid)];
  return { groups: { daemon, monitors: [...shims], infra: pauses }, containerInits: inits };
}

function isShimOf(argv: readonly string[], socket: string): boolean {
  return (argv[0] ?? '').endsWith('containerd-shim-runc-v2') && argv[argv.indexOf('-address') + 1] === socket;
}

/** Every containerd-shim-runc-v2 whose `-address` is `socket` (shims are re-parented to init). */
function shimsOf(socket: string): number[] {
  return allPids().filter((pid) => isShimOf(cmdline(pid), socket));
}

/** Every conmon working for skiff under `stateDir` (its arguments name dirs there). */
function conmonsUnder(stateDir: string): number[] {
  return allPids().filter((pid) => {
    const argv = cmdline(pid);
    return (argv[0] ?? '').endsWith('conmon') && argv.some((a) => a.startsWith(`${stateDir}/`));
  });
}

/**
 * Processes inside the pods' network namespaces that are neither a container's init nor its child: a
 * pod's infra process (containerd's pause). The pods' namespaces are those of the container inits.
 */
function infraInPods(containerInits: readonly number[]): number[] {
  const podNs = new Set(containerInits.map(netnsInode).filter((x) => x !== undefined));
  const containerSide = new Set(containerInits.flatMap((p) => [p, ...descendants(p)]));
  return allPids().filter((pid) => !containerSide.has(pid) && podNs.has(netnsInode(pid) ?? -1));
}

function sampleMemory(procs: Procs): MemSample {
  const s: MemSample = {
    rssKiB: { daemon: 0, monitors: 0, infra: 0 },
    pssKiB: { daemon: 0, monitors: 0, infra: 0 },
    count: { daemon: 0, monitors: 0, infra: 0 },
  };
  for (const g of ['daemon', 'monitors', 'infra'] as const) {
    for (const pid of procs.groups[g]) {
      const rss = statusKiB(pid, 'VmRSS');
      if (rss === 0) continue; // gone
      s.rssKiB[g] += rss;
      s.pssKiB[g] += pssKiB(pid);
      s.count[g]++;
    }
  }
  return s;
}

async function steadyMemory(find: () => Procs): Promise<MemSample[]> {
  const out: MemSample[] = [];
  for (let i = 0; i < MEM_SAMPLES; i++) {
    if (i) await sleep(MEM_SAMPLE_EVERY_MS);
    out.push(sampleMemory(find()));
  }
  return out;
}

async function listContainerIds(side: Side, state?: ContainerState): Promise<string[]> {
  const { containers } = await side.rt.cri.runtime.listContainers(
    {
      filter:
        state === undefined ? undefined : { id: '', podSandboxId: '', labelSelector: {}, state: { state } },
    },
    { deadlineMs: CALL_DEADLINE_MS },
  );
  return containers.map((c) => c.id);
}

/** Pods' network bridges, leftover shims/conmons (by PID) and their containers, netns pins, CNI cache. */
async function removeLeftovers(sides: readonly Side[], cniDirWasThere = true): Promise<void> {
  // Runtime containers the daemons did not remove (a failure): runc's own delete cleans cgroups too.
  for (const root of [
    join(DIRS.stateBase, 'containerd', 'runc', 'k8s.io'),
    join(DIRS.stateBase, 'skiff', 'runtime', 'runc'),
  ]) {
    if (!existsSync(root)) continue;
    for (const id of readdirSync(root)) {
      log(`leftover runc container ${id} in ${root}: deleting`);
      output('runc', ['--root', root, 'delete', '--force', id]);
    }
  }
  const socket = join(DIRS.stateBase, 'containerd', 'containerd.sock');
  const monitors = [...shimsOf(socket), ...conmonsUnder(join(DIRS.stateBase, 'skiff'))];
  const namespaces = new Set<number>();
  for (const pid of monitors) {
    log(`leftover ${cmdline(pid)[0] ?? '?'} PID ${pid}: killing it and its children`);
    const tree = descendants(pid);
    for (const p of tree) {
      const ns = netnsInode(p);
      if (ns !== undefined) namespaces.add(ns);
    }
    for (const p of tree.reverse()) killPid(p);
    killPid(pid);
  }
  // containerd pins pod network namespaces in /run/netns (skiff's are under its state dir).
  if (namespaces.size && existsSync('/run/netns')) {
    for (const name of readdirSync('/run/netns')) {
      const path = join('/run/netns', name);
      let ino: number;
      try {
        ino = statSync(path).ino;
      } catch {
        continue;
      }
      if (!namespaces.has(ino)) continue;
      spawnQuiet('umount', [path]);
      await rm(path, { force: true });
    }
  }
  for (const b of BRIDGES) {
    if (existsSync(`/sys/class/net/${b}`)) spawnQuiet('ip', ['link', 'del', b]);
  }
  // libcni's result cache entries of containerd's network and of its pods' loopback.
  if (existsSync(CNI_CACHE)) {
    const ours = new Set([...(sides.find((s) => s.name === 'containerd')?.sandboxes ?? [])]);
    for (const f of readdirSync(CNI_CACHE)) {
      const id = /^cni-loopback-([0-9a-f]{64})-lo$/.exec(f)?.[1];
      if (f.startsWith(`${CONTAINERD_NET.name}-`) || (id !== undefined && ours.has(id)))
        await rm(join(CNI_CACHE, f), { force: true });
    }
  }
  // containerd made libcni's cache dir: remove it again when it is empty.
  if (!cniDirWasThere) {
    for (const d of [CNI_CACHE, dirname(CNI_CACHE)]) {
      try {
        rmdirSync(d);
      } catch {
        // not there, or not empty
      }
    }
  }
}

function spawnQuiet(file: string, args: string[]): void {
  try {
    run(file, args, 30_000);
  } catch (e) {
    log(String(e));
  }
}

/** PIDs that are the bench's work: this process and its children (daemons, registry), and the runtimes' monitors. */
function oursNow(sides: readonly Side[]): Set<number> {
  const roots = [
    process.pid,
    ...sides.flatMap((s) =>
      s.name === 'containerd' ? shimsOf(join(s.rt.state, 'containerd.sock')) : conmonsUnder(s.rt.state),
    ),
  ];
  return new Set(roots.flatMap((p) => [p, ...descendants(p)]));
}

/** Measures other work on the machine during a phase (see {@link otherCpuSince}). */
function noiseGauge(sides: readonly Side[]): () => Noise {
  const before = processTicks();
  const t0 = performance.now();
  return () => {
    const wallS = (performance.now() - t0) / 1000;
    const cpu = otherCpuSince(before, processTicks(), oursNow(sides));
    return { otherS: cpu.other, orphansS: cpu.orphans, wallS };
  };
}

/**
 * What starting a process costs a Node.js process on this machine: how long `child_process.spawn()`
 * blocks the calling thread (libuv forks, then waits for the exec) and how long until `/bin/true` has
 * exited; and the same exit time through skiff-helper (util/helper.ts), as skiff starts its helpers
 * (unshare, CNI plugins, conmon, runc). Medians of `n`.
 */
async function spawnCost(n = 20): Promise<{ blockMs: number; exitMs: number; helperExitMs: number }> {
  const block: number[] = [];
  const exit: number[] = [];
  const viaHelper: number[] = [];
  const helper = Helper.shared();
  if (!helper) throw new Error(`skiff-helper is not built (${String(Helper.missing())}): npm run build`);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const child = spawn('/bin/true', [], { stdio: ['pipe', 'pipe', 'pipe'] });
    block.push(performance.now() - t0);
    await new Promise((r) => child.once('close', r));
    exit.push(performance.now() - t0);
    const t1 = performance.now();
    const c = await helper.spawn('/bin/true', [], { env: {}, stdio: ['write', 'read', 'read'] });
    (c.stdio[0] as NodeJS.WritableStream).end();
    (c.stdio[1] as NodeJS.ReadableStream).resume();
    (c.stdio[2] as NodeJS.ReadableStream).resume();
    await c.closed;
    viaHelper.push(performance.now() - t1);
  }
  return { blockMs: median(block), exitMs: median(exit), helperExitMs: median(viaHelper) };
}

/** skiff's own record of each pod's CNI ADD (`pod network attached`, logged at info), for `podIds`. */
function skiffNetworkAttachMs(logPath: string, podIds: readonly string[]): number[] {
  const ids = new Set(podIds);
  const out: number[] = [];
  for (const line of readFileSync(logPath, 'utf8').split('\n')) {
    if (!line.includes('pod network attached')) continue;
    try {
      const e = JSON.parse(line) as { sandboxId?: string; durationMs?: number };
      if (e.sandboxId && ids.has(e.sandboxId) && typeof e.durationMs === 'number') out.push(e.durationMs);
    } catch {
      // not a JSON line
    }
  }
  return out;
}

function percentileSummary(xs: readonly number[]): { p50: number; p99: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.max(0, Math.ceil(q * s.length) - 1)] ?? NaN;
  return { p50: at(0.5), p99: at(0.99) };
}

/** The pod benchmark: writes the `pods` (or `pods-host-fs`) section of BENCHMARKS.md. */
interface Counts {
  runs: number;
  conc: number;
  rounds: number;
  warmup: number;
  memPods: number;
  listContainers: number;
  listCalls: number;
}

/** What the workloads share: the runtimes, the container image, the counts, and the phase recorder. */
interface Ctx {
  sides: Side[];
  image: string;
  c: Counts;
  /** Runs a measured phase, recording other work on the machine meanwhile. */
  phase<T>(name: string, f: () => Promise<T>): Promise<T>;
  /** Untimed setup and teardown durations per runtime, seconds. */
  setupS: Map<RuntimeName, Record<string, number>>;
}

async function latencyWorkloads(ctx: Ctx) {
  const { sides, c } = ctx;
  // 1. RunPodSandbox.
  const runSeq = await ctx.phase('RunPodSandbox, sequential', () =>
    sequential(sides, 'runp-seq', c.warmup, c.runs, runPodOp),
  );
  const runConc = await ctx.phase('RunPodSandbox, concurrent', () =>
    concurrent(sides, 'runp-conc', c.rounds, c.conc, runPodOp),
  );
  // 2. Pod to running container.
  const startOp = podToRunningOp(ctx.image);
  const startSeq = await ctx.phase('pod to running container, sequential', () =>
    sequential(sides, 'start-seq', c.warmup, c.runs, startOp),
  );
  const startConc = await ctx.phase('pod to running container, concurrent', () =>
    concurrent(sides, 'start-conc', c.rounds, c.conc, startOp),
  );
  return { runSeq, runConc, startSeq, startConc };
}

/**
 * 3. Memory: restarts both daemons (so both start from the same history: images pulled, no pods), samples
 * them idle, starts `memPods` pods with one running container each, waits, samples again. Returns the
 * pods, which the ListContainers workload reuses.
 */
async function memoryWorkload(ctx: Ctx) {
  const { sides, c } = ctx;
  for (const side of sides) {
    await side.rt.stop();
    side.rt = await side.start();
  }
  log(`restarted: ${sides.map((s) => `${s.name} PID ${s.rt.pid}`).join(', ')}`);
  await sleep(MEM_SETTLE_MS);
  const idle = new Map<RuntimeName, MemSample[]>();
  for (const side of sides) {
    const daemonOnly = (): Procs => ({
      groups: { daemon: [side.rt.pid, ...descendants(side.rt.pid)], monitors: [], infra: [] },
      containerInits: [],
    });
    idle.set(side.name, await steadyMemory(daemonOnly));
  }
  const pods = new Map<RuntimeName, Pod[]>();
  for (const side of sides) {
    const mine: Pod[] = [];
    const t = performance.now();
    await pool(SETUP_PARALLEL, Array.from({ length: c.memPods }), async () => {
      const pod = await runPod(side, await podConfig(side, 'mem'));
      mine.push(pod);
      const id = await createContainer(side, pod, containerConfig(ctx.image, 'sleep', ['sleep', '3600']));
      await startContainer(side, id);
    });
    pods.set(side.name, mine);
    ctx.setupS.set(side.name, {
      [`${c.memPods} pods with a running container`]: (performance.now() - t) / 1000,
    });
  }
  await sleep(MEM_SETTLE_MS);
  const loaded = new Map<RuntimeName, MemSample[]>();
  const infraSeen = new Map<RuntimeName, number>();
  for (const side of sides) {
    const running = await listContainerIds(side, ContainerState.CONTAINER_RUNNING);
    if (running.length !== c.memPods)
      throw new Error(`${side.name}: ${running.length} running containers, want ${c.memPods}`);
    const podIds = pods.get(side.name)!.map((p) => p.id);
    const find = (): Procs =>
      side.name === 'skiff' ? skiffProcs(side.rt, running) : containerdProcs(side.rt, podIds, running);
    const procs = find();
    if (procs.containerInits.length !== c.memPods)
      throw new Error(
        `${side.name}: found ${procs.containerInits.length} container init PIDs, want ${c.memPods}`,
      );
    // Cross-checks: every process in the pods' namespaces besides the containers' is counted, and every
    // shim of this containerd is one of the pods'.
    const infra = infraInPods(procs.containerInits);
    infraSeen.set(side.name, infra.length);
    const uncounted = infra.filter((p) => !procs.groups.infra.includes(p));
    if (uncounted.length)
      throw new Error(
        `${side.name}: processes ${uncounted.join(', ')} in the pods' namespaces are not counted`,
      );
    if (side.name === 'containerd') {
      const all = shimsOf(join(side.rt.state, 'containerd.sock')).length;
      if (all !== procs.groups.monitors.length)
        throw new Error(
          `containerd: ${all} shims of its socket running, ${procs.groups.monitors.length} recorded`,
        );
    }
    loaded.set(side.name, await steadyMemory(find));
  }
  return { idle, loaded, infraSeen, pods };
}

/**
 * 4. ListContainers with `listContainers` containers: the memory workload's pods get more containers,
 * created, not started; then ListContainers (and Version, the empty RPC) alternately. Removes the pods.
 */
async function listWorkload(ctx: Ctx, pods: Map<RuntimeName, Pod[]>) {
  const { sides, c } = ctx;
  const perPod = Math.ceil((c.listContainers - c.memPods) / c.memPods);
  const at500 = new Map<
    RuntimeName,
    { sample: MemSample; runcInit: { count: number; rssKiB: number; pssKiB: number } }
  >();
  for (const side of sides) {
    const t = performance.now();
    const jobs = pods
      .get(side.name)!
      .flatMap((pod) => Array.from({ length: perPod }, (_, k) => ({ pod, k })))
      .slice(0, c.listContainers - c.memPods);
    await pool(SETUP_PARALLEL, jobs, ({ pod, k }) =>
      createContainer(side, pod, containerConfig(ctx.image, `idle-${k}`, ['sleep', '3600'])),
    );
    ctx.setupS.get(side.name)![`${jobs.length} more containers created`] = (performance.now() - t) / 1000;
    const ids = await listContainerIds(side);
    if (ids.length !== c.listContainers)
      throw new Error(
        `${side.name}: ListContainers lists ${ids.length} containers, want ${c.listContainers}`,
      );
    // What the created, not started containers hold (skiff runs conmon and `runc create` at create).
    const podIds = pods.get(side.name)!.map((p) => p.id);
    const procs = side.name === 'skiff' ? skiffProcs(side.rt, ids) : containerdProcs(side.rt, podIds, ids);
    const runcInit = procs.groups.monitors.flatMap(descendants).filter((p) => {
      const a = cmdline(p);
      return (a[0] ?? '').includes('runc') && a[1] === 'init';
    });
    at500.set(side.name, {
      sample: sampleMemory(procs),
      runcInit: {
        count: runcInit.length,
        rssKiB: runcInit.reduce((n, p) => n + statusKiB(p, 'VmRSS'), 0),
        pssKiB: runcInit.reduce((n, p) => n + pssKiB(p), 0),
      },
    });
  }
  const list = new Map<RuntimeName, number[]>(sides.map((s) => [s.name, []]));
  const version = new Map<RuntimeName, number[]>(sides.map((s) => [s.name, []]));
  const responseBytes = new Map<RuntimeName, number>();
  await ctx.phase('ListContainers', async () => {
    for (let i = 0; i < c.warmup + c.listCalls; i++) {
      const order = i % 2 === 0 ? sides : [...sides].reverse();
      for (const side of order) {
        const t = performance.now();
        const { containers } = await withLog(
          side,
          'ListContainers',
          side.rt.cri.runtime.listContainers({ filter: undefined }, { deadlineMs: CALL_DEADLINE_MS }),
        );
        const ms = performance.now() - t;
        responseBytes.set(side.name, ListContainersResponse.encode({ containers }).finish().length);
        if (containers.length !== c.listContainers)
          throw new Error(
            `${side.name}: ListContainers returned ${containers.length}, want ${c.listContainers}`,
          );
        // The same path with no work behind it: the gRPC round trip alone.
        const v = performance.now();
        await withLog(side, 'Version', side.rt.cri.runtime.version({ version: '' }));
        if (i < c.warmup) continue;
        list.get(side.name)!.push(ms);
        version.get(side.name)!.push(performance.now() - v);
      }
    }
  });
  for (const side of sides) {
    const t = performance.now();
    await removeAllPods(side);
    ctx.setupS.get(side.name)![`removing the ${c.memPods} pods and ${c.listContainers} containers`] =
      (performance.now() - t) / 1000;
  }
  return { at500, list, version, responseBytes };
}

/** The pod benchmark: writes the `pods` (or `pods-host-fs`) section of BENCHMARKS.md. */
export async function runPodBench(): Promise<void> {
  const startedAt = new Date();
  const memPods = envInt('BENCH_MEM_PODS', 50, 1);
  const c: Counts = {
    runs: envInt('BENCH_POD_RUNS', 50, 1),
    conc: envInt('BENCH_POD_CONCURRENCY', 20, 1),
    rounds: envInt('BENCH_POD_ROUNDS', 2, 1),
    warmup: envInt('BENCH_POD_WARMUP', 3, 0),
    memPods,
    listContainers: envInt('BENCH_LIST_CONTAINERS', 500, memPods),
    listCalls: envInt('BENCH_LIST_CALLS', 50, 1),
  };
  const fsMode = fsModeFromEnv();
  const root = repoRoot();
  const skiffBin = join(root, 'dist', 'src', 'main.js');
  preflight('pod', skiffBin, fsMode, ['/usr/sbin/runc', '/usr/bin/conmon', '/usr/lib/cni/bridge']);
  const nodeArgs = (process.env.BENCH_SKIFF_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);

  await withCleanup(removeBenchDirs, async (stops) => {
    const sides: Side[] = [];
    // Runs last (before the dirs go): whatever the daemons left, by PID and by our names.
    const cniDirWasThere = existsSync(dirname(CNI_CACHE));
    stops.push('leftover processes, namespaces, bridges', () => removeLeftovers(sides, cniDirWasThere));
    refuseLiveBench();
    await removeLeftovers([]); // a crashed run's
    await prepareDirs(fsMode, true);
    const registry = await startRegistry();
    stops.push('registry', () => registry.stop());
    log(`registry on ${registry.host}`);
    const pause = await buildPauseImage(root);
    const busyboxImage = `${registry.host}/skiff-bench/busybox:latest`;
    const pauseImage = `${registry.host}/skiff-bench/pause:3.9`;
    await pushImage(await buildBusyboxImage(), registry.host, 'skiff-bench/busybox:latest');
    await pushImage(pause.image, registry.host, 'skiff-bench/pause:3.9');
    log(`pause image: ${pause.what}`);

    const skiffConfDir = join(DIRS.stateBase, 'skiff-net.d');
    await mkdir(skiffConfDir, { recursive: true });
    const mkSide = async (name: RuntimeName, start: () => Promise<Runtime>): Promise<void> => {
      const side: Side = {
        name,
        rt: await start(),
        start,
        logBase: join(DIRS.rootBase, 'pod-logs', name),
        sandboxes: new Set(),
      };
      // Stop the daemon last; remove its pods first (runs before, the stack unwinds in reverse).
      stops.push(name, () => side.rt.stop());
      stops.push(`${name} pods`, () => removeAllPods(side));
      sides.push(side);
    };
    await mkSide('skiff', () =>
      startSkiff(skiffBin, DIRS, nodeArgs, { ...SKIFF_NET, confDir: skiffConfDir }),
    );
    await mkSide('containerd', () =>
      startContainerd(registry.host, DIRS, { sandboxImage: pauseImage, network: CONTAINERD_NET }),
    );
    log(`started: ${sides.map((s) => `${s.name} PID ${s.rt.pid}`).join(', ')}`);
    for (const side of sides) {
      const images = side.name === 'containerd' ? [busyboxImage, pauseImage] : [busyboxImage];
      for (const image of images) {
        const spec = { image, annotations: {}, userSpecifiedImage: '', runtimeHandler: '', imageRef: '' };
        await withLog(
          side,
          `PullImage ${image}`,
          side.rt.cri.image.pullImage({ image: spec, auth: undefined, sandboxConfig: undefined }),
        );
      }
    }

    const loadBefore = loadAverage();
    const noise: Record<string, Noise> = {};
    const ctx: Ctx = {
      sides,
      image: busyboxImage,
      c,
      setupS: new Map(),
      async phase(name, f) {
        const done = noiseGauge(sides);
        const out = await f();
        const n = (noise[name] = done());
        log(
          `${name}: other work on the machine ${n.otherS.toFixed(1)} CPU s (orphans reaped by init, ours ` +
            `and others', ${n.orphansS.toFixed(1)} s) in ${n.wallS.toFixed(0)} s`,
        );
        return out;
      },
    };
    const spawnMs = await spawnCost();
    const lat = await latencyWorkloads(ctx);
    const skiffSide = sides.find((x) => x.name === 'skiff')!;
    const skiffCniMs = skiffNetworkAttachMs(skiffSide.rt.logPath, lat.runSeq.podIds.get('skiff') ?? []);
    const mem = await memoryWorkload(ctx);
    const lst = await listWorkload(ctx, mem.pods);
    for (const side of sides)
      log(`${side.name}: setup/teardown ${JSON.stringify(ctx.setupS.get(side.name))}`);

    const results: PodResults = {
      repoRoot: root,
      fsMode,
      fs: fsDescription(fsMode),
      startedAt,
      loadBefore,
      loadAfter: loadAverage(),
      command: commandLine(POD_ENV),
      pause: pause.what,
      counts: c,
      noise,
      networks: {
        skiff: `built-in default network, bridge ${SKIFF_NET.bridge} ${SKIFF_NET.subnet}`,
        containerd: `conflist ${CONTAINERD_NET.name}, bridge ${CONTAINERD_NET.bridge} ${CONTAINERD_NET.subnet}`,
      },
      runp: {
        seq: summarize(lat.runSeq.ms),
        conc: summarize(lat.runConc.ms),
        concBatchMs: lat.runConc.batchMs,
      },
      start: {
        seq: summarize(lat.startSeq.ms),
        conc: summarize(lat.startConc.ms),
        concBatchMs: lat.startConc.batchMs,
      },
      startSteps: lat.startSeq.steps,
      skiffCniMs,
      spawnMs,
      responseBytes: lst.responseBytes,
      raw: {
        runSeq: lat.runSeq.ms,
        runConc: lat.runConc.ms,
        startSeq: lat.startSeq.ms,
        startConc: lat.startConc.ms,
        list: lst.list,
        version: lst.version,
      },
      idle: mem.idle,
      loaded: mem.loaded,
      infraSeen: mem.infraSeen,
      at500: lst.at500,
      list: summarize(lst.list),
      version: summarize(lst.version),
      setupS: ctx.setupS,
    };
    const report = renderPodReport(results);
    process.stdout.write(`${report}\n`);
    if (process.env.BENCH_WRITE !== '0') {
      await writeReport(join(root, 'BENCHMARKS.md'), fsMode === 'loop' ? 'pods' : 'pods-host-fs', report);
      log('wrote BENCHMARKS.md');
    }
  });
}

function summarize(m: Map<RuntimeName, number[]>): Map<RuntimeName, Percentiles> {
  return new Map([...m].map(([k, v]) => [k, { ...percentileSummary(v), n: v.length }]));
}
