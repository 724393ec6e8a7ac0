/**
 * Exec and attach over SPDY (kubelet `remotecommand/httpstream.go`): the client opens one stream per
 * `streamType` (error, then stdin, stdout, stderr, resize as requested); once the expected set has been
 * replied to, the runtime runs with them; at the end stdout/stderr are finished, the Status goes on the
 * error stream, and the session is closed with GOAWAY.
 *
 * The set of expected streams comes from the request bound to the token (the CRI request), not from the
 * client's query parameters, as in kubelet's CRI streaming server: the same flags produced both.
 */
import type { Duplex } from 'node:stream';
import {
  encodeStatus,
  endWritable,
  type RemoteCommand,
  type RemoteStreamType,
  ResizeParser,
  ResizeQueue,
  runRemoteCommand,
  supportsResize,
  writeAndEnd,
} from './remotecommand.js';
import { firstOf, type SessionContext } from './session-context.js';
import { headerValue } from './spdy.js';
import { SpdySession, type SpdyStream } from './spdy-session.js';
import type { StreamIO } from './types.js';

const streamTypes: readonly RemoteStreamType[] = ['stdin', 'stdout', 'stderr', 'error', 'resize'];

function isStreamType(s: string | undefined): s is RemoteStreamType {
  return streamTypes.includes(s as RemoteStreamType);
}

/** The stream types a client opens for this request and protocol (kubelet createHTTPStreamStreams). */
export function expectedStreams(command: RemoteCommand, protocol: string): Set<RemoteStreamType> {
  const req = command.request;
  const expected = new Set<RemoteStreamType>(['error']);
  if (req.stdin) expected.add('stdin');
  if (req.stdout) expected.add('stdout');
  // A terminal has no separate stderr; client-go does not open one with tty.
  if (req.stderr && !req.tty) expected.add('stderr');
  if (req.tty && supportsResize(protocol)) expected.add('resize');
  return expected;
}

/** Runs one exec/attach session on an upgraded connection; resolves when the connection is closed. */
export async function serveRemoteCommandOverSpdy(
  socket: Duplex,
  head: Buffer,
  protocol: string,
  command: RemoteCommand,
  ctx: SessionContext,
): Promise<void> {
  const { log } = ctx;
  const expected = expectedStreams(command, protocol);
  const streams = new Map<RemoteStreamType, SpdyStream>();
  let allOpen!: () => void;
  const opened = new Promise<void>((resolve) => (allOpen = resolve));

  const session = new SpdySession(socket, {
    role: 'server',
    log,
    head,
    idleTimeoutMs: ctx.idleTimeoutMs,
    onStream: (stream) => {
      const type = headerValue(stream.headers, 'streamType');
      // kubelet replies to every stream and only counts the ones it knows.
      stream.accept().then(
        () => {
          if (isStreamType(type) && expected.has(type) && !streams.has(type)) {
            streams.set(type, stream);
            // Only stdin and resize are read; what a client might send on the others is dropped.
            if (type !== 'stdin' && type !== 'resize') stream.discardIncoming();
            if (streams.size === expected.size) allOpen();
          } else {
            log.warn('unexpected stream in session', { streamType: type ?? '', expected: [...expected] });
            stream.discardIncoming();
          }
        },
        (err: unknown) => {
          log.debug('reply to stream failed', { error: err });
        },
      );
    },
  });
  const onServerStop = (): void => {
    session.destroy();
  };
  ctx.serverSignal.addEventListener('abort', onServerStop, { once: true });
  try {
    const outcome = await firstOf(opened, session.closed, ctx.streamCreationTimeoutMs);
    if (outcome !== 'ready') {
      if (outcome === 'timeout') {
        log.warn('timed out waiting for client to create streams', {
          expected: [...expected],
          got: [...streams.keys()],
          timeoutMs: ctx.streamCreationTimeoutMs,
        });
      }
      session.destroy();
      return;
    }

    const abort = new AbortController();
    void session.closed.then(() => {
      abort.abort();
    });
    const resizeStream = streams.get('resize');
    const resize = resizeStream === undefined ? undefined : readResizes(resizeStream);
    const stdout = streams.get('stdout');
    const stderr = streams.get('stderr');
    const io: StreamIO = { signal: abort.signal };
    const stdin = streams.get('stdin');
    if (stdin !== undefined) io.stdin = stdin;
    if (stdout !== undefined) io.stdout = stdout;
    if (stderr !== undefined) io.stderr = stderr;
    if (resize !== undefined) io.resize = resize;

    const status = await runRemoteCommand(command, io, ctx.runtime, log);
    // The process is gone: stdin that still arrives has no reader.
    stdin?.discardIncoming();
    resize?.end();
    // Output first, then the status: client-go returns once stdout/stderr hit EOF and the error
    // stream has been read to its end.
    await Promise.all([endWritable(stdout), endWritable(stderr)]);
    await writeAndEnd(streams.get('error'), encodeStatus(status, protocol));
    // Our halves of stdin and resize too: client-go waits for the server to close stdin.
    await Promise.all([endWritable(stdin), endWritable(resizeStream)]);
    session.close();
    await session.closed;
  } finally {
    ctx.serverSignal.removeEventListener('abort', onServerStop);
  }
}

function readResizes(stream: SpdyStream): ResizeQueue {
  const queue = new ResizeQueue();
  const parser = new ResizeParser();
  stream.on('data', (chunk: Buffer) => {
    for (const size of parser.push(chunk)) queue.push(size);
  });
  stream.on('end', () => {
    queue.end();
  });
  stream.on('close', () => {
    queue.end();
  });
  return queue;
}
