/**
 * SPDY/3.1 framing (src/streaming/spdy.ts): frames round-trip, header blocks decode from bytes that the
 * reference implementation wrote, and the dictionary is byte-identical to the one every Kubernetes
 * client compresses against.
 *
 * The vectors below were produced by moby/spdystream's Framer (spdy/write.go, the framer kubelet,
 * client-go and crictl use) writing these frames in this order into one buffer, so the header blocks
 * share one zlib stream: SYN_STREAM 1 {streamtype: error}, SYN_STREAM 3 {streamtype: stdout},
 * SYN_REPLY 1 {}, DATA 3 FIN "hello", RST_STREAM 5 CANCEL, SETTINGS {INITIAL_WINDOW_SIZE: 65536},
 * PING 1, GOAWAY 3 OK, WINDOW_UPDATE 3 +32768, SYN_STREAM 5 {port: [8080, 9090]}.
 */
import { adler32 } from './adler32.js';
import { describe, expect, it } from 'vitest';
import {
  decodeHeaderBlock,
  dictionaryDigest,
  encodeFrame,
  encodeHeaderBlock,
  type Frame,
  HeaderCompressor,
  HeaderDecompressor,
  headerMap,
  readFrame,
  spdyDictionary,
  SpdyProtocolError,
} from '../../../src/streaming/spdy.js';

const goVectors: [string, string][] = [
  [
    'syn_stream_1',
    '80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff',
  ],
  ['syn_stream_3', '800300010000001900000003000000000000c22ac5565c92925f5a02000000ffff'],
  ['syn_reply_1', '800300020000000e000000016260606000000000ffff'],
  ['data_3_fin', '000000030100000568656c6c6f'],
  ['rst_5_cancel', '80030003000000080000000500000005'],
  ['settings', '800300040000000c000000010000000700010000'],
  ['ping_1', '800300060000000400000001'],
  ['goaway_3', '80030007000000080000000300000000'],
  ['window_update_3', '80030009000000080000000300008000'],
  [
    'syn_stream_5_multi',
    '80030001000000220000000500000000000082cab314e417819239a78581850183a581a501000000ffff',
  ],
];

function parseOne(hex: string): Frame {
  const buf = Buffer.from(hex, 'hex');
  const r = readFrame(buf);
  expect(r?.size).toBe(buf.length);
  return r!.frame;
}

describe('the SPDY/3 header dictionary', () => {
  it('is the 1423 bytes of spdystream, whose adler32 is the DICTID 0xe3c6a7c2 of SPDY/3 zlib headers', () => {
    expect(spdyDictionary.length).toBe(1423);
    expect(dictionaryDigest()).toBe('51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02');
    expect(adler32(spdyDictionary)).toBe(0xe3c6a7c2);
  });
});

describe('readFrame / encodeFrame', () => {
  it('parses every frame spdystream wrote and re-encodes it to the same bytes', () => {
    for (const [name, hex] of goVectors) {
      const frame = parseOne(hex);
      expect(encodeFrame(frame).toString('hex'), name).toBe(hex);
    }
  });

  it('decodes the fields of control and data frames', () => {
    const v = new Map(goVectors);
    expect(parseOne(v.get('data_3_fin')!)).toEqual({
      type: 'data',
      streamId: 3,
      flags: 1,
      data: Buffer.from('hello'),
    });
    expect(parseOne(v.get('rst_5_cancel')!)).toEqual({ type: 'rst_stream', streamId: 5, status: 5 });
    expect(parseOne(v.get('settings')!)).toEqual({
      type: 'settings',
      flags: 0,
      entries: [{ flags: 0, id: 7, value: 65536 }],
    });
    expect(parseOne(v.get('ping_1')!)).toEqual({ type: 'ping', id: 1 });
    expect(parseOne(v.get('goaway_3')!)).toEqual({ type: 'goaway', lastGoodStreamId: 3, status: 0 });
    expect(parseOne(v.get('window_update_3')!)).toEqual({ type: 'window_update', streamId: 3, delta: 32768 });
    const syn = parseOne(v.get('syn_stream_1')!);
    expect(syn).toMatchObject({
      type: 'syn_stream',
      streamId: 1,
      associatedStreamId: 0,
      priority: 0,
      flags: 0,
    });
  });

  it('waits for a whole frame and reads one frame at a time from a longer buffer', () => {
    const all = Buffer.concat(goVectors.map(([, hex]) => Buffer.from(hex, 'hex')));
    for (let cut = 0; cut < 13; cut++) expect(readFrame(all.subarray(0, cut))).toBeUndefined();
    let off = 0;
    const types: string[] = [];
    for (;;) {
      const r = readFrame(all.subarray(off));
      if (r === undefined) break;
      types.push(r.frame.type);
      off += r.size;
    }
    expect(off).toBe(all.length);
    expect(types).toEqual([
      'syn_stream',
      'syn_stream',
      'syn_reply',
      'data',
      'rst_stream',
      'settings',
      'ping',
      'goaway',
      'window_update',
      'syn_stream',
    ]);
  });

  it('round-trips frames with flags, priorities and large stream ids', () => {
    const frames: Frame[] = [
      { type: 'data', streamId: 0x7ffffffd, flags: 0, data: Buffer.alloc(70_000, 7) },
      { type: 'data', streamId: 9, flags: 1, data: Buffer.alloc(0) },
      {
        type: 'syn_stream',
        streamId: 7,
        associatedStreamId: 3,
        priority: 5,
        flags: 3,
        headerBlock: Buffer.from('x'),
      },
      { type: 'headers', streamId: 7, flags: 1, headerBlock: Buffer.from('yz') },
      { type: 'window_update', streamId: 0, delta: 0x7fffffff },
      { type: 'ping', id: 0xfffffffe },
      { type: 'unknown', frameType: 10, flags: 0, payload: Buffer.from('cred') },
    ];
    for (const f of frames) expect(readFrame(encodeFrame(f))?.frame).toEqual(f);
  });

  it('rejects malformed frames as protocol errors', () => {
    const bad = [
      '8002000600000004000000ff', // version 2
      '800300060000000500000001ff', // PING of length 5
      '80030003000000040000000500', // RST_STREAM of length 4
      '0000000000000001ff', // DATA on stream 0
      '800300040000000800000002ffffffff', // SETTINGS count disagrees with length
    ];
    for (const hex of bad) expect(() => readFrame(Buffer.from(hex, 'hex')), hex).toThrow(SpdyProtocolError);
  });

  it('refuses a frame longer than the limit before its payload arrives', () => {
    const header = Buffer.from('0000000100ffffff', 'hex');
    expect(() => readFrame(header, 1 << 20)).toThrow(/exceeds/);
  });
});

describe('header blocks', () => {
  it('encode names lowercased, multiple values NUL-joined, and decode back', () => {
    const block = encodeHeaderBlock(headerMap({ StreamType: 'data', Port: ['8080', '9090'] }));
    expect(block.toString('latin1')).toBe(
      '\0\0\0\x02\0\0\0\x0astreamtype\0\0\0\x04data\0\0\0\x04port\0\0\0\x098080\x009090',
    );
    expect(decodeHeaderBlock(block)).toEqual(
      new Map([
        ['streamtype', ['data']],
        ['port', ['8080', '9090']],
      ]),
    );
  });

  it('reject truncated blocks and trailing bytes', () => {
    const block = encodeHeaderBlock(headerMap({ a: 'b' }));
    expect(() => decodeHeaderBlock(block.subarray(0, block.length - 1))).toThrow(SpdyProtocolError);
    expect(() => decodeHeaderBlock(Buffer.concat([block, Buffer.from([0])]))).toThrow(SpdyProtocolError);
  });

  it("decompress spdystream's compressed blocks with the dictionary, sharing one stream context", async () => {
    const inflate = new HeaderDecompressor();
    const blocks = goVectors
      .map(([, hex]) => readFrame(Buffer.from(hex, 'hex'))!.frame)
      .flatMap((f) => ('headerBlock' in f ? [f.headerBlock] : []));
    const decoded = [];
    for (const b of blocks) decoded.push(decodeHeaderBlock(await inflate.decompress(b)));
    expect(decoded).toEqual([
      new Map([['streamtype', ['error']]]),
      new Map([['streamtype', ['stdout']]]),
      new Map(),
      new Map([['port', ['8080', '9090']]]),
    ]);
    inflate.close();
  });

  it('compress to the bytes spdystream writes for the same headers (same dictionary, same sync flushes)', async () => {
    // Go writes with BestCompression and we with the default level; the zlib header differs in its
    // level bits only, and the stream must carry the SPDY/3 DICTID.
    const deflate = new HeaderCompressor();
    const first = await deflate.compress(encodeHeaderBlock(headerMap({ streamtype: 'error' })));
    expect(first.subarray(2, 6).toString('hex')).toBe('e3c6a7c2');
    expect(first.subarray(first.length - 4).toString('hex')).toBe('0000ffff');
    deflate.close();
  });

  it('round-trip many blocks through one compressor and one decompressor', async () => {
    const deflate = new HeaderCompressor();
    const inflate = new HeaderDecompressor();
    for (let i = 0; i < 200; i++) {
      const h = headerMap({
        streamtype: i % 2 ? 'data' : 'error',
        port: String(1000 + i),
        requestid: String(i),
      });
      const wire = await deflate.compress(encodeHeaderBlock(h));
      expect(decodeHeaderBlock(await inflate.decompress(wire))).toEqual(h);
    }
    deflate.close();
    inflate.close();
  });

  it('fail, and keep failing, on a corrupt block', async () => {
    const inflate = new HeaderDecompressor();
    await expect(inflate.decompress(Buffer.from('78f9e3c6a7c2ffffffffffff', 'hex'))).rejects.toThrow();
    await expect(inflate.decompress(Buffer.from('00', 'hex'))).rejects.toThrow();
    inflate.close();
  });

  it('refuse a block that inflates beyond the limit (a compression bomb)', async () => {
    const deflate = new HeaderCompressor();
    const inflate = new HeaderDecompressor(64 * 1024);
    const bomb = await deflate.compress(Buffer.alloc(1 << 20));
    expect(bomb.length).toBeLessThan(4096);
    await expect(inflate.decompress(bomb)).rejects.toThrow(/beyond/);
    deflate.close();
    inflate.close();
  });
});
