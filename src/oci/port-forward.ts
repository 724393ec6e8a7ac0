/**
 * Port-forward (`kubectl port-forward`): one client connection joined to 127.0.0.1:<port> inside the
 * pod's network namespace (localhost there is the pod's own loopback, so a server bound to 127.0.0.1 in
 * the pod is reachable, as with containerd and CRI-O).
 *
 * Node cannot setns(2), so for a pod with its own namespace each connection runs `nsenter --net=<pinned
 * netns> socat STDIO TCP:127.0.0.1:<port>` (CRI-O's original way; socat from Debian): a process per
 * connection costs a few ms, holds nothing between connections and dies with its connection, where a
 * per-pod helper listening on a unix socket would need its own lifecycle across pod stops and skiff
 * restarts. socat is told to wait forever (`-t`) after one direction ends, so a half-closed connection
 * (request sent, response still coming) is not cut off after its default 0.5 s; each direction ends on
 * its own (the client ending its side ends socat's stdin, socat shuts the TCP write side down; the
 * server ending its side closes socat's stdout, which ends `conn`). Data moves by pipe(), with
 * back-pressure both ways. The connection is known to be made when socat logs (`-d -d`) that its
 * transfer loop starts; only then are the client's bytes passed on, so a refused 127.0.0.1 can be retried
 * on [::1] (containerd does the same) and a failure is an error naming the port and pod, not a silent
 * close. A pod on the node's network is reached with node:net directly.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { SkiffError, messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';
import { findExecutable, stderrTail } from '../util/exec.js';
import { DEFAULT_PATH } from './stream-io.js';

export interface PortForwardTarget {
  /** The pod's pinned network namespace, or undefined for a pod on the node's network. */
  netnsPath: string | undefined;
  port: number;
  /** For messages: `port-forward to port 80 of pod sandbox "…"`. */
  what: string;
}

/** Loopback addresses tried in order, as socat addresses and as node:net hosts. */
const LOOPBACKS = [
  { socat: (port: number) => `TCP4:127.0.0.1:${String(port)}`, host: '127.0.0.1', shown: '127.0.0.1' },
  { socat: (port: number) => `TCP6:[::1]:${String(port)}`, host: '::1', shown: '[::1]' },
] as const;

/** socat's notice (`-d -d`) once both ends are open and bytes start to flow. */
const TRANSFER_STARTED = /starting data transfer loop/;
/** socat waits this long (seconds) after one direction ends for the other: effectively forever. */
const HALF_CLOSE_WAIT_S = '1000000000';
const MAX_STDERR = 8192;

export async function forwardPort(
  target: PortForwardTarget,
  conn: Duplex,
  signal: AbortSignal,
  log: Logger,
): Promise<void> {
  const { port, what } = target;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new SkiffError('invalid-argument', `${what}: the port must be 1 to 65535`);
  }
  if (signal.aborted) return;
  if (target.netnsPath === undefined) {
    await forwardDirect(port, conn, signal, what);
    return;
  }
  const nsenter = await findExecutable('nsenter');
  const socat = await findExecutable('socat');
  if (nsenter === undefined || socat === undefined) {
    throw new SkiffError(
      'failed-precondition',
      `${what}: ${nsenter === undefined ? 'nsenter (util-linux)' : 'socat'} is not installed on this node; install it (scripts/host-setup.sh does)`,
    );
  }
  const failures: string[] = [];
  for (const lo of LOOPBACKS) {
    const args = [
      `--net=${target.netnsPath}`,
      socat,
      '-d',
      '-d',
      '-t',
      HALF_CLOSE_WAIT_S,
      '-b',
      '65536',
      'STDIO',
      lo.socat(port),
    ];
    const started = await startSocat(nsenter, args, signal);
    if (started.kind === 'aborted') return;
    if (started.kind === 'failed' && started.nsenter) {
      // The namespace itself could not be entered: no address will do better.
      throw new SkiffError(
        'failed-precondition',
        `${what}: enter the pod's network namespace: ${started.message}`,
      );
    }
    if (started.kind === 'failed') {
      failures.push(`${lo.shown}:${String(port)}: ${started.message}`);
      continue;
    }
    log.debug('port-forward connected', { port, netns: target.netnsPath, via: lo.shown });
    await pumpSocat(started.child, started.stderr, conn, signal, what);
    return;
  }
  throw new SkiffError('unavailable', `${what}: connect inside the pod: ${failures.join('; ')}`);
}

type SocatStart =
  | { kind: 'connected'; child: ChildProcess; stderr: () => string }
  | { kind: 'failed'; message: string; nsenter: boolean }
  | { kind: 'aborted' };

/** Runs socat in the pod's netns and waits until it has connected, exited, or the client has gone. */
function startSocat(nsenter: string, args: string[], signal: AbortSignal): Promise<SocatStart> {
  return new Promise<SocatStart>((resolve) => {
    const child = spawn(nsenter, args, {
      env: { PATH: process.env.PATH ?? DEFAULT_PATH },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stderr = '';
    let settled = false;
    const settle = (r: SocatStart): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      resolve(r);
    };
    const onAbort = (): void => {
      child.kill('SIGKILL');
      settle({ kind: 'aborted' });
    };
    signal.addEventListener('abort', onAbort, { once: true });
    child.stdin.on('error', () => undefined);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s: string) => {
      stderr = (stderr + s).slice(-MAX_STDERR);
      if (TRANSFER_STARTED.test(stderr)) {
        settle({ kind: 'connected', child, stderr: () => stderr });
      }
    });
    child.once('error', (e) => {
      settle({ kind: 'failed', message: `run ${nsenter}: ${e.message}`, nsenter: true });
    });
    child.once('exit', (code, sig) => {
      const lines = stderr.split('\n');
      const nsenterErrors = lines.filter((l) => l.startsWith('nsenter:'));
      const errors = [
        ...nsenterErrors,
        ...lines.filter((l) => / E /.test(l)).map((l) => l.replace(/^.*? E /, '').trim()),
      ];
      const how = sig !== null ? `socat was killed by ${sig}` : `socat exited with status ${String(code)}`;
      settle({
        kind: 'failed',
        message: errors.length > 0 ? errors.join('; ') : how,
        nsenter: nsenterErrors.length > 0,
      });
    });
  });
}

/** Moves bytes both ways until both directions have ended, the client has gone, or socat fails. */
async function pumpSocat(
  child: ChildProcess,
  stderr: () => string,
  conn: Duplex,
  signal: AbortSignal,
  what: string,
): Promise<void> {
  const stdin = child.stdin;
  const stdout = child.stdout;
  if (stdin === null || stdout === null) throw new SkiffError('internal', `${what}: socat has no pipes`);
  const state = { killed: false };
  const kill = (): void => {
    if (state.killed || child.exitCode !== null || child.signalCode !== null) return;
    state.killed = true;
    child.kill('SIGKILL');
  };
  const exited = new Promise<{ code: number | null; sig: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, sig: child.signalCode });
      return;
    }
    child.once('exit', (code, sig) => {
      resolve({ code, sig });
    });
  });
  const outputClosed = new Promise<void>((resolve) => {
    if (stdout.closed) resolve();
    else stdout.once('close', resolve);
  });
  // The client's end: its FIN ends socat's stdin (half-close); a close before both directions have
  // ended (a reset, the stream torn down) or an abort ends everything.
  const onConnClose = (): void => {
    if (!finishedBothWays(conn)) kill();
  };
  const onConnError = (): void => {
    kill();
  };
  conn.on('error', onConnError);
  conn.once('close', onConnClose);
  signal.addEventListener('abort', kill, { once: true });
  conn.pipe(stdin);
  stdout.pipe(conn);
  try {
    const { code, sig } = await exited;
    await outputClosed;
    if (!state.killed && (code !== 0 || sig !== null)) {
      const tail = stderrTail(
        stderr()
          .split('\n')
          .filter((l) => / E /.test(l))
          .map((l) => l.replace(/^.*? E /, ''))
          .join('\n'),
      );
      const how = sig !== null ? `was killed by ${sig}` : `exited with status ${String(code)}`;
      throw new SkiffError(
        'unknown',
        `${what}: the connection failed: socat ${how}${tail ? `: ${tail}` : ''}`,
      );
    }
  } finally {
    signal.removeEventListener('abort', kill);
    conn.off('error', onConnError);
    conn.off('close', onConnClose);
    conn.unpipe(stdin);
    stdin.destroy();
  }
}

/** A pod on the node's network: its localhost is the node's. */
async function forwardDirect(port: number, conn: Duplex, signal: AbortSignal, what: string): Promise<void> {
  const failures: string[] = [];
  let sock: Socket | undefined;
  for (const lo of LOOPBACKS) {
    try {
      sock = await connectTcp(lo.host, port, signal);
      break;
    } catch (err) {
      if (signal.aborted) return;
      failures.push(`${lo.shown}:${String(port)}: ${messageOf(err)}`);
    }
  }
  if (sock === undefined) {
    throw new SkiffError('unavailable', `${what}: connect on the node: ${failures.join('; ')}`);
  }
  const s = sock;
  const state: { failure?: Error } = {};
  const closed = new Promise<void>((resolve) => {
    s.once('close', () => {
      resolve();
    });
  });
  const onSockError = (err: Error): void => {
    state.failure ??= err;
  };
  const abort = (): void => {
    s.destroy();
  };
  const onConnClose = (): void => {
    if (!finishedBothWays(conn)) s.destroy();
  };
  s.on('error', onSockError);
  conn.on('error', abort);
  conn.once('close', onConnClose);
  signal.addEventListener('abort', abort, { once: true });
  // With allowHalfOpen, each direction ends on its own: the client's FIN ends our write side, the
  // server's FIN ends `conn`; the socket closes when both have.
  conn.pipe(s);
  s.pipe(conn);
  try {
    await closed;
    if (state.failure !== undefined && !signal.aborted) {
      throw new SkiffError('unknown', `${what}: the connection failed: ${state.failure.message}`, {
        cause: state.failure,
      });
    }
  } finally {
    signal.removeEventListener('abort', abort);
    conn.off('error', abort);
    conn.off('close', onConnClose);
    conn.unpipe(s);
  }
}

function connectTcp(host: string, port: number, signal: AbortSignal): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const s = connect({ host, port, allowHalfOpen: true });
    const onAbort = (): void => {
      s.destroy();
      reject(new SkiffError('canceled', 'cancelled'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    s.once('connect', () => {
      signal.removeEventListener('abort', onAbort);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (err) => {
      signal.removeEventListener('abort', onAbort);
      reject(err);
    });
  });
}

/** Whether a stream closed because both directions ended (not torn down): nothing is in flight then. */
function finishedBothWays(s: Duplex): boolean {
  return s.readableEnded && s.writableFinished;
}
