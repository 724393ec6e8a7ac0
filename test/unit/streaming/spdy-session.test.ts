/**
 * SpdySession against a peer that writes raw frames over loopback TCP: flow control both ways, for a
 * peer that does SPDY/3.1 flow control and for one that, like moby/spdystream (kubelet, client-go,
 * crictl), ignores it; PING, GOAWAY, resets, and protocol errors.
 */
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, onTestFinished } from 'vitest';
import { silentLogger } from '../../../src/log.js';
import {
  decodeHeaderBlock,
  encodeFrame,
  encodeHeaderBlock,
  type Frame,
  HeaderCompressor,
  HeaderDecompressor,
  headerMap,
  readFrame,
  SettingsId,
} from '../../../src/streaming/spdy.js';
import { SpdySession, type SpdyStream } from '../../../src/streaming/spdy-session.js';

/** The test's side of the connection: raw frames out, parsed frames in. */
class RawPeer {
  readonly frames: Frame[] = [];
  private buf = Buffer.alloc(0);
  private readonly deflate = new HeaderCompressor();
  private readonly inflate = new HeaderDecompressor();
  private waiters: (() => void)[] = [];
  /** Header blocks inflated in arrival order: the zlib context is shared by all of them. */
  private readonly replies = new Map<number, Promise<Map<string, string[]>>>();
  private inflated: Promise<unknown> = Promise.resolve();
  ended = false;

  constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      for (;;) {
        const r = readFrame(this.buf);
        if (r === undefined) break;
        this.buf = this.buf.subarray(r.size);
        this.frames.push(r.frame);
        const frame = r.frame;
        if (frame.type === 'syn_reply') {
          const headers = this.inflated.then(async () =>
            decodeHeaderBlock(await this.inflate.decompress(frame.headerBlock)),
          );
          this.inflated = headers.catch(() => undefined);
          this.replies.set(frame.streamId, headers);
        }
      }
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('end', () => {
      this.ended = true;
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('error', () => undefined);
  }

  send(frame: Frame): void {
    this.socket.write(encodeFrame(frame));
  }

  async synStream(streamId: number, headers: Record<string, string>, flags = 0): Promise<void> {
    const headerBlock = await this.deflate.compress(encodeHeaderBlock(headerMap(headers)));
    this.send({ type: 'syn_stream', streamId, associatedStreamId: 0, priority: 0, flags, headerBlock });
  }

  /** Waits until `check` holds for the frames received so far. */
  async until(check: (frames: Frame[]) => boolean, timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check(this.frames)) {
      if (Date.now() > deadline) throw new Error('timed out waiting for frames');
      await Promise.race([new Promise<void>((r) => this.waiters.push(r)), sleep(50)]);
    }
  }

  dataBytes(streamId: number): number {
    return this.frames.reduce(
      (n, f) => n + (f.type === 'data' && f.streamId === streamId ? f.data.length : 0),
      0,
    );
  }

  async replyHeaders(streamId: number): Promise<Map<string, string[]>> {
    await this.until(() => this.replies.has(streamId));
    return this.replies.get(streamId)!;
  }

  close(): void {
    this.deflate.close();
    this.inflate.close();
    this.socket.destroy();
  }
}

/** A server session on one end of a loopback connection and a RawPeer on the other. */
async function pair(
  onStream: (stream: SpdyStream) => void,
  options: { streamBufferLimit?: number } = {},
): Promise<{ session: SpdySession; peer: RawPeer }> {
  let created: SpdySession | undefined;
  const server: Server = createServer((socket) => {
    created = new SpdySession(socket, { role: 'server', log: silentLogger(), onStream, ...options });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  const socket = connect(address.port, '127.0.0.1');
  await once(socket, 'connect');
  while (created === undefined) await sleep(5);
  const session = created;
  const peer = new RawPeer(socket);
  onTestFinished(() => {
    peer.close();
    session.destroy();
    server.close();
  });
  return { session, peer };
}

const megabyte = Buffer.alloc(1024 * 1024, 0x61);

describe('SpdySession', () => {
  it('replies to a SYN_STREAM with an empty header block the peer can inflate', async () => {
    const seen: string[] = [];
    const { peer } = await pair((s) => {
      seen.push(s.headers.get('streamtype')?.[0] ?? '');
      void s.accept();
    });
    await peer.synStream(1, { streamType: 'error' });
    await peer.synStream(3, { streamType: 'stdout' });
    expect(await peer.replyHeaders(1)).toEqual(new Map());
    expect(await peer.replyHeaders(3)).toEqual(new Map());
    expect(seen).toEqual(['error', 'stdout']);
  });

  it('stays within the windows of a peer that does flow control, and resumes on WINDOW_UPDATE', async () => {
    const { peer } = await pair((s) => {
      void s.accept().then(() => s.write(megabyte));
    });
    // A SPDY/3.1 peer announces itself with SETTINGS; the initial window stays 64 KiB.
    peer.send({
      type: 'settings',
      flags: 0,
      entries: [{ flags: 0, id: SettingsId.initialWindowSize, value: 65536 }],
    });
    await peer.synStream(1, { streamType: 'stdout' });
    await peer.until(() => peer.dataBytes(1) === 65536);
    await sleep(200);
    expect(peer.dataBytes(1)).toBe(65536);
    // Opening the stream window alone is not enough: the session window (SPDY/3.1) is spent too.
    peer.send({ type: 'window_update', streamId: 1, delta: 100_000 });
    await sleep(200);
    expect(peer.dataBytes(1)).toBe(65536);
    peer.send({ type: 'window_update', streamId: 0, delta: 40_000 });
    await peer.until(() => peer.dataBytes(1) === 65536 + 40_000);
    await sleep(200);
    expect(peer.dataBytes(1)).toBe(65536 + 40_000);
  });

  it('honours a smaller SETTINGS_INITIAL_WINDOW_SIZE', async () => {
    const { peer } = await pair((s) => {
      void s.accept().then(() => s.write(megabyte));
    });
    peer.send({
      type: 'settings',
      flags: 0,
      entries: [{ flags: 0, id: SettingsId.initialWindowSize, value: 1000 }],
    });
    await peer.synStream(1, { streamType: 'stdout' });
    await peer.until(() => peer.dataBytes(1) === 1000);
    await sleep(150);
    expect(peer.dataBytes(1)).toBe(1000);
  });

  it('sends everything to a peer that never speaks flow control (spdystream), in bounded frames', async () => {
    const { peer } = await pair((s) => {
      void s.accept().then(() => s.end(megabyte));
    });
    await peer.synStream(1, { streamType: 'stdout' });
    await peer.until(() => peer.frames.some((f) => f.type === 'data' && (f.flags & 1) === 1));
    expect(peer.dataBytes(1)).toBe(megabyte.length);
    const sizes = peer.frames.flatMap((f) => (f.type === 'data' ? [f.data.length] : []));
    expect(Math.max(...sizes)).toBeLessThanOrEqual(32 * 1024);
  });

  it('sends WINDOW_UPDATE for the stream and the session as the application reads', async () => {
    let stream!: SpdyStream;
    const { peer } = await pair((s) => {
      stream = s;
      void s.accept();
    });
    await peer.synStream(1, { streamType: 'stdin' });
    await peer.replyHeaders(1);
    peer.send({ type: 'data', streamId: 1, flags: 0, data: Buffer.alloc(60_000) });
    await sleep(100);
    // Nothing read yet: nothing acknowledged.
    expect(peer.frames.filter((f) => f.type === 'window_update')).toEqual([]);
    let read = 0;
    stream.on('data', (c: Buffer) => (read += c.length));
    await peer.until((fs) => fs.filter((f) => f.type === 'window_update').length === 2);
    expect(read).toBe(60_000);
    const updates = peer.frames.filter((f) => f.type === 'window_update');
    expect(updates).toEqual([
      { type: 'window_update', streamId: 1, delta: 60_000 },
      { type: 'window_update', streamId: 0, delta: 60_000 },
    ]);
  });

  it('stops reading the socket when a peer overruns a stream nobody reads, and resumes when it is read', async () => {
    let stream!: SpdyStream;
    const { peer } = await pair(
      (s) => {
        stream = s;
        void s.accept();
      },
      { streamBufferLimit: 256 * 1024 },
    );
    await peer.synStream(1, { streamType: 'stdin' });
    await peer.replyHeaders(1);
    // Ignore the window as spdystream does: 64 MiB in 32 KiB frames, as fast as TCP takes them.
    let sent = 0;
    let blocked = false;
    const chunk = encodeFrame({ type: 'data', streamId: 1, flags: 0, data: Buffer.alloc(32 * 1024) });
    while (sent < 64 * 1024 * 1024) {
      sent += 32 * 1024;
      if (!peer.socket.write(chunk)) {
        const drained = await Promise.race([
          once(peer.socket, 'drain').then(() => true),
          sleep(500).then(() => false),
        ]);
        if (!drained) {
          blocked = true;
          break;
        }
      }
    }
    expect(blocked).toBe(true);
    // Held: the stream's limit plus one frame; the rest waits in the kernel's socket buffers and the peer.
    expect(stream.buffered).toBeLessThanOrEqual(256 * 1024 + 32 * 1024);
    let read = 0;
    stream.on('data', (c: Buffer) => (read += c.length));
    await once(peer.socket, 'drain');
    expect(read).toBeGreaterThan(0);
  });

  it('echoes PINGs with the peer parity and answers its own pings', async () => {
    const { peer, session } = await pair(() => undefined);
    peer.send({ type: 'ping', id: 7 });
    await peer.until((fs) => fs.some((f) => f.type === 'ping' && f.id === 7));
    const rtt = session.ping();
    await peer.until((fs) => fs.some((f) => f.type === 'ping' && f.id === 2));
    peer.send({ type: 'ping', id: 2 });
    expect(await rtt).toBeGreaterThanOrEqual(0);
  });

  it('refuses streams with a bad id', async () => {
    const { peer } = await pair((s) => void s.accept());
    await peer.synStream(2, { streamType: 'x' }); // even: a server id
    await peer.until((fs) => fs.some((f) => f.type === 'rst_stream' && f.streamId === 2 && f.status === 1));
    await peer.synStream(5, { streamType: 'x' });
    await peer.synStream(3, { streamType: 'x' }); // not increasing
    await peer.until((fs) => fs.some((f) => f.type === 'rst_stream' && f.streamId === 3 && f.status === 1));
    expect(await peer.replyHeaders(5)).toEqual(new Map());
  });

  it("after the peer's GOAWAY, finishes its open streams, then closes", async () => {
    let stream!: SpdyStream;
    const { peer, session } = await pair((s) => {
      stream = s;
      void s.accept();
    });
    await peer.synStream(1, { streamType: 'x' }, 1); // FIN: nothing to send
    await peer.replyHeaders(1);
    peer.send({ type: 'goaway', lastGoodStreamId: 0, status: 0 });
    await sleep(100);
    expect(session.isClosed).toBe(false);
    stream.resume();
    stream.end('last words');
    await session.closed;
    expect(peer.frames.some((f) => f.type === 'data' && f.data.toString() === 'last words')).toBe(true);
    expect(peer.frames.at(-1)).toMatchObject({ type: 'goaway', status: 0, lastGoodStreamId: 1 });
  });

  it('resets the application stream when the peer resets it', async () => {
    let stream!: SpdyStream;
    const { peer } = await pair((s) => {
      stream = s;
      void s.accept();
    });
    await peer.synStream(1, { streamType: 'data' });
    await peer.replyHeaders(1);
    const closed = new Promise<unknown>((resolve) =>
      stream.on('close', () => {
        resolve(stream.errored);
      }),
    );
    peer.send({ type: 'rst_stream', streamId: 1, status: 5 });
    expect(await closed).toMatchObject({ message: 'stream 1 reset by peer (status 5)', status: 5 });
    expect(stream.wasReset).toBe(true);
  });

  it('half-closes with FIN on end(), and cancels a stream destroyed mid-way with RST_STREAM', async () => {
    const streams: SpdyStream[] = [];
    const { peer } = await pair((s) => {
      streams.push(s);
      void s.accept();
    });
    await peer.synStream(1, { streamType: 'a' });
    await peer.synStream(3, { streamType: 'b' });
    await peer.replyHeaders(3);
    streams[0]!.end('bye');
    streams[1]!.destroy();
    await peer.until((fs) => fs.some((f) => f.type === 'data' && f.streamId === 1 && (f.flags & 1) === 1));
    await peer.until((fs) => fs.some((f) => f.type === 'rst_stream' && f.streamId === 3 && f.status === 5));
  });

  it('answers a malformed frame with GOAWAY PROTOCOL_ERROR and closes', async () => {
    const { peer, session } = await pair(() => undefined);
    peer.socket.write(Buffer.from('800200010000000000000000', 'hex')); // version 2
    await peer.until((fs) => fs.some((f) => f.type === 'goaway' && f.status === 1));
    await session.closed;
  });

  it('ignores unknown control frames', async () => {
    const { peer } = await pair((s) => void s.accept());
    peer.send({ type: 'unknown', frameType: 10, flags: 0, payload: Buffer.from('credential') });
    await peer.synStream(1, { streamType: 'x' });
    expect(await peer.replyHeaders(1)).toEqual(new Map());
  });
});
