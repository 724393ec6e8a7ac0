/**
 * Process, memory and filesystem helpers for the benchmarks: /proc readers (RSS, peak RSS, CPU time), a
 * child-process starter that records PIDs and stops by PID, mount cleanup under a directory, and disk
 * usage of a directory tree. Linux only; the memory and mount helpers need root.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { lstat, mkdir, readdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM, …); 0 when the process is gone. */
export function statusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return 0;
  }
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return m?.[1] ? Number(m[1]) : 0;
}

/** Resets the process's peak RSS (VmHWM) to its current RSS (proc(5), clear_refs "5"). */
export function resetPeakRss(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

let clkTck: number | undefined;

/** User and system CPU time of a process (all its threads), seconds (proc(5) stat fields 14 and 15). */
export function cpuTimes(pid: number): { user: number; sys: number } {
  clkTck ??= Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(fields[11]) / clkTck, sys: Number(fields[12]) / clkTck };
}

/** utime + stime of a process, seconds. */
export function cpuSeconds(pid: number): number {
  const t = cpuTimes(pid);
  return t.user + t.sys;
}

/** CPU time the whole machine spent busy (all CPUs, /proc/stat: everything but idle and iowait), seconds. */
export function machineBusySeconds(): number {
  clkTck ??= Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest time is inside user)
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / clkTck;
}

const PF_KTHREAD = 0x00200000;

/**
 * CPU ticks of every kernel thread by PID (proc(5) stat flags with PF_KTHREAD): kworkers writing back the
 * pull's data, the loop device's worker, and the like. Compare two with {@link kernelCpuSince}.
 */
export function kernelThreadTicks(): Map<number, number> {
  const ticks = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if ((Number(fields[6]) & PF_KTHREAD) === 0) continue;
    ticks.set(Number(name), Number(fields[11]) + Number(fields[12]));
  }
  return ticks;
}

/** Kernel-thread CPU seconds between two snapshots (threads that exited in between are not counted). */
export function kernelCpuSince(before: Map<number, number>, after: Map<number, number>): number {
  clkTck ??= Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
  let ticks = 0;
  for (const [pid, t] of after) ticks += Math.max(0, t - (before.get(pid) ?? 0));
  return ticks / clkTck;
}

/** This process's own CPU time (user + system), seconds. */
export function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** PIDs of the process's children (over all its threads), from /proc/<pid>/task/<tid>/children. */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) out.push(...text.split(' ').map(Number));
    }
  } catch {
    // the process or a thread is gone
  }
  return out;
}

/**
 * Samples VmRSS every `intervalMs` until stopped: the largest sample in KiB, and the children seen (a
 * helper process would hold memory VmRSS does not count).
 */
export function sampleRss(pid: number, intervalMs = 20): { stop(): { maxKiB: number; children: number[] } } {
  let max = statusKiB(pid, 'VmRSS');
  const children = new Set<number>();
  const timer = setInterval(() => {
    max = Math.max(max, statusKiB(pid, 'VmRSS'));
    for (const c of childPids(pid)) children.add(c);
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      return { maxKiB: Math.max(max, statusKiB(pid, 'VmRSS')), children: [...children] };
    },
  };
}

export interface Child {
  pid: number;
  /** Resolves with the exit code (or null after a signal). */
  exited: Promise<number | null>;
  alive(): boolean;
  /** SIGTERM, SIGKILL after `graceMs`; resolves when the process has exited. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts a long-running program in its own process group (so a Ctrl-C on the terminal reaches only the
 * bench, which then stops it in order), stdout and stderr appended to `logPath`.
 */
export function startChild(file: string, args: string[], logPath: string): Child {
  const fd = openSync(logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(file, args, { stdio: ['ignore', fd, fd], detached: true });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${file} (see ${logPath})`);
  let done = false;
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      done = true;
      resolve(code);
    });
    child.once('error', () => {
      done = true;
      resolve(null);
    });
  });
  let stopping: Promise<void> | undefined;
  return {
    pid,
    exited,
    alive: () => !done,
    stop(graceMs = 15_000) {
      stopping ??= (async () => {
        if (done) return;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
}

/** Is `pid` a live process whose command line contains `needle`? */
export function pidRuns(pid: number, needle: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(needle);
  } catch {
    return false;
  }
}

/** Mount points at or under any of `dirs`, deepest first (from /proc/self/mountinfo). */
export function mountsUnder(dirs: readonly string[]): string[] {
  const unescape = (s: string): string =>
    s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map(unescape)
    .filter((p) => dirs.some((d) => p === d || p.startsWith(`${d}/`)));
  return points.sort((a, b) => b.length - a.length);
}

/** Unmounts everything at or under `dirs` (lazily when busy); returns what is still mounted. */
export function unmountUnder(dirs: readonly string[]): string[] {
  for (const p of mountsUnder(dirs)) {
    const res = spawnSync('umount', [p], { encoding: 'utf8' });
    if (res.status !== 0) spawnSync('umount', ['-l', p]);
  }
  return mountsUnder(dirs);
}

/** Runs a program to completion; throws with its stderr when it fails. */
export function run(file: string, args: string[], timeoutMs = 120_000): void {
  const res = spawnSync(file, args, { encoding: 'utf8', timeout: timeoutMs });
  if (res.error) throw new Error(`${file} ${args.join(' ')}: ${res.error.message}`);
  if (res.status !== 0) {
    const why = res.signal ? `killed by ${res.signal}` : `exit status ${String(res.status)}`;
    throw new Error(`${file} ${args.join(' ')}: ${why}: ${res.stderr.trim()}`);
  }
}

/**
 * Makes a fresh journaled ext4 (mkfs defaults, inode tables and journal initialised up front so no
 * background ext4lazyinit runs during measurements) in a sparse file of `bytes` and loop-mounts it at
 * `dir`. `mount -o loop` sets autoclear: unmounting detaches the loop device.
 */
export async function mountScratchExt4(imagePath: string, dir: string, bytes: number): Promise<void> {
  await writeFile(imagePath, '');
  await truncate(imagePath, bytes);
  run('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', imagePath]);
  await mkdir(dir, { recursive: true });
  run('mount', ['-o', 'loop', imagePath, dir]);
}

/** Detaches loop devices whose backing file is under `dir`; returns those still attached. */
export function detachLoopsUnder(dir: string): string[] {
  const list = (): [string, string][] =>
    output('losetup', ['--list', '--noheadings', '--raw', '--output', 'NAME,BACK-FILE'])
      .split('\n')
      .map((l) => l.trim().split(' ') as [string, string])
      .filter(([dev, file]) => dev && file && (file === dir || file.startsWith(`${dir}/`)));
  for (const [dev] of list()) spawnSync('losetup', ['-d', dev]);
  return list().map(([dev, file]) => `${dev} (${file})`);
}

/** Bytes allocated on disk (st_blocks × 512) for everything under `dir`, and the number of entries. */
export async function diskUsage(dir: string): Promise<{ bytes: number; entries: number }> {
  let bytes = 0;
  let entries = 0;
  const walk = async (d: string): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(d);
    } catch {
      return;
    }
    for (const name of names) {
      const p = join(d, name);
      let st;
      try {
        st = await lstat(p);
      } catch {
        continue;
      }
      entries++;
      bytes += st.blocks * 512;
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return { bytes, entries };
}

/** Runs a program to completion and returns its trimmed stdout ('' when it fails to run). */
export function output(file: string, args: string[]): string {
  const res = spawnSync(file, args, { encoding: 'utf8', timeout: 10_000 });
  return res.status === 0 ? res.stdout.trim() : '';
}

/** sync(1): flush dirty pages so writeback from one run does not land in the next run's timing. */
export function syncDisks(): void {
  spawnSync('sync', [], { timeout: 120_000 });
}

/** Proportional set size of a process (smaps_rollup `Pss:`), KiB; 0 when the process is gone. */
export function pssKiB(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m?.[1] ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** The process's argv ([] when it is gone). */
export function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
  } catch {
    return [];
  }
}

/** Every PID in /proc. */
export function allPids(): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
}

/** Children, grandchildren, … of `pid` (from /proc/<pid>/task/<tid>/children), parents before children. */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = childPids(pid);
  while (queue.length) {
    const p = queue.shift()!;
    if (out.includes(p)) continue;
    out.push(p);
    queue.push(...childPids(p));
  }
  return out;
}

/** The inode of the process's network namespace (as `net:[N]` names it); undefined when it is gone. */
export function netnsInode(pid: number): number | undefined {
  try {
    const m = /^net:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/ns/net`));
    return m?.[1] ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** SIGKILL to `pid`, ignoring a process that is already gone. */
export function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/** The parent PID (proc(5) stat field 4); undefined when the process is gone. */
export function parentPid(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/** CPU ticks of one process including its reaped children (utime + stime + cutime + cstime). */
interface ProcTicks {
  /** proc(5) stat field 22: tells a process from a later one with the same PID. */
  start: string;
  ticks: number;
}

/** Every user-space process's CPU ticks (own and reaped children's), by PID; kernel threads left out. */
export function processTicks(): Map<number, ProcTicks> {
  const out = new Map<number, ProcTicks>();
  for (const pid of allPids()) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if ((Number(f[6]) & PF_KTHREAD) !== 0) continue;
    out.set(pid, {
      start: f[19] ?? '',
      ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]),
    });
  }
  return out;
}

/**
 * CPU seconds that processes alive at both snapshots spent between them (with the children they reaped),
 * leaving out `ours` and PID 1: other work on the machine. PID 1 reaps every orphan, ours included (conmon
 * and the shims daemonize), so its share is returned apart: `orphans`, ours and others' mixed.
 */
export function otherCpuSince(
  before: Map<number, ProcTicks>,
  after: Map<number, ProcTicks>,
  ours: ReadonlySet<number>,
): { other: number; orphans: number } {
  clkTck ??= Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
  let ticks = 0;
  let orphans = 0;
  for (const [pid, a] of after) {
    const b = before.get(pid);
    if (ours.has(pid) || b?.start !== a.start) continue;
    if (pid === 1) orphans += Math.max(0, a.ticks - b.ticks);
    else ticks += Math.max(0, a.ticks - b.ticks);
  }
  return { other: ticks / clkTck, orphans: orphans / clkTck };
}
