/**
 * Attach (`kubectl attach`, `crictl attach`): the client joins the stdio of a running container, which
 * conmon holds. conmon serves it on `<bundle>/attach`, a SOCK_SEQPACKET socket (conmon conn_sock.c,
 * ctr_stdio.c): each packet from conmon is one read of the container's output, prefixed with one byte
 * naming the stream (2 stdout, 3 stderr: conmon's stdpipe_t); each packet to conmon is raw stdin (at most CONN_SOCK_BUF_SIZE,
 * 32 KiB, per packet: conmon reads one packet into a buffer that size and drops the rest). A tty's
 * window size goes to conmon's ctl fifo as `1 <height> <width>\n` (ctrl.c WIN_RESIZE_EVENT).
 *
 * Node's net module has no SOCK_SEQPACKET, and the framing is in the packet boundaries, so a stream
 * bridge (socat to a pipe) would merge packets and lose which stream a byte belongs to; following the
 * CRI log instead would need a log (logPath may be empty), lag behind, and break on rotation. So skiff
 * uses node-unix-socket, a small N-API addon (prebuilt binaries shipped in the npm package, no build)
 * whose SeqpacketSocket keeps message boundaries. Its reads cannot be paused; output a slow client has
 * not taken is buffered up to MAX_PENDING_OUTPUT, past which the attach fails rather than grow without
 * bound (conmon itself never waits for us: its socket buffer takes what we have not read yet).
 *
 * Ending (CRI-O AttachContainer): the container's exit (conmon closes the socket) ends the attach; so
 * does the client going away (io.signal), which detaches and leaves the container running. When the
 * client closes stdin, our side of the socket is shut down for writing; conmon then closes the
 * container's stdin if the container wants stdin once (it was started without --leave-stdin-open), and
 * a container with a reusable stdin and no tty is detached at once. conmon closes a stdin-once
 * container's stdin whenever an attach session ends, as it does for CRI-O.
 */
import { constants } from 'node:fs';
import { lstat, open, type FileHandle } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import type * as UnixSocket from 'node-unix-socket';
import { SkiffError, messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';
import { conmonPaths } from './conmon.js';
import type { RuntimeTarget } from './runtime.js';
import { type StdioStreams, followResizes } from './stream-io.js';

export interface AttachStreamRequest {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}

/** How the container was created (its CRI config), which decides how an attach ends. */
export interface AttachedContainer {
  stdin: boolean;
  stdinOnce: boolean;
  tty: boolean;
}

/** conmon's stdpipe_t (utils.h): NO_PIPE, STDIN_PIPE, STDOUT_PIPE, STDERR_PIPE; CRI-O's AttachPipe*. */
const STDOUT_PIPE = 2;
const STDERR_PIPE = 3;
/** conmon's STDIO_BUF_SIZE: stdin packets stay this small, well inside its 32 KiB read buffer. */
const MAX_STDIN_PACKET = 8192;
/** Output buffered for a client that does not keep up, before the attach fails. */
const MAX_PENDING_OUTPUT = 16 * 1024 * 1024;
const WIN_RESIZE_EVENT = 1;
/** sockaddr_un.sun_path is 108 bytes on Linux, the terminating NUL included. */
const SUN_PATH_MAX = 107;

export async function attachConmon(
  t: RuntimeTarget,
  req: AttachStreamRequest,
  container: AttachedContainer,
  io: StdioStreams,
  log: Logger,
): Promise<void> {
  const what = `attach to container "${t.id}"`;
  const { SeqpacketSocket } = await loadUnixSocket(what);
  const paths = conmonPaths(t);
  const st = await lstat(paths.attachSocket).catch(() => undefined);
  if (st?.isSocket() !== true) {
    throw new SkiffError(
      'failed-precondition',
      `${what}: conmon's attach socket "${paths.attachSocket}" is missing; is the container running?`,
    );
  }
  // A long bundle path does not fit in a socket address; the same socket is reachable through a short
  // /proc/self/fd path to its directory (conmon binds it the same way, conn_sock.c bind_relative_to_dir).
  let dirHandle: FileHandle | undefined;
  let address = paths.attachSocket;
  if (Buffer.byteLength(address) > SUN_PATH_MAX) {
    dirHandle = await open(t.bundle, constants.O_RDONLY | constants.O_DIRECTORY);
    address = `/proc/self/fd/${String(dirHandle.fd)}/attach`;
  }
  const sock = new SeqpacketSocket();
  let ctl: FileHandle | undefined;
  let resizes: { stop: () => void } | undefined;
  const cleanup: (() => void)[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const fail = (err: unknown): void => {
        reject(
          new SkiffError(
            'failed-precondition',
            `${what}: connect to conmon's attach socket: ${messageOf(err)}; is the container running?`,
            { cause: err },
          ),
        );
      };
      sock.once('error', fail);
      try {
        sock.connect(address, () => {
          sock.off('error', fail);
          resolve();
        });
      } catch (err) {
        fail(err);
      }
    });
    await dirHandle?.close();
    dirHandle = undefined;
    log.debug('attached', { containerId: t.id, ...req });

    const stdout = req.stdout ? io.stdout : undefined;
    const stderr = req.stderr ? io.stderr : undefined;
    const stdin = req.stdin && container.stdin ? io.stdin : undefined;
    let finish: (err?: Error) => void = () => undefined;
    const ended = new Promise<void>((resolve, reject) => {
      finish = (err) => {
        if (err) reject(err);
        else resolve();
      };
    });
    // The client going away detaches (the container keeps running).
    const onAbort = (): void => {
      finish();
    };
    io.signal.addEventListener('abort', onAbort, { once: true });
    cleanup.push(() => {
      io.signal.removeEventListener('abort', onAbort);
    });
    if (io.signal.aborted) finish();

    // ---- output: one packet, one write, to the stream its first byte names
    const outputs = [stdout, stderr].filter((s): s is Writable => s !== undefined);
    sock.on('data', (packet: Buffer) => {
      if (packet.length < 2) return;
      const dst = packet[0] === STDOUT_PIPE ? stdout : packet[0] === STDERR_PIPE ? stderr : undefined;
      if (dst === undefined || dst.destroyed || dst.writableEnded) return;
      dst.write(packet.subarray(1));
      if (dst.writableLength > MAX_PENDING_OUTPUT) {
        finish(
          new SkiffError(
            'resource-exhausted',
            `${what}: the client reads output too slowly (${String(MAX_PENDING_OUTPUT)} bytes waiting); detached`,
          ),
        );
      }
    });
    // conmon closes the socket when the container exits.
    sock.once('end', () => {
      finish();
    });
    sock.once('close', () => {
      finish();
    });
    sock.on('error', (err: Error) => {
      log.debug('attach socket error', { containerId: t.id, error: err.message });
      finish();
    });

    // ---- input: packets of at most MAX_STDIN_PACKET; stdin is paused until conmon has each one
    let closed = false;
    cleanup.push(() => (closed = true));
    if (stdin !== undefined) {
      forwardStdin(
        stdin,
        sock,
        () => closed,
        cleanup,
        () => {
          // The client closed stdin: tell conmon (it closes a stdin-once container's stdin).
          if (!closed) shutdownWrite(sock);
          // A reusable stdin without a tty: the session is over (CRI-O); otherwise output continues.
          if (!container.stdinOnce && !container.tty) finish();
          else if (outputs.length === 0) finish();
        },
      );
    } else if (outputs.length === 0) {
      // Nothing to carry either way.
      finish();
    }

    // ---- resize: through conmon's ctl fifo
    if (container.tty && io.resize !== undefined) {
      try {
        // O_NONBLOCK: with no conmon reading, open fails (ENXIO) instead of blocking.
        ctl = await open(paths.ctlFifo, constants.O_WRONLY | constants.O_NONBLOCK);
        const fifo = ctl;
        resizes = followResizes(
          io.resize,
          async (s) => {
            await fifo.write(`${String(WIN_RESIZE_EVENT)} ${String(s.height)} ${String(s.width)}\n`);
          },
          log,
        );
      } catch (err) {
        log.warn('attach: cannot resize the terminal', { containerId: t.id, error: messageOf(err) });
      }
    }

    await ended;
  } finally {
    for (const f of cleanup) f();
    resizes?.stop();
    sock.destroy();
    await ctl?.close().catch(() => undefined);
    await dirHandle?.close().catch(() => undefined);
    log.debug('detached', { containerId: t.id });
  }
}

/** Copies `stdin` to the socket in packets, pausing it until each write has reached the kernel. */
function forwardStdin(
  stdin: Readable,
  sock: UnixSocket.SeqpacketSocket,
  isClosed: () => boolean,
  cleanup: (() => void)[],
  onEnd: () => void,
): void {
  let inFlight = 0;
  const onData = (chunk: Buffer | string): void => {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (isClosed()) return;
    // An empty packet would read as end-of-stream on conmon's side.
    for (let off = 0; off < buf.length; off += MAX_STDIN_PACKET) {
      const part = buf.subarray(off, off + MAX_STDIN_PACKET);
      inFlight += 1;
      sock.write(part, 0, part.length, () => {
        inFlight -= 1;
        if (inFlight === 0 && !isClosed()) stdin.resume();
      });
    }
    if (inFlight > 0) stdin.pause();
  };
  const onStdinEnd = (): void => {
    onEnd();
  };
  stdin.on('data', onData);
  stdin.once('end', onStdinEnd);
  cleanup.push(() => {
    stdin.off('data', onData);
    stdin.off('end', onStdinEnd);
  });
  if (stdin.readableEnded) onEnd();
}

let unixSocket: Promise<typeof UnixSocket> | undefined;

/** A native addon: loaded on first use, so a missing binary breaks attach, not the daemon. */
async function loadUnixSocket(what: string): Promise<typeof UnixSocket> {
  unixSocket ??= import('node-unix-socket').then(
    (m) => m,
    (err: unknown) => {
      unixSocket = undefined;
      throw err;
    },
  );
  try {
    return await unixSocket;
  } catch (err) {
    throw new SkiffError(
      'failed-precondition',
      `${what}: attach needs the node-unix-socket native module, which did not load (${messageOf(err)}); reinstall it with npm ci`,
      { cause: err },
    );
  }
}

/** Half-closes our side; a socket conmon has closed meanwhile needs nothing more. */
function shutdownWrite(sock: UnixSocket.SeqpacketSocket): void {
  try {
    sock.end();
  } catch {
    // already closed
  }
}
