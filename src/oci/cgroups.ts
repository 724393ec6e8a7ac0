/**
 * Cgroup readers for CRI stats: where runc put a cgroup (cgroupfs or systemd naming) and what its
 * accounting files say, on cgroup v1 (one hierarchy per controller) and v2 (one unified hierarchy).
 *
 * Pure-ish: path arithmetic plus plain file reads under an injectable `root` (default /sys/fs/cgroup), so
 * unit tests build a fake tree in a temp dir. A cgroup that is not there (the container exited and runc
 * deleted it, or the controller is not mounted) reads as `undefined`, never as a throw: a stats figure is
 * not worth failing a kubelet poll for.
 *
 * Which files, and what they mean, follow containerd's CRI stats (internal/cri/server/container_stats_list.go
 * over containerd/cgroups) so kubelet sees the same numbers from skiff as from containerd:
 *   v1: cpuacct.usage (ns); memory.usage_in_bytes, memory.limit_in_bytes, memory.stat total_* (hierarchical);
 *       pids.current
 *   v2: cpu.stat usage_usec; memory.current, memory.max, memory.stat; pids.current; {cpu,memory,io}.pressure
 */
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { posix } from 'node:path';
import { SkiffError } from '../errdefs.js';

export type CgroupDriver = 'systemd' | 'cgroupfs';

export const DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup';

export interface CgroupLocation {
  /** cgroup v2 (unified) rather than v1. */
  v2: boolean;
  /** Where the hierarchies are mounted; tests point this at a fake tree. */
  root?: string;
}

/** A cgroup's directories: its path inside a hierarchy and, per controller used for stats, its dir. */
export interface CgroupDirs {
  /** The path inside every hierarchy, e.g. `/kubepods.slice/kubepods-pod1.slice/skiff-abc.scope`. */
  path: string;
  /** Where cpuacct.usage (v1) or cpu.stat (v2) is. */
  cpu: string;
  memory: string;
  pids: string;
}

/** One line of a PSI file (Documentation/accounting/psi.rst): averages in %, `total` in microseconds. */
export interface PsiLine {
  avg10: number;
  avg60: number;
  avg300: number;
  /** Total stall time in µs, as the kernel reports it (CRI wants ns: multiply by 1000). */
  total: bigint;
}

/** `some` and `full` lines; `full` is absent for cpu before Linux 5.13. */
export interface Psi {
  some?: PsiLine;
  full?: PsiLine;
}

export interface CgroupStats {
  cpu: { usageCoreNanoSeconds: bigint };
  memory: {
    usageBytes: bigint;
    /** usage − inactive file cache: what kubelet evicts on (cAdvisor's and containerd's definition). */
    workingSetBytes: bigint;
    rssBytes: bigint;
    pageFaults: bigint;
    majorPageFaults: bigint;
    /** undefined when unlimited. */
    limitBytes: bigint | undefined;
  };
  /** Absent when the pids controller is not there (not mounted on v1, not enabled on v2). */
  pids?: { current: bigint };
  /** cgroup v2 only, and only on kernels with PSI enabled (containerd: "cgroupv1 doesn't have … PSI"). */
  psi?: { cpu?: Psi; memory?: Psi; io?: Psi };
}

/**
 * Beyond this a memory limit means "unlimited": v1 reports PAGE_COUNTER_MAX rounded to pages
 * (9223372036854771712), not 2^63−1. containerd's isMemoryUnlimited uses the same bound (1 << 62).
 */
const UNLIMITED = 1n << 62n;

/**
 * runc's systemd driver's `ExpandSlice` (libcontainer/cgroups/systemd/common.go): `a-b-c.slice` is
 * `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root. Names must end in `.slice`, contain no `/` and no
 * empty dash-separated component.
 */
export function expandSlice(slice: string): string {
  const suffix = '.slice';
  const invalid = () =>
    new SkiffError('invalid-argument', `invalid systemd slice name "${slice}": expected name.slice`);
  if (slice.length <= suffix.length || !slice.endsWith(suffix) || slice.includes('/')) throw invalid();
  const name = slice.slice(0, -suffix.length);
  if (name === '-') return '/';
  let path = '';
  let prefix = '';
  for (const component of name.split('-')) {
    if (component === '') throw invalid();
    path += `/${prefix}${component}${suffix}`;
    prefix += `${component}-`;
  }
  return path;
}

/**
 * The cgroup's path inside a hierarchy, as runc derives it from the spec's `linux.cgroupsPath`:
 *
 * - cgroupfs: the path itself, anchored at the hierarchy root (`..` cannot climb above it).
 * - systemd `slice:prefix:name` (runc: exactly three parts): `ExpandSlice(slice)/prefix-name.scope`, or
 *   `…/name` when name is itself a `.slice` (runc getUnitName); an empty slice is `system.slice` (runc's
 *   default for a non-rootless container). A bare `name.slice` (a pod's cgroup_parent) expands alone.
 *
 * runc also strips a trailing `init.scope` of PID 1's own cgroup from the v1 mount path; skiff assumes the
 * usual host where PID 1 sits at the root of each hierarchy.
 */
export function cgroupPath(cgroupsPath: string, driver: CgroupDriver): string {
  if (driver === 'cgroupfs') return posix.resolve('/', cgroupsPath);
  if (!cgroupsPath.includes(':')) return expandSlice(cgroupsPath);
  const parts = cgroupsPath.split(':');
  if (parts.length !== 3) {
    throw new SkiffError(
      'invalid-argument',
      `invalid systemd cgroupsPath "${cgroupsPath}": expected "slice:prefix:name"`,
    );
  }
  const [slice = '', prefix = '', name = ''] = parts;
  const unit = name.endsWith('.slice') ? name : `${prefix}-${name}.scope`;
  if (unit.includes('/')) {
    throw new SkiffError('invalid-argument', `invalid systemd unit name "${unit}" in "${cgroupsPath}"`);
  }
  return posix.join(expandSlice(slice || 'system.slice'), unit);
}

/** The cgroup's directories for the stats controllers, on v1 (per-controller mounts) or v2. */
export function cgroupDirs(
  cgroupsPath: string,
  driver: CgroupDriver,
  where: CgroupLocation = { v2: false },
): CgroupDirs {
  const root = where.root ?? DEFAULT_CGROUP_ROOT;
  const path = cgroupPath(cgroupsPath, driver);
  if (where.v2) {
    const dir = posix.join(root, path);
    return { path, cpu: dir, memory: dir, pids: dir };
  }
  // Debian mounts cpu,cpuacct together with `cpu` and `cpuacct` symlinks; other hosts mount them apart.
  // `cpuacct` names the accounting controller either way.
  return {
    path,
    cpu: posix.join(root, 'cpuacct', path),
    memory: posix.join(root, 'memory', path),
    pids: posix.join(root, 'pids', path),
  };
}

/**
 * Reads a cgroup's CPU, memory, pids and (v2) PSI accounting. undefined when the cgroup is not there: its
 * CPU or memory files are missing (never created, already deleted, or the controller absent).
 */
export async function readCgroupStats(
  cgroupsPath: string,
  driver: CgroupDriver,
  where: CgroupLocation,
): Promise<CgroupStats | undefined> {
  const dirs = cgroupDirs(cgroupsPath, driver, where);
  return where.v2 ? readV2(dirs) : readV1(dirs);
}

async function readV1(d: CgroupDirs): Promise<CgroupStats | undefined> {
  const [usage, memUsage, memLimit, memStat, pids] = await Promise.all([
    readOptional(posix.join(d.cpu, 'cpuacct.usage')),
    readOptional(posix.join(d.memory, 'memory.usage_in_bytes')),
    readOptional(posix.join(d.memory, 'memory.limit_in_bytes')),
    readOptional(posix.join(d.memory, 'memory.stat')),
    readOptional(posix.join(d.pids, 'pids.current')),
  ]);
  if (usage === undefined || memUsage === undefined || memStat === undefined) return undefined;
  const stat = parseFlatKeyed(memStat);
  const usageBytes = parseCounter(memUsage);
  // total_* are hierarchical (this cgroup and its descendants), which is what a pod cgroup needs and
  // equals the local figure for a leaf; containerd reads the same keys.
  const limit = memLimit === undefined ? undefined : parseCounter(memLimit);
  return {
    cpu: { usageCoreNanoSeconds: parseCounter(usage) },
    memory: {
      usageBytes,
      workingSetBytes: workingSet(usageBytes, stat.get('total_inactive_file') ?? 0n),
      rssBytes: stat.get('total_rss') ?? 0n,
      pageFaults: stat.get('total_pgfault') ?? 0n,
      majorPageFaults: stat.get('total_pgmajfault') ?? 0n,
      limitBytes: limit === undefined || limit >= UNLIMITED ? undefined : limit,
    },
    pids: pids === undefined ? undefined : { current: parseCounter(pids) },
  };
}

async function readV2(d: CgroupDirs): Promise<CgroupStats | undefined> {
  const dir = d.cpu;
  const [cpuStat, memCurrent, memMax, memStat, pids, cpuP, memP, ioP] = await Promise.all([
    readOptional(posix.join(dir, 'cpu.stat')),
    readOptional(posix.join(dir, 'memory.current')),
    readOptional(posix.join(dir, 'memory.max')),
    readOptional(posix.join(dir, 'memory.stat')),
    readOptional(posix.join(dir, 'pids.current')),
    readOptional(posix.join(dir, 'cpu.pressure')),
    readOptional(posix.join(dir, 'memory.pressure')),
    readOptional(posix.join(dir, 'io.pressure')),
  ]);
  if (cpuStat === undefined || memCurrent === undefined || memStat === undefined) return undefined;
  const stat = parseFlatKeyed(memStat);
  const usageBytes = parseCounter(memCurrent);
  const max = memMax?.trim();
  const limit = max === undefined || max === 'max' ? undefined : parseCounter(max);
  const psi = { cpu: parsePsi(cpuP), memory: parsePsi(memP), io: parsePsi(ioP) };
  return {
    // cgroup-v2.rst: cpu.stat usage_usec is in microseconds.
    cpu: { usageCoreNanoSeconds: (parseFlatKeyed(cpuStat).get('usage_usec') ?? 0n) * 1000n },
    memory: {
      usageBytes,
      workingSetBytes: workingSet(usageBytes, stat.get('inactive_file') ?? 0n),
      // cAdvisor and containerd report anon as RSS on v2 (there is no "rss" key).
      rssBytes: stat.get('anon') ?? 0n,
      pageFaults: stat.get('pgfault') ?? 0n,
      majorPageFaults: stat.get('pgmajfault') ?? 0n,
      limitBytes: limit === undefined || limit >= UNLIMITED ? undefined : limit,
    },
    pids: pids === undefined ? undefined : { current: parseCounter(pids) },
    psi: psi.cpu || psi.memory || psi.io ? psi : undefined,
  };
}

/** usage − inactive file, floored at 0 (the two files are not read atomically). */
function workingSet(usage: bigint, inactiveFile: bigint): bigint {
  return inactiveFile < usage ? usage - inactiveFile : 0n;
}

/**
 * A file's text, or undefined when the cgroup or the file is not there. ENODEV: reading a file of a cgroup
 * removed while it was open; EOPNOTSUPP: the *.pressure files of a kernel booted with psi=0 exist but
 * refuse reads.
 */
async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (
      code === 'ENOENT' ||
      code === 'ENOTDIR' ||
      code === 'ENODEV' ||
      code === 'EOPNOTSUPP' ||
      code === 'ENOTSUP'
    ) {
      return undefined;
    }
    throw err;
  }
}

/** A single-value file (`123\n`); non-numeric content (`max`) is 0. */
function parseCounter(text: string): bigint {
  const t = text.trim();
  return /^\d+$/.test(t) ? BigInt(t) : 0n;
}

/** cgroup-v2.rst "flat keyed" files (`key value` per line), as memory.stat and cpu.stat are on v1 and v2. */
export function parseFlatKeyed(text: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined && /^\d+$/.test(value)) out.set(key, BigInt(value));
  }
  return out;
}

/** `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` / `full …` (psi.rst); undefined for no text. */
export function parsePsi(text: string | undefined): Psi | undefined {
  if (text === undefined) return undefined;
  const psi: Psi = {};
  for (const line of text.split('\n')) {
    const [kind, ...fields] = line.trim().split(/\s+/);
    if (kind !== 'some' && kind !== 'full') continue;
    const kv = new Map(fields.map((f) => f.split('=', 2) as [string, string | undefined]));
    const num = (k: string) => Number(kv.get(k) ?? '0') || 0;
    const total = kv.get('total') ?? '0';
    psi[kind] = {
      avg10: num('avg10'),
      avg60: num('avg60'),
      avg300: num('avg300'),
      total: /^\d+$/.test(total) ? BigInt(total) : 0n,
    };
  }
  return psi.some || psi.full ? psi : undefined;
}

/**
 * Moves `pid` into the cgroup `cgroupsPath` (a cgroupfs path or a systemd slice, expanded as above),
 * creating it where missing: on v2 the one hierarchy; on v1 every mounted controller hierarchy except
 * the unified one (as runc's cgroupfs manager joins them all). Used for the pod's infra process, which
 * belongs in the pod cgroup kubelet made (`cgroup_parent`), like containerd's pause container.
 */
export async function joinCgroup(
  pid: number,
  cgroupsPath: string,
  driver: CgroupDriver,
  where: CgroupLocation,
): Promise<void> {
  const root = where.root ?? DEFAULT_CGROUP_ROOT;
  const path = cgroupPath(cgroupsPath, driver);
  const hierarchies = where.v2
    ? [root]
    : (await readdir(root, { withFileTypes: true }))
        .filter((e) => e.isDirectory() && e.name !== 'unified')
        .map((e) => posix.join(root, e.name));
  for (const h of hierarchies) {
    const dir = posix.join(h, path);
    try {
      await mkdir(dir, { recursive: true });
      if (!where.v2 && posix.basename(h) === 'cpuset') await inheritCpuset(h, path);
      await writeFile(posix.join(dir, 'cgroup.procs'), String(pid));
    } catch (err) {
      throw new SkiffError(
        'failed-precondition',
        `move process ${String(pid)} into cgroup ${dir}: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
}

/**
 * A new v1 cpuset cgroup starts with empty cpus and mems, and no process may join it (ENOSPC); copy them
 * down from the parent at each level, as runc's cpuset manager does.
 */
async function inheritCpuset(hierarchy: string, path: string): Promise<void> {
  let parent = hierarchy;
  for (const part of path.split('/').filter(Boolean)) {
    const dir = posix.join(parent, part);
    for (const file of ['cpuset.cpus', 'cpuset.mems']) {
      if ((await readFile(posix.join(dir, file), 'utf8')).trim() === '') {
        await writeFile(posix.join(dir, file), await readFile(posix.join(parent, file), 'utf8'));
      }
    }
    parent = dir;
  }
}
