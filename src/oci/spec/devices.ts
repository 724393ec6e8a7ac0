/**
 * Device nodes for `linux.devices`: the host's whole /dev for a privileged container (containerd
 * `WithHostDevices` → `HostDevices`), and the CRI `devices` of a container (`WithDevices`), from
 * containerd's `pkg/oci/utils_unix.go` (getDevices, DeviceFromPath).
 *
 * The stat function is injectable so tests can describe device nodes in a plain temp dir (making real
 * ones needs root).
 */
import { lstat, readdir, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { SkiffError, errnoOf } from '../../errdefs.js';
import type { LinuxDevice } from './types.js';

/** The fields of a bigint lstat that classify a device node. */
export interface DeviceStat {
  mode: bigint;
  rdev: bigint;
  uid: bigint;
  gid: bigint;
}

export type StatFn = (path: string) => Promise<DeviceStat>;

const defaultStat: StatFn = (path) => lstat(path, { bigint: true });

const S_IFMT = 0o170000n;
const S_IFDIR = 0o040000n;
const S_IFCHR = 0o020000n;
const S_IFBLK = 0o060000n;

/** /dev subdirectories that hold no devices a container should get (containerd's skip list). */
const SKIPPED_DIRS = new Set(['pts', 'shm', 'fd', 'mqueue', '.lxc', '.lxd-mounts', '.udev']);

/** glibc's gnu_dev_major / gnu_dev_minor. */
export function majorMinor(rdev: bigint): { major: number; minor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return { major: Number(major), minor: Number(minor) };
}

/** The device at `path` (not following a final symlink), or undefined when it is not a char/block node. */
export async function deviceFromPath(
  path: string,
  stat: StatFn = defaultStat,
): Promise<LinuxDevice | undefined> {
  return toDevice(path, await stat(path));
}

function toDevice(path: string, st: DeviceStat): LinuxDevice | undefined {
  const fmt = st.mode & S_IFMT;
  // FIFOs are skipped like containerd does: a "device" FIFO is never what a caller means.
  const type = fmt === S_IFCHR ? 'c' : fmt === S_IFBLK ? 'b' : undefined;
  if (!type) return undefined;
  return {
    type,
    path,
    ...majorMinor(st.rdev),
    fileMode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
  };
}

/**
 * Every char and block device under `dir` (recursively), as container paths under `containerDir`
 * (default: the same paths). Skips /dev/console (the runtime provides the container's), pts/shm/fd/mqueue
 * and entries that vanish while walking.
 */
export async function listDevices(
  dir: string,
  containerDir: string = dir,
  stat: StatFn = defaultStat,
): Promise<LinuxDevice[]> {
  const out: LinuxDevice[] = [];
  for (const name of (await readdir(dir)).sort()) {
    const path = join(dir, name);
    let st: DeviceStat;
    try {
      st = await stat(path);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') continue;
      throw err;
    }
    if ((st.mode & S_IFMT) === S_IFDIR) {
      if (SKIPPED_DIRS.has(name)) continue;
      out.push(...(await listDevices(path, join(containerDir, name), stat)));
      continue;
    }
    if (name === 'console') continue;
    const dev = toDevice(join(containerDir, name), st);
    if (dev) out.push(dev);
  }
  return out;
}

/** The host's devices for a privileged container. */
export function hostDevices(stat: StatFn = defaultStat): Promise<LinuxDevice[]> {
  return listDevices('/dev', '/dev', stat);
}

/**
 * The devices for one CRI `Device`: `hostPath` (symlinks resolved, like containerd's
 * ResolveSymbolicLink) is a device node or a directory of them; `containerPath` '' means the host path.
 */
export async function devicesFor(
  hostPath: string,
  containerPath: string,
  stat: StatFn = defaultStat,
): Promise<LinuxDevice[]> {
  let resolved: string;
  try {
    resolved = await realpath(hostPath);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') {
      throw new SkiffError(
        'invalid-argument',
        `device "${hostPath}" does not exist on this node: fix the device's host path`,
      );
    }
    throw err;
  }
  const st = await stat(resolved);
  const target = containerPath || hostPath;
  if ((st.mode & S_IFMT) === S_IFDIR) return listDevices(resolved, target, stat);
  const dev = toDevice(target, st);
  if (!dev) {
    throw new SkiffError(
      'invalid-argument',
      `device "${hostPath}" is not a character or block device: point the device's host path at a device node`,
    );
  }
  return [dev];
}
