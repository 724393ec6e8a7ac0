/**
 * Streaming exec (`kubectl exec`, `crictl exec -i/-t`): `<runtime> exec --process <spec> <id>` in the
 * foreground, its stdio joined to the client's streams, its exit status the command's.
 *
 * Without a tty, runc copies between its own stdio and pipes it made for the command (runc
 * utils_linux.go setupProcessPipes): we give it pipes, forward stdin until the client closes it (runc
 * then closes the command's stdin) and pipe() stdout/stderr out with back-pressure.
 *
 * With a tty, the command needs a real terminal, and the window size must follow the client's. `runc
 * exec --tty` makes the pty inside the container (in its devpts, so `tty` says /dev/pts/N there) and hands
 * the master over a console socket with SCM_RIGHTS, which Node cannot receive. But a foreground `runc
 * exec --tty` receives it itself when its own stdio is a terminal: it copies between that "host console"
 * and the container's pty, puts the host console in raw mode, and on SIGWINCH copies the host console's
 * size to the container's pty (runc tty.go, signals.go). So skiff gives runc a terminal: node-pty
 * (Microsoft's, maintained, a small native addon built by node-gyp like zstd-napi) forks runc as the
 * session leader of a new pty, and a resize from the client is node-pty's resize(): TIOCSWINSZ on the
 * master, for which the kernel sends SIGWINCH to runc, the pty's foreground process. The alternatives
 * lose: conmon `--exec-attach -t` serves the pty on a SOCK_SEQPACKET socket with per-packet framing and
 * needs conmon's exec bookkeeping; giving runc a pty without `--tty` gets the command pipes, not a tty.
 *
 * The client going away (io.signal) kills the command and its group, by the pid runc wrote to
 * `--pid-file` (runc's init made it a session and group leader), after checking it is still runc's
 * child: the group's other members first, so that the command can reap them, then the command; runc
 * reaps it and exits, so no zombie stays in the container. Only if runc does not exit does its
 * own group get SIGKILL. runc's own messages go to a JSON log file (`--log`), not the client's stderr; a
 * runc failure (exit 255 with an error logged: container gone, command not found) is thrown, not
 * returned as an exit code, as containerd and CRI-O do.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type * as NodePty from 'node-pty';
import { SkiffError, messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';
import { execProcessSpec } from './exec-process.js';
import { parseLogLine, runtimeErrorKind } from './runc-errors.js';
import type { RuntimeTarget } from './runtime.js';
import {
  DEFAULT_PATH,
  type StdioStreams,
  followResizes,
  killGroup,
  killGroupChildrenFirst,
  procStat,
  readPidFile,
  sleep,
  validSize,
} from './stream-io.js';

export interface ExecStreamRequest {
  cmd: string[];
  tty: boolean;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}

/** How long runc gets to reap a killed command and exit before its own group is killed. */
const REAP_GRACE_MS = 2000;
/**
 * After runc exits, output still open and silent this long is held by a straggler (runsc hands the
 * pipes themselves to the sandbox, where a background child may keep them): it is closed.
 */
const OUTPUT_IDLE_MS = 1000;
const DEFAULT_SIZE = { width: 80, height: 24 };

/** The outcome of one runtime run: how it ended, and whether the client had gone by then. */
interface RunEnd {
  exitCode: number;
  aborted: boolean;
}

export async function execStream(
  t: RuntimeTarget,
  req: ExecStreamRequest,
  io: StdioStreams,
  log: Logger,
): Promise<{ exitCode: number }> {
  const what = `exec in container "${t.id}"`;
  if (req.cmd.length === 0) throw new SkiffError('invalid-argument', `${what}: cmd must not be empty`);
  if (io.signal.aborted) throw new SkiffError('canceled', `${what}: the client went away`);
  const pty = req.tty ? await loadNodePty(what) : undefined;
  const name = `exec-${randomBytes(8).toString('hex')}`;
  const files = {
    process: join(t.dir, `${name}.json`),
    pid: join(t.dir, `${name}.pid`),
    log: join(t.dir, `${name}.log`),
  };
  const spec = await execProcessSpec(t.bundle, req.cmd, { tty: req.tty }, what);
  try {
    await writeFile(files.process, JSON.stringify(spec), { mode: 0o600 });
    const args = [
      '--root',
      t.handler.root,
      ...t.handler.extraArgs,
      '--log',
      files.log,
      '--log-format',
      'json',
      'exec',
      '--process',
      files.process,
      '--pid-file',
      files.pid,
      t.id,
    ];
    log.debug('exec stream', { containerId: t.id, cmd: req.cmd, tty: req.tty });
    const end =
      pty === undefined
        ? await runPiped(t.handler.binaryPath, args, req, io, files.pid, what)
        : await runInPty(pty, t.handler.binaryPath, args, req, io, files.pid, log);
    if (end.aborted) {
      throw new SkiffError('canceled', `${what}: the client went away; the command was killed`);
    }
    if (end.exitCode === 255) {
      // 255 is also an ordinary exit status; only an error runc logged makes it runc's own failure.
      const msgs = runtimeErrors(await readFile(files.log, 'utf8').catch(() => ''));
      if (msgs.length > 0) {
        const msg = msgs.join('; ');
        throw new SkiffError(runtimeErrorKind(msg), `${what}: ${msg}`);
      }
    }
    return { exitCode: end.exitCode };
  } finally {
    await Promise.all(Object.values(files).map((f) => rm(f, { force: true })));
  }
}

/** Without a tty: pipes for the wanted streams, /dev/null for the others. */
async function runPiped(
  file: string,
  args: string[],
  req: ExecStreamRequest,
  io: StdioStreams,
  pidFile: string,
  what: string,
): Promise<RunEnd> {
  const stdin = req.stdin ? io.stdin : undefined;
  const stdout = req.stdout ? io.stdout : undefined;
  const stderr = req.stderr ? io.stderr : undefined;
  // detached: runc leads a process group of its own, so a last-resort kill reaches it and runc init.
  const child = spawn(file, args, {
    detached: true,
    env: { PATH: process.env.PATH ?? DEFAULT_PATH },
    stdio: [stdin ? 'pipe' : 'ignore', stdout ? 'pipe' : 'ignore', stderr ? 'pipe' : 'ignore'],
  });
  const exited = new Promise<number>((resolve) => {
    child.once('exit', (code, signal) => {
      resolve(code ?? 128 + (signal !== null ? osConstants.signals[signal] : 0));
    });
  });
  const spawned = new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (e: NodeJS.ErrnoException) => {
      reject(
        new SkiffError(
          e.code === 'ENOENT' ? 'failed-precondition' : 'unknown',
          `${what}: run ${file}: ${e.message}`,
          { cause: e },
        ),
      );
    });
  });
  await spawned;
  const runtimePid = child.pid ?? -1;

  if (stdin && child.stdin) {
    // EPIPE once the command has exited while the client still types: nothing to deliver it to.
    child.stdin.on('error', () => undefined);
    // The client closing stdin ends this pipe; runc then closes the command's stdin.
    stdin.pipe(child.stdin);
  }
  const outputs: Readable[] = [];
  let lastOutput = Date.now();
  const forward = (src: Readable | null, dst: Writable | undefined): void => {
    if (src === null || dst === undefined) return;
    outputs.push(src);
    src.on('data', () => {
      lastOutput = Date.now();
    });
    src.on('error', () => undefined);
    src.pipe(dst, { end: false });
  };
  forward(child.stdout, stdout);
  forward(child.stderr, stderr);
  const outputsClosed = Promise.all(
    outputs.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.closed) resolve();
          else s.once('close', resolve);
        }),
    ),
  );

  // Set from callbacks; an object, so the checks below are not narrowed away.
  const state = { aborted: false, outputsClosed: false };
  const onAbort = (): void => {
    state.aborted = true;
    void killExec(runtimePid, pidFile, exited);
  };
  io.signal.addEventListener('abort', onAbort, { once: true });
  try {
    const exitCode = await exited;
    // runc has exited: what is left in the pipes drains at the client's pace; output held open by
    // someone else and idle (see OUTPUT_IDLE_MS), or a client already gone, ends it.
    void outputsClosed.then(() => {
      state.outputsClosed = true;
    });
    while (!state.outputsClosed) {
      const idle =
        Date.now() - lastOutput > OUTPUT_IDLE_MS && outputs.every((s) => !s.isPaused() || s.closed);
      if (state.aborted || idle) {
        for (const s of outputs) s.destroy();
        break;
      }
      await Promise.race([outputsClosed, sleep(100)]);
    }
    return { exitCode, aborted: state.aborted };
  } finally {
    io.signal.removeEventListener('abort', onAbort);
    if (stdin && child.stdin) stdin.unpipe(child.stdin);
    child.stdin?.destroy();
    for (const s of outputs) {
      if (stdout) s.unpipe(stdout);
      if (stderr) s.unpipe(stderr);
    }
  }
}

/** With a tty: runc runs as the session leader of a pty made by node-pty (see the module comment). */
async function runInPty(
  pty: typeof NodePty,
  file: string,
  args: string[],
  req: ExecStreamRequest,
  io: StdioStreams,
  pidFile: string,
  log: Logger,
): Promise<RunEnd> {
  const stdin = req.stdin ? io.stdin : undefined;
  // A tty has one output stream; kubelet asks for stdout only, a client asking for stderr gets it there.
  const out = req.stdout ? io.stdout : req.stderr ? io.stderr : undefined;
  let term: NodePty.IPty;
  try {
    term = pty.spawn(file, args, {
      name: 'xterm',
      cols: DEFAULT_SIZE.width,
      rows: DEFAULT_SIZE.height,
      env: { PATH: process.env.PATH ?? DEFAULT_PATH },
      // Raw bytes, not text decoded as UTF-8 (a split multi-byte character must pass through intact).
      encoding: null,
    });
  } catch (err) {
    throw new SkiffError('unknown', `run ${file} on a pty: ${messageOf(err)}`, { cause: err });
  }
  const runtimePid = term.pid;
  const exited = new Promise<number>((resolve) => {
    // node-pty reports the exit once the pty's output is drained (its socket closed).
    term.onExit(({ exitCode, signal }) => {
      resolve(signal !== undefined && signal > 0 ? 128 + signal : exitCode);
    });
  });
  const disposables: NodePty.IDisposable[] = [];
  let paused = false;
  disposables.push(
    term.onData((d: string | Buffer) => {
      if (out === undefined || out.destroyed) return;
      // Back-pressure: stop reading the pty (so runc blocks, and then the command) until the client
      // has taken what it was sent.
      if (!out.write(d) && !paused) {
        paused = true;
        term.pause();
        out.once('drain', () => {
          paused = false;
          term.resume();
        });
      }
    }),
  );
  // Keystrokes are small; node-pty queues what the pty cannot take yet (it has no back-pressure API, and
  // retries a full pty on every tick, so a huge paste into a command that never reads costs CPU until
  // the session ends). The client closing stdin is not an EOF on a terminal (that is a ^D in the
  // stream), so it changes nothing here.
  const onInput = (chunk: Buffer | string): void => {
    term.write(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  };
  stdin?.on('data', onInput);
  const resizes = followResizes(
    io.resize,
    (s) => {
      if (validSize(s)) term.resize(s.width, s.height);
    },
    log,
  );

  let aborted = false;
  const onAbort = (): void => {
    aborted = true;
    // No term.kill() after this: node-pty reaps runc itself, so its pid may be reused by then.
    void killExec(runtimePid, pidFile, exited);
  };
  io.signal.addEventListener('abort', onAbort, { once: true });
  try {
    const exitCode = await exited;
    return { exitCode, aborted };
  } finally {
    io.signal.removeEventListener('abort', onAbort);
    resizes.stop();
    stdin?.off('data', onInput);
    for (const d of disposables) d.dispose();
  }
}

/**
 * Kills the exec'd command and its group, then waits for runc to reap it and exit; runc's own group is
 * killed only if it does not. The pid file appears once runc has started the command, so a kill that
 * comes during start-up waits (briefly) for it.
 */
async function killExec(runtimePid: number, pidFile: string, exited: Promise<number>): Promise<void> {
  const runtime = { gone: false };
  void exited.then(() => {
    runtime.gone = true;
  });
  const deadline = Date.now() + REAP_GRACE_MS;
  let execPid: number | undefined;
  while (!runtime.gone && execPid === undefined && Date.now() < deadline) {
    execPid = await readPidFile(pidFile);
    if (execPid === undefined) await sleep(50);
  }
  if (runtime.gone) return;
  // Only while it is still runc's child: a pid from the file may since have been reused.
  if (execPid !== undefined && (await procStat(execPid))?.ppid === runtimePid) {
    await killGroupChildrenFirst(execPid);
    if (await Promise.race([exited.then(() => true), sleep(REAP_GRACE_MS).then(() => false)])) return;
  }
  killGroup(runtimePid);
}

/** The errors the runtime logged (JSON lines, `--log-format json`); other lines and levels are not failures. */
function runtimeErrors(logText: string): string[] {
  return logText.split('\n').flatMap((line) => {
    const e = parseLogLine(line.trim());
    return e !== undefined && ['error', 'fatal', 'panic'].includes(e.level) ? [e.msg] : [];
  });
}

let nodePty: Promise<typeof NodePty> | undefined;

/** node-pty is a native addon: loaded on first use, so a failed build breaks tty exec, not the daemon. */
async function loadNodePty(what: string): Promise<typeof NodePty> {
  nodePty ??= import('node-pty').then(
    (m) => m,
    (err: unknown) => {
      nodePty = undefined;
      throw err;
    },
  );
  try {
    return await nodePty;
  } catch (err) {
    throw new SkiffError(
      'failed-precondition',
      `${what}: a tty needs the node-pty native module, which did not load (${messageOf(err)}): run npm rebuild node-pty (needs python3, make and g++)`,
      { cause: err },
    );
  }
}
