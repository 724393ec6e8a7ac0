/**
 * The OCI runtime driver: conmon monitors each container and runc (or runsc) does the work, the way CRI-O's
 * runtimeOCI does (internal/oci/runtime_oci.go). conmon's command line is built in one place
 * (`conmonArgs`), runtime stderr is folded into the error (`runc-errors.ts`), and everything conmon leaves
 * on disk is named by `conmonPaths`, so a new instance (after a skiff restart) finds it again.
 *
 * conmon's protocol (containers/conmon v2.1.x, src/conmon.c):
 * - It reads one byte from `_OCI_STARTPIPE` before it forks, so the parent can move it into a cgroup
 *   first; then it double-forks (the first process writes `--conmon-pidfile` and exits 0) and the
 *   daemonised monitor runs `<runtime> create --bundle B --pid-file P <id>` and reports on `_OCI_SYNCPIPE`:
 *   `{"data": <pid>}` (api-version 1), or `{"data": -1, "message": "<runtime stderr>"}` when it failed.
 * - When the container exits it writes the status (`128+signal` when killed) as text to
 *   `<persist-dir>/exit`, atomically (g_file_set_contents: temp file, rename); before that, on an OOM
 *   kill, it creates `<persist-dir>/oom` (and `oom` in its working directory) — cgroup v1 via an eventfd on
 *   memory.oom_control, v2 via inotify on memory.events (src/cgroup.c).
 * - It creates `ctl` and `winsz` fifos and the `attach` socket in the bundle dir (-b; src/ctrl.c,
 *   src/conn_sock.c). A line `2 0 0\n` on `ctl` (REOPEN_LOGS_EVENT, src/config.h) makes it reopen the
 *   k8s-file log: it opens `<log>.tmp` and renames it over `<log>`; `1 <h> <w>\n` resizes the tty.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants, watch, type FSWatcher } from 'node:fs';
import { access, lstat, mkdir, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { SkiffError, messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';
import { run, type RunResult } from '../util/exec.js';
import { Helper } from '../util/helper.js';
import { startThroughExecFifo } from './exec-fifo.js';
import { execProcessSpec } from './exec-process.js';
import {
  isNotFoundMessage,
  isNotRunningMessage,
  parseLogLine,
  runtimeErrorKind,
  runtimeMessage,
} from './runc-errors.js';
import type {
  CreateOptions,
  ExecSyncResult,
  ExitInfo,
  OciRuntime,
  RuntimeHandler,
  RuntimeState,
  RuntimeTarget,
} from './runtime.js';

export interface ConmonRuntimeOptions {
  conmonPath: string;
  log: Logger;
  /**
   * A short dir for conmon's attach-socket symlinks (`--socket-dir-path`), used only when
   * `<bundle>/attach` is too long for a unix socket address; otherwise conmon gets `--full-attach`.
   */
  attachSocketDir?: string;
  /** How long create waits for conmon's report (CRI-O: container_create_timeout, 240 s). */
  createTimeoutMs?: number;
  /** Timeout of one runtime command (start, kill, delete, state, update). */
  commandTimeoutMs?: number;
}

/** Where conmon and the runtime keep one container's files (see the module comment). */
export interface ConmonPaths {
  /** `-p`: the container's init pid, written by the runtime. */
  containerPidFile: string;
  /** `-P`: conmon's pid. */
  conmonPidFile: string;
  /** `<persist-dir>/exit`: the exit status as text; its mtime is the exit time. */
  exitFile: string;
  /** `<persist-dir>/oom`: exists when the container was OOM-killed. */
  oomFile: string;
  /** conmon's control fifo (log reopen, resize), in the bundle dir. */
  ctlFifo: string;
  winszFifo: string;
  /** conmon's attach socket (SOCK_SEQPACKET), in the bundle dir. */
  attachSocket: string;
}

export function conmonPaths(t: RuntimeTarget): ConmonPaths {
  return {
    containerPidFile: join(t.dir, 'pidfile'),
    conmonPidFile: join(t.dir, 'conmon.pid'),
    exitFile: join(t.dir, 'exit'),
    oomFile: join(t.dir, 'oom'),
    ctlFifo: join(t.bundle, 'ctl'),
    winszFifo: join(t.bundle, 'winsz'),
    attachSocket: join(t.bundle, 'attach'),
  };
}

/** sockaddr_un.sun_path is 108 bytes on Linux, the terminating NUL included. */
const SUN_PATH_MAX = 107;

/**
 * The path a client connects to for attach: the socket itself when it fits in a socket address, else
 * conmon's symlink `<attachSocketDir>/<id>` → bundle dir (conn_sock.c socket_parent_dir).
 */
export function attachSocketPath(t: RuntimeTarget, attachSocketDir?: string): string {
  const direct = conmonPaths(t).attachSocket;
  if (Buffer.byteLength(direct) <= SUN_PATH_MAX || attachSocketDir === undefined) return direct;
  return join(attachSocketDir, t.id, 'attach');
}

/** Global flags for every runtime command: `--root R`, then the handler's own (e.g. runsc `--network=host`). */
export function runtimeGlobalArgs(h: RuntimeHandler): string[] {
  return ['--root', h.root, ...h.extraArgs];
}

export type ConmonLogLevel = 'error' | 'warning' | 'info' | 'debug';

/**
 * conmon's argv for creating `t` (CRI-O CreateContainer's list; podman's `--api-version 1` so the sync
 * pipe carries `{"data": …}` for both create and exec). The log path is checked here because conmon splits
 * `-l` at `:` (ctr_logging.c parse_log_path), so a path with a colon would be cut short.
 */
export function conmonArgs(
  t: RuntimeTarget,
  o: CreateOptions,
  extra: { logLevel: ConmonLogLevel; attachSocketDir?: string },
): string[] {
  if (o.logPath.includes(':')) {
    throw new SkiffError(
      'invalid-argument',
      `create container "${t.id}": log path "${o.logPath}" contains ":", which conmon cannot take; use a path without it`,
    );
  }
  const p = conmonPaths(t);
  const args = [
    '--api-version',
    '1',
    '-c',
    t.id,
    '-u',
    t.id,
    '-n',
    t.id,
    '-r',
    t.handler.binaryPath,
    '-b',
    t.bundle,
    '-p',
    p.containerPidFile,
    '-P',
    p.conmonPidFile,
    // `none` is conmon's no-op log driver; k8s-file on /dev/null would have a reopen rename over /dev/null.
    '-l',
    o.logPath === '' ? 'none' : `k8s-file:${o.logPath}`,
    // The exit and oom files go to the persist dir: one dir per container, no shared exit dir to watch.
    '--persist-dir',
    t.dir,
    '--log-level',
    extra.logLevel,
  ];
  // The attach socket is bound relative to the bundle dir either way; --socket-dir-path only adds a
  // short symlink for clients when the real path would not fit in sun_path.
  if (Buffer.byteLength(p.attachSocket) <= SUN_PATH_MAX || extra.attachSocketDir === undefined) {
    args.push('--full-attach');
  } else {
    args.push('--socket-dir-path', extra.attachSocketDir);
  }
  for (const a of [`--root=${t.handler.root}`, ...t.handler.extraArgs]) args.push('--runtime-arg', a);
  if (o.systemdCgroup) args.push('-s');
  if (o.tty) {
    args.push('-t');
  } else if (o.stdin) {
    // CRI-O: a tty carries stdin by itself; otherwise -i opens a pipe, kept open across attaches unless
    // the container wants stdin once.
    if (!o.stdinOnce) args.push('--leave-stdin-open');
    args.push('-i');
  }
  return args;
}

/** A conmon being started: its pid, stderr, the sync and start pipes, and its (parent's) exit. */
interface StartedConmon {
  pid: number;
  stderr: Readable;
  syncPipe: Readable;
  startPipe: Writable;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal: NodeJS.Signals): void;
  /** Lets go of the pipes (the daemonized conmon keeps its own ends). */
  release(): void;
}

/**
 * Starts conmon in its own session with cwd `dir`, fds 0/1 on /dev/null, 2 a pipe (its command-line
 * errors), 3 the sync pipe and 4 the start pipe; through skiff-helper when it runs (no fork of the
 * daemon, see util/helper.ts), else child_process. Rejects with an errno Error when it cannot start.
 */
async function startConmon(file: string, args: readonly string[], dir: string): Promise<StartedConmon> {
  // conmon 2.1.6 also creates `oom` in its working directory (cgroup.c write_oom_files).
  const env = { PATH: process.env.PATH ?? DEFAULT_PATH, _OCI_SYNCPIPE: '3', _OCI_STARTPIPE: '4' };
  const helper = Helper.shared();
  if (helper) {
    const c = await helper.spawn(file, args, {
      env,
      cwd: dir,
      detached: true,
      stdio: ['ignore', 'ignore', 'read', 'read', 'write'],
    });
    return {
      pid: c.pid,
      stderr: c.stdio[2] as Readable,
      syncPipe: c.stdio[3] as Readable,
      startPipe: c.stdio[4] as Writable,
      exited: c.exited,
      kill: (sig) => c.kill(sig),
      release: () => {
        c.release();
      },
    };
  }
  const child = spawn(file, args, {
    cwd: dir,
    detached: true,
    env,
    stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      resolve({ code, signal });
    });
  });
  // Surface a failed start (ENOENT, …) as this function's rejection, as the helper path does.
  await Promise.race([
    exited.then(() => undefined),
    new Promise<void>((resolve) => child.once('spawn', resolve)),
  ]);
  return {
    pid: child.pid ?? 0,
    stderr: child.stderr as Readable,
    syncPipe: child.stdio[3] as Readable,
    startPipe: child.stdio[4] as Writable,
    exited,
    kill: (sig) => child.kill(sig),
    release: () => undefined,
  };
}

interface SyncMessage {
  data: number;
  message?: string;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const REOPEN_LOGS_EVENT = 2;

export class ConmonRuntime implements OciRuntime {
  private readonly conmonPath: string;
  private readonly log: Logger;
  private readonly attachSocketDir: string | undefined;
  private readonly createTimeoutMs: number;
  private readonly commandTimeoutMs: number;

  constructor(options: ConmonRuntimeOptions) {
    this.conmonPath = options.conmonPath;
    this.log = options.log;
    this.attachSocketDir = options.attachSocketDir;
    this.createTimeoutMs = options.createTimeoutMs ?? 240_000;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 60_000;
  }

  async create(t: RuntimeTarget, o: CreateOptions): Promise<{ pid: number; conmonPid: number }> {
    const what = `create container "${t.id}"`;
    const args = conmonArgs(t, o, { logLevel: this.conmonLogLevel(), attachSocketDir: this.attachSocketDir });
    const p = conmonPaths(t);
    // conmon opens the log before it forks and would only say "Failed to open log file".
    if (o.logPath !== '' && !(await exists(dirname(o.logPath)))) {
      throw new SkiffError('failed-precondition', `${what}: log dir "${dirname(o.logPath)}" does not exist`);
    }
    await mkdir(t.dir, { recursive: true, mode: 0o700 });
    if (this.attachSocketDir !== undefined)
      await mkdir(this.attachSocketDir, { recursive: true, mode: 0o700 });
    // Leftovers of an earlier attempt would read as this container's exit.
    await Promise.all(
      [p.exitFile, p.oomFile, p.containerPidFile, p.conmonPidFile].map((f) => rm(f, { force: true })),
    );
    if (o.systemdCgroup && o.conmonCgroup !== '') {
      this.log.warn(
        'conmon cgroup is not supported with the systemd cgroup manager; conmon stays in skiff’s',
        {
          containerId: t.id,
          conmonCgroup: o.conmonCgroup,
        },
      );
    }
    this.log.debug('running conmon', { containerId: t.id, conmon: this.conmonPath, args });

    // fd 3 is the sync pipe (conmon writes its report), fd 4 the start pipe (we write one byte). stdout is
    // /dev/null; stderr is ours only until conmon forks, for its command-line errors.
    let child: StartedConmon;
    try {
      child = await startConmon(this.conmonPath, args, t.dir);
    } catch (e) {
      throw (e as NodeJS.ErrnoException).code === 'ENOENT'
        ? new SkiffError(
            'failed-precondition',
            `${what}: conmon not found at "${this.conmonPath}"; install conmon or fix the configured path`,
          )
        : new SkiffError('unknown', `${what}: spawn conmon: ${messageOf(e)}`, { cause: e });
    }
    const { stderr, syncPipe, startPipe, exited } = child;
    startPipe.on('error', () => undefined);
    const stderrChunks: Buffer[] = [];
    stderr.on('data', (b: Buffer) => stderrChunks.push(b));
    exited.catch(() => undefined);
    const report = readSyncMessage(syncPipe);
    report.catch(() => undefined);
    const cleanupPipes = (): void => {
      syncPipe.destroy();
      startPipe.destroy();
      stderr.destroy();
      child.release();
    };

    try {
      if (o.conmonCgroup !== '' && !o.systemdCgroup) {
        await joinCgroup(child.pid, o.conmonCgroup).catch((err: unknown) => {
          child.kill('SIGKILL');
          throw err;
        });
      }
      // conmon blocks on this read before forking, so everything it starts is in its cgroup.
      startPipe.write(Buffer.from([0]));
      const { code, signal } = await exited;
      if (code !== 0) {
        await streamEnd(stderr, 1000);
        const tail = Buffer.concat(stderrChunks).toString('utf8').trim();
        const how = signal !== null ? `was killed by ${signal}` : `exited with status ${String(code)}`;
        throw new SkiffError('unknown', `${what}: conmon ${how}${tail ? `: ${tail}` : ''}`);
      }
      const msg = await withTimeout(report, this.createTimeoutMs, () => {
        return new SkiffError(
          'deadline-exceeded',
          `${what}: conmon did not report the container pid within ${String(this.createTimeoutMs)} ms`,
        );
      });
      if (msg === undefined) {
        throw new SkiffError('unknown', `${what}: conmon exited before reporting the container pid`);
      }
      if (msg.data <= 0) {
        const text = runtimeMessage(msg.message ?? '', 'the runtime failed without a message');
        throw new SkiffError(runtimeErrorKind(text), `${what}: ${text}`);
      }
      const conmonPid = await readPidFile(p.conmonPidFile);
      if (conmonPid === undefined) {
        throw new SkiffError('unknown', `${what}: conmon did not write its pid file "${p.conmonPidFile}"`);
      }
      this.log.debug('container created', { containerId: t.id, pid: msg.data, conmonPid });
      return { pid: msg.data, conmonPid };
    } catch (err) {
      // As CRI-O: a failed create leaves nothing behind in the runtime. conmon exits by itself after a
      // runtime failure; after a timeout it is killed.
      const conmonPid = await readPidFile(p.conmonPidFile);
      if (conmonPid !== undefined && (await this.isConmon(conmonPid, t.id))) killQuietly(conmonPid);
      await this.runtime(t, ['delete', '--force', t.id]).catch(() => undefined);
      throw err;
    } finally {
      cleanupPipes();
    }
  }

  async start(t: RuntimeTarget): Promise<void> {
    const what = `start container "${t.id}"`;
    if (basename(t.handler.binaryPath) === 'runc') {
      // runc's start is a read of the exec fifo (see exec-fifo.ts); without the fifo runc says why not.
      const containerPidFile = conmonPaths(t).containerPidFile;
      const initAlive = async (): Promise<boolean> => {
        const pid = await readPidFile(containerPidFile);
        return pid !== undefined && (await runningNotZombie(pid));
      };
      const fifo = join(t.handler.root, t.id, 'exec.fifo');
      if ((await startThroughExecFifo(fifo, initAlive, this.commandTimeoutMs, what)) === 'started') return;
    }
    await this.runtimeChecked(t, what, ['start', t.id]);
  }

  async kill(t: RuntimeTarget, signal: string, all = false): Promise<void> {
    const what = `kill container "${t.id}"`;
    const signo = signalNumber(signal, what);
    const res = await this.runtime(t, ['kill', ...(all ? ['--all'] : []), t.id, String(signo)]);
    if (res.code === 0) return;
    const msg = runtimeMessage(res.stderr);
    // Already exited (or never known): there is nothing left to signal.
    if (isNotRunningMessage(msg) || isNotFoundMessage(msg)) return;
    throw this.failure(what, res);
  }

  async delete(t: RuntimeTarget): Promise<void> {
    const what = `delete container "${t.id}"`;
    const res = await this.runtime(t, ['delete', '--force', t.id]);
    if (res.code !== 0 && !isNotFoundMessage(runtimeMessage(res.stderr))) throw this.failure(what, res);
    // conmon removes the socket but not its symlink (conn_sock.c socket_parent_dir).
    if (this.attachSocketDir !== undefined) {
      await rm(join(this.attachSocketDir, t.id), { force: true });
    }
  }

  async state(t: RuntimeTarget): Promise<RuntimeState | undefined> {
    const what = `get state of container "${t.id}"`;
    const res = await this.runtime(t, ['state', t.id]);
    if (res.code !== 0) {
      if (isNotFoundMessage(runtimeMessage(res.stderr))) return undefined;
      throw this.failure(what, res);
    }
    let v: unknown;
    try {
      v = JSON.parse(res.stdout);
    } catch (err) {
      throw new SkiffError('unknown', `${what}: the runtime printed invalid JSON: ${messageOf(err)}`);
    }
    const o = (typeof v === 'object' && v !== null ? v : {}) as { status?: unknown; pid?: unknown };
    const statuses = ['creating', 'created', 'running', 'paused', 'stopped'] as const;
    const status = statuses.find((s) => s === o.status);
    if (status === undefined) {
      throw new SkiffError(
        'unknown',
        `${what}: the runtime reported an unknown status ${JSON.stringify(o.status)}`,
      );
    }
    return { status, pid: typeof o.pid === 'number' ? o.pid : 0 };
  }

  async exitInfo(t: RuntimeTarget): Promise<ExitInfo | undefined> {
    const p = conmonPaths(t);
    let text: string;
    let mtimeNs: bigint;
    try {
      // conmon renames a complete file into place, so what exists is whole.
      mtimeNs = (await stat(p.exitFile, { bigint: true })).mtimeNs;
      text = await readFile(p.exitFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new SkiffError('unknown', `read exit of container "${t.id}": ${messageOf(err)}`, { cause: err });
    }
    const exitCode = Number.parseInt(text.trim(), 10);
    if (!Number.isSafeInteger(exitCode)) {
      throw new SkiffError(
        'data-loss',
        `read exit of container "${t.id}": "${p.exitFile}" holds ${JSON.stringify(text)}`,
      );
    }
    // conmon creates the oom file before it writes the exit file, so it is there by now if ever.
    const oomKilled = await exists(p.oomFile);
    return { exitCode, exitedAt: mtimeNs.toString(), oomKilled };
  }

  async waitExit(t: RuntimeTarget, signal?: AbortSignal): Promise<ExitInfo> {
    const what = `wait for container "${t.id}"`;
    if (signal?.aborted === true) throw new SkiffError('canceled', `${what}: cancelled`);
    return new Promise<ExitInfo>((resolve, reject) => {
      let watcher: FSWatcher | undefined;
      let settled = false;
      let checking = false;
      // Events that arrive during a check: one more check runs for them.
      let events = 0;
      const finish = (f: () => void): void => {
        if (settled) return;
        settled = true;
        watcher?.close();
        signal?.removeEventListener('abort', onAbort);
        f();
      };
      const onAbort = (): void => {
        finish(() => {
          reject(new SkiffError('canceled', `${what}: cancelled`));
        });
      };
      const check = async (): Promise<void> => {
        events += 1;
        if (checking) return;
        checking = true;
        try {
          for (;;) {
            const seen = events;
            const info = await this.exitInfo(t);
            if (info !== undefined) {
              finish(() => {
                resolve(info);
              });
              return;
            }
            if (events === seen || settled) return;
          }
        } catch (err) {
          finish(() => {
            reject(err instanceof Error ? err : new Error(String(err)));
          });
        } finally {
          checking = false;
        }
      };
      try {
        watcher = watch(t.dir, (_event, name) => {
          if (name === null || name === 'exit') void check();
        });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        reject(
          new SkiffError(
            code === 'ENOENT' ? 'not-found' : 'unknown',
            `${what}: watch "${t.dir}": ${messageOf(err)}`,
          ),
        );
        return;
      }
      watcher.on('error', (err) => {
        finish(() => {
          reject(new SkiffError('unknown', `${what}: watch "${t.dir}": ${err.message}`));
        });
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      // The check after the watch is in place closes the race with an exit written before it.
      void check();
    });
  }

  /**
   * Runs `<runtime> exec --process <file> <id>` directly rather than through `conmon -e` (CRI-O's way):
   * output comes straight from pipes (no k8s-file round trip to parse back), the timeout is in ms, and
   * runc's exit status is the command's. runc's init makes the exec'd process a session (and process
   * group) leader, and `--pid-file` names it, so a timeout kills it and the children it started with one
   * `kill(-pgid, SIGKILL)`, by pid; runc, in a group of its own, is killed the same way. A runtime
   * failure to start the command (runc exits 255, e.g. "executable file not found") is a result, not a
   * throw; a container the runtime does not know, or that has stopped, is.
   */
  async execSync(
    t: RuntimeTarget,
    cmd: string[],
    o: { timeoutMs: number; maxOutputBytes: number; env?: string[]; cwd?: string; tty?: boolean },
  ): Promise<ExecSyncResult> {
    const what = `exec in container "${t.id}"`;
    if (cmd.length === 0) throw new SkiffError('invalid-argument', `${what}: the command is empty`);
    if (o.tty === true) {
      // A foreground `runc exec --tty` wants a console socket to hand the pty master over (SCM_RIGHTS),
      // which Node cannot receive; CRI's ExecSync has no tty anyway, streaming exec goes through conmon.
      throw new SkiffError(
        'unimplemented',
        `${what}: execSync with a tty is not supported; run it without one`,
      );
    }
    const name = `exec-${randomBytes(8).toString('hex')}`;
    const processFile = join(t.dir, `${name}.json`);
    const pidFile = join(t.dir, `${name}.pid`);
    await writeFile(
      processFile,
      JSON.stringify(await execProcessSpec(t.bundle, cmd, { tty: false, env: o.env, cwd: o.cwd }, what)),
      { mode: 0o600 },
    );
    let res: GroupRunResult;
    try {
      const args = [
        ...runtimeGlobalArgs(t.handler),
        'exec',
        '--process',
        processFile,
        '--pid-file',
        pidFile,
        t.id,
      ];
      res = await runInGroup(t.handler.binaryPath, args, {
        timeoutMs: o.timeoutMs,
        maxOutputBytes: o.maxOutputBytes,
        pidFile,
      });
    } finally {
      await Promise.all([rm(processFile, { force: true }), rm(pidFile, { force: true })]);
    }
    if (res.spawnError !== undefined) {
      throw new SkiffError(
        res.spawnError.code === 'ENOENT' ? 'failed-precondition' : 'unknown',
        `${what}: run ${t.handler.binaryPath}: ${res.spawnError.message}`,
      );
    }
    let stderr = res.stderr;
    if (!res.timedOut && res.exitCode === 255) {
      // runc's own failure lines (logrus) are in stderr; they decide between an error and a result.
      const lines = stderr.toString('utf8').split('\n');
      const runcMsgs = lines.flatMap((l) => {
        const e = parseLogLine(l.trim());
        return e === undefined ? [] : [e.msg];
      });
      const joined = runcMsgs.join('; ');
      if (isNotFoundMessage(joined)) throw new SkiffError('not-found', `${what}: ${joined}`);
      if (/container not running|stopped container|container that has stopped/i.test(joined)) {
        throw new SkiffError('failed-precondition', `${what}: ${joined}; the container is not running`);
      }
      if (runcMsgs.length > 0) {
        stderr = Buffer.from(lines.map((l) => parseLogLine(l.trim())?.msg ?? l).join('\n'));
      }
    }
    return { stdout: res.stdout, stderr, exitCode: res.exitCode, timedOut: res.timedOut };
  }

  async reopenLog(t: RuntimeTarget, logPath: string): Promise<void> {
    const what = `reopen log of container "${t.id}"`;
    if (logPath === '') return;
    const logDir = dirname(logPath);
    // conmon exits when it cannot open the new file (ctr_logging.c pexitf), so check the dir first.
    if (!(await exists(logDir))) {
      throw new SkiffError('failed-precondition', `${what}: log dir "${logDir}" does not exist`);
    }
    const notRunning = `${what}: conmon is not running`;
    if (!(await this.isMonitorAlive(t))) throw new SkiffError('failed-precondition', notRunning);
    let fifo;
    try {
      // O_NONBLOCK: with no conmon reading, open fails with ENXIO instead of blocking forever.
      fifo = await open(conmonPaths(t).ctlFifo, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENXIO' || code === 'ENOENT') {
        throw new SkiffError('failed-precondition', notRunning, { cause: err });
      }
      throw new SkiffError('unknown', `${what}: open ctl fifo: ${messageOf(err)}`, { cause: err });
    }
    try {
      const before = await inode(logPath);
      // Done when a file other than the one before is at logPath: conmon renames `<log>.tmp` over it.
      await waitFor(
        logDir,
        10_000,
        async () => {
          const now = await inode(logPath);
          if (now !== undefined && now !== before) return true;
          // A conmon that exited after the open will never answer.
          if (!(await this.isMonitorAlive(t))) throw new SkiffError('failed-precondition', 'conmon exited');
          return false;
        },
        async () => {
          await fifo.write(`${String(REOPEN_LOGS_EVENT)} 0 0\n`);
        },
      ).catch((err: unknown) => {
        if (err instanceof SkiffError) throw new SkiffError(err.kind, `${what}: ${err.message}`);
        throw err;
      });
    } finally {
      await fifo.close();
    }
  }

  async update(t: RuntimeTarget, resources: unknown): Promise<void> {
    await this.runtimeChecked(
      t,
      `update resources of container "${t.id}"`,
      ['update', '--resources', '-', t.id],
      {
        input: JSON.stringify(resources),
      },
    );
  }

  async isMonitorAlive(t: RuntimeTarget): Promise<boolean> {
    const pid = await readPidFile(conmonPaths(t).conmonPidFile);
    return pid !== undefined && (await this.isConmon(pid, t.id));
  }

  /**
   * Whether `pid` is the running conmon of container `id`: not a zombie (a daemonised conmon that exited
   * waits for init to reap it) and not another process that reused the pid.
   */
  private async isConmon(pid: number, id: string): Promise<boolean> {
    const st = await procStat(pid);
    if (st?.comm !== 'conmon' || st.state === 'Z' || st.state === 'X') return false;
    try {
      const argv = (await readFile(`/proc/${String(pid)}/cmdline`, 'utf8')).split('\0');
      return argv.some((a, i) => (a === '-c' || a === '--cid') && argv[i + 1] === id);
    } catch {
      return false;
    }
  }

  private async runtime(t: RuntimeTarget, args: string[], opts: { input?: string } = {}): Promise<RunResult> {
    return run(t.handler.binaryPath, [...runtimeGlobalArgs(t.handler), ...args], {
      timeoutMs: this.commandTimeoutMs,
      input: opts.input,
    });
  }

  private async runtimeChecked(
    t: RuntimeTarget,
    what: string,
    args: string[],
    opts: { input?: string } = {},
  ): Promise<RunResult> {
    const res = await this.runtime(t, args, opts);
    if (res.code !== 0) throw this.failure(what, res);
    return res;
  }

  private failure(what: string, res: RunResult): SkiffError {
    if (res.signal !== null) {
      return new SkiffError(
        'deadline-exceeded',
        `${what}: the runtime was killed by ${res.signal} (timed out?)`,
      );
    }
    const msg = runtimeMessage(res.stderr, `the runtime exited with status ${String(res.code)}`);
    return new SkiffError(runtimeErrorKind(msg), `${what}: ${msg}`);
  }

  private conmonLogLevel(): ConmonLogLevel {
    if (this.log.isEnabled('debug')) return 'debug';
    if (this.log.isEnabled('info')) return 'info';
    if (this.log.isEnabled('warn')) return 'warning';
    return 'error';
  }
}

/** `SIGTERM`, `TERM` or `15` → 15; the number goes to the runtime, which every runtime accepts. */
export function signalNumber(signal: string, what: string): number {
  const s = signal.trim().toUpperCase();
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n >= 1 && n <= 64) return n;
  } else {
    const name = (s.startsWith('SIG') ? s : `SIG${s}`) as keyof typeof osConstants.signals;
    const n = osConstants.signals[name] as number | undefined;
    if (n !== undefined) return n;
  }
  throw new SkiffError('invalid-argument', `${what}: unknown signal "${signal}"`);
}

/** The first line conmon writes on the sync pipe, or undefined when the pipe closes without one. */
function readSyncMessage(stream: Readable): Promise<SyncMessage | undefined> {
  return new Promise<SyncMessage | undefined>((resolve, reject) => {
    let buf = '';
    const done = (f: () => void): void => {
      stream.removeAllListeners('data');
      stream.removeAllListeners('end');
      f();
    };
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      done(() => {
        try {
          resolve(parseSyncMessage(line));
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
    });
    stream.on('end', () => {
      done(() => {
        resolve(buf.trim() === '' ? undefined : parseSyncMessage(buf));
      });
    });
    stream.on('error', () => {
      done(() => {
        resolve(undefined);
      });
    });
  });
}

/** `{"data": N, "message": "…"}` (api-version 1); `pid`/`exit_code` are the legacy keys (parent_pipe_fd.c). */
export function parseSyncMessage(line: string): SyncMessage {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new SkiffError('unknown', `conmon wrote an unreadable sync message: ${JSON.stringify(line)}`);
  }
  const o = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
  const data = o.data ?? o.pid ?? o.exit_code;
  if (typeof data !== 'number') {
    throw new SkiffError('unknown', `conmon wrote a sync message without data: ${JSON.stringify(line)}`);
  }
  return typeof o.message === 'string' ? { data, message: o.message } : { data };
}

async function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(onTimeout());
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function streamEnd(s: Readable | null, ms: number): Promise<void> {
  if (s === null || s.readableEnded || s.destroyed) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    s.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** True while `pid` exists and is not a zombie (/proc/<pid>/stat state). */
async function runningNotZombie(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${String(pid)}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

async function readPidFile(path: string): Promise<number | undefined> {
  try {
    const n = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function inode(path: string): Promise<bigint | undefined> {
  try {
    return (await stat(path, { bigint: true })).ino;
  } catch {
    return undefined;
  }
}

/**
 * Watches `dir`, runs `action`, and resolves once `done()` holds, checking after each event in `dir` (and
 * once after `action`, for a change that beat the watch's first event).
 */
async function waitFor(
  dir: string,
  timeoutMs: number,
  done: () => Promise<boolean>,
  action: () => Promise<void>,
): Promise<void> {
  const watcher = watch(dir);
  let wake: (() => void) | undefined;
  watcher.on('change', () => wake?.());
  let failed: Error | undefined;
  watcher.on('error', (e) => {
    failed = e;
    wake?.();
  });
  const deadline = Date.now() + timeoutMs;
  try {
    await action();
    for (;;) {
      if (failed !== undefined) throw new SkiffError('unknown', `watch "${dir}": ${failed.message}`);
      if (await done()) return;
      const left = deadline - Date.now();
      if (left <= 0)
        throw new SkiffError('deadline-exceeded', `no new log file after ${String(timeoutMs)} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 500));
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  } finally {
    watcher.close();
  }
}

interface GroupRunResult {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
  timedOut: boolean;
  spawnError?: NodeJS.ErrnoException;
}

/**
 * Runs `file` as the leader of a new process group with stdout/stderr captured (the first `max` bytes of
 * each; the rest is read and dropped so the writer never blocks). At `timeoutMs`, the process group led
 * by the pid in `pidFile` (the exec'd process) gets SIGKILL, if that process is still our child's child
 * (not a reused pid), and so does our child's own group. After our child exits, output still arriving
 * from a straggler that escaped both groups gets a short grace, then the pipes are closed, so an orphan
 * holding them cannot hang the call.
 */
function runInGroup(
  file: string,
  args: string[],
  o: { timeoutMs: number; maxOutputBytes: number; pidFile: string },
): Promise<GroupRunResult> {
  const max = o.maxOutputBytes;
  return new Promise<GroupRunResult>((resolve) => {
    const child = spawn(file, args, {
      detached: true,
      env: { PATH: process.env.PATH ?? DEFAULT_PATH },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = head(max);
    const err = head(max);
    child.stdout.on('data', out.push);
    child.stderr.on('data', err.push);
    let timedOut = false;
    let status: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let open = 2;
    let grace: NodeJS.Timeout | undefined;
    const onTimeout = (): void => {
      timedOut = true;
      const leader = child.pid;
      if (leader === undefined) return;
      void (async () => {
        const execPid = await readPidFile(o.pidFile);
        if (execPid !== undefined && (await procStat(execPid))?.ppid === leader) {
          // Kill the command first and let runc, its parent, reap it and exit: killing runc too would
          // reparent the command to the container's PID 1, which (a `top`, a `sleep`) may never reap
          // it, and a zombie still shows in `ps` (critest "execSync with timeout" checks for that).
          killGroup(execPid);
          const reaped = await new Promise<boolean>((done) => {
            const t = setTimeout(() => {
              done(false);
            }, 2000);
            child.once('exit', () => {
              clearTimeout(t);
              done(true);
            });
          });
          if (reaped) return;
        }
        killGroup(leader);
      })();
    };
    // ExecSync's timeout 0 means none (CRI: "0 to run forever").
    const timer = o.timeoutMs > 0 ? setTimeout(onTimeout, o.timeoutMs) : undefined;
    const finish = (): void => {
      if (status === undefined) return;
      clearTimeout(timer);
      clearTimeout(grace);
      child.stdout.destroy();
      child.stderr.destroy();
      const { code, signal } = status;
      const exitCode = code ?? 128 + (signal !== null ? osConstants.signals[signal] : 0);
      resolve({ stdout: out.bytes(), stderr: err.bytes(), exitCode, timedOut });
    };
    const closed = (): void => {
      open -= 1;
      if (open === 0) finish();
    };
    child.stdout.once('close', closed);
    child.stderr.once('close', closed);
    child.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({
        stdout: Buffer.alloc(0),
        stderr: Buffer.alloc(0),
        exitCode: -1,
        timedOut: false,
        spawnError: e,
      });
    });
    child.once('exit', (code, signal) => {
      status = { code, signal };
      if (open === 0) finish();
      else grace = setTimeout(finish, 500);
    });
  });
}

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // the group is gone already
  }
}

/** Fields of /proc/<pid>/stat (proc(5)): comm is parenthesised and may hold spaces, so split after it. */
async function procStat(pid: number): Promise<{ comm: string; state: string; ppid: number } | undefined> {
  try {
    const text = await readFile(`/proc/${String(pid)}/stat`, 'utf8');
    const close = text.lastIndexOf(')');
    const [state = '', ppid = ''] = text.slice(close + 2).split(' ');
    return { comm: text.slice(text.indexOf('(') + 1, close), state, ppid: Number(ppid) };
  } catch {
    return undefined;
  }
}

/** Keeps the first `max` bytes pushed (CRI-O keeps the head of exec output too: TruncateAndReadFile). */
function head(max: number): { push: (b: Buffer) => void; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  let size = 0;
  return {
    push: (b: Buffer) => {
      if (size >= max) return;
      const part = b.subarray(0, max - size);
      chunks.push(part);
      size += part.length;
    },
    bytes: () => Buffer.concat(chunks),
  };
}

/**
 * Puts `pid` into the cgroupfs cgroup `cgroup` (created when missing): the one hierarchy on cgroup v2;
 * on v1 every mounted controller hierarchy except cpuset (a new cpuset cgroup has no cpus or mems, so
 * joining it fails) and the named systemd one (systemd's own bookkeeping).
 */
async function joinCgroup(pid: number, cgroup: string): Promise<void> {
  const what = `move conmon into cgroup "${cgroup}"`;
  if (!cgroup.startsWith('/') || cgroup.split('/').includes('..')) {
    throw new SkiffError('invalid-argument', `${what}: a cgroupfs path must be absolute without ".."`);
  }
  const root = '/sys/fs/cgroup';
  let dirs: string[];
  if (await exists(join(root, 'cgroup.controllers'))) {
    dirs = [join(root, cgroup)];
  } else {
    dirs = [];
    for (const name of await readdir(root)) {
      if (name === 'cpuset' || name === 'systemd' || name === 'unified') continue;
      const st = await lstat(join(root, name)).catch(() => undefined);
      if (st?.isDirectory() === true && (await exists(join(root, name, 'cgroup.procs')))) {
        dirs.push(join(root, name, cgroup));
      }
    }
  }
  for (const d of dirs) {
    try {
      await mkdir(d, { recursive: true });
      await writeFile(join(d, 'cgroup.procs'), String(pid));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const kind = code === 'EPERM' || code === 'EACCES' ? 'permission-denied' : 'unknown';
      throw new SkiffError(kind, `${what}: ${d}: ${messageOf(err)}`, { cause: err });
    }
  }
}
