import { mkdtemp, rm } from 'node:fs/promises';
import { type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import hpack from 'hpack.js';
import { describe, expect, it, onTestFinished } from 'vitest';
import {
  AuthorityFixer,
  CriConnection,
  EMPTY_SETTINGS,
  acceptConnection,
} from '../../../src/cri/authority.js';
import { silentLogger } from '../../../src/log.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return Buffer.concat([h, payload]);
}

/** A header block of literal fields without indexing (RFC 7541 §6.2.2, lengths below 127). */
function block(headers: [string, string][]): Buffer {
  return Buffer.concat(
    headers.map(([n, v]) =>
      Buffer.concat([Buffer.from([0, n.length]), Buffer.from(n), Buffer.from([v.length]), Buffer.from(v)]),
    ),
  );
}

const clientSettings = frame(0x4, 0, 0, Buffer.from([0, 4, 0, 0, 0xff, 0xff]));
const ack = frame(0x4, 0x1, 0, Buffer.alloc(0));
const request = (authority: string, streamId = 1) =>
  frame(
    0x1,
    0x4,
    streamId,
    block([
      [':method', 'POST'],
      [':scheme', 'http'],
      [':path', '/runtime.v1.RuntimeService/Version'],
      [':authority', authority],
      ['content-type', 'application/grpc'],
    ]),
  );
const data = frame(0x0, 0x1, 1, Buffer.from([0, 0, 0, 0, 0]));

function decodeHeaders(bytes: Buffer): Record<string, string> {
  // The frames after the preface: HEADERS payloads decoded with a fresh HPACK decoder.
  const d = hpack.decompressor.create({ table: { maxSize: 4096 } });
  const out: Record<string, string> = {};
  for (let rest = bytes; rest.length >= 9;) {
    const len = rest.readUIntBE(0, 3);
    if (rest[3] === 0x1) {
      d.write(rest.subarray(9, 9 + len));
      d.execute();
      for (let h = d.read(); h !== null; h = d.read()) out[h.name] = h.value;
    }
    rest = rest.subarray(9 + len);
  }
  return out;
}

function feed(fixer: AuthorityFixer, bytes: Buffer, byteByByte: boolean): void {
  if (!byteByByte) fixer.write(bytes);
  else for (let i = 0; i < bytes.length; i++) fixer.write(bytes.subarray(i, i + 1));
}

describe('AuthorityFixer', () => {
  for (const byteByByte of [false, true]) {
    const how = byteByByte ? 'a byte at a time' : 'in one piece';
    it(`passes a valid authority as it is and takes out the first SETTINGS ACK (${how})`, () => {
      const out: Buffer[] = [];
      const fixer = new AuthorityFixer((b) => out.push(b));
      // A grpc-go client: preface and SETTINGS, then (after our SETTINGS) the ACK and its request.
      feed(fixer, Buffer.concat([PREFACE, clientSettings]), byteByByte);
      expect(fixer.done).toBe(false);
      feed(fixer, Buffer.concat([ack, request('localhost')]), byteByByte);
      expect(fixer.done).toBe(true);
      expect(fixer.rewriting).toBe(false);
      // Later bytes (a second ACK: for nghttp2's own SETTINGS) pass unparsed.
      feed(fixer, Buffer.concat([data, ack]), byteByByte);
      expect(
        Buffer.concat(out).equals(Buffer.concat([PREFACE, clientSettings, request('localhost'), data, ack])),
      ).toBe(true);
    });

    it(`waits for the ACK of a client that asked before it had our SETTINGS (${how})`, () => {
      const out: Buffer[] = [];
      const fixer = new AuthorityFixer((b) => out.push(b));
      feed(fixer, Buffer.concat([PREFACE, clientSettings, request('localhost'), data]), byteByByte);
      expect(fixer.done).toBe(false);
      feed(fixer, ack, byteByByte);
      expect(fixer.done).toBe(true);
      expect(
        Buffer.concat(out).equals(Buffer.concat([PREFACE, clientSettings, request('localhost'), data])),
      ).toBe(true);
    });

    it(`rewrites a socket-path authority in every request (${how})`, () => {
      const out: Buffer[] = [];
      const fixer = new AuthorityFixer((b) => out.push(b));
      feed(
        fixer,
        Buffer.concat([PREFACE, clientSettings, ack, request('/run/skiff/skiff.sock'), data]),
        byteByByte,
      );
      expect(fixer.rewriting).toBe(true);
      expect(fixer.done).toBe(false);
      const first = Buffer.concat(out).subarray(PREFACE.length + clientSettings.length);
      expect(decodeHeaders(first)).toMatchObject({ ':authority': 'localhost', ':method': 'POST' });
      out.length = 0;
      feed(fixer, Buffer.concat([ack, request('/run/skiff/skiff.sock', 3)]), byteByByte);
      // Only the first ACK was ours; this one passes.
      expect(Buffer.concat(out).subarray(0, ack.length).equals(ack)).toBe(true);
      expect(decodeHeaders(Buffer.concat(out))).toMatchObject({ ':authority': 'localhost' });
    });
  }

  it('lets bytes that are not HTTP/2 through as they are', () => {
    const out: Buffer[] = [];
    const fixer = new AuthorityFixer((b) => out.push(b));
    fixer.write(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    expect(fixer.done).toBe(true);
    expect(Buffer.concat(out).toString()).toBe('GET / HTTP/1.1\r\n\r\n');
  });
});

/** A server socket and a client socket of one unix connection, closed when the test ends. */
async function socketPair(): Promise<{ server: Socket; client: Socket }> {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-authority-'));
  const path = join(dir, 's.sock');
  const listener = createServer();
  await new Promise<void>((r) => listener.listen(path, r));
  const accepted = new Promise<Socket>((r) => listener.once('connection', r));
  const client = connect(path);
  const server = await accepted;
  onTestFinished(async () => {
    client.destroy();
    server.destroy();
    listener.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { server, client };
}

/** Reads `n` bytes from a stream. */
async function readBytes(stream: Socket | Duplex, n: number): Promise<Buffer> {
  const got: Buffer[] = [];
  let size = 0;
  return new Promise((resolve) => {
    const onData = (b: Buffer) => {
      got.push(b);
      size += b.length;
      if (size >= n) {
        stream.off('data', onData);
        stream.pause();
        resolve(Buffer.concat(got));
      }
    };
    stream.on('data', onData);
    stream.resume();
  });
}

describe('acceptConnection', () => {
  it('sends an empty SETTINGS first, and hands over the socket itself for a valid authority', async () => {
    const { server, client } = await socketPair();
    const served = new Promise<Socket | Duplex>((r) => {
      acceptConnection(server, r, silentLogger());
    });
    client.write(Buffer.concat([PREFACE, clientSettings]));
    expect((await readBytes(client, 9)).equals(EMPTY_SETTINGS)).toBe(true);
    client.write(Buffer.concat([ack, request('localhost'), data]));
    const conn = await served;
    expect(conn).toBe(server);
    const expected = Buffer.concat([PREFACE, clientSettings, request('localhost'), data]);
    // What was read before the handover is put back, without the ACK.
    expect((await readBytes(conn, expected.length)).equals(expected)).toBe(true);
  });

  it('hands over a fixing connection for a socket-path authority', async () => {
    const { server, client } = await socketPair();
    const served = new Promise<Socket | Duplex>((r) => {
      acceptConnection(server, r, silentLogger());
    });
    client.write(Buffer.concat([PREFACE, clientSettings, ack, request('/run/x.sock')]));
    const conn = await served;
    expect(conn).toBeInstanceOf(CriConnection);
    const head = await readBytes(conn, PREFACE.length + clientSettings.length + 9);
    expect(head.subarray(0, PREFACE.length).equals(PREFACE)).toBe(true);
    // Server → client bytes go straight to the socket, after our SETTINGS.
    (conn as Duplex).write(Buffer.from('server-bytes'));
    expect((await readBytes(client, 9 + 12)).subarray(9).toString()).toBe('server-bytes');
  });

  it('serves a connection that sends no request in time through the fixing connection', async () => {
    const { server, client } = await socketPair();
    const served = new Promise<Socket | Duplex>((r) => {
      acceptConnection(server, r, silentLogger(), 50);
    });
    client.write(Buffer.concat([PREFACE, clientSettings]));
    const conn = await served;
    expect(conn).toBeInstanceOf(CriConnection);
    client.write(Buffer.concat([ack, request('localhost')]));
    const expected = Buffer.concat([PREFACE, clientSettings, request('localhost')]);
    expect((await readBytes(conn, expected.length)).equals(expected)).toBe(true);
  });
});
