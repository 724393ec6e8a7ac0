/**
 * Mount helpers for snapshots: the mount a chain of layers needs (overlayfs, or a read-only bind for a
 * single layer), mounting and unmounting it with `mount(8)`/`umount(8)` through util/exec, and reading
 * /proc/self/mountinfo (for idempotence checks and leak checks).
 *
 * The kernel copies mount data into one page: everything after `-o` must fit in 4095 bytes (PAGE_SIZE
 * minus the NUL). containerd meets this twice: snapshot dirs have short numeric ids, and when the option
 * string is still too long it mounts from inside the lowerdirs' common parent with relative paths
 * (mount_linux.go, compactLowerdirOption). Skiff does both: ids are small integers (snapshots.ts), and
 * `mount` below mounts with that parent as its working directory when it must.
 *
 * Mounting is a mount(2) call made by skiff-helper (util/helper.ts) when it runs, so no process is
 * started per mount; `mount(8)`/`umount(8)` through util/exec otherwise.
 */
import { readFile } from 'node:fs/promises';
import { posix } from 'node:path';
import { messageOf, SkiffError } from '../errdefs.js';
import { run, stderrTail } from '../util/exec.js';
import { Helper } from '../util/helper.js';

/** What to mount, in containerd's mount.Mount shape (type, source, options). */
export interface Mount {
  /** A filesystem type, or `bind` for a bind mount (no filesystem type; `bind`/`rbind` in options). */
  type: 'overlay' | 'bind' | 'tmpfs';
  source: string;
  options: string[];
}

/** The most bytes of mount data the kernel accepts (one page, with its NUL). */
export const MAX_MOUNT_DATA = 4095;

const MOUNT_TIMEOUT_MS = 60_000;

/**
 * The mount for `lowerDirs` (top layer first, as overlayfs stacks them) with an optional writable
 * `upperDir` + `workDir` (same filesystem, both or neither). One lower dir and no upper is a read-only
 * bind mount: overlayfs needs at least two lower dirs without an upper, and a bind is cheaper anyway.
 */
export function overlayMount(lowerDirs: readonly string[], upperDir?: string, workDir?: string): Mount {
  if (lowerDirs.length === 0) throw new SkiffError('invalid-argument', 'overlay mount: no lower dirs');
  if ((upperDir === undefined) !== (workDir === undefined)) {
    throw new SkiffError('invalid-argument', 'overlay mount: upperdir and workdir go together');
  }
  for (const dir of [...lowerDirs, upperDir, workDir]) {
    // overlayfs splits lowerdir on ':' and the option string on ','; our paths never need escaping.
    if (dir !== undefined && (/[:,\\\n]/.test(dir) || !posix.isAbsolute(dir))) {
      throw new SkiffError(
        'invalid-argument',
        `overlay mount: ${JSON.stringify(dir)} is not an absolute path without ':' or ','`,
      );
    }
  }
  const first = lowerDirs[0] as string;
  if (lowerDirs.length === 1 && upperDir === undefined) {
    return { type: 'bind', source: first, options: ['ro', 'rbind'] };
  }
  const options: string[] = [];
  if (upperDir !== undefined && workDir !== undefined)
    options.push(`workdir=${workDir}`, `upperdir=${upperDir}`);
  options.push(`lowerdir=${lowerDirs.join(':')}`);
  return { type: 'overlay', source: 'overlay', options };
}

/**
 * Mounts `m` on `target` (an existing directory). Errors: `permission-denied` when the kernel says EPERM
 * (not root, or no CAP_SYS_ADMIN in this namespace); `invalid-argument` when the options cannot fit the
 * kernel's page even with relative lower dirs; `unknown` with mount's stderr otherwise.
 */
export async function mount(target: string, m: Mount): Promise<void> {
  let options = m.options;
  let cwd: string | undefined;
  if (m.type === 'overlay' && options.join(',').length > MAX_MOUNT_DATA) {
    const compacted = compactLowerDirs(options);
    if (compacted) ({ options, cwd } = compacted);
  }
  const data = options.join(',');
  if (data.length > MAX_MOUNT_DATA) {
    throw new SkiffError(
      'invalid-argument',
      `mount ${m.type} on ${target}: options are ${data.length} bytes, more than the kernel's ${MAX_MOUNT_DATA} (too many layers)`,
    );
  }
  const what = `mount ${m.type} on ${target}`;
  const fstype = m.type === 'bind' ? '' : m.type;
  const helper = Helper.shared();
  if (helper) {
    await mountSyscall(helper, fstype, m.source, target, options, cwd).catch((err: unknown) => {
      throw mountError(what, err);
    });
    return;
  }
  const args = [...(fstype ? ['-t', fstype] : []), '-o', data, m.source, target];
  const res = await run('mount', args, {
    timeoutMs: MOUNT_TIMEOUT_MS,
    ...(cwd !== undefined ? { cwd } : {}),
  });
  if (res.code === 0) return;
  const tail = stderrTail(res.stderr);
  if (/permission denied|must be superuser|operation not permitted/i.test(tail)) {
    throw new SkiffError('permission-denied', `${what}: ${tail}: mounting needs root (CAP_SYS_ADMIN)`);
  }
  throw new SkiffError('unknown', `${what}: mount exited with status ${String(res.code)}: ${tail}`);
}

/**
 * Unmounts `target`; a target that is not mounted (or does not exist) succeeds, so callers can run it
 * from any rollback. `lazy` detaches a busy mount (MNT_DETACH) instead of failing.
 */
export async function unmount(target: string, options: { lazy?: boolean } = {}): Promise<void> {
  const helper = Helper.shared();
  if (helper) {
    try {
      await helper.umount(target, options.lazy ? MNT_DETACH : 0);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // EINVAL: not a mount point; ENOENT: no such path. Either way nothing is mounted there.
      if ((code === 'EINVAL' || code === 'ENOENT') && !(await mountsUnder(target)).includes(target)) return;
      if (code === 'EBUSY') {
        throw new SkiffError(
          'failed-precondition',
          `unmount ${target}: target is busy (a process still uses it)`,
        );
      }
      throw mountError(`unmount ${target}`, err);
    }
  }
  const res = await run('umount', [...(options.lazy ? ['--lazy'] : []), target], {
    timeoutMs: MOUNT_TIMEOUT_MS,
  });
  if (res.code === 0) return;
  const tail = stderrTail(res.stderr);
  if (/not mounted|no mount point specified|no such file or directory/i.test(tail)) {
    if (!(await mountsUnder(target)).includes(target)) return;
  }
  const what = `unmount ${target}`;
  if (/target is busy/i.test(tail)) {
    throw new SkiffError('failed-precondition', `${what}: target is busy (a process still uses it)`);
  }
  if (/permission denied|must be superuser|operation not permitted/i.test(tail)) {
    throw new SkiffError('permission-denied', `${what}: ${tail}: unmounting needs root (CAP_SYS_ADMIN)`);
  }
  throw new SkiffError('unknown', `${what}: umount exited with status ${String(res.code)}: ${tail}`);
}

/** Mount points at or below `dir` (from /proc/self/mountinfo, field 5, octal escapes decoded). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const base = dir.replace(/\/+$/, '');
  const out: string[] = [];
  for (const line of info.split('\n')) {
    const field = line.split(' ')[4];
    if (field === undefined) continue;
    const point = field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (point === base || point.startsWith(`${base}/`)) out.push(point);
  }
  return out;
}

/**
 * containerd's compactLowerdirOption: rewrites `lowerdir=` relative to the lower dirs' longest common
 * directory, returned as the working directory to mount from. Undefined when there is nothing to gain.
 */
function compactLowerDirs(options: string[]): { options: string[]; cwd: string } | undefined {
  const index = options.findIndex((o) => o.startsWith('lowerdir='));
  const lower = options[index];
  if (lower === undefined) return undefined;
  const dirs = lower.slice('lowerdir='.length).split(':');
  if (dirs.length < 2) return undefined;
  let common = posix.dirname(dirs[0] as string);
  while (common !== '/' && !dirs.every((d) => d.startsWith(`${common}/`))) common = posix.dirname(common);
  if (common === '/') return undefined;
  const relative = dirs.map((d) => d.slice(common.length + 1));
  const rewritten = [...options];
  rewritten[index] = `lowerdir=${relative.join(':')}`;
  return { options: rewritten, cwd: common };
}

const MS = {
  ro: 0x1,
  nosuid: 0x2,
  nodev: 0x4,
  noexec: 0x8,
  sync: 0x10,
  remount: 0x20,
  dirsync: 0x80,
  noatime: 0x400,
  nodiratime: 0x800,
  bind: 0x1000,
  rec: 0x4000,
  unbindable: 0x20000,
  private: 0x40000,
  slave: 0x80000,
  shared: 0x100000,
  relatime: 0x200000,
  strictatime: 0x1000000,
} as const;
const MNT_DETACH = 2;

/**
 * mount(8)'s option words as mount(2) flags plus the filesystem's data string (what is not a flag).
 * `bind`/`rbind` set MS_BIND (and MS_REC); a read-only bind needs a second, remounting call (`remountRo`),
 * as mount(8) makes it.
 */
export function mountFlags(options: readonly string[]): { flags: number; data: string; remountRo: boolean } {
  let flags = 0;
  const data: string[] = [];
  for (const o of options) {
    switch (o) {
      case 'rw':
      case 'suid':
      case 'dev':
      case 'exec':
      case 'defaults':
        break;
      case 'bind':
        flags |= MS.bind;
        break;
      case 'rbind':
        flags |= MS.bind | MS.rec;
        break;
      case 'private':
      case 'slave':
      case 'shared':
      case 'unbindable':
        flags |= MS[o];
        break;
      case 'rprivate':
      case 'rslave':
      case 'rshared':
      case 'runbindable':
        flags |= MS[o.slice(1) as 'private'] | MS.rec;
        break;
      default:
        if (Object.hasOwn(MS, o) && o !== 'rec') flags |= MS[o as keyof typeof MS];
        else data.push(o);
    }
  }
  const remountRo = (flags & MS.bind) !== 0 && (flags & MS.ro) !== 0;
  if (remountRo) flags &= ~MS.ro;
  return { flags, data: data.join(','), remountRo };
}

/** One mount as mount(8) would make it from `options`, by system call through the helper. */
async function mountSyscall(
  helper: Helper,
  fstype: string,
  source: string,
  target: string,
  options: readonly string[],
  cwd = '',
): Promise<void> {
  const { flags, data, remountRo } = mountFlags(options);
  await helper.mount(source, target, fstype, flags, data, cwd);
  if (!remountRo) return;
  try {
    await helper.mount('', target, '', MS.remount | MS.bind | MS.ro, '');
  } catch (err) {
    await helper.umount(target, MNT_DETACH).catch(() => undefined);
    throw err;
  }
}

/** A helper mount/umount failure as a SkiffError that names the errno and, where we know it, the cause. */
function mountError(what: string, err: unknown): SkiffError {
  if (err instanceof SkiffError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (code === 'EPERM' || code === 'EACCES') {
    return new SkiffError('permission-denied', `${what}: ${code}: mounting needs root (CAP_SYS_ADMIN)`);
  }
  if (code === 'ENOENT') {
    return new SkiffError(
      'not-found',
      `${what}: ENOENT: the mount point or a source directory does not exist`,
    );
  }
  if (code === 'ENODEV') {
    return new SkiffError('failed-precondition', `${what}: ENODEV: the kernel does not have this filesystem`);
  }
  return new SkiffError('unknown', `${what}: ${code || messageOf(err)}`);
}
