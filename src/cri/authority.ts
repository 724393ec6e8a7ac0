/**
 * Makes skiff's socket answer gRPC clients that send an invalid HTTP/2 `:authority`, and gets out of the
 * way of the others.
 *
 * Older grpc-go clients (crictl and critest up to at least v1.26, kubelets before 1.26) dial a unix socket
 * with the socket *path* as `:authority` ("/run/skiff/skiff.sock"). RFC 9113 §8.3.1 says it is the URI
 * authority, where "/" has no place, and Node's nghttp2 enforces that: it resets every such stream with
 * PROTOCOL_ERROR, and Node offers no switch (nghttp2's no_http_messaging is not exposed). containerd and
 * CRI-O (Go servers) accept it, so kubelet operators' tools do too; skiff must as well.
 *
 * `AuthorityFixer` reads the client→server byte stream frame by frame (RFC 9113 §4.1). The first header
 * block of a connection is decoded (HPACK, RFC 7541); if its `:authority` is valid, header blocks pass as
 * they are from then on (modern clients send "localhost"). Otherwise every header block of that
 * connection is decoded and re-encoded with `:authority: localhost`. Re-encoding uses only "literal header
 * field without indexing" representations (RFC 7541 §6.2.2), so the server's HPACK decoder table stays
 * empty and consistent, while our decoder tracks the client's dynamic table. Server→client bytes are
 * never touched.
 *
 * Deciding needs the client's first request, which a grpc-go client sends only after the server's
 * connection preface (a SETTINGS frame), and grpc-js's nghttp2 sends that only once it has the
 * connection. So `acceptConnection` sends the preface itself, an empty SETTINGS frame (RFC 9113 §3.4:
 * "potentially empty"), and takes the client's acknowledgement of it out of the byte stream: nghttp2 then
 * sends SETTINGS of its own, a second one (allowed at any time, §6.5), and must see exactly one ACK for
 * it. Once the client's first request has a valid authority and that ACK is gone, the socket itself is
 * handed to grpc-js with the bytes read so far put back (Node's HTTP/2 reads them first), so nghttp2 works
 * on the native socket: no JS on the data path at all. Otherwise (an authority to rewrite, or no request
 * within DECIDE_MS) grpc-js gets a `CriConnection`.
 *
 * A `CriConnection` is a stream, and for anything but a native socket Node's HTTP/2 goes through a JS
 * stream wrapper that hands over nghttp2's output one batch of frames at a time; so it adds no stream of
 * its own on either side: client bytes go from the socket's 'data' events to the fixer, and server frames
 * of a batch go to the socket corked, as one writev.
 */
import hpack from 'hpack.js';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import type { Logger } from '../log.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME_HEADER_BYTES = 9;
const TYPE_HEADERS = 0x1;
const TYPE_SETTINGS = 0x4;
const TYPE_CONTINUATION = 0x9;
const FLAG_ACK = 0x1;
const FLAG_END_STREAM = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
/** SETTINGS_MAX_FRAME_SIZE's initial value (RFC 9113 §6.5.2); Node's server keeps it. */
const MAX_FRAME_PAYLOAD = 16_384;
/** SETTINGS_HEADER_TABLE_SIZE's initial value (RFC 9113 §6.5.2); Node's server keeps it. */
const HEADER_TABLE_SIZE = 4096;
/** A header block larger than this is not a CRI request: hand it to nghttp2 unparsed. */
const MAX_BLOCK_BYTES = 1024 * 1024;
/** The server connection preface `acceptConnection` sends: a SETTINGS frame with no settings. */
export const EMPTY_SETTINGS = Buffer.from([0, 0, 0, TYPE_SETTINGS, 0, 0, 0, 0, 0]);
/** How long a new connection may take to send its first request before it is served as it is. */
const DECIDE_MS = 2000;

/** RFC 3986 §3.2 authority characters, as nghttp2_check_authority accepts them. */
const AUTHORITY_CHARS = /^[A-Za-z0-9\-._~!$&'()*+,;=:@[\]%]+$/;

export function isValidAuthority(value: string): boolean {
  return AUTHORITY_CHARS.test(value);
}

interface PendingBlock {
  raw: Buffer[];
  fragments: Buffer[];
  flags: number;
  streamId: number;
  priority: Buffer | undefined;
  size: number;
}

/** What happens to header blocks: not known yet, passed as they are, or re-encoded. */
type HeaderMode = 'undecided' | 'asis' | 'rewrite';

/**
 * The client→server bytes of one connection, fixed: `output` receives what nghttp2 is to read. It also
 * takes out the client's first SETTINGS ACK (`acceptConnection` sent the SETTINGS frame it answers).
 */
export class AuthorityFixer {
  private atPreface = true;
  /** Not HTTP/2 framing: everything goes on as it is, for nghttp2 to refuse. */
  private opaque = false;
  private headers: HeaderMode = 'undecided';
  private ackTaken = false;
  private buffered: Buffer = Buffer.alloc(0);
  private pending: PendingBlock | undefined;
  private readonly decoder = hpack.decompressor.create({ table: { maxSize: HEADER_TABLE_SIZE } });

  constructor(public output: (chunk: Buffer) => void) {}

  /** True once the connection needed (and got) its authority rewritten. */
  get rewriting(): boolean {
    return this.headers === 'rewrite';
  }

  /**
   * True once nothing more is to be done: the bytes passed on are the client's as they came, less the
   * ACK, and the rest may go on unparsed (on the native socket).
   */
  get done(): boolean {
    return this.opaque || (this.headers === 'asis' && this.ackTaken);
  }

  /** Takes the next client bytes. */
  write(chunk: Buffer): void {
    if (this.done) {
      this.output(chunk);
      return;
    }
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    this.consume();
  }

  /** The bytes not parsed yet (a partial frame), taken out. */
  takeRest(): Buffer {
    const rest = this.buffered;
    this.buffered = Buffer.alloc(0);
    return rest;
  }

  /** The client ended its side: whatever is left unparsed goes on as it is. */
  end(): void {
    if (this.pending) for (const raw of this.pending.raw) this.output(raw);
    this.pending = undefined;
    const rest = this.takeRest();
    if (rest.length > 0) this.output(rest);
  }

  private consume(): void {
    if (this.atPreface) {
      if (this.buffered.length < PREFACE.length) {
        if (!PREFACE.subarray(0, this.buffered.length).equals(this.buffered)) this.goOpaque();
        return;
      }
      if (!this.buffered.subarray(0, PREFACE.length).equals(PREFACE)) {
        // Not HTTP/2 prior knowledge: let nghttp2 refuse it in its own words.
        this.goOpaque();
        return;
      }
      this.output(this.buffered.subarray(0, PREFACE.length));
      this.buffered = this.buffered.subarray(PREFACE.length);
      this.atPreface = false;
    }
    while (!this.done && this.buffered.length >= FRAME_HEADER_BYTES) {
      const length = this.buffered.readUIntBE(0, 3);
      const total = FRAME_HEADER_BYTES + length;
      if (this.buffered.length < total) return;
      const frame = this.buffered.subarray(0, total);
      this.buffered = this.buffered.subarray(total);
      this.onFrame(frame);
    }
    if (this.done && this.buffered.length > 0) this.output(this.takeRest());
  }

  private goOpaque(): void {
    this.opaque = true;
    this.output(this.takeRest());
  }

  /** Header blocks go on as they are from now on (a block being collected too). */
  private stopRewriting(): void {
    this.headers = 'asis';
    if (this.pending) for (const raw of this.pending.raw) this.output(raw);
    this.pending = undefined;
  }

  private onFrame(frame: Buffer): void {
    const type = frame[3] ?? 0;
    const flags = frame[4] ?? 0;
    const streamId = frame.readUInt32BE(5) & 0x7fffffff;
    let payload = frame.subarray(FRAME_HEADER_BYTES);

    if (type === TYPE_SETTINGS && flags & FLAG_ACK && streamId === 0 && !this.ackTaken) {
      // The client's acknowledgement of our empty SETTINGS: nghttp2 never sent that one.
      this.ackTaken = true;
      return;
    }
    if (this.headers === 'asis') {
      this.output(frame);
      return;
    }
    if (type === TYPE_HEADERS && !this.pending) {
      let priority: Buffer | undefined;
      if (flags & FLAG_PADDED) {
        const pad = payload[0] ?? 0;
        payload = payload.subarray(1, Math.max(1, payload.length - pad));
      }
      if (flags & FLAG_PRIORITY) {
        priority = Buffer.from(payload.subarray(0, 5));
        payload = payload.subarray(5);
      }
      this.pending = { raw: [frame], fragments: [payload], flags, streamId, priority, size: payload.length };
    } else if (type === TYPE_CONTINUATION && this.pending?.streamId === streamId) {
      this.pending.raw.push(frame);
      this.pending.fragments.push(payload);
      this.pending.size += payload.length;
    } else {
      // Any other frame (or a malformed sequence, which nghttp2 will reject itself) goes through as is.
      if (this.pending) {
        this.stopRewriting();
        this.output(frame);
        return;
      }
      this.output(frame);
      return;
    }

    const block = this.pending;
    if (block.size > MAX_BLOCK_BYTES) {
      this.stopRewriting();
      return;
    }
    if (!(flags & FLAG_END_HEADERS)) return;
    this.pending = undefined;
    this.onHeaderBlock(block);
  }

  private onHeaderBlock(block: PendingBlock): void {
    let headers: { name: string; value: string }[];
    try {
      headers = this.decode(Buffer.concat(block.fragments));
    } catch {
      // Undecodable: nghttp2 will answer with COMPRESSION_ERROR; we stop interfering.
      this.pending = block;
      this.stopRewriting();
      return;
    }
    if (this.headers === 'undecided') {
      const authority = headers.find((h) => h.name === ':authority')?.value;
      if (authority === undefined || isValidAuthority(authority)) {
        for (const raw of block.raw) this.output(raw);
        this.headers = 'asis';
        return;
      }
      this.headers = 'rewrite';
    }
    const fixed = headers.map((h) =>
      (h.name === ':authority' || h.name === 'host') && !isValidAuthority(h.value)
        ? { name: h.name, value: 'localhost' }
        : h,
    );
    for (const frame of encodeBlock(fixed, block)) this.output(frame);
  }

  private decode(block: Buffer): { name: string; value: string }[] {
    let failure: Error | undefined;
    this.decoder.write(block);
    this.decoder.execute((err) => {
      if (err) failure = err;
    });
    const out: { name: string; value: string }[] = [];
    for (let h = this.decoder.read(); h !== null; h = this.decoder.read()) out.push(h);
    if (failure) throw failure;
    return out;
  }
}

/** RFC 7541 §5.1 integer with an N-bit prefix. */
function encodeInt(value: number, prefixBits: number, firstByteFlags: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [firstByteFlags | value];
  const out = [firstByteFlags | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** RFC 7541 §5.2 string literal, raw (H = 0). hpack.js decodes octets to latin1 strings; we undo that. */
function encodeString(s: string): Buffer {
  const bytes = Buffer.from(s, 'latin1');
  return Buffer.concat([Buffer.from(encodeInt(bytes.length, 7, 0)), bytes]);
}

/** Re-encodes a header block as HEADERS + CONTINUATION frames (RFC 9113 §6.2, §6.10). */
function encodeBlock(headers: { name: string; value: string }[], block: PendingBlock): Buffer[] {
  const parts: Buffer[] = [];
  for (const h of headers) {
    // §6.2.2 literal header field without indexing, new name: 0000 0000, name string, value string.
    parts.push(Buffer.from([0]), encodeString(h.name), encodeString(h.value));
  }
  let fragment = Buffer.concat(parts);
  const frames: Buffer[] = [];
  let first = true;
  do {
    const room = first && block.priority ? MAX_FRAME_PAYLOAD - 5 : MAX_FRAME_PAYLOAD;
    const piece = fragment.subarray(0, room);
    fragment = fragment.subarray(piece.length);
    const last = fragment.length === 0;
    let flags = last ? FLAG_END_HEADERS : 0;
    let payload = piece;
    if (first) {
      flags |= block.flags & FLAG_END_STREAM;
      if (block.priority) {
        flags |= FLAG_PRIORITY;
        payload = Buffer.concat([block.priority, piece]);
      }
    }
    const header = Buffer.alloc(FRAME_HEADER_BYTES);
    header.writeUIntBE(payload.length, 0, 3);
    header[3] = first ? TYPE_HEADERS : TYPE_CONTINUATION;
    header[4] = flags;
    header.writeUInt32BE(block.streamId, 5);
    frames.push(header, payload);
    first = false;
  } while (fragment.length > 0);
  return frames;
}

/**
 * Serves a new client connection (see the top of this file): sends the empty SETTINGS preface, reads the
 * client's first frames, and hands `serve` the socket itself once the fixer is done with it, else a
 * `CriConnection`. `log` gets one debug line per connection saying which.
 */
export function acceptConnection(
  socket: Socket,
  serve: (connection: Socket | Duplex) => void,
  log: Logger,
  decideMs = DECIDE_MS,
): void {
  const read: Buffer[] = [];
  const fixer = new AuthorityFixer((chunk) => read.push(chunk));
  let decided = false;
  const decide = (native: boolean): void => {
    if (decided) return;
    decided = true;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.off('close', onClose);
    socket.off('error', onError);
    if (socket.destroyed) return;
    log.debug('client connection', { native, authorityRewritten: fixer.rewriting });
    if (native) {
      // Paused, so nothing is emitted before Node's HTTP/2 reads the put-back bytes; the handle keeps
      // reading, into nghttp2 once it is consumed.
      socket.pause();
      const rest = Buffer.concat([...read, fixer.takeRest()]);
      if (rest.length > 0) socket.unshift(rest);
      serve(socket);
      return;
    }
    serve(new CriConnection(socket, fixer, read));
  };
  const onData = (chunk: Buffer): void => {
    try {
      fixer.write(chunk);
    } catch {
      decide(false);
      return;
    }
    if (fixer.done) decide(true);
    else if (fixer.rewriting) decide(false);
  };
  const onEnd = (): void => {
    decide(false);
  };
  const onClose = (): void => {
    decided = true;
    clearTimeout(timer);
  };
  // A connection error before the handover: 'close' follows, and nothing else is to be done.
  const onError = (): void => undefined;
  const timer = setTimeout(() => {
    decide(false);
  }, decideMs);
  timer.unref();
  socket.on('data', onData);
  socket.once('end', onEnd);
  socket.once('close', onClose);
  socket.on('error', onError);
  socket.write(EMPTY_SETTINGS);
}

/**
 * A client connection as grpc-js reads and writes it: client bytes through `AuthorityFixer` (straight
 * through once it is done), server bytes straight to the socket, each batch in one writev. Destroying
 * either side destroys both. `read` holds what the fixer passed on before the connection took over.
 */
export class CriConnection extends Duplex {
  /** The write callback waiting for the socket to drain (one write at a time). */
  private drained: (() => void) | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly fixer: AuthorityFixer,
    read: Buffer[] = [],
  ) {
    super();
    for (const chunk of read) this.deliver(chunk);
    fixer.output = (chunk) => {
      this.deliver(chunk);
    };
    socket.on('data', (chunk: Buffer) => {
      if (this.fixer.done) {
        this.deliver(chunk);
        return;
      }
      try {
        this.fixer.write(chunk);
      } catch (err) {
        this.destroy(err as Error);
      }
    });
    const ended = (): void => {
      this.fixer.end();
      this.push(null);
    };
    if (socket.readableEnded) ended();
    else socket.once('end', ended);
    socket.on('drain', () => {
      const done = this.drained;
      this.drained = undefined;
      done?.();
    });
    socket.once('error', (err) => this.destroy(err));
    socket.once('close', () => this.destroy());
  }

  private deliver(chunk: Buffer): void {
    if (!this.push(chunk)) this.socket.pause();
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.socket.write(chunk);
    this.afterWrite(done);
  }

  override _writev(chunks: { chunk: Buffer }[], done: (err?: Error | null) => void): void {
    this.socket.cork();
    for (const { chunk } of chunks) this.socket.write(chunk);
    this.socket.uncork();
    this.afterWrite(done);
  }

  private afterWrite(done: () => void): void {
    if (this.socket.writableNeedDrain) this.drained = done;
    else done();
  }

  override _final(done: (err?: Error | null) => void): void {
    this.socket.end();
    done();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.socket.destroy();
    const waiting = this.drained;
    this.drained = undefined;
    waiting?.();
    done(err);
  }
}
