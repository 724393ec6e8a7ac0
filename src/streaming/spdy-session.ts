/**
 * A SPDY/3.1 session over one byte stream (an upgraded HTTP connection): stream creation and replies,
 * half-close, resets, PING, GOAWAY, and flow control. Frames and header compression are in spdy.ts; the
 * section numbers cite "SPDY Protocol - Draft 3.1".
 *
 * Flow control (§2.6.8, §3.1 session windows) and the peers we actually meet. moby/spdystream, behind
 * every Kubernetes client (kubelet, kubectl via the API server, crictl), implements none of it: it never
 * sends WINDOW_UPDATE, ignores ours, and sends as much as its writer hands it. So:
 *  - Sending: we track the peer's stream and session windows from the start, but *enforce* them only
 *    once the peer has shown it does flow control (a WINDOW_UPDATE or a SETTINGS_INITIAL_WINDOW_SIZE;
 *    SPDY/3.1 implementations send one early). Enforcing against spdystream would stall every stream
 *    after 64 KiB. Either way a slow reader never makes us buffer without bound: we wait for the socket
 *    to drain (`write() === false`) before writing more data.
 *  - Receiving: we advertise the default 64 KiB windows and send WINDOW_UPDATE as the application reads
 *    (half a window at a time). A peer that ignores windows is not reset for overrunning them; instead,
 *    when a stream has more than `streamBufferLimit` bytes unread we stop reading the socket until it
 *    drains, which pushes back through TCP (what spdystream itself does).
 */
import { Duplex } from 'node:stream';
import type { Logger } from '../log.js';
import {
  decodeHeaderBlock,
  defaultWindowSize,
  encodeFrame,
  encodeHeaderBlock,
  flagFin,
  type Frame,
  frameHeaderLength,
  GoAwayStatus,
  HeaderCompressor,
  HeaderDecompressor,
  type HeaderMap,
  maxFrameLength,
  maxWindowSize,
  readFrame,
  RstStatus,
  SettingsId,
  SpdyProtocolError,
} from './spdy.js';

export interface SpdySessionOptions {
  /** The server accepts odd (client-initiated) streams and numbers its own even; a client the reverse. */
  role: 'server' | 'client';
  log: Logger;
  /** Close the connection after this long without a frame either way (0: never). spdystream semantics. */
  idleTimeoutMs?: number;
  /** Unread bytes per stream beyond which reading the socket pauses (see the module comment). */
  streamBufferLimit?: number;
  /** Largest DATA payload we send in one frame. */
  maxDataFrame?: number;
  /** Bytes queued on the socket beyond which the peer is considered stuck and the session destroyed. */
  maxQueuedBytes?: number;
  /** Called for each stream the peer opens, with its headers; answer with `accept()` or `reset()`. */
  onStream?: (stream: SpdyStream) => void;
  /** Bytes that arrived with the HTTP upgrade and belong to the session. */
  head?: Buffer;
}

/** Thrown into a stream's users when the peer resets it or the session ends under it. */
export class SpdyStreamError extends Error {
  override readonly name = 'SpdyStreamError';
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

interface Waiter {
  resolve: () => void;
}

/**
 * One SPDY stream as a Duplex: what the peer sends is readable, what is written goes out as DATA frames;
 * `end()` half-closes (DATA with FLAG_FIN), `reset()` aborts both directions (RST_STREAM).
 */
export class SpdyStream extends Duplex {
  /** Set once our SYN_REPLY (server) has been written or the peer's (client) has arrived. */
  replied = false;
  /** The peer sent FLAG_FIN: no more data will arrive. */
  remoteFinished = false;
  /** We sent FLAG_FIN. */
  localFinished = false;
  /** RST_STREAM sent or received. */
  wasReset = false;
  /** Peer's window for this stream: bytes we may still send. */
  sendWindow: number;

  /** @internal Bytes read but not yet acknowledged with a stream-level WINDOW_UPDATE. */
  unacknowledged = 0;

  private readonly queue: Buffer[] = [];
  private queuedBytes = 0;
  private wantsData = false;
  private discarding = false;
  private readonly roomWaiters: Waiter[] = [];

  /** @internal use SpdySession.openStream or the session's onStream. */
  constructor(
    private readonly session: SpdySession,
    readonly id: number,
    readonly headers: HeaderMap,
    initialSendWindow: number,
  ) {
    super({ allowHalfOpen: true, readableHighWaterMark: 64 * 1024, writableHighWaterMark: 64 * 1024 });
    this.sendWindow = initialSendWindow;
    // Users attach their own error handling (pipeline); this only keeps an unobserved reset from
    // becoming an uncaught exception.
    this.on('error', () => undefined);
  }

  /** Server side: answers the peer's SYN_STREAM (§2.6.2). Data may be written once this resolves. */
  accept(): Promise<void> {
    return this.session.reply(this);
  }

  /** Aborts the stream both ways (§2.6.3); CANCEL unless a status is given. */
  reset(status: number = RstStatus.cancel): void {
    if (this.wasReset) return;
    this.wasReset = true;
    this.session.sendReset(this.id, status);
    this.destroy(new SpdyStreamError(`stream ${this.id} reset`, status));
  }

  /** Unread bytes held for this stream. */
  get buffered(): number {
    return this.queuedBytes;
  }

  /**
   * Drops what the peer sends from now on (crediting the flow-control windows), for a stream whose
   * readable side nobody reads: unread data must not hold up the session (see waitForRoom).
   */
  discardIncoming(): void {
    this.discarding = true;
    if (this.queuedBytes > 0) this.session.consumed(this.queuedBytes, this);
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.releaseRoom(true);
  }

  /** @internal DATA from the peer. */
  onData(data: Buffer): void {
    if (this.destroyed || this.discarding) {
      this.session.consumed(data.length, this.destroyed ? undefined : this);
      return;
    }
    if (data.length > 0) {
      this.queue.push(data);
      this.queuedBytes += data.length;
    }
    this.pump();
  }

  /** @internal FLAG_FIN from the peer. */
  onRemoteFin(): void {
    this.remoteFinished = true;
    this.pump();
    this.session.maybeForget(this);
  }

  /** @internal RST_STREAM from the peer, or the session went away. */
  onReset(error: SpdyStreamError): void {
    this.wasReset = true;
    this.releaseRoom();
    this.destroy(error);
  }

  /** @internal Resolves when the unread bytes fall to `limit` or the stream ends. */
  waitForRoom(limit: number): Promise<void> {
    if (this.queuedBytes <= limit || this.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push({ resolve }));
  }

  override _read(): void {
    this.wantsData = true;
    this.pump();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.session.sendData(this, chunk, false).then(
      () => {
        callback();
      },
      (err: unknown) => {
        callback(err instanceof Error ? err : new Error(String(err)));
      },
    );
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.session.sendData(this, Buffer.alloc(0), true).then(
      () => {
        this.localFinished = true;
        this.session.maybeForget(this);
        callback();
      },
      (err: unknown) => {
        callback(err instanceof Error ? err : new Error(String(err)));
      },
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.wasReset && !(this.localFinished && this.remoteFinished) && !this.session.isClosed) {
      if (error === null && this.remoteFinished) {
        // Destroyed after the peer finished, without an error: the user is done with the stream (async
        // iteration destroys a stream at its end, for one). Half-close ours instead of cancelling, so
        // the peer sees an orderly end.
        this.localFinished = true;
        this.session.sendFin(this.id);
      } else {
        // Otherwise cancel it for the peer too, so neither end waits on it (spdystream's Reset).
        this.wasReset = true;
        this.session.sendReset(this.id, RstStatus.cancel);
      }
    }
    // Whatever was never read still counts against the session window: give it back.
    if (this.queuedBytes > 0) this.session.consumed(this.queuedBytes);
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.releaseRoom();
    this.session.forget(this);
    callback(error);
  }

  private pump(): void {
    let read = 0;
    let chunk: Buffer | undefined;
    while (this.wantsData && (chunk = this.queue.shift()) !== undefined) {
      this.queuedBytes -= chunk.length;
      read += chunk.length;
      this.wantsData = this.push(chunk);
    }
    if (read > 0) this.session.consumed(read, this);
    if (this.remoteFinished && this.queue.length === 0 && !this.readableEnded) this.push(null);
    this.releaseRoom();
  }

  /** @internal Wakes the read loop waiting for this stream to drain (always, with `force`). */
  releaseRoom(force = false): void {
    if (this.roomWaiters.length === 0) return;
    if (!force && !this.destroyed && this.queuedBytes > this.session.streamBufferLimit) return;
    for (const w of this.roomWaiters.splice(0)) w.resolve();
  }
}

/** A SPDY/3.1 session; see the module comment. */
export class SpdySession {
  readonly streamBufferLimit: number;
  /** Resolves when the underlying connection has closed. */
  readonly closed: Promise<void>;

  private readonly log: Logger;
  private readonly role: 'server' | 'client';
  private readonly maxDataFrame: number;
  private readonly maxQueuedBytes: number;
  private readonly onStream: ((stream: SpdyStream) => void) | undefined;
  private readonly compressor = new HeaderCompressor();
  private readonly decompressor = new HeaderDecompressor();
  private readonly streams = new Map<number, SpdyStream>();
  private readonly pendingReplies = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private readonly pings = new Map<number, () => void>();
  /** Serialises header-block frames: compression order must be wire order (§2.6.10.1). */
  private headerChain: Promise<void> = Promise.resolve();
  private nextStreamId: number;
  private nextPingId: number;
  private lastRemoteStreamId = 0;
  /** The peer's SETTINGS_INITIAL_WINDOW_SIZE. */
  private peerInitialWindow = defaultWindowSize;
  private sessionSendWindow = defaultWindowSize;
  private sessionUnacknowledged = 0;
  private enforceFlowControl = false;
  private windowWaiters: Waiter[] = [];
  private drainWaiters: Waiter[] = [];
  private goneAway = false;
  private closing = false;
  private isDone = false;
  private socketClosed = false;
  private readLoopDone = false;
  private resolveClosed!: () => void;

  constructor(
    private readonly socket: Duplex,
    options: SpdySessionOptions,
  ) {
    this.role = options.role;
    this.log = options.log;
    this.onStream = options.onStream;
    this.streamBufferLimit = options.streamBufferLimit ?? 2 * defaultWindowSize;
    this.maxDataFrame = options.maxDataFrame ?? 32 * 1024;
    this.maxQueuedBytes = options.maxQueuedBytes ?? 64 * 1024 * 1024;
    this.nextStreamId = this.role === 'client' ? 1 : 2;
    this.nextPingId = this.role === 'client' ? 1 : 2;
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));

    socket.on('drain', () => {
      this.wake('drain');
    });
    socket.on('error', (err: Error) => {
      this.log.debug('spdy connection error', { error: err });
    });
    // The socket can close (EOF, then our end) while frames that arrived before it are still being
    // processed; the read loop finishes the session once it has handled them.
    socket.on('close', () => {
      this.socketClosed = true;
      for (const s of this.streams.values()) s.releaseRoom(true);
      this.wake('all');
      if (this.readLoopDone) this.finish(new SpdyStreamError('connection closed'));
    });
    if (options.idleTimeoutMs && 'setTimeout' in socket && typeof socket.setTimeout === 'function') {
      // Socket inactivity is frame inactivity: every frame is a read or a write (spdystream's idle
      // framer resets its timer on each frame too).
      (socket as Duplex & { setTimeout(ms: number, cb: () => void): void }).setTimeout(
        options.idleTimeoutMs,
        () => {
          this.log.info('streaming connection idle, closing', { idleTimeoutMs: options.idleTimeoutMs });
          this.destroy();
        },
      );
    }
    void this.readLoop(options.head ?? Buffer.alloc(0));
  }

  /** True once the connection is gone (or going) and nothing more can be sent. */
  get isClosed(): boolean {
    return this.isDone || this.socketClosed || this.socket.destroyed;
  }

  /** Streams open on this session. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Client side: opens a stream with `headers` and resolves once the peer's SYN_REPLY arrives (§2.3.2). */
  async openStream(headers: HeaderMap, options: { fin?: boolean } = {}): Promise<SpdyStream> {
    if (this.isClosed || this.goneAway) throw new SpdyStreamError('session is closed');
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    const stream = new SpdyStream(this, id, headers, this.peerInitialWindow);
    this.streams.set(id, stream);
    if (options.fin) stream.localFinished = true;
    const replied = new Promise<void>((resolve, reject) => this.pendingReplies.set(id, { resolve, reject }));
    replied.catch(() => undefined); // awaited below; rejected early if the session ends meanwhile
    await this.sendHeaderFrame(
      (headerBlock) => ({
        type: 'syn_stream',
        streamId: id,
        associatedStreamId: 0,
        priority: 0,
        flags: options.fin ? flagFin : 0,
        headerBlock,
      }),
      headers,
    );
    await replied;
    return stream;
  }

  /** Sends a PING (§2.6.5) and resolves with the round-trip time in ms. */
  async ping(): Promise<number> {
    const id = this.nextPingId;
    this.nextPingId += 2;
    const started = Date.now();
    const pong = new Promise<void>((resolve) => this.pings.set(id, resolve));
    await this.writeFrame(encodeFrame({ type: 'ping', id }));
    await pong;
    return Date.now() - started;
  }

  /**
   * Ends the session gracefully: GOAWAY (§2.6.6), then half-close the connection once everything queued
   * is written. We keep reading until the peer closes (closing with unread input would make the kernel
   * send RST and the peer could lose our last bytes), but no longer than `lingerMs`.
   */
  close(lingerMs = 5000): void {
    if (this.closing || this.isClosed) return;
    this.closing = true;
    this.goneAway = true;
    this.socket.write(
      encodeFrame({ type: 'goaway', lastGoodStreamId: this.lastRemoteStreamId, status: GoAwayStatus.ok }),
    );
    // Header frames may still be on their way through the compressor: end after them.
    void this.headerChain.then(() => {
      this.socket.end();
      const timer = setTimeout(() => this.socket.destroy(), lingerMs);
      timer.unref();
      void this.closed.then(() => {
        clearTimeout(timer);
      });
    });
  }

  /** Tears the session down at once; streams still open get an error. */
  destroy(error?: Error): void {
    this.socket.destroy(error);
  }

  /** @internal SYN_REPLY for a stream the peer opened. */
  async reply(stream: SpdyStream): Promise<void> {
    if (stream.replied) return;
    await this.sendHeaderFrame(
      (headerBlock) => ({ type: 'syn_reply', streamId: stream.id, flags: 0, headerBlock }),
      new Map(),
    );
    stream.replied = true;
  }

  /** @internal An empty DATA frame with FLAG_FIN, outside the stream's write queue. */
  sendFin(streamId: number): void {
    if (this.isClosed) return;
    this.socket.write(encodeFrame({ type: 'data', streamId, flags: flagFin, data: Buffer.alloc(0) }));
  }

  /** @internal */
  sendReset(streamId: number, status: number): void {
    if (this.isClosed) return;
    this.socket.write(encodeFrame({ type: 'rst_stream', streamId, status }));
  }

  /**
   * @internal Sends `data` on `stream` as DATA frames of at most maxDataFrame bytes, within the peer's
   * windows when they are enforced, waiting for the socket to drain between frames when it is full.
   */
  async sendData(stream: SpdyStream, data: Buffer, fin: boolean): Promise<void> {
    if (data.length === 0 && !fin) return;
    let off = 0;
    do {
      this.checkSendable(stream);
      let n = Math.min(data.length - off, this.maxDataFrame);
      if (n > 0 && this.enforceFlowControl) {
        while (Math.min(stream.sendWindow, this.sessionSendWindow) <= 0) {
          await this.waitFor('window');
          this.checkSendable(stream);
        }
        n = Math.min(n, stream.sendWindow, this.sessionSendWindow);
      }
      // Tracked even when not enforced, so enforcing later starts from the true balance.
      stream.sendWindow -= n;
      this.sessionSendWindow -= n;
      const last = off + n >= data.length;
      await this.writeFrame(
        encodeFrame({
          type: 'data',
          streamId: stream.id,
          flags: last && fin ? flagFin : 0,
          data: data.subarray(off, off + n),
        }),
      );
      off += n;
    } while (off < data.length);
  }

  private checkSendable(stream: SpdyStream): void {
    if (stream.wasReset) throw new SpdyStreamError(`stream ${stream.id} was reset`);
    if (this.isClosed) throw new SpdyStreamError('connection closed');
  }

  /**
   * @internal The application read `n` bytes of `stream` (or they were discarded): credit the windows,
   * sending WINDOW_UPDATE once half a window has been consumed (§2.6.8).
   */
  consumed(n: number, stream?: SpdyStream): void {
    if (this.isClosed || n === 0) return;
    if (stream !== undefined && !stream.remoteFinished && !stream.wasReset) {
      stream.unacknowledged += n;
      if (stream.unacknowledged >= defaultWindowSize / 2) {
        const delta = stream.unacknowledged;
        stream.unacknowledged = 0;
        this.socket.write(encodeFrame({ type: 'window_update', streamId: stream.id, delta }));
      }
    }
    this.sessionUnacknowledged += n;
    if (this.sessionUnacknowledged >= defaultWindowSize / 2) {
      const delta = this.sessionUnacknowledged;
      this.sessionUnacknowledged = 0;
      this.socket.write(encodeFrame({ type: 'window_update', streamId: 0, delta }));
    }
  }

  /** @internal Drops a stream once both directions are finished. */
  maybeForget(stream: SpdyStream): void {
    if (stream.localFinished && stream.remoteFinished) this.forget(stream);
  }

  /** @internal */
  forget(stream: SpdyStream): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.streams.delete(stream.id);
    const pending = this.pendingReplies.get(stream.id);
    if (pending) {
      this.pendingReplies.delete(stream.id);
      pending.reject(new SpdyStreamError(`stream ${stream.id} closed before its reply`));
    }
    // §2.6.6: after GOAWAY, the session ends when its last stream does.
    if (this.goneAway && this.streams.size === 0 && !this.closing) this.close();
  }

  private async sendHeaderFrame(build: (headerBlock: Buffer) => Frame, headers: HeaderMap): Promise<void> {
    const step = this.headerChain.then(async () => {
      const block = await this.compressor.compress(encodeHeaderBlock(headers));
      if (this.isClosed) throw new SpdyStreamError('connection closed');
      return this.writeFrame(encodeFrame(build(block)));
    });
    this.headerChain = step.catch(() => undefined);
    return step;
  }

  private async writeFrame(frame: Buffer): Promise<void> {
    if (this.isClosed) throw new SpdyStreamError('connection closed');
    if (this.socket.writableLength > this.maxQueuedBytes) {
      this.log.warn('streaming peer is not reading, closing the connection', {
        queued: this.socket.writableLength,
      });
      this.destroy();
      throw new SpdyStreamError('connection closed: peer not reading');
    }
    if (!this.socket.write(frame)) await this.waitFor('drain');
  }

  private waitFor(what: 'window' | 'drain'): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    return new Promise((resolve) =>
      (what === 'window' ? this.windowWaiters : this.drainWaiters).push({ resolve }),
    );
  }

  private wake(what: 'window' | 'drain' | 'all'): void {
    if (what !== 'drain') for (const w of this.windowWaiters.splice(0)) w.resolve();
    if (what !== 'window') for (const w of this.drainWaiters.splice(0)) w.resolve();
  }

  private async readLoop(head: Buffer): Promise<void> {
    const input = new ByteQueue();
    input.push(head);
    try {
      await this.drainFrames(input);
      // destroyOnReturn: false, or the iterator destroys the socket at EOF, before our last writes.
      for await (const chunk of this.socket.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
        input.push(chunk);
        await this.drainFrames(input);
      }
      // The peer half-closed: nothing more will come. Finish our side too.
      this.goneAway = true;
      if (!this.isClosed) this.close(this.streams.size === 0 ? 5000 : 1000);
    } catch (err) {
      if (this.isClosed) {
        // torn down under us; nothing to answer
      } else if (err instanceof SpdyProtocolError) {
        this.log.warn('spdy protocol error, closing the connection', { error: err });
        this.socket.write(
          encodeFrame({
            type: 'goaway',
            lastGoodStreamId: this.lastRemoteStreamId,
            status: GoAwayStatus.protocolError,
          }),
        );
        this.socket.end();
        setTimeout(() => this.socket.destroy(), 1000).unref();
      } else {
        this.log.debug('spdy read failed', { error: err });
        this.destroy();
      }
    } finally {
      this.readLoopDone = true;
      if (this.socketClosed) this.finish(new SpdyStreamError('connection closed'));
    }
  }

  private async drainFrames(input: ByteQueue): Promise<void> {
    for (;;) {
      const header = input.peek(frameHeaderLength);
      if (header === undefined) return;
      const length = header.readUInt32BE(4) & 0xffffff;
      const whole = input.take(frameHeaderLength + length);
      if (whole === undefined) {
        // readFrame validates the header (and the length limit) before the payload arrives.
        readFrame(header, maxFrameLength);
        return;
      }
      const parsed = readFrame(whole, maxFrameLength);
      if (parsed === undefined) throw new SpdyProtocolError('incomplete frame');
      await this.handleFrame(parsed.frame);
      if (this.isDone) return;
    }
  }

  private async handleFrame(frame: Frame): Promise<void> {
    switch (frame.type) {
      case 'data': {
        const stream = this.streams.get(frame.streamId);
        if (stream === undefined || stream.remoteFinished) {
          // §2.4.2 would reset; spdystream ignores. Either way the bytes count against the session window.
          this.consumed(frame.data.length);
          return;
        }
        stream.onData(frame.data);
        if ((frame.flags & flagFin) !== 0) stream.onRemoteFin();
        // A peer that ignores our window: stop reading until the application catches up.
        if (!this.socketClosed) await stream.waitForRoom(this.streamBufferLimit);
        return;
      }
      case 'syn_stream': {
        // Always inflate, even for a stream we refuse: the zlib context is shared (§2.6.10.1).
        const headers = decodeHeaderBlock(await this.decompressor.decompress(frame.headerBlock));
        this.onSynStream(frame.streamId, headers, frame.flags);
        return;
      }
      case 'syn_reply': {
        decodeHeaderBlock(await this.decompressor.decompress(frame.headerBlock));
        const stream = this.streams.get(frame.streamId);
        const pending = this.pendingReplies.get(frame.streamId);
        if (stream === undefined || pending === undefined) return;
        this.pendingReplies.delete(frame.streamId);
        stream.replied = true;
        pending.resolve();
        if ((frame.flags & flagFin) !== 0) stream.onRemoteFin();
        return;
      }
      case 'headers': {
        decodeHeaderBlock(await this.decompressor.decompress(frame.headerBlock));
        const stream = this.streams.get(frame.streamId);
        if (stream !== undefined && (frame.flags & flagFin) !== 0) stream.onRemoteFin();
        return;
      }
      case 'rst_stream': {
        const stream = this.streams.get(frame.streamId);
        const pending = this.pendingReplies.get(frame.streamId);
        const error = new SpdyStreamError(
          `stream ${frame.streamId} reset by peer (status ${frame.status})`,
          frame.status,
        );
        if (pending) {
          this.pendingReplies.delete(frame.streamId);
          pending.reject(error);
        }
        stream?.onReset(error);
        this.wake('window');
        return;
      }
      case 'settings':
        for (const e of frame.entries) {
          if (e.id !== SettingsId.initialWindowSize) continue;
          if (e.value > maxWindowSize) throw new SpdyProtocolError(`initial window ${e.value} too large`);
          // §2.6.4: a new initial window adjusts every open stream's window by the difference.
          const delta = e.value - this.peerInitialWindow;
          this.peerInitialWindow = e.value;
          for (const s of this.streams.values()) s.sendWindow += delta;
          this.enforceFlowControl = true;
          this.wake('window');
        }
        return;
      case 'ping':
        // §2.6.5: a PING from the peer (the other parity) is echoed; ours coming back resolves ping().
        if (frame.id % 2 === (this.role === 'server' ? 1 : 0)) {
          this.socket.write(encodeFrame(frame));
        } else {
          this.pings.get(frame.id)?.();
          this.pings.delete(frame.id);
        }
        return;
      case 'goaway':
        this.goneAway = true;
        if (this.streams.size === 0) this.close();
        return;
      case 'window_update': {
        if (frame.delta === 0) throw new SpdyProtocolError('WINDOW_UPDATE with a zero delta');
        this.enforceFlowControl = true;
        if (frame.streamId === 0) {
          this.sessionSendWindow = Math.min(this.sessionSendWindow + frame.delta, maxWindowSize);
        } else {
          const stream = this.streams.get(frame.streamId);
          if (stream !== undefined)
            stream.sendWindow = Math.min(stream.sendWindow + frame.delta, maxWindowSize);
        }
        this.wake('window');
        return;
      }
      case 'unknown':
        // §2.2.1: unknown control frames are ignored (CREDENTIAL included).
        return;
    }
  }

  private onSynStream(id: number, headers: HeaderMap, flags: number): void {
    // §2.3.2: peer-initiated ids have the peer's parity and increase monotonically.
    const peerParity = this.role === 'server' ? 1 : 0;
    if (id % 2 !== peerParity || id <= this.lastRemoteStreamId) {
      this.sendReset(id, RstStatus.protocolError);
      return;
    }
    this.lastRemoteStreamId = id;
    if (this.goneAway || this.onStream === undefined) {
      this.sendReset(id, RstStatus.refusedStream);
      return;
    }
    const stream = new SpdyStream(this, id, headers, this.peerInitialWindow);
    this.streams.set(id, stream);
    if ((flags & flagFin) !== 0) stream.onRemoteFin();
    this.onStream(stream);
  }

  private finish(error: SpdyStreamError): void {
    if (this.isDone) return;
    this.isDone = true;
    this.compressor.close();
    this.decompressor.close();
    for (const p of this.pendingReplies.values()) p.reject(error);
    this.pendingReplies.clear();
    for (const s of [...this.streams.values()]) {
      // A stream the peer finished keeps what it received for its reader; the others are cut short.
      if (s.remoteFinished) s.releaseRoom(true);
      else if (!s.destroyed) s.onReset(error);
    }
    this.streams.clear();
    for (const resolve of this.pings.values()) resolve();
    this.pings.clear();
    this.wake('all');
    this.resolveClosed();
  }
}

/** Bytes received but not yet framed, without copying every chunk into one growing buffer. */
class ByteQueue {
  private chunks: Buffer[] = [];
  private length = 0;

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.chunks.push(b);
    this.length += b.length;
  }

  /** The first `n` bytes without removing them, or undefined when fewer are queued. */
  peek(n: number): Buffer | undefined {
    if (this.length < n) return undefined;
    let first = this.chunks[0] ?? Buffer.alloc(0);
    if (first.length < n) {
      first = Buffer.concat(this.chunks);
      this.chunks = [first];
    }
    return first.subarray(0, n);
  }

  /** Removes and returns the first `n` bytes, or undefined when fewer are queued. */
  take(n: number): Buffer | undefined {
    if (this.length < n) return undefined;
    const first = this.chunks[0] ?? Buffer.alloc(0);
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks);
      out = all.subarray(0, n);
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.length -= n;
    return out;
  }
}
