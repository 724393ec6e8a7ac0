/**
 * SPDY/3.1 framing: frame encode/decode (pure functions), name/value header blocks, and their zlib
 * compression with the SPDY/3 dictionary. Section numbers cite "SPDY Protocol - Draft 3.1"
 * (chromium.org/spdy/spdy-protocol/spdy-protocol-draft3-1). The session logic (streams, flow control)
 * is in spdy-session.ts.
 *
 * Why our own and not npm `spdy` / `spdy-transport`: those packages are unmaintained since 2018-2020, are
 * built around serving HTTP-over-SPDY to browsers (server push, priorities, http.ServerResponse
 * emulation) rather than raw bidirectional streams, and reach into Node internals that newer Node
 * releases changed (`spdy` through `http-deceiver`'s use of `process.binding('http_parser')`). Kubernetes
 * needs a small, well-defined subset (what moby/spdystream implements), which fits in this file.
 *
 * Interoperability notes (moby/spdystream, the implementation behind kubelet, client-go, kubectl and
 * crictl): header names are lowercase on the wire; multiple values of one name are joined with NUL;
 * header blocks use one zlib stream per direction for the whole session, with the dictionary below and a
 * sync flush after each block, so the *order* in which blocks are compressed and sent must be the order in
 * which they are written to the wire.
 */
import { createHash } from 'node:crypto';
import {
  constants as zlibConstants,
  createDeflate,
  createInflate,
  type Deflate,
  type Inflate,
} from 'node:zlib';
import { SkiffError } from '../errdefs.js';

export const spdyVersion = 3;

/** Control frame types (§2.6). CREDENTIAL (10, SPDY/3 only) was removed in 3.1 and is ignored. */
export const FrameType = {
  synStream: 1,
  synReply: 2,
  rstStream: 3,
  settings: 4,
  ping: 6,
  goAway: 7,
  headers: 8,
  windowUpdate: 9,
} as const;

/** FLAG_FIN on DATA, SYN_STREAM, SYN_REPLY, HEADERS (§2.2.2, §2.6.1). */
export const flagFin = 0x01;
/** FLAG_UNIDIRECTIONAL on SYN_STREAM (§2.6.1). */
export const flagUnidirectional = 0x02;

/** RST_STREAM status codes (§2.6.3). */
export const RstStatus = {
  protocolError: 1,
  invalidStream: 2,
  refusedStream: 3,
  unsupportedVersion: 4,
  cancel: 5,
  internalError: 6,
  flowControlError: 7,
  streamInUse: 8,
  streamAlreadyClosed: 9,
  frameTooLarge: 11,
} as const;

/** GOAWAY status codes (§2.6.6). */
export const GoAwayStatus = { ok: 0, protocolError: 1, internalError: 2 } as const;

/** SETTINGS ids (§2.6.4). */
export const SettingsId = { maxConcurrentStreams: 4, initialWindowSize: 7 } as const;

/** The initial stream and session flow-control window (§2.6.8, §2.6.4 SETTINGS_INITIAL_WINDOW_SIZE). */
export const defaultWindowSize = 64 * 1024;
/** Windows are 31-bit (§2.6.8: "The window size MUST NOT exceed 2^31 - 1"). */
export const maxWindowSize = 0x7fffffff;
/** The length field is 24 bits (§2.2). */
export const maxFrameLength = 0xffffff;
/** Every frame starts with 8 bytes of header (§2.2). */
export const frameHeaderLength = 8;

export interface DataFrame {
  type: 'data';
  streamId: number;
  flags: number;
  data: Buffer;
}
export interface SynStreamFrame {
  type: 'syn_stream';
  streamId: number;
  associatedStreamId: number;
  priority: number;
  flags: number;
  /** Compressed name/value header block. */
  headerBlock: Buffer;
}
export interface SynReplyFrame {
  type: 'syn_reply';
  streamId: number;
  flags: number;
  headerBlock: Buffer;
}
export interface HeadersFrame {
  type: 'headers';
  streamId: number;
  flags: number;
  headerBlock: Buffer;
}
export interface RstStreamFrame {
  type: 'rst_stream';
  streamId: number;
  status: number;
}
export interface SettingsEntry {
  flags: number;
  id: number;
  value: number;
}
export interface SettingsFrame {
  type: 'settings';
  flags: number;
  entries: SettingsEntry[];
}
export interface PingFrame {
  type: 'ping';
  id: number;
}
export interface GoAwayFrame {
  type: 'goaway';
  lastGoodStreamId: number;
  status: number;
}
export interface WindowUpdateFrame {
  type: 'window_update';
  /** 0 is the session window (SPDY/3.1 §2.6.8). */
  streamId: number;
  delta: number;
}
/** A control frame of a type we do not know; §2.2.1 says to ignore it. */
export interface UnknownFrame {
  type: 'unknown';
  frameType: number;
  flags: number;
  payload: Buffer;
}

export type Frame =
  | DataFrame
  | SynStreamFrame
  | SynReplyFrame
  | HeadersFrame
  | RstStreamFrame
  | SettingsFrame
  | PingFrame
  | GoAwayFrame
  | WindowUpdateFrame
  | UnknownFrame;

/** A malformed frame: a session error (§2.4.1), answered with GOAWAY PROTOCOL_ERROR. */
export class SpdyProtocolError extends SkiffError {
  constructor(message: string) {
    super('invalid-argument', `spdy protocol error: ${message}`);
  }
}

const streamIdMask = 0x7fffffff;

/**
 * Reads one frame from the start of `buf`. Undefined when `buf` does not hold a whole frame yet; throws
 * SpdyProtocolError when the frame is malformed. Frames longer than `maxLength` are rejected before
 * their payload arrives, so a peer cannot make us buffer 16 MiB.
 */
export function readFrame(
  buf: Buffer,
  maxLength = maxFrameLength,
): { frame: Frame; size: number } | undefined {
  if (buf.length < frameHeaderLength) return undefined;
  const word0 = buf.readUInt32BE(0);
  const word1 = buf.readUInt32BE(4);
  const flags = word1 >>> 24;
  const length = word1 & 0xffffff;
  if (length > maxLength)
    throw new SpdyProtocolError(`frame of ${length} bytes exceeds the ${maxLength} limit`);
  const size = frameHeaderLength + length;
  if (buf.length < size) return undefined;
  const payload = buf.subarray(frameHeaderLength, size);
  // §2.2: the high bit tells control frames (1) from data frames (0).
  if ((word0 & 0x80000000) === 0) {
    const streamId = word0 & streamIdMask;
    if (streamId === 0) throw new SpdyProtocolError('data frame on stream 0');
    return { frame: { type: 'data', streamId, flags, data: payload }, size };
  }
  const version = (word0 >>> 16) & 0x7fff;
  const type = word0 & 0xffff;
  // §2.2.1: "If an endpoint receives a control frame for a version it does not support, it MUST ... ".
  if (version !== spdyVersion) throw new SpdyProtocolError(`unsupported version ${version}`);
  return { frame: parseControl(type, flags, payload), size };
}

function need(payload: Buffer, n: number, what: string): void {
  if (payload.length < n)
    throw new SpdyProtocolError(`${what} frame of ${payload.length} bytes is too short`);
}

function parseControl(type: number, flags: number, payload: Buffer): Frame {
  switch (type) {
    case FrameType.synStream: {
      // §2.6.1: stream-id (31), associated-to-stream-id (31), pri (3) + unused (5), slot (8), header block.
      need(payload, 10, 'SYN_STREAM');
      const streamId = payload.readUInt32BE(0) & streamIdMask;
      if (streamId === 0) throw new SpdyProtocolError('SYN_STREAM for stream 0');
      return {
        type: 'syn_stream',
        streamId,
        associatedStreamId: payload.readUInt32BE(4) & streamIdMask,
        priority: (payload.readUInt8(8) >>> 5) & 0x7,
        flags,
        headerBlock: payload.subarray(10),
      };
    }
    case FrameType.synReply:
    case FrameType.headers: {
      // §2.6.2, §2.6.7: stream-id (31), header block.
      need(payload, 4, type === FrameType.synReply ? 'SYN_REPLY' : 'HEADERS');
      const streamId = payload.readUInt32BE(0) & streamIdMask;
      if (streamId === 0) throw new SpdyProtocolError('header frame for stream 0');
      return {
        type: type === FrameType.synReply ? 'syn_reply' : 'headers',
        streamId,
        flags,
        headerBlock: payload.subarray(4),
      };
    }
    case FrameType.rstStream: {
      // §2.6.3: length 8; stream-id, status code.
      if (payload.length !== 8) throw new SpdyProtocolError(`RST_STREAM of length ${payload.length}`);
      return {
        type: 'rst_stream',
        streamId: payload.readUInt32BE(0) & streamIdMask,
        status: payload.readUInt32BE(4),
      };
    }
    case FrameType.settings: {
      // §2.6.4: number of entries (32), then per entry flags (8) + id (24), value (32).
      need(payload, 4, 'SETTINGS');
      const count = payload.readUInt32BE(0);
      if (payload.length !== 4 + count * 8) {
        throw new SpdyProtocolError(`SETTINGS of length ${payload.length} for ${count} entries`);
      }
      const entries: SettingsEntry[] = [];
      for (let i = 0; i < count; i++) {
        const word = payload.readUInt32BE(4 + i * 8);
        entries.push({ flags: word >>> 24, id: word & 0xffffff, value: payload.readUInt32BE(8 + i * 8) });
      }
      return { type: 'settings', flags, entries };
    }
    case FrameType.ping: {
      // §2.6.5: length 4; id (32).
      if (payload.length !== 4) throw new SpdyProtocolError(`PING of length ${payload.length}`);
      return { type: 'ping', id: payload.readUInt32BE(0) };
    }
    case FrameType.goAway: {
      // §2.6.6 (3.1): length 8; last-good-stream-id (31), status code (32).
      if (payload.length !== 8) throw new SpdyProtocolError(`GOAWAY of length ${payload.length}`);
      return {
        type: 'goaway',
        lastGoodStreamId: payload.readUInt32BE(0) & streamIdMask,
        status: payload.readUInt32BE(4),
      };
    }
    case FrameType.windowUpdate: {
      // §2.6.8: length 8; stream-id (31), delta-window-size (31), 1 ≤ delta ≤ 2^31 - 1.
      if (payload.length !== 8) throw new SpdyProtocolError(`WINDOW_UPDATE of length ${payload.length}`);
      return {
        type: 'window_update',
        streamId: payload.readUInt32BE(0) & streamIdMask,
        delta: payload.readUInt32BE(4) & streamIdMask,
      };
    }
    default:
      return { type: 'unknown', frameType: type, flags, payload };
  }
}

function controlHeader(type: number, flags: number, length: number): Buffer {
  if (length > maxFrameLength) throw new SpdyProtocolError(`control frame of ${length} bytes is too large`);
  const b = Buffer.allocUnsafe(frameHeaderLength);
  b.writeUInt32BE((0x8000 | spdyVersion) * 0x10000 + type, 0);
  b.writeUInt32BE(flags * 0x1000000 + length, 4);
  return b;
}

/** Serialises a frame; header blocks must already be compressed. */
export function encodeFrame(frame: Frame): Buffer {
  switch (frame.type) {
    case 'data': {
      if (frame.data.length > maxFrameLength) throw new SpdyProtocolError('data frame too large');
      const h = Buffer.allocUnsafe(frameHeaderLength);
      h.writeUInt32BE(frame.streamId & streamIdMask, 0);
      h.writeUInt32BE(frame.flags * 0x1000000 + frame.data.length, 4);
      return frame.data.length === 0 ? h : Buffer.concat([h, frame.data]);
    }
    case 'syn_stream': {
      const fixed = Buffer.alloc(10);
      fixed.writeUInt32BE(frame.streamId & streamIdMask, 0);
      fixed.writeUInt32BE(frame.associatedStreamId & streamIdMask, 4);
      fixed.writeUInt8((frame.priority & 0x7) << 5, 8);
      return Buffer.concat([
        controlHeader(FrameType.synStream, frame.flags, 10 + frame.headerBlock.length),
        fixed,
        frame.headerBlock,
      ]);
    }
    case 'syn_reply':
    case 'headers': {
      const id = Buffer.allocUnsafe(4);
      id.writeUInt32BE(frame.streamId & streamIdMask, 0);
      const type = frame.type === 'syn_reply' ? FrameType.synReply : FrameType.headers;
      return Buffer.concat([
        controlHeader(type, frame.flags, 4 + frame.headerBlock.length),
        id,
        frame.headerBlock,
      ]);
    }
    case 'rst_stream':
      return withWords(controlHeader(FrameType.rstStream, 0, 8), [
        frame.streamId & streamIdMask,
        frame.status,
      ]);
    case 'settings': {
      const words = [frame.entries.length];
      for (const e of frame.entries) words.push(e.flags * 0x1000000 + (e.id & 0xffffff), e.value);
      return withWords(controlHeader(FrameType.settings, frame.flags, 4 + frame.entries.length * 8), words);
    }
    case 'ping':
      return withWords(controlHeader(FrameType.ping, 0, 4), [frame.id]);
    case 'goaway':
      return withWords(controlHeader(FrameType.goAway, 0, 8), [
        frame.lastGoodStreamId & streamIdMask,
        frame.status,
      ]);
    case 'window_update':
      return withWords(controlHeader(FrameType.windowUpdate, 0, 8), [
        frame.streamId & streamIdMask,
        frame.delta & streamIdMask,
      ]);
    case 'unknown':
      return Buffer.concat([
        controlHeader(frame.frameType, frame.flags, frame.payload.length),
        frame.payload,
      ]);
  }
}

function withWords(header: Buffer, words: number[]): Buffer {
  const b = Buffer.allocUnsafe(header.length + words.length * 4);
  header.copy(b, 0);
  words.forEach((w, i) => b.writeUInt32BE(w >>> 0, header.length + i * 4));
  return b;
}

/** Header names (lowercase) to their values, in order. */
export type HeaderMap = Map<string, string[]>;

/** A header map from a plain object; names are lowercased (§2.6.10: "All header names must be lowercase"). */
export function headerMap(headers: Record<string, string | string[]>): HeaderMap {
  const m: HeaderMap = new Map();
  for (const [name, v] of Object.entries(headers)) m.set(name.toLowerCase(), Array.isArray(v) ? v : [v]);
  return m;
}

/** The first value of `name` (case-insensitive), or undefined. */
export function headerValue(headers: HeaderMap, name: string): string | undefined {
  return headers.get(name.toLowerCase())?.[0];
}

/**
 * §2.6.10: number of pairs (32), then per pair name length (32), name, value length (32), value; values
 * of one name are joined with a NUL byte.
 */
export function encodeHeaderBlock(headers: HeaderMap): Buffer {
  const parts: Buffer[] = [];
  const count = Buffer.allocUnsafe(4);
  count.writeUInt32BE(headers.size, 0);
  parts.push(count);
  for (const [name, values] of headers) {
    for (const s of [name.toLowerCase(), values.join('\0')]) {
      const bytes = Buffer.from(s, 'utf8');
      const len = Buffer.allocUnsafe(4);
      len.writeUInt32BE(bytes.length, 0);
      parts.push(len, bytes);
    }
  }
  return Buffer.concat(parts);
}

/** The inverse of encodeHeaderBlock; malformed blocks are a protocol error (§2.6.10). */
export function decodeHeaderBlock(block: Buffer): HeaderMap {
  const headers: HeaderMap = new Map();
  if (block.length < 4) throw new SpdyProtocolError('header block too short');
  const count = block.readUInt32BE(0);
  let off = 4;
  const take = (): string => {
    if (off + 4 > block.length) throw new SpdyProtocolError('truncated header block');
    const len = block.readUInt32BE(off);
    off += 4;
    if (off + len > block.length) throw new SpdyProtocolError('truncated header block');
    const s = block.toString('utf8', off, off + len);
    off += len;
    return s;
  };
  for (let i = 0; i < count; i++) {
    const name = take();
    const value = take();
    if (name.length === 0) throw new SpdyProtocolError('empty header name');
    // spdystream lowercases names it finds uppercased rather than failing; be as lenient.
    const key = name.toLowerCase();
    headers.set(key, [...(headers.get(key) ?? []), ...value.split('\0')]);
  }
  if (off !== block.length) throw new SpdyProtocolError('trailing bytes after header block');
  return headers;
}

/**
 * The zlib dictionary for header compression (§2.6.10.1): length-prefixed common header names and values,
 * then a run of common text. Byte-identical to moby/spdystream `spdy/dictionary.go` (1423 bytes, sha256
 * 51d27341…8407f02, adler32 0xe3c6a7c2 — the id in every SPDY/3 zlib header); test/unit/streaming
 * checks all three.
 */
export const spdyDictionary: Buffer = (() => {
  const words = [
    'options', 'head', 'post', 'put', 'delete', 'trace', 'accept', 'accept-charset', 'accept-encoding',
    'accept-language', 'accept-ranges', 'age', 'allow', 'authorization', 'cache-control', 'connection',
    'content-base', 'content-encoding', 'content-language', 'content-length', 'content-location',
    'content-md5', 'content-range', 'content-type', 'date', 'etag', 'expect', 'expires', 'from', 'host',
    'if-match', 'if-modified-since', 'if-none-match', 'if-range', 'if-unmodified-since', 'last-modified',
    'location', 'max-forwards', 'pragma', 'proxy-authenticate', 'proxy-authorization', 'range', 'referer',
    'retry-after', 'server', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'user-agent', 'vary', 'via',
    'warning', 'www-authenticate', 'method', 'get', 'status', '200 OK', 'version', 'HTTP/1.1', 'url',
    'public', 'set-cookie', 'keep-alive', 'origin',
  ]; // prettier-ignore
  const tail =
    '100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505' +
    '203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized' +
    '403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable' +
    'Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT' +
    'chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,' +
    'text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.';
  const parts: Buffer[] = [];
  for (const w of words) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(w.length, 0);
    parts.push(len, Buffer.from(w, 'latin1'));
  }
  parts.push(Buffer.from(tail, 'latin1'));
  return Buffer.concat(parts);
})();

/** sha256 of spdyDictionary, for the test that pins it. */
export function dictionaryDigest(): string {
  return createHash('sha256').update(spdyDictionary).digest('hex');
}

/**
 * One direction's zlib stream. Operations are serialised: each block is written with Z_SYNC_FLUSH (the
 * stream's default flush) and its output collected before the next starts, so every header block is a
 * whole number of bytes that the peer's single inflate stream can consume on its own (§2.6.10.1).
 */
abstract class ZlibChannel {
  private chain: Promise<unknown> = Promise.resolve();
  private failure: Error | undefined;
  private current: ((err: Error) => void) | undefined;

  protected constructor(
    private readonly z: Deflate | Inflate,
    private readonly maxOutput: number,
  ) {
    z.on('error', (err: Error) => {
      this.failure ??= err;
      this.current?.(err);
    });
  }

  protected run(input: Buffer): Promise<Buffer> {
    const op = this.chain.then(() => this.step(input));
    this.chain = op.catch(() => undefined);
    return op;
  }

  private step(input: Buffer): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      if (this.failure !== undefined) {
        reject(this.failure);
        return;
      }
      const out: Buffer[] = [];
      let size = 0;
      let settled = false;
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        this.z.off('readable', drain);
        this.current = undefined;
        reject(err);
      };
      // Output is collected on 'readable' too: zlib stops producing when its readable buffer is full and
      // resumes only when read, so waiting for the write callback alone could stall on a large block.
      const drain = (): void => {
        let chunk: unknown;
        while ((chunk = this.z.read()) !== null) {
          const b = chunk as Buffer;
          out.push(b);
          size += b.length;
        }
        if (size > this.maxOutput) {
          const err = new SpdyProtocolError(`header block inflates beyond ${this.maxOutput} bytes`);
          this.failure ??= err;
          fail(err);
          this.z.destroy();
        }
      };
      this.current = fail;
      this.z.on('readable', drain);
      this.z.write(input, (err) => {
        if (err) {
          fail(err);
          return;
        }
        drain();
        if (settled) return;
        settled = true;
        this.z.off('readable', drain);
        this.current = undefined;
        resolve(Buffer.concat(out, size));
      });
    });
  }

  close(): void {
    this.z.destroy();
  }
}

/** Compresses our header blocks (one per session). */
export class HeaderCompressor extends ZlibChannel {
  constructor() {
    super(createDeflate({ dictionary: spdyDictionary, flush: zlibConstants.Z_SYNC_FLUSH }), Infinity);
  }
  compress(block: Buffer): Promise<Buffer> {
    return this.run(block);
  }
}

/** Decompresses the peer's header blocks (one per session); a corrupt block fails every later one too. */
export class HeaderDecompressor extends ZlibChannel {
  constructor(maxBlockSize = 256 * 1024) {
    // Node's inflate answers Z_NEED_DICT with the given dictionary, and checks its adler32 against the
    // DICTID in the peer's zlib header (RFC 1950 §2.2).
    super(createInflate({ dictionary: spdyDictionary, flush: zlibConstants.Z_SYNC_FLUSH }), maxBlockSize);
  }
  decompress(block: Buffer): Promise<Buffer> {
    return this.run(block);
  }
}
