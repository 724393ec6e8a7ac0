/**
 * A hostile layer cannot create or modify anything outside the directory it is unpacked into (design
 * guide: "tar paths resolved inside the root (no `..` escape, links bounded by the root)"). Each layer
 * here is built with tar-stream to attack one rule; each is refused with a message naming the entry, and
 * afterwards the sandbox's other contents (a canary dir beside the target) are byte-for-byte unchanged.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it, onTestFinished } from 'vitest';
import { isSkiffError, type ErrorKind } from '../../../src/errdefs.js';
import { unpackLayer, type UnpackOptions } from '../../../src/image/unpack.js';
import { MEDIA_TYPE_LAYER, buildTar, type LayerEntry } from '../../fixtures/image-builder.js';

const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;

interface Sandbox {
  base: string;
  target: string;
  canary: string;
}

/** base/{canary/{victim,secret/file}, target/}: target is the layer dir. */
async function sandbox(): Promise<Sandbox> {
  const base = await mkdtemp(join(tmpdir(), 'skiff-hostile-'));
  onTestFinished(() => rm(base, { recursive: true, force: true }));
  const canary = join(base, 'canary');
  await mkdir(join(canary, 'secret'), { recursive: true });
  await writeFile(join(canary, 'victim'), 'original');
  await writeFile(join(canary, 'secret/file'), 'secret');
  const target = join(base, 'target');
  await mkdir(target);
  return { base, target, canary };
}

/** Everything under `dir`: path → type, mode and content (or link target). */
async function describeTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(dir, path));
      if (st.isDirectory()) {
        out[path] = `dir ${(st.mode & 0o7777).toString(8)}`;
        await walk(path);
      } else if (st.isSymbolicLink()) out[path] = `symlink ${await readlink(join(dir, path))}`;
      else
        out[path] =
          `file ${(st.mode & 0o7777).toString(8)} ${(await readFile(join(dir, path))).toString('hex')}`;
    }
  };
  await walk('');
  return out;
}

function own(entries: LayerEntry[]): LayerEntry[] {
  return entries.map((e) => ({ uid, gid, ...e }));
}

/**
 * Unpacks `entries` into the sandbox's target and expects a refusal of `kind` whose message names
 * `entry` and matches `reason`; then checks nothing outside the target changed.
 */
async function expectRefused(
  entries: LayerEntry[] | ((s: Sandbox) => LayerEntry[]),
  expected: { kind?: ErrorKind; entry?: string; reason: RegExp },
  options: UnpackOptions = {},
  extraChecks: string[] = [],
): Promise<Sandbox> {
  const s = await sandbox();
  const before = await describeTree(s.canary);
  const tar = await buildTar(own(typeof entries === 'function' ? entries(s) : entries));
  const err: unknown = await unpackLayer(Readable.from([tar]), MEDIA_TYPE_LAYER, s.target, {
    label: 'layer sha256:bad',
    ...options,
  }).catch((e: unknown) => e);
  expect(isSkiffError(err, expected.kind ?? 'invalid-argument'), String(err)).toBe(true);
  const message = (err as Error).message;
  if (expected.entry !== undefined) {
    expect(message.startsWith(`layer sha256:bad entry ${JSON.stringify(expected.entry)}: `), message).toBe(
      true,
    );
  }
  expect(message).toMatch(expected.reason);
  expect((await readdir(s.base)).sort()).toEqual(['canary', 'target']);
  expect(await describeTree(s.canary)).toEqual(before);
  for (const p of extraChecks) expect(existsSync(p), p).toBe(false);
  return s;
}

describe('unpackLayer refuses hostile layers and writes nothing outside the target', () => {
  it('a name climbing out with ..', async () => {
    await expectRefused([{ path: '../escape', type: 'file', content: 'x', rawPath: true }], {
      entry: '../escape',
      reason: /path escapes the layer \("\.\." component\)$/,
    });
  });

  it('an absolute name', async () => {
    const outside = `/tmp/skiff-abs-${randomBytes(4).toString('hex')}`;
    await expectRefused(
      [{ path: `${outside}/evil`, type: 'file', content: 'x', rawPath: true }],
      { entry: `${outside}/evil`, reason: /absolute path$/ },
      {},
      [outside],
    );
  });

  it('a name that climbs out after cleaning (a/../../escape)', async () => {
    await expectRefused(
      [
        { path: 'a', type: 'dir' },
        { path: 'a/../../escape', type: 'file', content: 'x', rawPath: true },
      ],
      { entry: 'a/../../escape', reason: /escapes the layer/ },
    );
  });

  it('a symlink to / and then a file through it', async () => {
    const name = `skiff-escape-${randomBytes(4).toString('hex')}`;
    await expectRefused(
      [
        { path: 'link', type: 'symlink', linkname: '/' },
        { path: `link/tmp/${name}`, type: 'file', content: 'pwned' },
      ],
      { entry: `link/tmp/${name}`, reason: /parent "link" is a symlink$/ },
      {},
      [`/tmp/${name}`],
    );
  });

  it('a symlink to .. and then a file through it', async () => {
    await expectRefused(
      [
        { path: 'up', type: 'symlink', linkname: '..' },
        { path: 'up/canary/victim', type: 'file', content: 'pwned' },
      ],
      { entry: 'up/canary/victim', reason: /parent "up" is a symlink$/ },
    );
  });

  it('a symlink to a directory outside, then a directory, device, fifo or whiteout through it', async () => {
    for (const second of [
      { path: 'link/newdir', type: 'dir' },
      { path: 'link/null', type: 'char', devmajor: 1, devminor: 3 },
      { path: 'link/fifo', type: 'fifo' },
      { path: 'link/.wh.victim', type: 'file', content: '' },
      { path: 'link/.wh..wh..opq', type: 'file', content: '' },
      { path: 'link/deeper/still', type: 'file', content: 'x' },
    ] as LayerEntry[]) {
      await expectRefused((s) => [{ path: 'link', type: 'symlink', linkname: s.canary }, second], {
        entry: second.type === 'dir' ? `${second.path}/` : second.path,
        reason: /parent "link" is a symlink$/,
      });
    }
  });

  it('a hardlink created through a symlinked directory', async () => {
    await expectRefused(
      (s) => [
        { path: 'f', type: 'file', content: 'x' },
        { path: 'link', type: 'symlink', linkname: s.canary },
        { path: 'link/planted', type: 'hardlink', linkname: 'f' },
      ],
      { entry: 'link/planted', reason: /parent "link" is a symlink$/ },
    );
  });

  it('a hardlink whose target goes through a symlink', async () => {
    await expectRefused(
      (s) => [
        { path: 'link', type: 'symlink', linkname: s.canary },
        { path: 'stolen', type: 'hardlink', linkname: 'link/victim' },
      ],
      { entry: 'stolen', reason: /hardlink target "link\/victim" goes through "link", which is a symlink$/ },
    );
  });

  it('a hardlink to ../../etc/passwd', async () => {
    await expectRefused([{ path: 'pw', type: 'hardlink', linkname: '../../etc/passwd', rawPath: true }], {
      entry: 'pw',
      reason: /hardlink target "\.\.\/\.\.\/etc\/passwd": path escapes the layer/,
    });
  });

  it('a hardlink to an absolute path', async () => {
    await expectRefused([{ path: 'pw', type: 'hardlink', linkname: '/etc/passwd', rawPath: true }], {
      entry: 'pw',
      reason: /hardlink target "\/etc\/passwd": absolute path$/,
    });
  });

  it('a hardlink to a symlink, a directory, or nothing', async () => {
    for (const [target, first] of [
      ['sym', { path: 'sym', type: 'symlink', linkname: '/etc/shadow' }],
      ['d', { path: 'd', type: 'dir' }],
      ['missing', { path: 'other', type: 'file', content: '' }],
    ] as [string, LayerEntry][]) {
      await expectRefused([first, { path: 'h', type: 'hardlink', linkname: target }], {
        entry: 'h',
        reason: /is not a regular file extracted earlier in this layer$/,
      });
    }
  });

  it('a directory later replaced by a symlink, then a file through the old path', async () => {
    await expectRefused(
      (s) => [
        { path: 'd', type: 'dir' },
        { path: 'd/f', type: 'file', content: 'inside' },
        { path: 'd', type: 'symlink', linkname: s.canary },
        { path: 'd/victim', type: 'file', content: 'pwned' },
      ],
      { entry: 'd/victim', reason: /parent "d" is a symlink$/ },
    );
  });

  it('more entries than maxEntries', async () => {
    const entries = Array.from({ length: 20 }, (_, i): LayerEntry => ({
      path: `f${i}`,
      type: 'file',
      content: '',
    }));
    await expectRefused(
      entries,
      { kind: 'resource-exhausted', reason: /more than 10 entries \(limit maxEntries\)$/ },
      {
        maxEntries: 10,
      },
    );
  });

  it('more uncompressed bytes than maxBytes', async () => {
    await expectRefused(
      [{ path: 'big', type: 'file', content: Buffer.alloc(200_000) }],
      { kind: 'resource-exhausted', reason: /more than 100000 uncompressed bytes \(limit maxBytes\)$/ },
      { maxBytes: 100_000 },
    );
  });

  it('a non-directory layer root, a whiteout of nothing, a bad xattr name', async () => {
    await expectRefused([{ path: '.', type: 'file', content: 'x', rawPath: true }], {
      entry: '.',
      reason: /the layer root must be a directory$/,
    });
    await expectRefused([{ path: 'd/.wh.', type: 'file', content: '' }], {
      entry: 'd/.wh.',
      reason: /whiteout names nothing$/,
    });
    await expectRefused([{ path: 'f', type: 'file', content: '', pax: { 'SCHILY.xattr.bogus': 'x' } }], {
      entry: 'f',
      reason: /xattr name "bogus" is not valid$/,
    });
  });

  it('an entry type skiff does not know (GNU sparse)', async () => {
    const s = await sandbox();
    const tar = Buffer.from(await buildTar(own([{ path: 'sparse', type: 'file', content: 'x' }])));
    tar[156] = 'S'.charCodeAt(0);
    tar.write('        ', 148);
    let sum = 0;
    for (const b of tar.subarray(0, 512)) sum += b;
    tar.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    const err: unknown = await unpackLayer(Readable.from([tar]), MEDIA_TYPE_LAYER, s.target).catch(
      (e: unknown) => e,
    );
    expect(isSkiffError(err, 'invalid-argument')).toBe(true);
    expect((err as Error).message).toBe('layer entry "sparse": unsupported entry type null');
  });

  it('a file entry replacing a symlink that points outside does not write through it', async () => {
    const s = await sandbox();
    const before = await describeTree(s.canary);
    const tar = await buildTar(
      own([
        { path: 'f', type: 'symlink', linkname: join(s.canary, 'victim') },
        { path: 'f', type: 'file', content: 'pwned', mode: 0o644 },
        { path: 'rel', type: 'symlink', linkname: '../canary/victim' },
        { path: 'rel', type: 'file', content: 'pwned too' },
        { path: 'd', type: 'symlink', linkname: s.canary },
        { path: 'd', type: 'dir' },
        { path: 'd/victim', type: 'file', content: 'in the layer' },
      ]),
    );
    await unpackLayer(Readable.from([tar]), MEDIA_TYPE_LAYER, s.target);
    expect(await describeTree(s.canary)).toEqual(before);
    expect(await readFile(join(s.canary, 'victim'), 'utf8')).toBe('original');
    expect((await lstat(join(s.target, 'f'))).isFile()).toBe(true);
    expect(await readFile(join(s.target, 'f'), 'utf8')).toBe('pwned');
    expect(await readFile(join(s.target, 'rel'), 'utf8')).toBe('pwned too');
    expect((await lstat(join(s.target, 'd'))).isDirectory()).toBe(true);
    expect(await readFile(join(s.target, 'd/victim'), 'utf8')).toBe('in the layer');
    expect((await readdir(s.base)).sort()).toEqual(['canary', 'target']);
  });

  it('a hardlink to a file of the layer is fine, including after the name it came from is replaced', async () => {
    const s = await sandbox();
    const tar = await buildTar(
      own([
        { path: 'orig', type: 'file', content: 'data' },
        { path: 'link', type: 'hardlink', linkname: './orig', rawPath: true },
        { path: 'orig', type: 'symlink', linkname: join(s.canary, 'victim') },
      ]),
    );
    await unpackLayer(Readable.from([tar]), MEDIA_TYPE_LAYER, s.target);
    expect(await readFile(join(s.target, 'link'), 'utf8')).toBe('data');
    expect((await stat(join(s.target, 'link'))).nlink).toBe(1);
    expect(await readlink(join(s.target, 'orig'))).toBe(join(s.canary, 'victim'));
  });

  it('a target that is itself a symlink is refused before anything is read', async () => {
    const s = await sandbox();
    const link = join(s.base, 'target-link');
    const { symlink } = await import('node:fs/promises');
    await symlink(s.canary, link);
    const err: unknown = await unpackLayer(
      Readable.from([await buildTar(own([{ path: 'x', type: 'file', content: 'x' }]))]),
      MEDIA_TYPE_LAYER,
      link,
    ).catch((e: unknown) => e);
    expect(isSkiffError(err, 'invalid-argument')).toBe(true);
    expect((err as Error).message).toMatch(/is not a directory$/);
    expect(existsSync(join(s.canary, 'x'))).toBe(false);
  });
});
