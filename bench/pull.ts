/**
 * The image pull benchmark of `npm run bench` (run by bench/main.ts; `BENCH_ONLY=pull` runs it alone):
 * skiff vs containerd, reported as ratios (never part of `npm test`).
 *
 * Builds the workloads (bench/workloads.ts) once, pushes them to a loopback docker-registry, starts skiff
 * and containerd (CRI plugin) side by side on their own sockets and directories, then for each workload
 * alternates cold pulls between the two: before each pull the image and all its content and snapshots are
 * gone (RemoveImage, then the runtime's root is watched until its bytes are back to the empty-daemon
 * level; containerd's garbage collection runs inside RemoveImage), dirty pages are flushed (`sync`), and
 * the daemon's peak RSS is reset (clear_refs 5). Measured: wall time from the PullImage call to its
 * response (both runtimes answer after unpacking), the daemon's peak RSS (VmHWM) and CPU time.
 *
 * Prints the Markdown report and writes it into BENCHMARKS.md. Needs root, a build (`npm run build`; the
 * test fixtures it imports are compiled along with it, as tsc emits every file a compiled file imports),
 * and containerd, runc, docker-registry, skopeo, busybox-static and e2fsprogs.
 *
 * Both runtimes keep their roots on one scratch filesystem, by default (BENCH_FS=loop) a fresh journaled
 * ext4 in a loop-mounted file, so the numbers do not depend on the host filesystem's history and options
 * (this VM's ext4 has no journal, and then ext4 checks recently deleted inodes on every create, slowly), or
 * with BENCH_FS=host on the host's /var/lib.
 *
 * Env: BENCH_RUNS (default 5), BENCH_WARMUP (1), BENCH_WORKLOADS (comma list, default all), BENCH_FS,
 * BENCH_WRITE=0 (print only, leave BENCHMARKS.md alone), BENCH_SKIFF_NODE_ARGS (node flags for the skiff
 * daemon, e.g. "--cpu-prof --cpu-prof-dir=/tmp/skiff-prof" to profile its pulls; such a run is not a
 * measurement to publish).
 */
import { join } from 'node:path';
import { pushImage } from '../test/fixtures/image-builder.js';
import { type Registry, startRegistry } from '../test/fixtures/registry.js';
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
  removeBenchDirs,
  repoRoot,
  withCleanup,
} from './common.js';
import { type Runtime, startContainerd, startSkiff } from './daemons.js';
import {
  cpuSeconds,
  cpuTimes,
  diskUsage,
  kernelCpuSince,
  kernelThreadTicks,
  machineBusySeconds,
  resetPeakRss,
  sampleRss,
  selfCpuSeconds,
  statusKiB,
  syncDisks,
} from './proc.js';
import {
  type PullSample,
  type Results,
  type WorkloadFacts,
  key,
  renderReport,
  writeReport,
} from './report.js';
import { WORKLOADS, type Workload } from './workloads.js';

/** A removed image counts as gone once the runtime's root is back within this of its empty size. */
const FREED_SLACK_BYTES = 16 * 2 ** 20;
const FREE_TIMEOUT_MS = 60_000;
const PULL_DEADLINE_MS = 10 * 60_000;

function imageSpec(image: string) {
  return { image, annotations: {}, userSpecifiedImage: '', runtimeHandler: '', imageRef: '' };
}

/** Waits until the runtime's root is back to (about) its empty size after a RemoveImage. */
async function waitFreed(rt: Runtime, emptyBytes: number): Promise<void> {
  const deadline = Date.now() + FREE_TIMEOUT_MS;
  for (;;) {
    const { bytes } = await diskUsage(rt.root);
    if (bytes <= emptyBytes + FREED_SLACK_BYTES) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${rt.name}: ${rt.root} still holds ${bytes} bytes ${FREE_TIMEOUT_MS} ms after RemoveImage ` +
          `(empty: ${emptyBytes}); the image's content or snapshots were not freed`,
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** One cold pull: checks the image is absent, pulls it while measuring, then removes it and its bytes. */
async function coldPull(
  rt: Runtime,
  image: string,
  emptyBytes: number,
  registryPid: number,
): Promise<PullSample> {
  const before = await rt.cri.image.imageStatus({ image: imageSpec(image), verbose: false });
  if (before.image) throw new Error(`${rt.name}: ${image} is present before a cold pull`);
  syncDisks();

  const baselineRssKiB = statusKiB(rt.pid, 'VmRSS');
  resetPeakRss(rt.pid);
  const cpu0 = cpuTimes(rt.pid);
  const ours0 = cpuSeconds(registryPid) + selfCpuSeconds();
  const busy0 = machineBusySeconds();
  const kernel0 = kernelThreadTicks();
  const sampler = sampleRss(rt.pid);
  const t0 = performance.now();
  let imageRef: string;
  try {
    ({ imageRef } = await rt.cri.image.pullImage(
      { image: imageSpec(image), auth: undefined, sandboxConfig: undefined },
      { deadlineMs: PULL_DEADLINE_MS },
    ));
  } catch (err) {
    sampler.stop();
    throw new Error(
      `${rt.name}: PullImage ${image} failed: ${String(err)}\n--- ${rt.logPath} ---\n${await rt.logTail()}`,
    );
  }
  const wallMs = performance.now() - t0;
  const sampled = sampler.stop();
  const peakRssKiB = Math.max(statusKiB(rt.pid, 'VmHWM'), sampled.maxKiB);
  const cpu1 = cpuTimes(rt.pid);
  const cpuUserS = cpu1.user - cpu0.user;
  const cpuSysS = cpu1.sys - cpu0.sys;
  const ours = cpuSeconds(registryPid) + selfCpuSeconds() - ours0;
  const kernelCpuS = kernelCpuSince(kernel0, kernelThreadTicks());
  const otherCpuS = Math.max(0, machineBusySeconds() - busy0 - cpuUserS - cpuSysS - ours - kernelCpuS);

  const after = await rt.cri.image.imageStatus({ image: imageSpec(image), verbose: false });
  if (after.image?.id !== imageRef)
    throw new Error(`${rt.name}: ${image} not listed after PullImage returned ${imageRef}`);
  const { bytes: diskBytes } = await diskUsage(rt.root);

  await rt.cri.image.removeImage({ image: imageSpec(imageRef) });
  await waitFreed(rt, emptyBytes);
  return {
    wallMs,
    peakRssKiB,
    baselineRssKiB,
    cpuUserS,
    cpuSysS,
    diskBytes,
    kernelCpuS,
    otherCpuS,
    helpers: sampled.children.length,
  };
}

async function buildAndPush(workloads: readonly Workload[], registry: Registry): Promise<WorkloadFacts[]> {
  const facts: WorkloadFacts[] = [];
  for (const w of workloads) {
    const t0 = performance.now();
    const built = await w.build();
    const t1 = performance.now();
    await pushImage(built.image, registry.host, w.repoTag, { timeoutMs: 300_000 });
    log(
      `${w.name}: built in ${((t1 - t0) / 1000).toFixed(1)} s, pushed in ${((performance.now() - t1) / 1000).toFixed(1)} s ` +
        `(${built.image.layers.length} layers, ${built.files} files, ${(built.fileBytes / 2 ** 20).toFixed(1)} MiB, ` +
        `${(built.compressedBytes / 2 ** 20).toFixed(1)} MiB gzip)`,
    );
    facts.push({
      name: w.name,
      description: w.description,
      layers: built.image.layers.length,
      files: built.files,
      fileBytes: built.fileBytes,
      compressedBytes: built.compressedBytes,
    });
  }
  return facts;
}

const PULL_ENV = [
  'BENCH_ONLY',
  'BENCH_RUNS',
  'BENCH_WARMUP',
  'BENCH_WORKLOADS',
  'BENCH_FS',
  'BENCH_WRITE',
  'BENCH_SKIFF_NODE_ARGS',
] as const;

/** The image pull benchmark: writes the `pull` (or `pull-host-fs`) section of BENCHMARKS.md. */
export async function runPullBench(): Promise<void> {
  const startedAt = new Date();
  const runs = envInt('BENCH_RUNS', 5, 1);
  const warmup = envInt('BENCH_WARMUP', 1, 0);
  const names = (process.env.BENCH_WORKLOADS ?? '').split(',').filter(Boolean);
  const workloads = names.length ? WORKLOADS.filter((w) => names.includes(w.name)) : WORKLOADS;
  if (workloads.length === 0 || workloads.length !== (names.length || WORKLOADS.length)) {
    throw new Error(
      `BENCH_WORKLOADS=${names.join(',')}: known workloads are ${WORKLOADS.map((w) => w.name).join(', ')}`,
    );
  }
  const fsMode = fsModeFromEnv();
  const root = repoRoot();
  const skiffBin = join(root, 'dist', 'src', 'main.js');
  preflight('pull', skiffBin, fsMode, []);

  // Everything started is stopped in reverse order, on success, failure and SIGINT/SIGTERM alike.
  await withCleanup(removeBenchDirs, async (stops) => {
    await prepareDirs(fsMode);
    const registry = await startRegistry();
    stops.push('registry', () => registry.stop());
    log(`registry on ${registry.host}`);
    const facts = await buildAndPush(workloads, registry);

    const nodeArgs = (process.env.BENCH_SKIFF_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
    const skiff = await startSkiff(skiffBin, DIRS, nodeArgs);
    stops.push('skiff', () => skiff.stop());
    const containerd = await startContainerd(registry.host, DIRS);
    stops.push('containerd', () => containerd.stop());
    log(`skiff PID ${skiff.pid}, containerd PID ${containerd.pid}`);
    const empty = new Map<Runtime, number>();
    for (const rt of [skiff, containerd]) empty.set(rt, (await diskUsage(rt.root)).bytes);

    const samples = new Map<string, PullSample[]>();
    const loadBefore = loadAverage();
    for (const w of workloads) {
      const image = `${registry.host}/${w.repoTag}`;
      for (let i = 0; i < warmup + runs; i++) {
        // Alternate who goes first, so neither always follows the other's writeback or cache state.
        const order = i % 2 === 0 ? [skiff, containerd] : [containerd, skiff];
        for (const rt of order) {
          const s = await coldPull(rt, image, empty.get(rt) ?? 0, registry.pid);
          const label = i < warmup ? 'warm-up' : `run ${i - warmup + 1}/${runs}`;
          log(
            `${w.name} ${rt.name} ${label}: ${(s.wallMs / 1000).toFixed(2)} s, peak RSS ${(s.peakRssKiB / 1024).toFixed(1)} MiB, ` +
              `CPU ${s.cpuUserS.toFixed(2)} s user + ${s.cpuSysS.toFixed(2)} s sys, kernel threads ${s.kernelCpuS.toFixed(2)} s, other processes ${s.otherCpuS.toFixed(2)} s`,
          );
          if (i < warmup) continue;
          const k = key(w.name, rt.name);
          samples.set(k, [...(samples.get(k) ?? []), s]);
        }
      }
    }

    const results: Results = {
      repoRoot: root,
      fsMode,
      fs: fsDescription(fsMode),
      startedAt,
      loadBefore,
      loadAfter: loadAverage(),
      command: commandLine(PULL_ENV),
      runs,
      warmup,
      workloads: facts,
      samples,
    };
    const report = renderReport(results);
    process.stdout.write(`${report}\n`);
    if (process.env.BENCH_WRITE !== '0') {
      await writeReport(join(root, 'BENCHMARKS.md'), fsMode === 'loop' ? 'pull' : 'pull-host-fs', report);
      log('wrote BENCHMARKS.md');
    }
  });
}
