/**
 * Turns the pod benchmark's measurements into its Markdown section: setup, one results table (skiff,
 * containerd, ratio, target, met?), the memory breakdown by process kind, and every latency sample.
 */
import { machine, median } from './report.js';
import { output } from './proc.js';

export type RuntimeName = 'skiff' | 'containerd';
/** The runtime's daemon (and its children), its per-pod or per-container monitors, pods' infra processes. */
export type MemGroup = 'daemon' | 'monitors' | 'infra';

export interface MemSample {
  rssKiB: Record<MemGroup, number>;
  pssKiB: Record<MemGroup, number>;
  count: Record<MemGroup, number>;
}

/** Other work on the machine during a phase: CPU seconds of unrelated processes, and the phase's length. */
export interface Noise {
  otherS: number;
  /** CPU of processes reaped by init during the phase: daemonized monitors, ours and others'. */
  orphansS: number;
  wallS: number;
}

/** Other work above this share of one core during a phase marks the run as noisy in the report. */
const NOISY_SHARE = 0.25;

export interface Percentiles {
  p50: number;
  p99: number;
  n: number;
}

export interface PodResults {
  repoRoot: string;
  fsMode: 'loop' | 'host';
  fs: string;
  startedAt: Date;
  loadBefore: string;
  loadAfter: string;
  command: string;
  /** What containerd's pause image runs. */
  pause: string;
  counts: {
    runs: number;
    conc: number;
    rounds: number;
    warmup: number;
    memPods: number;
    listContainers: number;
    listCalls: number;
  };
  /** Other work on the machine during each measured phase. */
  noise: Record<string, Noise>;
  networks: Record<RuntimeName, string>;
  runp: {
    seq: Map<RuntimeName, Percentiles>;
    conc: Map<RuntimeName, Percentiles>;
    concBatchMs: Map<RuntimeName, number[]>;
  };
  start: {
    seq: Map<RuntimeName, Percentiles>;
    conc: Map<RuntimeName, Percentiles>;
    concBatchMs: Map<RuntimeName, number[]>;
  };
  /** Sequential pod to running container, per runtime: each RPC's times. */
  startSteps: Map<RuntimeName, Record<string, number[]>>;
  /** skiff's CNI ADD per pod in the sequential RunPodSandbox runs, from its own log, ms. */
  skiffCniMs: number[];
  /** What a spawn costs a Node.js process here (see bench/pods.ts spawnCost), ms. */
  spawnMs: { blockMs: number; exitMs: number; helperExitMs: number };
  /** Size of one encoded ListContainersResponse with all the containers, bytes. */
  responseBytes: Map<RuntimeName, number>;
  raw: Record<
    'runSeq' | 'runConc' | 'startSeq' | 'startConc' | 'list' | 'version',
    Map<RuntimeName, number[]>
  >;
  idle: Map<RuntimeName, MemSample[]>;
  loaded: Map<RuntimeName, MemSample[]>;
  /** Processes found in the pods' network namespaces besides the containers' own. */
  infraSeen: Map<RuntimeName, number>;
  at500: Map<RuntimeName, { sample: MemSample; runcInit: { count: number; rssKiB: number; pssKiB: number } }>;
  list: Map<RuntimeName, Percentiles>;
  /** Version, the empty RPC, called right after each ListContainers: the gRPC round trip alone. */
  version: Map<RuntimeName, Percentiles>;
  /** Untimed setup and teardown steps, seconds. */
  setupS: Map<RuntimeName, Record<string, number>>;
}

/** Setup and teardown calls (not timed) run this many at a time. */
export const SETUP_PARALLEL = 4;

export const TARGET_RUNP_RATIO = 0.8;
export const TARGET_START_RATIO = 0.8;
export const TARGET_MEMORY_RATIO = 0.5;
export const TARGET_LIST_RATIO = 1.0;

const GROUPS: readonly MemGroup[] = ['daemon', 'monitors', 'infra'];
const total = (r: Record<MemGroup, number>): number => GROUPS.reduce((n, g) => n + r[g], 0);

/** Median over samples of a per-sample value. */
function med(samples: readonly MemSample[] | undefined, f: (s: MemSample) => number): number {
  return median((samples ?? []).map(f));
}

const mibOfKiB = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;
const ms = (x: number): string => (x >= 100 ? x.toFixed(0) : x.toFixed(1)) + ' ms';

/** "1 pod", "2 pods". */
function n(count: number, one: string, many = `${one}s`): string {
  return `${count} ${count === 1 ? one : many}`;
}

function verdict(ratio: number, target: number): string {
  return ratio <= target ? 'met' : '**missed**';
}

export function renderPodReport(r: PodResults): string {
  const c = r.counts;
  const lines: string[] = [];
  const where = r.fsMode === 'host' ? ", runtimes' roots on the host filesystem" : '';
  lines.push(
    `### Pods and containers${where}, measured ${r.startedAt.toISOString().replace(/\.\d+Z$/, 'Z')}`,
    '',
  );
  lines.push(
    `Command: \`${r.command}\` (${n(c.runs, 'sequential run')} and ${n(c.rounds, 'batch', 'batches')} of ` +
      `${c.conc} concurrent calls per runtime and workload after ${n(c.warmup, 'warm-up')}; memory with ` +
      `${n(c.memPods, 'pod')}; ${n(c.listCalls, 'ListContainers call')} with ${c.listContainers} containers).`,
    '',
  );
  const firstLine = (s: string): string => s.split('\n')[0] ?? '';
  lines.push(
    ...machine(r.repoRoot, r.fs),
    `- state dirs (sockets, bundles, skiff's namespace pins) on a tmpfs, as /run is on a node; ` +
      `${firstLine(output('conmon', ['--version']))}; containernetworking-plugins ` +
      (output('dpkg-query', ['-W', '-f', '${Version}', 'containernetworking-plugins']) || '?'),
    `- pod networks: skiff ${r.networks.skiff}; containerd ${r.networks.containerd}; both bridge ` +
      '(host-local IPAM, no masquerade) + portmap; lo brought up apart from the list (containerd: the ' +
      'loopback plugin; skiff: `ip link set lo up` in its namespace helper)',
    `- containerd's sandbox image: ${r.pause}; skiff runs no infra process (no \`sandbox_image\`: ` +
      `namespaces pinned by bind mounts); processes found in the ${c.memPods} pods' network namespaces ` +
      `besides the containers: skiff ${r.infraSeen.get('skiff') ?? '?'}, containerd ${r.infraSeen.get('containerd') ?? '?'}`,
    `- starting a process from Node.js here: \`child_process.spawn('/bin/true')\` blocks the calling thread ` +
      `${r.spawnMs.blockMs.toFixed(1)} ms and the process has exited after ${r.spawnMs.exitMs.toFixed(1)} ms (medians of 20, ` +
      'measured in the bench process); through skiff-helper, as skiff starts its helper processes, ' +
      `the process has exited after ${r.spawnMs.helperExitMs.toFixed(1)} ms and the calling thread is not blocked`,
    `- load average (1/5/15 min) ${r.loadBefore} before, ${r.loadAfter} after; other work on the machine ` +
      '(CPU time of processes that are not the bench, its daemons, their monitors or children; in ' +
      "parentheses that of orphans reaped by init, ours and others' mixed) per phase: " +
      Object.entries(r.noise)
        .map(
          ([k, n]) => `${k} ${n.otherS.toFixed(1)} s (${n.orphansS.toFixed(1)} s) in ${n.wallS.toFixed(0)} s`,
        )
        .join('; '),
  );
  const worst = Math.max(0, ...Object.values(r.noise).map((n) => n.otherS / n.wallS));
  if (worst > NOISY_SHARE) {
    lines.push(
      `- **noisy run**: other work took ${(100 * worst).toFixed(0)}% of a core on average during a phase; ` +
        'the runtimes were measured alternately, so the ratios are fairer than the absolute times',
    );
  }
  lines.push('');

  const row = (what: string, sk: number, cd: number, fmt: (x: number) => string, target?: number): string => {
    const ratio = sk / cd;
    const t = target === undefined ? '' : `≤ ${target.toFixed(2)}`;
    const v = target === undefined ? '' : verdict(ratio, target);
    return `| ${what} | ${fmt(sk)} | ${fmt(cd)} | ${ratio.toFixed(2)} | ${t} | ${v} |`;
  };
  const pct = (m: Map<RuntimeName, Percentiles>, rt: RuntimeName, k: 'p50' | 'p99'): number =>
    m.get(rt)?.[k] ?? NaN;
  lines.push(
    '| measurement | skiff | containerd | skiff/containerd | target | met? |',
    '|---|---:|---:|---:|---|---|',
  );
  const latencyRows = (label: string, m: Map<RuntimeName, Percentiles>, target: number): void => {
    lines.push(row(`${label}, p50`, pct(m, 'skiff', 'p50'), pct(m, 'containerd', 'p50'), ms, target));
    lines.push(row(`${label}, p99`, pct(m, 'skiff', 'p99'), pct(m, 'containerd', 'p99'), ms));
  };
  latencyRows(`RunPodSandbox, sequential (×${c.runs})`, r.runp.seq, TARGET_RUNP_RATIO);
  latencyRows(`RunPodSandbox, ${c.conc} concurrent (×${c.rounds})`, r.runp.conc, TARGET_RUNP_RATIO);
  latencyRows(`pod to running container, sequential (×${c.runs})`, r.start.seq, TARGET_START_RATIO);
  latencyRows(
    `pod to running container, ${c.conc} concurrent (×${c.rounds})`,
    r.start.conc,
    TARGET_START_RATIO,
  );
  const memTotal = (rt: RuntimeName, kind: 'rssKiB' | 'pssKiB', which: 'idle' | 'loaded'): number =>
    med(r[which].get(rt), (s) => total(s[kind]));
  const perPod = (rt: RuntimeName, kind: 'rssKiB' | 'pssKiB'): number =>
    (memTotal(rt, kind, 'loaded') - memTotal(rt, kind, 'idle')) / c.memPods;
  for (const [kind, label] of [
    ['rssKiB', 'RSS'],
    ['pssKiB', 'PSS'],
  ] as const) {
    lines.push(
      row(
        `memory with ${c.memPods} pods, ${label} summed`,
        memTotal('skiff', kind, 'loaded'),
        memTotal('containerd', kind, 'loaded'),
        mibOfKiB,
        TARGET_MEMORY_RATIO,
      ),
    );
  }
  for (const [kind, label] of [
    ['rssKiB', 'RSS'],
    ['pssKiB', 'PSS'],
  ] as const) {
    lines.push(row(`memory per pod, ${label}`, perPod('skiff', kind), perPod('containerd', kind), mibOfKiB));
  }
  for (const [kind, label] of [
    ['rssKiB', 'RSS'],
    ['pssKiB', 'PSS'],
  ] as const) {
    lines.push(
      row(
        `idle daemon, no pods, ${label}`,
        memTotal('skiff', kind, 'idle'),
        memTotal('containerd', kind, 'idle'),
        mibOfKiB,
      ),
    );
  }
  lines.push(
    row(
      `ListContainers, ${c.listContainers} containers, p50`,
      pct(r.list, 'skiff', 'p50'),
      pct(r.list, 'containerd', 'p50'),
      ms,
      TARGET_LIST_RATIO,
    ),
  );
  lines.push(
    row(
      `ListContainers, ${c.listContainers} containers, p99`,
      pct(r.list, 'skiff', 'p99'),
      pct(r.list, 'containerd', 'p99'),
      ms,
    ),
  );
  lines.push(
    row(
      'Version (empty RPC, after each ListContainers), p50',
      pct(r.version, 'skiff', 'p50'),
      pct(r.version, 'containerd', 'p50'),
      ms,
    ),
  );
  lines.push('');
  lines.push(
    'p50/p99: nearest rank (with 50–60 samples p99 is the slowest one). Concurrent: every call of a batch ' +
      'timed from the batch start; all batches pooled. Memory: the median of ' +
      `${r.loaded.get('skiff')?.length ?? 0} samples 1 s apart, 10 s after the last pod started; ` +
      '"per pod" = (total with the pods − idle total) / pods. The containers\' own processes (`sleep`) are ' +
      'not counted for either runtime.',
    '',
  );

  lines.push(
    `Pod to running container, sequential, by call (medians of ${c.runs}); skiff's CNI ADD in its sequential ` +
      `RunPodSandbox runs (bridge, portmap, from its log): median ${median(r.skiffCniMs).toFixed(0)} ms ` +
      `(${r.skiffCniMs.length} pods):`,
    '',
    '| call | skiff | containerd | skiff/containerd |',
    '|---|---:|---:|---:|',
  );
  for (const step of Object.keys(r.startSteps.get('skiff') ?? {})) {
    const sk = median(r.startSteps.get('skiff')?.[step] ?? []);
    const cd = median(r.startSteps.get('containerd')?.[step] ?? []);
    lines.push(`| ${step} | ${ms(sk)} | ${ms(cd)} | ${(sk / cd).toFixed(2)} |`);
  }
  lines.push('');

  lines.push(
    `Memory with ${c.memPods} pods by process kind (median sample; RSS / PSS; "each" is the group's mean):`,
    '',
    '| runtime | process | count | RSS | PSS | RSS each | PSS each |',
    '|---|---|---:|---:|---:|---:|---:|',
  );
  const names: Record<RuntimeName, Record<MemGroup, string>> = {
    skiff: { daemon: 'skiff (node)', monitors: 'conmon, one per container', infra: 'infra (none)' },
    containerd: {
      daemon: 'containerd',
      monitors: 'containerd-shim-runc-v2, one per pod',
      infra: 'pause, one per pod',
    },
  };
  for (const rt of ['skiff', 'containerd'] as const) {
    const s = r.loaded.get(rt);
    for (const g of GROUPS) {
      const n = med(s, (x) => x.count[g]);
      const rss = med(s, (x) => x.rssKiB[g]);
      const pss = med(s, (x) => x.pssKiB[g]);
      lines.push(
        `| ${rt} | ${names[rt][g]} | ${n} | ${mibOfKiB(rss)} | ${mibOfKiB(pss)} | ` +
          `${n ? mibOfKiB(rss / n) : '–'} | ${n ? mibOfKiB(pss / n) : '–'} |`,
      );
    }
  }
  lines.push('');

  lines.push(
    `With ${c.listContainers} containers (${c.memPods} running, ${c.listContainers - c.memPods} created, not started):`,
    '',
    `- one ListContainersResponse: skiff ${r.responseBytes.get('skiff') ?? '?'} bytes, containerd ` +
      `${r.responseBytes.get('containerd') ?? '?'} bytes (encoded by the bench)`,
  );
  for (const rt of ['skiff', 'containerd'] as const) {
    const a = r.at500.get(rt);
    if (!a) continue;
    lines.push(
      `- ${rt}: runtime processes ${GROUPS.map((g) => `${names[rt][g].split(',')[0]} ×${a.sample.count[g]}`).join(', ')}: ` +
        `${mibOfKiB(total(a.sample.rssKiB))} RSS, ${mibOfKiB(total(a.sample.pssKiB))} PSS; ` +
        `\`runc init\` processes (a created container's init, waiting for start) ×${a.runcInit.count}: ` +
        `${mibOfKiB(a.runcInit.rssKiB)} RSS, ${mibOfKiB(a.runcInit.pssKiB)} PSS`,
    );
  }
  for (const rt of ['skiff', 'containerd'] as const) {
    const steps = r.setupS.get(rt) ?? {};
    lines.push(
      `- ${rt}, untimed setup and teardown (${SETUP_PARALLEL} calls at a time): ` +
        Object.entries(steps)
          .map(([k, v]) => `${k} ${v.toFixed(1)} s`)
          .join('; '),
    );
  }
  const batches = (m: Map<RuntimeName, number[]>): string =>
    (['skiff', 'containerd'] as const)
      .map((rt) => `${rt} ${(m.get(rt) ?? []).map((x) => (x / 1000).toFixed(2)).join(', ')} s`)
      .join('; ');
  lines.push(
    `- whole concurrent batches (all ${c.conc} done): RunPodSandbox ${batches(r.runp.concBatchMs)}; ` +
      `pod to running container ${batches(r.start.concBatchMs)}`,
    '',
  );

  lines.push('<details><summary>Every latency sample (ms, sorted)</summary>', '');
  lines.push('| workload | runtime | samples |', '|---|---|---|');
  const rawNames: Record<keyof PodResults['raw'], string> = {
    runSeq: 'RunPodSandbox, sequential',
    runConc: 'RunPodSandbox, concurrent',
    startSeq: 'pod to running container, sequential',
    startConc: 'pod to running container, concurrent',
    list: 'ListContainers',
    version: 'Version',
  };
  for (const k of Object.keys(rawNames) as (keyof PodResults['raw'])[]) {
    for (const rt of ['skiff', 'containerd'] as const) {
      const xs = [...(r.raw[k].get(rt) ?? [])].sort((a, b) => a - b);
      lines.push(`| ${rawNames[k]} | ${rt} | ${xs.map((x) => x.toFixed(x < 10 ? 1 : 0)).join(' ')} |`);
    }
  }
  lines.push('', '</details>');
  return lines.join('\n');
}
