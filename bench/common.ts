/**
 * What the benchmarks share: their directories (a scratch ext4 for the runtimes' roots, the state base),
 * preparing and removing them, environment parsing, logging, and a cleanup stack that stops everything
 * started, in reverse order, on success, failure and SIGINT/SIGTERM alike.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { RuntimeDirs } from './daemons.js';
import { detachLoopsUnder, mountScratchExt4, pidRuns, run, unmountUnder } from './proc.js';

/** Persistent side: the scratch filesystem's image and its mount point (the runtimes' roots and logs). */
export const BASE = '/var/lib/skiff-bench';
export const DIRS: RuntimeDirs = { rootBase: join(BASE, 'data'), stateBase: '/run/skiff-bench' };
export const BENCH_DIRS = [BASE, DIRS.stateBase];
/** Size of the sparse scratch filesystem. */
export const SCRATCH_FS_BYTES = 8 * 2 ** 30;

export type FsMode = 'loop' | 'host';

export function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

export function envInt(name: string, def: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name}=${raw}: want an integer ≥ ${min}`);
  return n;
}

export function fsModeFromEnv(): FsMode {
  const fsMode = process.env.BENCH_FS ?? 'loop';
  if (fsMode !== 'loop' && fsMode !== 'host') throw new Error(`BENCH_FS=${fsMode}: want loop or host`);
  return fsMode;
}

export function fsDescription(fsMode: FsMode): string {
  return fsMode === 'loop'
    ? `a fresh ext4 with a journal (mkfs.ext4 defaults) in a sparse file (${SCRATCH_FS_BYTES / 2 ** 30} GiB) on the host's /var/lib, loop-mounted`
    : "the host's /var/lib itself";
}

/** The repository root: the nearest ancestor of this file with skiff's package.json. */
export function repoRoot(): string {
  for (let d = import.meta.dirname; ; d = dirname(d)) {
    const pkg = join(d, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'skiff')
      return d;
    if (dirname(d) === d) throw new Error(`no skiff package.json above ${import.meta.dirname}`);
  }
}

/** Root, the built daemon, the Debian packages every bench needs, and mkfs.ext4 for BENCH_FS=loop. */
export function preflight(what: string, skiffBin: string, fsMode: FsMode, bins: readonly string[]): void {
  if (process.getuid?.() !== 0) throw new Error(`the ${what} benchmark needs root`);
  if (!existsSync(skiffBin)) throw new Error(`${skiffBin} is missing: run "npm run build" first`);
  for (const bin of [
    '/usr/bin/containerd',
    '/usr/bin/docker-registry',
    '/usr/bin/skopeo',
    '/bin/busybox',
    ...bins,
  ]) {
    if (!existsSync(bin))
      throw new Error(
        `${bin} is missing (apt-get install containerd docker-registry skopeo busybox-static runc conmon containernetworking-plugins)`,
      );
  }
  if (fsMode === 'loop' && !existsSync('/usr/sbin/mkfs.ext4') && !existsSync('/sbin/mkfs.ext4'))
    throw new Error('mkfs.ext4 is missing (apt-get install e2fsprogs), or run with BENCH_FS=host');
}

/** Throws when a daemon recorded in the state base still runs (another bench is running). */
export function refuseLiveBench(): void {
  if (!existsSync(DIRS.stateBase)) return;
  for (const f of readdirSync(DIRS.stateBase).filter((n) => n.endsWith('.pid'))) {
    const pid = Number(readFileSync(join(DIRS.stateBase, f), 'utf8').trim());
    if (pid > 0 && (pidRuns(pid, 'containerd') || pidRuns(pid, 'main.js'))) {
      throw new Error(`${join(DIRS.stateBase, f)}: PID ${pid} still runs; is another bench running?`);
    }
  }
}

/**
 * Refuses to run over a live bench; otherwise clears what a crashed one left. Then makes the runtimes'
 * root base: a fresh loop-mounted ext4 ('loop'), or a plain directory on the host's /var/lib ('host').
 * `stateTmpfs` mounts a tmpfs on the state base (as /run is on a node; on this VM /run is on the root ext4).
 */
export async function prepareDirs(fs: FsMode, stateTmpfs = false): Promise<void> {
  refuseLiveBench();
  await removeDirs();
  for (const d of BENCH_DIRS) await mkdir(d, { recursive: true });
  if (stateTmpfs) run('mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'skiff-bench-state', DIRS.stateBase]);
  if (fs === 'loop') await mountScratchExt4(join(BASE, 'fs.img'), DIRS.rootBase, SCRATCH_FS_BYTES);
  else await mkdir(DIRS.rootBase, { recursive: true });
}

export async function removeDirs(): Promise<void> {
  const left = [...unmountUnder(BENCH_DIRS), ...detachLoopsUnder(BASE)];
  if (left.length) throw new Error(`still mounted, not removing the bench dirs: ${left.join(', ')}`);
  for (const d of BENCH_DIRS) await rm(d, { recursive: true, force: true });
}

export function loadAverage(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

/** `VAR=value … npm run bench` with the given variables that are set, shell-quoted. */
export function commandLine(vars: readonly string[]): string {
  const quote = (v: string): string => (/^[\w.,:/=+-]*$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`);
  const env = vars
    .filter((k) => process.env[k] !== undefined)
    .map((k) => `${k}=${quote(process.env[k] ?? '')}`);
  return [...env, 'npm run bench'].join(' ');
}

/** A stack of things to undo; `cleanup()` runs them in reverse once, then the given final step. */
export interface Cleanup {
  push(what: string, stop: () => Promise<unknown>): void;
  cleanup(): Promise<void>;
}

/**
 * Runs `body` with a cleanup stack that is unwound on success, failure and SIGINT/SIGTERM (then the
 * process ends with that signal). `finalStep` runs last (e.g. removing the bench dirs); failures in it set
 * a non-zero exit code.
 */
export async function withCleanup(
  finalStep: () => Promise<void>,
  body: (c: Cleanup) => Promise<void>,
): Promise<void> {
  const stops: { what: string; stop: () => Promise<unknown> }[] = [];
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      for (const s of stops.reverse()) {
        await s.stop().catch((e: unknown) => {
          log(`stopping ${s.what}: ${String(e)}`);
          process.exitCode = 1;
        });
      }
      await finalStep().catch((e: unknown) => {
        log(String(e));
        process.exitCode = 1;
      });
    })());
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`${sig}: cleaning up`);
    void cleanup().finally(() => {
      process.kill(process.pid, sig); // the listener is gone (once): this ends the process with the signal
    });
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await body({ push: (what, stop) => stops.push({ what, stop }), cleanup });
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** Removes the bench dirs, then checks nothing stayed mounted or attached under them. */
export async function removeBenchDirs(): Promise<void> {
  await removeDirs();
  const left = [...unmountUnder(BENCH_DIRS), ...detachLoopsUnder(BASE)];
  if (left.length) throw new Error(`left mounted: ${left.join(', ')}`);
}
