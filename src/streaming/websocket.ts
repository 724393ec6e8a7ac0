/**
 * The WebSocket transports (RFC 6455 via `ws`): remotecommand channels for exec/attach, and port
 * forwarding either as channels or as SPDY tunnelled through WebSocket messages.
 *
 * Why `ws`: it is the WebSocket implementation the Node ecosystem standardises on (a dependency of most
 * servers and test tools), actively maintained, dependency-free, with a `noServer` mode that hands us
 * the handshake of an upgrade we have already routed, per-socket pause/resume for back-pressure, and a
 * conformant framing and close handshake (Autobahn suite). Node 20 has a WebSocket client only.
 *
 * Channel framing (apimachinery `wsstream/conn.go`): every message starts with its channel number, one
 * byte for `*channel.k8s.io`, one ASCII digit for `*base64.channel.k8s.io` whose payloads are base64
 * text. remotecommand channels: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; v5 adds the message
 * `[255, n]` by which the client closes its channel n (stdin EOF). Port forwarding (kubelet
 * `portforward/websocket.go`): channel 2i carries the data of the i-th port and 2i+1 its errors, and the
 * first message on each carries the port as uint16 little-endian.
 */
import type { IncomingMessage } from 'node:http';
import { Duplex, Readable, Writable } from 'node:stream';
import type { WebSocket } from 'ws';
import type { Logger } from '../log.js';
import { forwardConnection } from './portforward.js';
import {
  encodeStatus,
  endWritable,
  type RemoteCommand,
  ResizeParser,
  ResizeQueue,
  runRemoteCommand,
  StreamProtocol,
} from './remotecommand.js';
import type { SessionContext } from './session-context.js';
import type { PortForwardRequest, StreamIO } from './types.js';

export type ChannelCodec = 'binary' | 'base64';

/** The v5 stream-close signal: `[255, channel]`. */
export const closeSignal = 255;

interface RemoteCommandProtocol {
  codec: ChannelCodec;
  /** How the Status is written on the error channel (JSON from v4 on, text before). */
  statusVersion: string;
  /** Whether `[255, n]` closes channel n. */
  closeSignal: boolean;
}

/** WebSocket subprotocols for exec/attach, "" standing for a client that names none (kubelet accepts it). */
export const wsRemoteCommandProtocols: ReadonlyMap<string, RemoteCommandProtocol> = new Map([
  [StreamProtocol.v5, { codec: 'binary', statusVersion: StreamProtocol.v5, closeSignal: true }],
  [StreamProtocol.v4, { codec: 'binary', statusVersion: StreamProtocol.v4, closeSignal: false }],
  ['v4.base64.channel.k8s.io', { codec: 'base64', statusVersion: StreamProtocol.v4, closeSignal: false }],
  [StreamProtocol.v1, { codec: 'binary', statusVersion: StreamProtocol.v1, closeSignal: false }],
  ['base64.channel.k8s.io', { codec: 'base64', statusVersion: StreamProtocol.v1, closeSignal: false }],
  ['', { codec: 'binary', statusVersion: StreamProtocol.v1, closeSignal: false }],
]);

/**
 * WebSocket subprotocols for port forwarding. kubelet's channel protocol is offered as "", `v4.channel.k8s.io`
 * and `v4.base64.channel.k8s.io`; `v2.portforward.k8s.io` is accepted with the same channel framing (the
 * name skiff's design gives it). Not served: `SPDY/3.1+portforward.k8s.io`, SPDY tunnelled in WebSocket
 * messages, which client-go speaks to the API server only (the API server talks SPDY to kubelet, and
 * kubelet to us); `ws` would also refuse the name, whose '/' is not an RFC 6455 token character.
 */
export const wsPortForwardProtocols: ReadonlyMap<string, ChannelCodec> = new Map([
  ['v2.portforward.k8s.io', 'binary'],
  [StreamProtocol.v4, 'binary'],
  ['v4.base64.channel.k8s.io', 'base64'],
  ['', 'binary'],
]);

/**
 * The subprotocol to answer: the first the client offers that we support (kubelet's handshake), "" when
 * it offers none and "" is supported, undefined when nothing fits.
 */
export function negotiateSubprotocol(
  offered: readonly string[],
  supported: ReadonlySet<string>,
): string | undefined {
  if (offered.length === 0) return supported.has('') ? '' : undefined;
  return offered.find((p) => p !== '' && supported.has(p));
}

/** The subprotocols a handshake offers (`Sec-WebSocket-Protocol`, comma-separated, possibly repeated). */
export function offeredSubprotocols(req: IncomingMessage): string[] {
  // Node joins repeated Sec-WebSocket-Protocol headers with ", ".
  return (req.headers['sec-websocket-protocol'] ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
}

/** One channel message as sent on the wire (a Buffer for binary codecs, a string for base64). */
export function encodeChannelMessage(codec: ChannelCodec, channel: number, data: Buffer): Buffer | string {
  if (codec === 'base64') return String.fromCharCode(0x30 + channel) + data.toString('base64');
  const out = Buffer.allocUnsafe(data.length + 1);
  out[0] = channel;
  data.copy(out, 1);
  return out;
}

/** The channel and payload of a received message; undefined for an empty one (ignored, like kubelet). */
export function decodeChannelMessage(
  codec: ChannelCodec,
  message: Buffer,
): { channel: number; data: Buffer } | undefined {
  const first = message[0];
  if (first === undefined) return undefined;
  if (codec === 'base64') {
    return { channel: first - 0x30, data: Buffer.from(message.toString('latin1', 1), 'base64') };
  }
  return { channel: first, data: message.subarray(1) };
}

interface ChannelSink {
  push(chunk: Buffer | null): boolean;
  readonly destroyed: boolean;
  destroy(error?: Error): void;
}

/**
 * A WebSocket carrying numbered channels. Incoming messages go to the channel's readable; when it is
 * full the socket is paused until the reader catches up (the peer is pushed back through TCP). Writes
 * wait for the send to be flushed whenever more than `highWaterMark` bytes are queued on the socket.
 */
export class ChannelConnection {
  /** Resolves when the WebSocket has closed. */
  readonly closed: Promise<void>;
  private readonly sinks = new Map<number, ChannelSink>();
  private readonly ended = new Set<number>();
  private readonly pausedBy = new Set<number>();

  constructor(
    private readonly ws: WebSocket,
    private readonly codec: ChannelCodec,
    private readonly supportsCloseSignal: boolean,
    private readonly log: Logger,
    private readonly highWaterMark = 256 * 1024,
  ) {
    this.closed = new Promise((resolve) =>
      ws.once('close', () => {
        resolve();
      }),
    );
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      this.onMessage(data, isBinary);
    });
    ws.on('error', (err: Error) => {
      log.debug('websocket error', { error: err });
    });
    ws.once('close', () => {
      for (const sink of this.sinks.values())
        if (!sink.destroyed) sink.destroy(new Error('connection closed'));
    });
  }

  get isOpen(): boolean {
    return this.ws.readyState === this.ws.OPEN;
  }

  /** A readable fed by `channel`. */
  readable(channel: number): Readable {
    const r = new Readable({
      highWaterMark: 64 * 1024,
      read: () => {
        this.resume(channel);
      },
    });
    r.on('error', () => undefined);
    this.sinks.set(channel, r);
    return r;
  }

  /** A writable that sends on `channel`; ending it sends nothing (these protocols have no per-channel EOF). */
  writable(channel: number): Writable {
    const w = new Writable({
      highWaterMark: 64 * 1024,
      write: (chunk: Buffer, _enc, cb) => {
        this.send(channel, chunk).then(() => {
          cb();
        }, cb);
      },
    });
    w.on('error', () => undefined);
    return w;
  }

  /** Both directions of `channel`, for port forwarding. */
  duplex(channel: number): Duplex {
    const d = new Duplex({
      allowHalfOpen: true,
      readableHighWaterMark: 64 * 1024,
      writableHighWaterMark: 64 * 1024,
      read: () => {
        this.resume(channel);
      },
      write: (chunk: Buffer, _enc, cb) => {
        this.send(channel, chunk).then(() => {
          cb();
        }, cb);
      },
    });
    d.on('error', () => undefined);
    this.sinks.set(channel, d);
    return d;
  }

  /** Drops what arrives on `channel` from now on: a channel nobody reads must not pause the others. */
  discard(channel: number): void {
    this.sinks.delete(channel);
    this.resume(channel);
  }

  /** Sends `data` on `channel`, resolving at once unless the socket is backed up. */
  send(channel: number, data: Buffer): Promise<void> {
    if (!this.isOpen) return Promise.reject(new Error('connection closed'));
    const message = encodeChannelMessage(this.codec, channel, data);
    const wait = this.ws.bufferedAmount > this.highWaterMark;
    return new Promise((resolve, reject) => {
      this.ws.send(message, { binary: this.codec === 'binary' }, (err) => {
        if (!wait) return;
        if (err) reject(err);
        else resolve();
      });
      if (!wait) resolve();
    });
  }

  /** Closes the WebSocket normally (1000) after what was sent, and waits for it to be closed. */
  async close(): Promise<void> {
    if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) this.ws.close(1000);
    await this.closed;
  }

  terminate(): void {
    this.ws.terminate();
  }

  private onMessage(message: Buffer, isBinary: boolean): void {
    if (this.supportsCloseSignal && isBinary && message[0] === closeSignal) {
      // v5: [255, n] half-closes the client's channel n.
      const channel = message[1];
      if (message.length !== 2 || channel === undefined) {
        this.log.warn('malformed close signal', { bytes: message.length });
        return;
      }
      this.endChannel(channel);
      return;
    }
    const decoded = decodeChannelMessage(this.codec, message);
    if (decoded === undefined) return;
    const sink = this.sinks.get(decoded.channel);
    // Messages for channels that are not readable here are dropped, as kubelet's ignore channels do.
    if (sink === undefined || sink.destroyed || this.ended.has(decoded.channel)) return;
    if (decoded.data.length === 0) return;
    if (!sink.push(decoded.data)) {
      this.pausedBy.add(decoded.channel);
      this.ws.pause();
    }
  }

  private endChannel(channel: number): void {
    const sink = this.sinks.get(channel);
    if (sink === undefined || this.ended.has(channel)) return;
    this.ended.add(channel);
    if (!sink.destroyed) sink.push(null);
    this.resume(channel);
  }

  private resume(channel: number): void {
    if (this.pausedBy.delete(channel) && this.pausedBy.size === 0) this.ws.resume();
  }
}

/** Runs one exec/attach session on a WebSocket; resolves when it is closed. */
export async function serveRemoteCommandOverWebSocket(
  ws: WebSocket,
  protocol: string,
  command: RemoteCommand,
  ctx: SessionContext,
): Promise<void> {
  const spec = wsRemoteCommandProtocols.get(protocol);
  if (spec === undefined) throw new Error(`unsupported remotecommand subprotocol "${protocol}"`);
  const conn = new ChannelConnection(ws, spec.codec, spec.closeSignal, ctx.log);
  const onServerStop = (): void => {
    conn.terminate();
  };
  ctx.serverSignal.addEventListener('abort', onServerStop, { once: true });
  try {
    const req = command.request;
    const abort = new AbortController();
    void conn.closed.then(() => {
      abort.abort();
    });
    const io: StreamIO = { signal: abort.signal };
    if (req.stdin) io.stdin = conn.readable(0);
    if (req.stdout) io.stdout = conn.writable(1);
    if (req.stderr && !req.tty) io.stderr = conn.writable(2);
    let resize: ResizeQueue | undefined;
    if (req.tty) {
      resize = new ResizeQueue();
      const queue = resize;
      const parser = new ResizeParser();
      const r = conn.readable(4);
      r.on('data', (chunk: Buffer) => {
        for (const size of parser.push(chunk)) queue.push(size);
      });
      r.on('close', () => {
        queue.end();
      });
      io.resize = resize;
    }
    // kubelet: an empty message on the lowest writable channel tells the client the session is up.
    await conn.send(io.stdout ? 1 : io.stderr ? 2 : 3, Buffer.alloc(0)).catch(() => undefined);

    const status = await runRemoteCommand(command, io, ctx.runtime, ctx.log);
    resize?.end();
    await Promise.all([endWritable(io.stdout), endWritable(io.stderr)]);
    const payload = encodeStatus(status, spec.statusVersion);
    if (payload !== undefined && conn.isOpen) await conn.send(3, payload).catch(() => undefined);
    await conn.close();
  } finally {
    ctx.serverSignal.removeEventListener('abort', onServerStop);
  }
}

/** Runs one port-forward session on a WebSocket; resolves when it is closed. */
export async function servePortForwardOverWebSocket(
  ws: WebSocket,
  protocol: string,
  request: PortForwardRequest,
  ports: readonly number[],
  ctx: SessionContext,
): Promise<void> {
  const codec = wsPortForwardProtocols.get(protocol);
  if (codec === undefined) throw new Error(`unsupported port-forward subprotocol "${protocol}"`);
  const conn = new ChannelConnection(ws, codec, false, ctx.log);
  const abort = new AbortController();
  const onServerStop = (): void => {
    abort.abort();
    conn.terminate();
  };
  ctx.serverSignal.addEventListener('abort', onServerStop, { once: true });
  void conn.closed.then(() => {
    abort.abort();
  });
  try {
    const pairs = ports.map((port, i) => ({ port, data: conn.duplex(2 * i), errorChannel: 2 * i + 1 }));
    // Each channel's first message is its port, uint16 little-endian, so the client can match them.
    for (const { port, errorChannel } of pairs) {
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16LE(port, 0);
      await conn.send(errorChannel - 1, prefix).catch(() => undefined);
      await conn.send(errorChannel, prefix).catch(() => undefined);
    }
    await Promise.all(
      pairs.map(async ({ port, data, errorChannel }) => {
        await forwardConnection(request, port, data, abort.signal, ctx, (message) =>
          conn.isOpen
            ? conn.send(errorChannel, Buffer.from(message)).catch(() => undefined)
            : Promise.resolve(),
        );
        conn.discard(errorChannel - 1);
        await endWritable(data);
      }),
    );
    await conn.close();
  } finally {
    ctx.serverSignal.removeEventListener('abort', onServerStop);
  }
}
