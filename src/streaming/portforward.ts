/**
 * Port forwarding over SPDY (kubelet `portforward/httpstream.go`, protocol `portforward.k8s.io`): each
 * forwarded connection is a pair of streams, `streamType: error` and `streamType: data`, with the same
 * `port` and `requestID` headers. When both have arrived, the runtime pipes the data stream to the port
 * inside the pod; a failure is written as text on the error stream, which the client prints. A session
 * carries any number of such pairs, concurrently, until the client closes it.
 */
import type { Duplex } from 'node:stream';
import { messageOf } from '../errdefs.js';
import { endWritable, writeAndEnd } from './remotecommand.js';
import type { SessionContext } from './session-context.js';
import { type HeaderMap, headerValue, RstStatus } from './spdy.js';
import { SpdySession, type SpdyStream } from './spdy-session.js';
import type { PortForwardRequest } from './types.js';

export const portForwardProtocol = 'portforward.k8s.io';

/** Why a port-forward stream's headers are unacceptable, or undefined (kubelet httpStreamReceived). */
export function checkPortForwardHeaders(headers: HeaderMap): string | undefined {
  const port = headerValue(headers, 'port');
  if (port === undefined || port === '') return '"port" header is required';
  if (!/^\d{1,5}$/.test(port) || Number(port) > 0xffff) return `unable to parse "${port}" as a port`;
  if (Number(port) < 1) return `port "${port}" must be > 0`;
  const type = headerValue(headers, 'streamType');
  if (type === undefined || type === '') return '"streamType" header is required';
  if (type !== 'error' && type !== 'data') return `invalid stream type "${type}"`;
  return undefined;
}

/** The text the client gets when forwarding fails (kubelet's wording; there is no pod UID here). */
export function forwardErrorMessage(port: number, podSandboxId: string, err: unknown): string {
  return `error forwarding port ${port} to pod ${podSandboxId}, uid : ${messageOf(err)}`;
}

/**
 * Forwards one connection with the runtime. `signal` aborts the runtime's work; `onError` reports a
 * failure to the client. Ports not in a non-empty `request.ports` are refused with a message.
 */
export async function forwardConnection(
  request: PortForwardRequest,
  port: number,
  conn: Duplex,
  signal: AbortSignal,
  ctx: SessionContext,
  onError: (message: string) => Promise<void>,
): Promise<void> {
  if (request.ports.length > 0 && !request.ports.includes(port)) {
    await onError(
      `port ${port} is not one of the ports of this port-forward request (${request.ports.join(', ')})`,
    );
    return;
  }
  const started = Date.now();
  try {
    await ctx.runtime.portForward(request.podSandboxId, port, conn, signal);
    ctx.log.debug('port-forward connection finished', { port, durationMs: Date.now() - started });
  } catch (err) {
    if (!signal.aborted) ctx.log.warn('port-forward connection failed', { port, error: err });
    await onError(forwardErrorMessage(port, request.podSandboxId, err));
  }
}

interface Pair {
  requestId: string;
  data?: SpdyStream;
  error?: SpdyStream;
  timer: NodeJS.Timeout;
}

/** Serves one port-forward session on an upgraded connection (or a tunnel); resolves when it closes. */
export async function servePortForwardOverSpdy(
  socket: Duplex,
  head: Buffer,
  request: PortForwardRequest,
  ctx: SessionContext,
): Promise<void> {
  const { log } = ctx;
  const pairs = new Map<string, Pair>();
  const running = new Set<Promise<void>>();
  const sessionAbort = new AbortController();

  const session = new SpdySession(socket, {
    role: 'server',
    log,
    head,
    idleTimeoutMs: ctx.idleTimeoutMs,
    onStream: (stream) => {
      const problem = checkPortForwardHeaders(stream.headers);
      if (problem !== undefined) {
        log.warn('port-forward stream rejected', { reason: problem });
        stream.reset(RstStatus.refusedStream);
        return;
      }
      stream.accept().then(
        () => {
          addToPair(stream);
        },
        (err: unknown) => {
          log.debug('reply to stream failed', { error: err });
        },
      );
    },
  });

  // kubelet: a client that sends no requestID (pre-1.7) gets pairs by stream id: error n, data n + 2.
  const requestIdOf = (stream: SpdyStream): string => {
    const id = headerValue(stream.headers, 'requestID');
    if (id !== undefined && id !== '') return id;
    return String(headerValue(stream.headers, 'streamType') === 'error' ? stream.id : stream.id - 2);
  };

  const addToPair = (stream: SpdyStream): void => {
    const requestId = requestIdOf(stream);
    let pair = pairs.get(requestId);
    if (pair === undefined) {
      const created: Pair = {
        requestId,
        timer: setTimeout(() => {
          pairs.delete(requestId);
          const message = `(request=${requestId}) timed out waiting for streams`;
          log.warn('port-forward pair incomplete', { requestId, timeoutMs: ctx.streamCreationTimeoutMs });
          void writeAndEnd(created.error, Buffer.from(message));
          created.data?.reset();
        }, ctx.streamCreationTimeoutMs),
      };
      pair = created;
      pairs.set(requestId, pair);
    }
    const isError = headerValue(stream.headers, 'streamType') === 'error';
    if ((isError ? pair.error : pair.data) !== undefined) {
      const message = `error processing stream for request ${requestId}: ${isError ? 'error' : 'data'} stream already assigned`;
      log.warn('port-forward duplicate stream', { requestId });
      pair.error?.write(message);
      stream.reset(RstStatus.protocolError);
      return;
    }
    if (isError) {
      // The client only reads the error stream (client-go closes its side at once).
      stream.discardIncoming();
      pair.error = stream;
    } else {
      pair.data = stream;
    }
    if (pair.data !== undefined && pair.error !== undefined) {
      clearTimeout(pair.timer);
      pairs.delete(requestId);
      const run = runPair(pair.data, pair.error).finally(() => running.delete(run));
      running.add(run);
    }
  };

  const runPair = async (data: SpdyStream, error: SpdyStream): Promise<void> => {
    const port = Number(headerValue(data.headers, 'port'));
    const abort = new AbortController();
    const onGone = (): void => {
      abort.abort();
    };
    // The client resets the pair when it is done with it, or the session goes.
    data.once('close', onGone);
    sessionAbort.signal.addEventListener('abort', onGone, { once: true });
    try {
      await forwardConnection(request, port, data, abort.signal, ctx, (message) =>
        writeAndEnd(error, Buffer.from(message)),
      );
    } finally {
      data.off('close', onGone);
      sessionAbort.signal.removeEventListener('abort', onGone);
      // The runtime is done with the connection; whatever the client still sends has no reader.
      data.discardIncoming();
      await Promise.all([endWritable(data), endWritable(error)]);
    }
  };

  const onServerStop = (): void => {
    session.destroy();
  };
  ctx.serverSignal.addEventListener('abort', onServerStop, { once: true });
  try {
    await session.closed;
  } finally {
    ctx.serverSignal.removeEventListener('abort', onServerStop);
    sessionAbort.abort();
    for (const pair of pairs.values()) clearTimeout(pair.timer);
    await Promise.allSettled([...running]);
  }
}
