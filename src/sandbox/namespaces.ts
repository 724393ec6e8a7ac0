/**
 * A pod's namespaces without a pause container (CRI-O's "drop infra" mode): the network, IPC and UTS
 * namespaces are created by `unshare(1)` and kept alive by bind mounts of their nsfs files under the
 * sandbox's state dir (`<state>/sandboxes/<id>/ns/{net,ipc,uts}`), so containers join them by path (the
 * OCI runtime spec's `linux.namespaces[].path`) and Stop/Remove unpin them by unmounting.
 *
 * Why no process is needed: namespaces(7), "The namespaces lifetime": a namespace lives while a process is
 * a member *or* while "an open file descriptor or a bind mount exists for a /proc/[pid]/ns/* file". unshare(1)
 * does exactly that with `--net=<file>`: a helper child bind-mounts the new namespace onto `<file>` (which
 * must exist) before the command runs, and the namespace survives the command's exit.
 *
 * A PID namespace is the exception (pid_namespaces(7): when its init dies, every other member is killed and
 * no process can be created in it any more), so pod-level PID sharing needs a process: `startInfra` runs
 * Debian's `catatonit -P` (pause mode) as PID 1 of a new PID namespace that joins the pinned ones.
 *
 * Unpinning. A mount namespace created while the pod lives (a systemd service with PrivateTmp=, any
 * `unshare -m`) gets a copy of every mount, pins included, and such a copy keeps the namespace alive after
 * we unmount ours. Removing the pin file is what reaches those copies: since Linux 3.18 unlinking a mount
 * point detaches the mounts on it in every other mount namespace, so unpin always unmounts *and* removes
 * the file, as containerd's netns pinning does (test/e2e/namespaces.test.ts checks it). Earlier versions
 * also made each pod's dir a shared self-bind (iproute2's /run/netns shape, from before 3.18): three
 * `mount` runs per pod for no gain on the kernels Debian 12 runs; unpin still undoes such a self-bind.
 *
 * One helper run per pod. `unshare` runs `sh -c` with a fixed script (the values are positional
 * parameters, never spliced into the text) that sets the hostname inside the new UTS namespace and, when
 * asked, brings `lo` up inside the new network namespace (what the CNI `loopback` plugin does), so that
 * RunPodSandbox starts one process from skiff where it took four (a Node.js spawn costs several ms of
 * skiff's only thread on this kind of VM; the shell's own children do not).
 *
 * Tools: util-linux (`unshare`, `nsenter`), mount (`mount`, `umount`), coreutils (`tee`), hostname
 * (`hostname`), iproute2 (`ip`), dash (`sh`) and catatonit, all spawned through util/exec with argument
 * arrays; the one shell script is a constant.
 */
import { spawn } from 'node:child_process';
import { mkdir, open, readFile, readlink, realpath, rmdir, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { SkiffError, isSkiffError, messageOf, errnoOf } from '../errdefs.js';
import { mount, unmount } from '../snapshot/mount.js';
import { findExecutable, run, stderrTail, type RunResult } from '../util/exec.js';

/** Absolute paths of the pinned namespace files (bind mounts of nsfs inodes), by namespace type. */
export interface PinnedNamespaces {
  net?: string;
  ipc?: string;
  uts?: string;
}

export interface PinOptions {
  /** A new network namespace (false: the pod uses the host's, CRI `NamespaceMode.NODE`). */
  net: boolean;
  /** A new IPC namespace (SysV IPC and POSIX message queues). */
  ipc: boolean;
  /** A new UTS namespace (hostname and NIS domain name). */
  uts: boolean;
  /**
   * Set in the new UTS namespace; ignored when `uts` is false (the pod shares the node's hostname).
   * Without it the new namespace keeps the copy of the node's hostname it starts with (uts_namespaces(7)).
   */
  hostname?: string;
  /**
   * Namespaced sysctls only (as kubelet and runc allow: `net.*` into the network namespace; `kernel.shm*`,
   * `kernel.msg*`, `kernel.sem`, `fs.mqueue.*` into the IPC namespace), in sysctl.d(5) syntax ("." or "/"
   * separators). Anything else would change the node and is refused.
   */
  sysctls?: Record<string, string>;
  /** Brings `lo` up in the new network namespace (as the CNI `loopback` plugin would); needs `net`. */
  loopbackUp?: boolean;
}

/** The pod's infra process: PID 1 of the pod's PID namespace, and that namespace pinned by path. */
export interface InfraProcess {
  /** catatonit's PID in skiff's PID namespace (it is 1 inside). */
  pid: number;
  /** /proc/<pid>/stat field 22 (clock ticks after boot, decimal): tells the infra from a reused PID. */
  startTime: string;
  /** `<dir>/pid`: a bind mount of the infra's PID namespace, for containers to join. */
  pidNs: string;
}

/** The namespace files `dir` may hold, in the order unpin removes them. */
const PIN_NAMES = ['pid', 'net', 'ipc', 'uts'] as const;

/** The Debian package of each tool, for the failed-precondition message when one is missing. */
const PACKAGES = {
  unshare: 'util-linux',
  nsenter: 'util-linux',
  mount: 'mount',
  hostname: 'hostname',
  ip: 'iproute2',
  sh: 'dash',
  tee: 'coreutils',
  catatonit: 'catatonit',
} as const;

type Tool = keyof typeof PACKAGES;

const RUN_TIMEOUT_MS = 30_000;
const INFRA_START_TIMEOUT_MS = 10_000;
const INFRA_STOP_TIMEOUT_MS = 10_000;
const POLL_MS = 10;
/** HOST_NAME_MAX, see gethostname(2). */
const HOST_NAME_MAX = 64;
/** A hostname is one or more RFC 1123 labels; this also keeps it from looking like an option to hostname(1). */
const HOSTNAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/i;

/**
 * Creates the requested namespaces, pins them under `dir` (created if missing) and applies the hostname
 * and sysctls. All inputs are validated before anything is made; on any later failure everything done so
 * far is undone (pins unmounted, files removed) before the error is thrown.
 *
 * Errors: `invalid-argument` for a bad hostname, a sysctl that is not namespaced, one whose namespace the
 * pod does not get, or one the kernel refuses; `already-exists` when `dir` already holds a pin;
 * `failed-precondition` naming the package of a missing tool; `permission-denied` without CAP_SYS_ADMIN;
 * `unknown` with the tool's stderr otherwise.
 */
export async function pinNamespaces(dir: string, opts: PinOptions): Promise<PinnedNamespaces> {
  const types = (['net', 'ipc', 'uts'] as const).filter((t) => opts[t]);
  const hostname = opts.uts ? opts.hostname : undefined;
  if (hostname !== undefined) validateHostname(hostname);
  const sysctls = Object.entries(opts.sysctls ?? {}).map(([name, value]) => parseSysctl(name, value, opts));
  if (types.length === 0) return {};

  const pinnedBefore = await nsfsMountPoints();
  const canonical = await realpath(dir).catch(() => dir);
  for (const t of types) {
    if (pinnedBefore.has(join(canonical, t))) {
      throw new SkiffError(
        'already-exists',
        `pin namespaces in "${dir}": "${join(dir, t)}" is already a pinned namespace (unpin it first)`,
      );
    }
  }
  const unshare = await requireTool('unshare');
  const loopbackUp = opts.net && opts.loopbackUp === true;
  // $1 hostname(1), $2 the hostname or empty, $3 ip(8), $4 "lo" or empty.
  const command = [
    await requireTool('sh'),
    '-c',
    'set -e; if [ -n "$2" ]; then "$1" "$2"; fi; if [ -n "$4" ]; then "$3" link set dev "$4" up; fi',
    'sh',
    hostname !== undefined ? await requireTool('hostname') : '',
    hostname ?? '',
    loopbackUp ? await requireTool('ip') : '',
    loopbackUp ? 'lo' : '',
  ];
  const nsenter = sysctls.length > 0 ? await requireTool('nsenter') : '';
  const tee = sysctls.length > 0 ? await requireTool('tee') : '';

  try {
    const real = await canonicalDir(dir);
    const pinned: PinnedNamespaces = {};
    for (const t of types) {
      const file = join(real, t);
      // unshare(1) binds onto an existing file; an empty regular file is the conventional mount point.
      await (await open(file, 'w', 0o444)).close();
      pinned[t] = file;
    }
    const res = await run(unshare, [...types.map((t) => `--${t}=${join(real, t)}`), '--', ...command], {
      timeoutMs: RUN_TIMEOUT_MS,
    });
    if (res.code !== 0) throw toolError(`create namespaces in "${dir}"`, 'unshare', res);
    const pinnedAfter = await nsfsMountPoints();
    for (const t of types) {
      if (!pinnedAfter.has(join(real, t))) {
        throw new SkiffError(
          'unknown',
          `pin namespaces in "${dir}": unshare exited 0 but "${t}" is not pinned`,
        );
      }
    }
    for (const s of sysctls) await writeSysctl(nsenter, tee, pinned, s);
    return pinned;
  } catch (err) {
    throw await withRollback(err, `pin namespaces in "${dir}"`, () => unpinNamespaces(dir));
  }
}

/**
 * Unpins every namespace file in `dir` (`pid`, `net`, `ipc`, `uts`: each unmounted, however many times it
 * is stacked, then removed), undoes the self-bind of `dir` and removes `dir` when it is then empty.
 * Idempotent and tolerant: a missing `dir`, a file that is not mounted, an already undone self-bind are all
 * fine. The unmounts are lazy (MNT_DETACH, as `ip netns delete` does): a process that still holds the file
 * open (a runtime joining the namespace) keeps the namespace, not our mount, alive.
 *
 * This does not stop an infra process (see `stopInfra`): a PID namespace lives while its init runs,
 * pinned or not.
 */
export async function unpinNamespaces(dir: string): Promise<void> {
  let real: string;
  try {
    real = await realpath(dir);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return;
    throw fsError(`unpin namespaces in "${dir}"`, err);
  }
  for (const name of PIN_NAMES) await unpinFile(join(real, name));
  for (
    let i = 0;
    i < 8 && (await readMountInfo()).some((m) => m.mountPoint === real && m.root !== '/');
    i++
  ) {
    await unmount(real, { lazy: true });
  }
  try {
    await rmdir(real);
  } catch (err) {
    const code = errnoOf(err);
    // ENOTEMPTY: something else lives there (not ours to delete); EBUSY: still a mount point of another kind.
    if (code !== 'ENOENT' && code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'EBUSY') {
      throw fsError(`unpin namespaces in "${dir}"`, err);
    }
  }
}

/** Mount points of nsfs files (pins), from one read of /proc/self/mountinfo. */
async function nsfsMountPoints(): Promise<Set<string>> {
  return new Set((await readMountInfo()).filter((m) => m.fsType === 'nsfs').map((m) => m.mountPoint));
}

/** True when an nsfs file is mounted at `path` (from /proc/self/mountinfo): a pinned namespace. */
export async function isPinned(path: string): Promise<boolean> {
  let real: string;
  try {
    real = await realpath(path);
  } catch {
    return false;
  }
  return (await readMountInfo()).some((m) => m.mountPoint === real && m.fsType === 'nsfs');
}

/**
 * Starts the pod's infra process: `catatonit -P` (pause mode: it only reaps and handles signals) as PID 1
 * of a new PID namespace, inside the pinned namespaces in `joinNs`, and pins that PID namespace at
 * `<dir>/pid`. The process is detached from skiff (its own session, stdio on /dev/null), so it outlives a
 * daemon restart; `startTime` lets recovery tell it from a process that reused its PID.
 *
 * The process tree is `unshare --fork --kill-child` (in skiff's PID namespace) with catatonit as its child;
 * `pid` is catatonit's, so `stopInfra` kills exactly the namespace's init (pid_namespaces(7): the kernel
 * then kills every other member), and unshare, which only waits for it, exits with it.
 */
export async function startInfra(dir: string, joinNs: PinnedNamespaces = {}): Promise<InfraProcess> {
  const what = `start infra process in "${dir}"`;
  if (await isPinned(join(dir, 'pid'))) {
    throw new SkiffError('already-exists', `${what}: "${join(dir, 'pid')}" is already a pinned namespace`);
  }
  const joins = (['net', 'ipc', 'uts'] as const).flatMap((t) => {
    const file = joinNs[t];
    return file === undefined ? [] : [{ t, file }];
  });
  for (const { file } of joins) {
    if (!(await isPinned(file))) {
      throw new SkiffError('failed-precondition', `${what}: "${file}" is not a pinned namespace`);
    }
  }
  const unshare = await requireTool('unshare');
  const catatonit = await requireTool('catatonit');
  const argv = [unshare, '--pid', '--fork', '--kill-child', '--', catatonit, '-P'];
  if (joins.length > 0) {
    argv.unshift(await requireTool('nsenter'), ...joins.map(({ t, file }) => `--${t}=${file}`), '--');
  }

  const real = await canonicalDir(dir);
  // A long-lived process, so not util/exec's run: detached, no pipes to us, nothing to wait for.
  const [file, ...args] = argv as [string, ...string[]];
  const child = spawn(file, args, {
    detached: true,
    stdio: 'ignore',
    cwd: '/',
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
  });
  let exited: string | undefined;
  child.once('exit', (code, signal) => {
    exited = signal !== null ? `was killed by ${signal}` : `exited with status ${String(code)}`;
  });
  child.once('error', (e) => {
    exited = `failed: ${e.message}`;
  });
  child.unref();
  const parentPid = child.pid;

  let pid: number | undefined;
  try {
    if (parentPid === undefined) {
      throw new SkiffError('unknown', `${what}: spawn ${file} failed`);
    }
    pid = await waitForInit(parentPid, () => exited, what);
    const pidNs = join(real, 'pid');
    await (await open(pidNs, 'w', 0o444)).close();
    await mount(pidNs, { type: 'bind', source: `/proc/${pid}/ns/pid`, options: ['bind'] });
    const startTime = await processStartTime(pid);
    if (startTime === undefined) throw new SkiffError('unknown', `${what}: catatonit (pid ${pid}) exited`);
    return { pid, startTime, pidNs };
  } catch (err) {
    throw await withRollback(err, what, async () => {
      // The pids are safe to signal: catatonit is unshare's unreaped child, and unshare ours until `exited`.
      if (pid !== undefined) killQuietly(pid);
      if (parentPid !== undefined && exited === undefined) killQuietly(parentPid);
      if (pid !== undefined) await waitGone(pid, undefined, what);
      await unpinFile(join(real, 'pid'));
    });
  }
}

/**
 * Pins the PID namespace of `pid` (a pause container's init) as `<dir>/pid`, for containers of a pod that
 * shares its PID namespace to join by path, as startInfra pins catatonit's.
 */
export async function pinPidNamespace(dir: string, pid: number): Promise<string> {
  const real = await canonicalDir(dir);
  const pidNs = join(real, 'pid');
  await (await open(pidNs, 'w', 0o444)).close();
  await mount(pidNs, { type: 'bind', source: `/proc/${pid}/ns/pid`, options: ['bind'] });
  return pidNs;
}

/**
 * Stops the infra process `pid` with SIGKILL (by PID, never by name), waits until it is gone (the kernel
 * then kills whatever else ran in its PID namespace) and unpins its PID namespace: `opts.pidNs` when given,
 * and any `.../pid` nsfs pin of that namespace found in /proc/self/mountinfo.
 *
 * Only the right process is signalled: with `opts.startTime`, a process whose start time differs (the PID
 * was reused after a restart or reboot) is left alone; without it, only a process named catatonit; and
 * when `opts.pidNs` is still pinned, the process must be that namespace's init. Idempotent: a process that
 * is gone, or a pin that is gone, is fine.
 */
export async function stopInfra(
  pid: number,
  opts: { startTime?: string; pidNs?: string } = {},
): Promise<void> {
  const what = `stop infra process ${pid}`;
  const pinFile = opts.pidNs === undefined ? undefined : await realpath(opts.pidNs).catch(() => undefined);
  const mounts = await readMountInfo();
  const pinnedNs = mounts.find((m) => m.mountPoint === pinFile && m.fsType === 'nsfs')?.root;
  const stat = await readStat(pid);
  let ns: string | undefined;
  if (
    stat !== undefined &&
    isRunningState(stat.state) &&
    (opts.startTime !== undefined ? stat.startTime === opts.startTime : stat.comm === 'catatonit')
  ) {
    // "pid:[<inode>]", the same text mountinfo shows as the root of a pin of that namespace.
    ns = await readlink(`/proc/${pid}/ns/pid`).catch(() => undefined);
    if (ns !== undefined && (pinnedNs === undefined || pinnedNs === ns)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (err) {
        if (errnoOf(err) === 'EPERM') {
          throw new SkiffError('permission-denied', `${what}: ${messageOf(err)}: skiff must run as root`);
        }
        if (errnoOf(err) !== 'ESRCH') throw new SkiffError('unknown', `${what}: ${messageOf(err)}`);
      }
      await waitGone(pid, stat.startTime, what);
    } else {
      ns = undefined;
    }
  }
  const pins = new Set<string>(pinFile === undefined ? [] : [pinFile]);
  for (const m of mounts) {
    if (ns !== undefined && m.fsType === 'nsfs' && m.root === ns && basename(m.mountPoint) === 'pid') {
      pins.add(m.mountPoint);
    }
  }
  for (const file of pins) await unpinFile(file);
}

/**
 * True when `pid` names a live process (not a zombie), and, given `startTime`, the same process that had
 * that start time (/proc/<pid>/stat field 22), so a PID reused after a crash or reboot does not count.
 */
export async function isAlive(pid: number, startTime?: string): Promise<boolean> {
  const stat = await readStat(pid);
  if (stat === undefined || !isRunningState(stat.state)) return false;
  return startTime === undefined || stat.startTime === startTime;
}

/**
 * /proc/<pid>/stat field 22 (starttime: clock ticks after boot) as its decimal text, an opaque token that
 * identifies a process together with its PID; undefined when there is no such process.
 */
export async function processStartTime(pid: number): Promise<string | undefined> {
  return (await readStat(pid))?.startTime;
}

// ---------------------------------------------------------------------------------------------------------
// sysctls

export type SysctlNamespace = 'net' | 'ipc';

interface Sysctl {
  name: string;
  /** Under /proc/sys, "/" separated. */
  path: string;
  value: string;
  ns: SysctlNamespace;
}

/**
 * The /proc/sys path of a sysctl name, per sysctl.d(5): "If the first separator is a slash, remaining
 * slashes and dots are left intact. If the first separator is a dot, dots and slashes are interchanged."
 * So `net.ipv4.conf.eth0/100.rp_filter` and `net/ipv4/conf/eth0.100/rp_filter` are the same file.
 */
export function sysctlPath(name: string): string {
  const first = /[./]/.exec(name)?.[0];
  const path = first === '.' ? name.replace(/[./]/g, (c) => (c === '.' ? '/' : '.')) : name;
  const segments = path.split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..' || /[\s\0]/.test(s))) {
    throw new SkiffError('invalid-argument', `set sysctl ${JSON.stringify(name)}: not a valid sysctl name`);
  }
  return path;
}

/**
 * The namespace a sysctl belongs to, or undefined when it is not namespaced (so setting it in a pod would
 * change the node). The list is kubelet's (pkg/kubelet/sysctl/namespace.go) and runc's: `net.*` is per
 * network namespace; `kernel.shm*`, `kernel.msg*`, `kernel.sem` and `fs.mqueue.*` per IPC namespace.
 */
export function sysctlNamespace(name: string): SysctlNamespace | undefined {
  const path = sysctlPath(name);
  if (path.startsWith('net/')) return 'net';
  if (path.startsWith('fs/mqueue/')) return 'ipc';
  if (/^kernel\/(shm[^/]*|msg[^/]*|sem)$/.test(path)) return 'ipc';
  return undefined;
}

function parseSysctl(name: string, value: string, opts: PinOptions): Sysctl {
  const what = `set sysctl ${JSON.stringify(name)}`;
  const path = sysctlPath(name);
  const ns = sysctlNamespace(name);
  if (ns === undefined) {
    throw new SkiffError(
      'invalid-argument',
      `${what}: not a namespaced sysctl, so a pod may not set it (allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)`,
    );
  }
  if (!opts[ns]) {
    throw new SkiffError(
      'invalid-argument',
      `${what}: the pod shares the node's ${ns === 'net' ? 'network' : 'IPC'} namespace, so it would change the node`,
    );
  }
  if (/[\n\0]/.test(value)) {
    throw new SkiffError('invalid-argument', `${what}: the value ${JSON.stringify(value)} spans lines`);
  }
  return { name, path, value, ns };
}

/**
 * Writes one sysctl inside the pod's namespace: `nsenter --net=<pin> -- tee /proc/sys/<path>`. The
 * /proc/sys/net and IPC tables are looked up in the namespaces of the process that opens the file
 * (Documentation/admin-guide/sysctl), so tee, having entered the pod's namespace, writes the pod's value
 * and leaves the node's alone. tee (coreutils, essential) instead of procps' sysctl: one fewer package,
 * and no second parser of the name.
 */
async function writeSysctl(nsenter: string, tee: string, pinned: PinnedNamespaces, s: Sysctl): Promise<void> {
  const what = `set sysctl ${JSON.stringify(s.name)} to ${JSON.stringify(s.value)}`;
  const file = pinned[s.ns];
  if (file === undefined) throw new SkiffError('internal', `${what}: no pinned ${s.ns} namespace`);
  const res = await run(nsenter, [`--${s.ns}=${file}`, '--', tee, `/proc/sys/${s.path}`], {
    input: `${s.value}\n`,
    timeoutMs: RUN_TIMEOUT_MS,
    maxOutputBytes: 64 * 1024,
  });
  if (res.code === 0) return;
  const tail = stderrTail(res.stderr);
  if (/no such file or directory/i.test(tail)) {
    throw new SkiffError(
      'invalid-argument',
      `${what}: no such sysctl in the pod's ${s.ns} namespace (not namespaced on this kernel, or misspelt)`,
    );
  }
  if (/invalid argument|numerical result out of range/i.test(tail)) {
    throw new SkiffError('invalid-argument', `${what}: the kernel refused the value: ${tail}`);
  }
  if (/permission denied|operation not permitted/i.test(tail)) {
    throw new SkiffError(
      'permission-denied',
      `${what}: ${tail}: read-only in a pod's namespace, or skiff is not root`,
    );
  }
  throw new SkiffError('unknown', `${what}: nsenter exited with status ${String(res.code)}: ${tail}`);
}

// ---------------------------------------------------------------------------------------------------------
// helpers

function validateHostname(hostname: string): void {
  if (hostname.length === 0 || hostname.length > HOST_NAME_MAX || !HOSTNAME_RE.test(hostname)) {
    throw new SkiffError(
      'invalid-argument',
      `set hostname ${JSON.stringify(hostname)}: not a hostname (RFC 1123 labels, at most ${HOST_NAME_MAX} characters)`,
    );
  }
}

async function requireTool(tool: Tool): Promise<string> {
  const path = await findExecutable(tool);
  if (path === undefined) {
    throw new SkiffError(
      'failed-precondition',
      `find executable "${tool}": not in PATH: install the Debian package "${PACKAGES[tool]}"`,
    );
  }
  return path;
}

/** Creates `dir`; returns its canonical path, the spelling /proc/self/mountinfo uses. */
async function canonicalDir(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return realpath(dir);
}

/** Unmounts whatever is stacked on `file` (lazily) and removes it; fine when neither exists. */
async function unpinFile(file: string): Promise<void> {
  for (let i = 0; i < 8 && (await readMountInfo()).some((m) => m.mountPoint === file); i++) {
    await unmount(file, { lazy: true });
  }
  try {
    await unlink(file);
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw fsError(`unpin "${file}"`, err);
  }
}

/**
 * Polls unshare's children until catatonit runs as PID 1 of the new PID namespace (the `NSpid` line of
 * /proc/<pid>/status ends in 1, see proc(5)); unshare forks, then the child execs catatonit.
 */
async function waitForInit(
  parentPid: number,
  exited: () => string | undefined,
  what: string,
): Promise<number> {
  const deadline = Date.now() + INFRA_START_TIMEOUT_MS;
  for (;;) {
    const status = exited();
    if (status !== undefined) {
      throw new SkiffError(
        'unknown',
        `${what}: the launcher (pid ${parentPid}) ${status} before catatonit started (its stderr goes to /dev/null; try the command by hand)`,
      );
    }
    for (const pid of await childrenOf(parentPid)) {
      const stat = await readStat(pid);
      if (stat?.comm !== 'catatonit') continue;
      const nspid = /^NSpid:\s*(.*)$/m.exec(await readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''));
      if (nspid?.[1]?.trim().split(/\s+/).at(-1) === '1') return pid;
    }
    if (Date.now() > deadline) {
      throw new SkiffError(
        'deadline-exceeded',
        `${what}: catatonit did not start within ${INFRA_START_TIMEOUT_MS} ms`,
      );
    }
    await sleep(POLL_MS);
  }
}

async function childrenOf(pid: number): Promise<number[]> {
  // /proc/<pid>/task/<tid>/children (proc(5), CONFIG_PROC_CHILDREN); unshare is single-threaded.
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  return text
    .split(/\s+/)
    .filter(Boolean)
    .map((s) => Number(s));
}

async function waitGone(pid: number, startTime: string | undefined, what: string): Promise<void> {
  const deadline = Date.now() + INFRA_STOP_TIMEOUT_MS;
  while (await isAlive(pid, startTime)) {
    if (Date.now() > deadline) {
      throw new SkiffError(
        'deadline-exceeded',
        `${what}: still alive ${INFRA_STOP_TIMEOUT_MS} ms after SIGKILL`,
      );
    }
    await sleep(POLL_MS);
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

interface ProcStat {
  comm: string;
  state: string;
  startTime: string;
}

/**
 * Parses /proc/<pid>/stat (proc(5)). The command name (field 2) is in parentheses and may itself hold
 * spaces and parentheses, so the fields after it are split from the last ')'.
 */
async function readStat(pid: number): Promise<ProcStat | undefined> {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  // rest[0] is field 3 (state), so field n is rest[n - 3].
  const rest = text.slice(close + 2).split(' ');
  const state = rest[0];
  const startTime = rest[22 - 3];
  if (state === undefined || startTime === undefined || !/^\d+$/.test(startTime)) return undefined;
  return { comm: text.slice(open + 1, close), state, startTime };
}

/** Zombie (Z) and dead (X, x) processes are gone for our purposes: they can neither run nor hold a namespace. */
function isRunningState(state: string): boolean {
  return state !== 'Z' && state !== 'X' && state !== 'x';
}

interface MountInfo {
  /** Field 4: the root of the mount within its filesystem ("/" unless a bind mount of a subtree or file). */
  root: string;
  /** Field 5, octal escapes decoded. */
  mountPoint: string;
  /** The first field after the " - " separator. */
  fsType: string;
}

/** /proc/self/mountinfo, per proc(5): `id parent major:minor root mountpoint options [optional...] - fstype source superoptions`. */
async function readMountInfo(): Promise<MountInfo[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const sep = fields.indexOf('-', 6);
    const root = fields[3];
    const mountPoint = fields[4];
    const fsType = fields[sep + 1];
    if (sep < 0 || root === undefined || mountPoint === undefined || fsType === undefined) continue;
    out.push({ root: unescapeMountInfo(root), mountPoint: unescapeMountInfo(mountPoint), fsType });
  }
  return out;
}

function unescapeMountInfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function toolError(what: string, tool: string, res: RunResult): SkiffError {
  const tail = stderrTail(res.stderr);
  const how = res.signal ? `was killed by ${res.signal}` : `exited with status ${String(res.code)}`;
  if (/permission denied|operation not permitted|must be root|must be superuser/i.test(tail)) {
    return new SkiffError('permission-denied', `${what}: ${tail}: needs root (CAP_SYS_ADMIN)`);
  }
  return new SkiffError('unknown', `${what}: ${tool} ${how}${tail ? `: ${tail}` : ''}`);
}

function fsError(what: string, err: unknown): SkiffError {
  const code = errnoOf(err);
  if (code === 'EPERM' || code === 'EACCES') {
    return new SkiffError('permission-denied', `${what}: ${messageOf(err)}`, { cause: err });
  }
  return new SkiffError('unknown', `${what}: ${messageOf(err)}`, { cause: err });
}

/**
 * Runs `undo` after `err`; the error to throw keeps `err`'s kind and message, and says so when the undo
 * failed too (then unpinNamespaces/stopInfra can finish the job later, they are idempotent).
 */
async function withRollback(err: unknown, what: string, undo: () => Promise<void>): Promise<SkiffError> {
  const original = isSkiffError(err) ? err : fsError(what, err);
  try {
    await undo();
    return original;
  } catch (undoErr) {
    return new SkiffError(original.kind, `${original.message} (and undoing failed: ${messageOf(undoErr)})`, {
      cause: original,
    });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
