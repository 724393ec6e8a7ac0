/**
 * The fixture `multiLayer` image, unpacked layer by layer into snapshots and stacked with a real overlayfs
 * mount, shows the image's filesystem (image-spec layer.md "Applying Changesets"): whiteouts hide lower
 * files, an opaque directory hides lower children but keeps its own, hardlinks share an inode, symlinks,
 * modes, owners, mtimes and xattrs survive. Root only; every mount is undone in onTestFinished and the
 * file ends by checking /proc/self/mountinfo holds nothing under its temp dir.
 */
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { chainIds } from '../../src/image/chain-id.js';
import { unpackLayer } from '../../src/image/unpack.js';
import { silentLogger } from '../../src/log.js';
import { mount, mountsUnder, overlayMount, unmount } from '../../src/snapshot/mount.js';
import { SnapshotStore } from '../../src/snapshot/snapshots.js';
import { run } from '../../src/util/exec.js';
import { MEDIA_TYPE_LAYER, buildTar, type BuiltImage } from '../fixtures/image-builder.js';
import { CAP_FILE_XATTR, OWNED_MTIME, buildFixture } from '../fixtures/images.js';

const isRoot = process.getuid?.() === 0;

let base = '';
let store: SnapshotStore;
let image: BuiltImage;
let top = '';

/** Mounts on a fresh dir under the temp root and unmounts when the test finishes, pass or fail. */
async function mounted(lowerDirs: string[], upper?: { upperDir: string; workDir: string }): Promise<string> {
  const target = await mkdtemp(join(base, 'mnt-'));
  const m = upper ? overlayMount(lowerDirs, upper.upperDir, upper.workDir) : overlayMount(lowerDirs);
  await mount(target, m);
  onTestFinished(() => unmount(target));
  return target;
}

async function getXattr(path: string, name: string): Promise<string | undefined> {
  const res = await run('getfattr', ['--absolute-names', '-n', name, '-e', 'hex', path]);
  if (res.code !== 0) return undefined;
  return new RegExp(`^${name.replace(/\./g, '\\.')}=0x([0-9a-f]*)$`, 'm').exec(res.stdout)?.[1];
}

describe.skipIf(!isRoot)('multiLayer unpacked into snapshots and mounted with overlayfs', () => {
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'skiff-e2e-overlay-'));
    store = new SnapshotStore({ root: join(base, 'snapshots'), log: silentLogger() });
    await store.cleanup();
    image = await buildFixture('multiLayer');
    const chains = chainIds(image.config.rootfs.diff_ids);
    // Unpack in reverse order on purpose: layers are independent lower dirs, committed in any order.
    for (let i = image.layers.length - 1; i >= 0; i--) {
      const layer = image.layers[i]!;
      const { key, fsDir } = await store.prepare();
      const res = await unpackLayer(Readable.from([layer.bytes]), layer.mediaType, fsDir, {
        label: `layer ${layer.digest}`,
      });
      expect(res.diffId).toBe(image.config.rootfs.diff_ids[i]);
      await store.commit(key, {
        chainId: chains[i]!,
        parent: chains[i - 1],
        diffId: res.diffId,
        size: res.size,
      });
    }
    top = chains[chains.length - 1]!;
  });

  afterAll(async () => {
    if (!base) return;
    const left = await mountsUnder(base);
    for (const m of left.reverse()) await unmount(m, { lazy: true });
    await rm(base, { recursive: true, force: true });
    expect(left).toEqual([]);
  });

  it('shows the merged filesystem of the image', async () => {
    const lowerDirs = await store.lowerDirs(top);
    expect(lowerDirs).toHaveLength(3);
    const root = await mounted(lowerDirs);
    expect((await mountsUnder(base)).includes(root)).toBe(true);

    // Layer 1's base: busybox and the standard dirs.
    expect((await stat(join(root, 'bin/busybox'))).mode & 0o111).toBe(0o111);
    expect(await readlink(join(root, 'bin/sh'))).toBe('busybox');
    expect((await stat(join(root, 'tmp'))).mode & 0o7777).toBe(0o1777);

    // Layer 3 whited out /data/dir/b.txt: gone, and its directory is left empty.
    expect(await readdir(join(root, 'data/dir'))).toEqual([]);
    await expect(lstat(join(root, 'data/dir/b.txt'))).rejects.toMatchObject({ code: 'ENOENT' });

    // Layer 3 made /etc/opq opaque: layer 2's old*.txt are hidden, its own new.txt shows.
    expect(await readdir(join(root, 'etc/opq'))).toEqual(['new.txt']);
    expect(await readFile(join(root, 'etc/opq/new.txt'), 'utf8')).toBe('new\n');
    // ...while the rest of /etc still merges with lower layers.
    expect(await readFile(join(root, 'etc/passwd'), 'utf8')).toMatch(/^root:x:0:0/);

    // Layer 2's entries.
    const a = await stat(join(root, 'data/a.txt'));
    const hard = await stat(join(root, 'data/hard'));
    expect(hard.ino).toBe(a.ino);
    expect(hard.nlink).toBe(2);
    expect(await readFile(join(root, 'data/hard'), 'utf8')).toBe('hello from a\n');
    expect(await readlink(join(root, 'data/link'))).toBe('a.txt');
    expect(await readFile(join(root, 'data/link'), 'utf8')).toBe('hello from a\n');
    expect((await lstat(join(root, 'data/fifo'))).isFIFO()).toBe(true);
    const owned = await stat(join(root, 'data/owned.txt'));
    expect([owned.mode & 0o7777, owned.uid, owned.gid]).toEqual([0o640, 1000, 1000]);
    expect(owned.mtime.getTime()).toBe(OWNED_MTIME.getTime());
    expect((await stat(join(root, 'home/app'))).uid).toBe(1000);

    // Layer 3's capability xattr reads back through the overlay.
    expect(await getXattr(join(root, 'data/cap.bin'), 'security.capability')).toBe(
      CAP_FILE_XATTR.toString('hex'),
    );
    expect((await stat(join(root, 'data/cap.bin'))).mode & 0o7777).toBe(0o755);

    expect((await readdir(join(root, 'data'))).sort()).toEqual([
      'a.txt',
      'cap.bin',
      'dir',
      'fifo',
      'hard',
      'link',
      'owned.txt',
    ]);
  });

  it('a writable container root over the chain keeps the image snapshots untouched', async () => {
    const lowerDirs = await store.lowerDirs(top);
    const upperDir = join(base, 'container', 'upper');
    const workDir = join(base, 'container', 'work');
    await mkdir(upperDir, { recursive: true });
    await mkdir(workDir, { recursive: true });
    const root = await mounted(lowerDirs, { upperDir, workDir });
    await writeFile(join(root, 'data/a.txt'), 'changed by the container\n');
    await rm(join(root, 'etc/opq/new.txt'));
    expect(await readFile(join(upperDir, 'data/a.txt'), 'utf8')).toBe('changed by the container\n');
    expect((await lstat(join(upperDir, 'etc/opq/new.txt'))).isCharacterDevice()).toBe(true);
    for (const dir of lowerDirs) {
      const a = join(dir, 'data/a.txt');
      const exists = await stat(a).then(
        () => true,
        () => false,
      );
      if (exists) expect(await readFile(a, 'utf8')).toBe('hello from a\n');
    }
  });

  it('a single-layer chain mounts as a read-only bind', async () => {
    const chains = chainIds(image.config.rootfs.diff_ids);
    const lowerDirs = await store.lowerDirs(chains[0]!);
    expect(lowerDirs).toHaveLength(1);
    const root = await mounted(lowerDirs);
    expect((await stat(join(root, 'bin/busybox'))).isFile()).toBe(true);
    await expect(writeFile(join(root, 'new'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
  });

  it('mounts a chain whose lowerdir option exceeds one page, via relative paths (as containerd does)', async () => {
    const deep = new SnapshotStore({
      root: join(base, 'many-layers-with-a-long-root-name', 'snapshots'),
      log: silentLogger(),
    });
    const layers = 130;
    const diffIds: string[] = [];
    for (let i = 0; i < layers; i++) {
      const tar = await buildTar([{ path: `layer-${i}`, type: 'file', content: `${i}` }]);
      const { key, fsDir } = await deep.prepare();
      const res = await unpackLayer(Readable.from([tar]), MEDIA_TYPE_LAYER, fsDir);
      diffIds.push(res.diffId);
      const chains = chainIds(diffIds);
      await deep.commit(key, {
        chainId: chains[i]!,
        parent: chains[i - 1],
        diffId: res.diffId,
        size: res.size,
      });
    }
    const lowerDirs = await deep.lowerDirs(chainIds(diffIds)[layers - 1]!);
    expect(overlayMount(lowerDirs).options.join(',').length).toBeGreaterThan(4095);
    const root = await mounted(lowerDirs);
    expect(await readdir(root)).toHaveLength(layers);
    expect(await readFile(join(root, 'layer-0'), 'utf8')).toBe('0');
  });

  it('unmount is idempotent and mount errors are clear', async () => {
    const target = await mkdtemp(join(base, 'mnt-'));
    await unmount(target);
    await unmount(join(base, 'does-not-exist'));
    const err: unknown = await mount(
      target,
      overlayMount([join(base, 'missing-a'), join(base, 'missing-b')]),
    ).catch((e: unknown) => e);
    // By system call through skiff-helper (the errno, and what it means here).
    expect((err as Error).message).toMatch(/^mount overlay on .*: ENOENT: .*does not exist/);
    expect(await mountsUnder(target)).toEqual([]);
  });
});
