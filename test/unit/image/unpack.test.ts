/**
 * unpackLayer preserves every entry kind and its metadata (image-spec layer.md "File Types", "File
 * Attributes"), turns OCI whiteouts into overlayfs ones (layer.md "Whiteouts"), decompresses by media type
 * and reports the DiffID of the uncompressed tar (config.md "Layer DiffID").
 */
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { describe, expect, it, onTestFinished } from 'vitest';
import { isSkiffError } from '../../../src/errdefs.js';
import { layerCompression, unpackLayer, type UnpackOptions } from '../../../src/image/unpack.js';
import { run } from '../../../src/util/exec.js';
import {
  MEDIA_TYPE_LAYER,
  MEDIA_TYPE_LAYER_GZIP,
  MEDIA_TYPE_LAYER_ZSTD,
  buildTar,
  canZstd,
  fileCapabilities,
  opaque,
  whiteout,
  zstdCompress,
  type LayerEntry,
} from '../../fixtures/image-builder.js';

const isRoot = process.getuid?.() === 0;
const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-unpack-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Entries owned by the test's own user, so extraction needs no root unless a test says so. */
function own(entries: LayerEntry[]): LayerEntry[] {
  return entries.map((e) => ({ uid, gid, ...e }));
}

async function unpackTar(
  tar: Buffer,
  options: UnpackOptions = {},
  mediaType = MEDIA_TYPE_LAYER,
): Promise<{ dir: string; diffId: string; size: number; entries: number }> {
  const base = await tempDir();
  const dir = join(base, 'fs');
  await mkdir(dir);
  const res = await unpackLayer(Readable.from([tar]), mediaType, dir, options);
  return { dir, ...res };
}

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

async function getXattr(path: string, name: string): Promise<string | undefined> {
  const res = await run('getfattr', ['-h', '--absolute-names', '-n', name, '-e', 'hex', path]);
  if (res.code !== 0) return undefined;
  const m = new RegExp(`^${name.replace(/\./g, '\\.')}=0x([0-9a-f]*)$`, 'm').exec(res.stdout);
  return m?.[1];
}

// --- crafting PAX headers with raw bytes (tar-stream's packer writes values as UTF-8) -------------------

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** A ustar header block of type 'x' (POSIX pax extended header) followed by its padded records. */
function paxHeader(records: Buffer[]): Buffer {
  const data = Buffer.concat(records);
  const h = Buffer.alloc(512);
  h.write('PaxHeaders/entry', 0);
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h[156] = 'x'.charCodeAt(0);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return Buffer.concat([h, data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

/** A tar of `entries` without its end-of-archive blocks, to splice hand-made headers in between. */
async function tarBody(entries: LayerEntry[]): Promise<Buffer> {
  const tar = await buildTar(entries);
  const end = tar.subarray(tar.length - 1024);
  expect(end.every((b) => b === 0)).toBe(true);
  return tar.subarray(0, tar.length - 1024);
}

// ---------------------------------------------------------------------------------------------------------

describe('unpackLayer: entry kinds and metadata', () => {
  const T1 = new Date('2021-03-04T05:06:07Z');
  const T2 = new Date('2022-01-01T00:00:00Z');

  it('extracts directories, files, symlinks and hardlinks with modes, owners and mtimes', async () => {
    const tar = await buildTar(
      own([
        { path: 'd', type: 'dir', mode: 0o750, mtime: T1 },
        { path: 'd/f', type: 'file', content: 'hello\n', mode: 0o640, mtime: T2 },
        { path: 'd/l', type: 'symlink', linkname: 'f', mtime: T1 },
        { path: 'abs', type: 'symlink', linkname: '/etc/passwd' },
        { path: 'dangling', type: 'symlink', linkname: '../../nowhere' },
        { path: 'd/h', type: 'hardlink', linkname: 'd/f' },
        { path: 'sticky', type: 'dir', mode: 0o1777 },
        { path: 'empty', type: 'file', content: '', mode: 0o600 },
        { path: 'implicit/parent/file', type: 'file', content: 'x' },
        { path: `long/${'n'.repeat(150)}`, type: 'file', content: 'long name' },
      ]),
    );
    const { dir, entries } = await unpackTar(tar);
    expect(entries).toBe(10);

    const d = await stat(join(dir, 'd'));
    expect(d.isDirectory()).toBe(true);
    expect(d.mode & 0o7777).toBe(0o750);
    expect(d.mtime.getTime()).toBe(T1.getTime()); // set after its contents were created

    const f = await stat(join(dir, 'd/f'));
    expect(await readFile(join(dir, 'd/f'), 'utf8')).toBe('hello\n');
    expect(f.mode & 0o7777).toBe(0o640);
    expect(f.mtime.getTime()).toBe(T2.getTime());
    expect([f.uid, f.gid]).toEqual([uid, gid]);

    expect(await readlink(join(dir, 'd/l'))).toBe('f');
    expect((await lstat(join(dir, 'd/l'))).mtime.getTime()).toBe(T1.getTime());
    expect(await readlink(join(dir, 'abs'))).toBe('/etc/passwd'); // kept verbatim, never followed
    expect(await readlink(join(dir, 'dangling'))).toBe('../../nowhere');

    const h = await stat(join(dir, 'd/h'));
    expect(h.ino).toBe(f.ino);
    expect(h.nlink).toBe(2);

    expect((await stat(join(dir, 'sticky'))).mode & 0o7777).toBe(0o1777);
    expect((await stat(join(dir, 'empty'))).size).toBe(0);
    expect((await stat(join(dir, 'implicit/parent'))).mode & 0o777).toBe(0o755);
    expect(await readFile(join(dir, 'long', 'n'.repeat(150)), 'utf8')).toBe('long name');
  });

  it('keeps setuid, setgid and sticky bits (chmod after chown)', async () => {
    const tar = await buildTar(
      own([
        { path: 'suid', type: 'file', content: '#!/bin/sh\n', mode: 0o4755 },
        { path: 'sgid', type: 'file', content: '#!/bin/sh\n', mode: 0o2755 },
        { path: 'sgid-dir', type: 'dir', mode: 0o2775 },
        { path: 'sgid-dir/inside', type: 'file', content: 'x' },
      ]),
    );
    const { dir } = await unpackTar(tar);
    expect((await stat(join(dir, 'suid'))).mode & 0o7777).toBe(0o4755);
    expect((await stat(join(dir, 'sgid'))).mode & 0o7777).toBe(0o2755);
    expect((await stat(join(dir, 'sgid-dir'))).mode & 0o7777).toBe(0o2775);
  });

  it('applies the layer root entry ("./") to the directory itself and strips "./" prefixes', async () => {
    const tar = await buildTar(
      own([
        { path: './', type: 'dir', mode: 0o711, mtime: T1, rawPath: true },
        { path: './etc/', type: 'dir', mode: 0o755, rawPath: true },
        { path: './etc/hostname', type: 'file', content: 'h', rawPath: true },
      ]),
    );
    const { dir } = await unpackTar(tar);
    const st = await stat(dir);
    expect(st.mode & 0o7777).toBe(0o711);
    expect(st.mtime.getTime()).toBe(T1.getTime());
    expect(await readFile(join(dir, 'etc/hostname'), 'utf8')).toBe('h');
  });

  it('replaces an earlier entry of the same name (later wins) and merges repeated directories', async () => {
    const tar = await buildTar(
      own([
        { path: 'x', type: 'file', content: 'first' },
        { path: 'x', type: 'file', content: 'second' },
        { path: 'y', type: 'dir' },
        { path: 'y/a', type: 'file', content: 'a' },
        { path: 'y', type: 'dir', mode: 0o700 },
        { path: 'z', type: 'dir' },
        { path: 'z/old', type: 'file', content: 'gone' },
        { path: 'z', type: 'file', content: 'now a file' },
      ]),
    );
    const { dir } = await unpackTar(tar);
    expect(await readFile(join(dir, 'x'), 'utf8')).toBe('second');
    expect(await readdir(join(dir, 'y'))).toEqual(['a']);
    expect((await stat(join(dir, 'y'))).mode & 0o777).toBe(0o700);
    expect(await readFile(join(dir, 'z'), 'utf8')).toBe('now a file');
  });

  it('takes ids and sub-second mtimes from PAX records', async () => {
    const body = await tarBody(own([{ path: 'before', type: 'file', content: 'b' }]));
    const file = await tarBody(own([{ path: 'precise', type: 'file', content: 'p' }]));
    const tar = Buffer.concat([
      body,
      paxHeader([
        paxRecord('mtime', Buffer.from('1600000000.25')),
        paxRecord('uid', Buffer.from(String(uid))),
      ]),
      file,
      Buffer.alloc(1024),
    ]);
    const { dir } = await unpackTar(tar);
    expect((await stat(join(dir, 'precise'))).mtime.getTime()).toBe(1600000000250);
    expect(await readFile(join(dir, 'before'), 'utf8')).toBe('b');
  });

  it('creates a fifo', async () => {
    const { dir } = await unpackTar(await buildTar(own([{ path: 'p', type: 'fifo', mode: 0o640 }])));
    const st = await lstat(join(dir, 'p'));
    expect(st.isFIFO()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o640);
  });

  it.skipIf(!isRoot)('creates character and block devices and chowns to the layer ids (root)', async () => {
    const tar = await buildTar([
      { path: 'dev', type: 'dir' },
      { path: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
      { path: 'dev/loop9', type: 'block', devmajor: 7, devminor: 9, mode: 0o660, gid: 6 },
      { path: 'home', type: 'dir', uid: 1000, gid: 1000 },
      { path: 'home/x', type: 'file', content: 'x', uid: 1000, gid: 2000, mode: 0o4750 },
      { path: 'home/l', type: 'symlink', linkname: 'x', uid: 1000, gid: 1000 },
      // A repeated directory entry's owner wins, even when it is root's (the extractor's own).
      { path: 'again', type: 'dir', uid: 1000, gid: 1000 },
      { path: 'again', type: 'dir', uid: 0, gid: 0 },
    ]);
    const { dir } = await unpackTar(tar);
    const nul = await lstat(join(dir, 'dev/null'));
    expect(nul.isCharacterDevice()).toBe(true);
    expect(nul.rdev).toBe((1 << 8) | 3);
    expect(nul.mode & 0o7777).toBe(0o666);
    const loop = await lstat(join(dir, 'dev/loop9'));
    expect(loop.isBlockDevice()).toBe(true);
    expect(loop.rdev).toBe((7 << 8) | 9);
    expect(loop.gid).toBe(6);
    const home = await stat(join(dir, 'home'));
    expect([home.uid, home.gid]).toEqual([1000, 1000]);
    const x = await stat(join(dir, 'home/x'));
    expect([x.uid, x.gid, x.mode & 0o7777]).toEqual([1000, 2000, 0o4750]);
    const l = await lstat(join(dir, 'home/l'));
    expect([l.uid, l.gid]).toEqual([1000, 1000]);
    const again = await stat(join(dir, 'again'));
    expect([again.uid, again.gid]).toEqual([0, 0]);
  });

  it.skipIf(!isRoot)('sets xattrs from PAX SCHILY.xattr records, binary values intact (root)', async () => {
    // CAP_SETUID (7) puts byte 0x80 in the value, which tar-stream alone would decode as UTF-8 and mangle.
    const caps = fileCapabilities([7, 10]);
    expect(caps.includes(0x80)).toBe(true);
    const tar = Buffer.concat([
      await tarBody([{ path: 'bin', type: 'dir' }]),
      paxHeader([
        paxRecord('SCHILY.xattr.security.capability', caps),
        paxRecord('SCHILY.xattr.user.comment', Buffer.from('hi\xff', 'latin1')),
      ]),
      await tarBody([{ path: 'bin/ping', type: 'file', content: 'elf', mode: 0o755, uid: 1000 }]),
      paxHeader([paxRecord('SCHILY.xattr.trusted.overlay.opaque', Buffer.from('y'))]),
      await tarBody([{ path: 'sneaky', type: 'dir' }]),
      await tarBody([{ path: 'plain', type: 'file', content: 'no xattrs' }]),
      Buffer.alloc(1024),
    ]);
    const { dir } = await unpackTar(tar);
    expect(await getXattr(join(dir, 'bin/ping'), 'security.capability')).toBe(caps.toString('hex'));
    expect(await getXattr(join(dir, 'bin/ping'), 'user.comment')).toBe('6869ff');
    // chown (to uid 1000) ran before the xattrs, or the kernel would have dropped security.capability.
    expect((await stat(join(dir, 'bin/ping'))).uid).toBe(1000);
    // A layer cannot smuggle overlayfs's own xattrs in: whiteouts are expressed by .wh. entries only.
    expect(await getXattr(join(dir, 'sneaky'), 'trusted.overlay.opaque')).toBeUndefined();
    expect(await readFile(join(dir, 'plain'), 'utf8')).toBe('no xattrs');
  });
});

describe('unpackLayer: batched device and xattr creation', () => {
  it.skipIf(!isRoot)(
    'handles odd names and long paths in the batches, and tolerates EPERM like containerd',
    async () => {
      const odd = 'we ird\\ name=x\t\u00e9';
      const deep = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(60)}`;
      const tar = await buildTar([
        { path: odd, type: 'file', content: 'odd', pax: { 'SCHILY.xattr.user.k': 'v' } },
        { path: deep, type: 'dir' },
        whiteout(`${deep}/gone`),
        { path: `${deep}/fifo`, type: 'fifo', pax: { 'SCHILY.xattr.trusted.t': 'on a fifo' } },
        // The kernel refuses user.* xattrs on symlinks (EPERM): warned about, not fatal.
        { path: 'sym', type: 'symlink', linkname: odd, pax: { 'SCHILY.xattr.user.k': 'v' } },
      ]);
      const warnings: string[] = [];
      const { Logger } = await import('../../../src/log.js');
      const log = new Logger({
        level: 'warn',
        format: 'json',
        sink: { write: (l: string) => warnings.push(l) },
      });
      const { dir } = await unpackTar(tar, { log });
      expect(await getXattr(join(dir, odd), 'user.k')).toBe(Buffer.from('v').toString('hex'));
      expect((await lstat(join(dir, deep, 'gone'))).isCharacterDevice()).toBe(true);
      expect(await getXattr(join(dir, deep, 'fifo'), 'trusted.t')).toBe(
        Buffer.from('on a fifo').toString('hex'),
      );
      expect(warnings.join('')).toMatch(/layer xattr not set.*Operation not permitted/);
    },
  );
});

describe('unpackLayer: whiteouts (layer.md) become overlayfs whiteouts', () => {
  it.skipIf(!isRoot)(
    'turns .wh.NAME into a 0/0 character device and .wh..wh..opq into an opaque dir',
    async () => {
      const tar = await buildTar([
        { path: 'etc', type: 'dir' },
        whiteout('etc/gone.conf'),
        whiteout('toplevel'),
        { path: 'etc/opq', type: 'dir' },
        opaque('etc/opq'),
        { path: 'etc/opq/new.txt', type: 'file', content: 'new' },
        { path: '.wh..wh.plnk', type: 'dir' }, // AUFS metadata: ignored
      ]);
      const { dir } = await unpackTar(tar);
      for (const p of ['etc/gone.conf', 'toplevel']) {
        const st = await lstat(join(dir, p));
        expect(st.isCharacterDevice()).toBe(true);
        expect(st.rdev).toBe(0);
      }
      expect(await getXattr(join(dir, 'etc/opq'), 'trusted.overlay.opaque')).toBe('79'); // "y"
      expect(await readdir(join(dir, 'etc/opq'))).toEqual(['new.txt']);
      expect(await readdir(dir)).not.toContain('.wh..wh.plnk');
      expect((await readdir(join(dir, 'etc'))).sort()).toEqual(['gone.conf', 'opq']);
    },
  );

  it.skipIf(!isRoot)(
    'a whiteout never removes an entry of its own layer (it applies to lower layers)',
    async () => {
      const tar = await buildTar([
        { path: 'keep', type: 'file', content: 'mine' },
        whiteout('keep'),
        { path: 'dir1', type: 'dir' },
        { path: 'dir1/x', type: 'file', content: 'x' },
        whiteout('dir1'),
        whiteout('dir2'),
        { path: 'dir2', type: 'dir' },
      ]);
      const { dir } = await unpackTar(tar);
      expect(await readFile(join(dir, 'keep'), 'utf8')).toBe('mine');
      // A directory of this layer that was also whited out hides the lower one's children: opaque.
      expect(await readdir(join(dir, 'dir1'))).toEqual(['x']);
      expect(await getXattr(join(dir, 'dir1'), 'trusted.overlay.opaque')).toBe('79');
      expect((await lstat(join(dir, 'dir2'))).isDirectory()).toBe(true);
      expect(await getXattr(join(dir, 'dir2'), 'trusted.overlay.opaque')).toBe('79');
    },
  );
});

describe('unpackLayer: compression and DiffID', () => {
  const entries = own([
    { path: 'a', type: 'dir' },
    { path: 'a/big', type: 'file', content: Buffer.alloc(3 * 1024 * 1024, 'abcdefgh') },
    { path: 'a/small', type: 'file', content: 'small' },
  ]);

  it('maps media types to compressions', () => {
    expect(layerCompression(MEDIA_TYPE_LAYER)).toBe('none');
    expect(layerCompression(MEDIA_TYPE_LAYER_GZIP)).toBe('gzip');
    expect(layerCompression(MEDIA_TYPE_LAYER_ZSTD)).toBe('zstd');
    expect(layerCompression('application/vnd.docker.image.rootfs.diff.tar.gzip')).toBe('gzip');
    expect(layerCompression('application/octet-stream')).toBeUndefined();
  });

  it('reports the sha256 of the uncompressed tar, its size and entry count, for each compression', async () => {
    const tar = await buildTar(entries);
    const inputs: [string, Buffer][] = [
      [MEDIA_TYPE_LAYER, tar],
      [MEDIA_TYPE_LAYER_GZIP, gzipSync(tar)],
    ];
    if (canZstd()) inputs.push([MEDIA_TYPE_LAYER_ZSTD, await zstdCompress(tar)]);
    expect(inputs.length).toBe(3);
    for (const [mediaType, bytes] of inputs) {
      const res = await unpackTar(bytes, {}, mediaType);
      expect(res.diffId).toBe(sha256(tar));
      expect(res.size).toBe(tar.length);
      expect(res.entries).toBe(3);
      expect((await readFile(join(res.dir, 'a/big'))).equals(entries[1]!.content as Buffer)).toBe(true);
    }
  });

  it('decompresses concatenated zstd frames and gzip members', async () => {
    const tar = await buildTar(entries);
    const cut = 1000;
    const zstd = Buffer.concat([
      await zstdCompress(tar.subarray(0, cut)),
      await zstdCompress(tar.subarray(cut)),
    ]);
    const gzip = Buffer.concat([gzipSync(tar.subarray(0, cut)), gzipSync(tar.subarray(cut))]);
    expect((await unpackTar(zstd, {}, MEDIA_TYPE_LAYER_ZSTD)).diffId).toBe(sha256(tar));
    expect((await unpackTar(gzip, {}, MEDIA_TYPE_LAYER_GZIP)).diffId).toBe(sha256(tar));
  });

  it('streams: a layer arriving in small chunks unpacks the same', async () => {
    const tar = await buildTar(entries);
    const gz = gzipSync(tar);
    const base = await tempDir();
    const chunks: Buffer[] = [];
    for (let i = 0; i < gz.length; i += 777) chunks.push(gz.subarray(i, i + 777));
    const res = await unpackLayer(Readable.from(chunks), MEDIA_TYPE_LAYER_GZIP, base);
    expect(res.diffId).toBe(sha256(tar));
  });

  it('refuses corrupt, truncated and empty compressed streams as data-loss', async () => {
    const tar = await buildTar(entries);
    const gz = gzipSync(tar);
    const zst = await zstdCompress(tar);
    const corrupt = Buffer.from(gz);
    corrupt[200] = (corrupt[200] ?? 0) ^ 0xff;
    const cases: [string, Buffer, RegExp][] = [
      [MEDIA_TYPE_LAYER_GZIP, corrupt, /corrupt gzip stream/],
      [MEDIA_TYPE_LAYER_GZIP, gz.subarray(0, gz.length - 100), /gzip|malformed tar/],
      [MEDIA_TYPE_LAYER_ZSTD, zst.subarray(0, zst.length - 100), /truncated zstd stream|corrupt zstd/],
      [MEDIA_TYPE_LAYER_ZSTD, Buffer.from('definitely not zstd'), /corrupt zstd stream/],
      [MEDIA_TYPE_LAYER_ZSTD, Buffer.alloc(0), /empty zstd stream/],
      [MEDIA_TYPE_LAYER, Buffer.alloc(1024, 'garbage!'), /malformed tar/],
      [MEDIA_TYPE_LAYER, tar.subarray(0, 700), /malformed tar|Unexpected end/],
    ];
    for (const [mediaType, bytes, message] of cases) {
      const err: unknown = await unpackTar(bytes, { label: 'layer sha256:feed' }, mediaType).catch(
        (e: unknown) => e,
      );
      expect(isSkiffError(err, 'data-loss'), `${mediaType} ${String(err)}`).toBe(true);
      expect((err as Error).message).toMatch(/^layer sha256:feed: /);
      expect((err as Error).message).toMatch(message);
    }
  });

  it('refuses an unknown media type as invalid-argument', async () => {
    const err: unknown = await unpackTar(Buffer.alloc(0), {}, 'application/x-rar').catch((e: unknown) => e);
    expect(isSkiffError(err, 'invalid-argument')).toBe(true);
    expect((err as Error).message).toBe('layer: unsupported media type "application/x-rar"');
  });

  it('stops a zstd bomb at maxBytes without inflating it in memory', async () => {
    // 128 MiB of zeros inside one file compress to a few KiB.
    const header = await tarBody(own([{ path: 'bomb', type: 'file', content: '' }]));
    const h = Buffer.from(header);
    const size = 128 * 1024 * 1024;
    h.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
    h.write('        ', 148);
    let sum = 0;
    for (const b of h.subarray(0, 512)) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    const bomb = await zstdCompress(Buffer.concat([h, Buffer.alloc(size), Buffer.alloc(1024)]));
    expect(bomb.length).toBeLessThan(1024 * 1024);
    const before = process.memoryUsage().rss;
    const err: unknown = await unpackTar(bomb, { maxBytes: 8 * 1024 * 1024 }, MEDIA_TYPE_LAYER_ZSTD).catch(
      (e: unknown) => e,
    );
    expect(isSkiffError(err, 'resource-exhausted')).toBe(true);
    expect((err as Error).message).toMatch(/more than 8388608 uncompressed bytes/);
    expect(process.memoryUsage().rss - before).toBeLessThan(128 * 1024 * 1024);
  });

  it('aborts with canceled even when the signal fires before extraction starts', async () => {
    const controller = new AbortController();
    const input = new PassThrough();
    const unpacking = unpackLayer(input, MEDIA_TYPE_LAYER, await tempDir(), { signal: controller.signal });
    controller.abort(); // while unpackLayer still awaits its first lstat
    const err: unknown = await unpacking.catch((e: unknown) => e);
    expect(isSkiffError(err, 'canceled')).toBe(true);
    expect(input.destroyed).toBe(true);
  });

  it('aborts with canceled when the signal fires', async () => {
    const input = new PassThrough();
    const controller = new AbortController();
    const base = await tempDir();
    const unpacking = unpackLayer(input, MEDIA_TYPE_LAYER, base, { signal: controller.signal });
    input.write((await tarBody(own([{ path: 'a', type: 'file', content: 'a' }]))).subarray(0, 600));
    setTimeout(() => {
      controller.abort();
    }, 20);
    const err: unknown = await unpacking.catch((e: unknown) => e);
    expect(isSkiffError(err, 'canceled')).toBe(true);
    expect(input.destroyed).toBe(true);
  });
});
