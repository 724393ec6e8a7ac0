/**
 * The snapshot store's lifecycle (prepare → commit | abort; remove), its on-disk invariants (a snapshot
 * dir is renamed into place whole and its record written last; start-up removes what a crash left), chain
 * resolution for overlay lower dirs, and the mounts it asks for. No real mount here (see
 * test/e2e/unpack-overlay.test.ts).
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { isSkiffError, type ErrorKind } from '../../../src/errdefs.js';
import { silentLogger } from '../../../src/log.js';
import { MAX_MOUNT_DATA, overlayMount } from '../../../src/snapshot/mount.js';
import { SnapshotStore, type CommitInfo } from '../../../src/snapshot/snapshots.js';

const digest = (c: string): string => `sha256:${c.repeat(64)}`;
const L0 = digest('0');
const L1 = digest('1');
const L2 = digest('2');

async function newRoot(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-snapshots-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return join(dir, 'snapshots');
}

function newStore(root: string): SnapshotStore {
  return new SnapshotStore({ root, log: silentLogger() });
}

/** Prepares a snapshot with one file and commits it. */
async function addLayer(store: SnapshotStore, info: CommitInfo, file = 'f'): Promise<string> {
  const { key, fsDir } = await store.prepare();
  await writeFile(join(fsDir, file), info.chainId);
  return (await store.commit(key, info)).fsDir;
}

async function expectError(p: Promise<unknown>, kind: ErrorKind, message?: RegExp): Promise<void> {
  const err: unknown = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isSkiffError(err, kind), String(err)).toBe(true);
  if (message) expect((err as Error).message).toMatch(message);
}

describe('SnapshotStore', () => {
  it('prepares an empty fs dir aside and commits it under a short id with its record written last', async () => {
    const root = await newRoot();
    const store = newStore(root);
    const { key, fsDir } = await store.prepare();
    expect(key).toMatch(/^tmp-[0-9a-f]{16}$/);
    expect(fsDir).toBe(join(root, key, 'fs'));
    expect(await readdir(fsDir)).toEqual([]);
    expect(await store.has(L0)).toBe(false);

    await writeFile(join(fsDir, 'hello'), 'world');
    const snap = await store.commit(key, { chainId: L0, diffId: L0, size: 1536 });
    expect(snap.id).toBe('1');
    expect(snap.fsDir).toBe(join(root, '1', 'fs'));
    expect(await readFile(join(snap.fsDir, 'hello'), 'utf8')).toBe('world');
    expect(existsSync(join(root, key))).toBe(false);
    expect((await readdir(root)).sort()).toEqual(['1', '1.json']);
    expect(await readdir(join(root, '1'))).toEqual(expect.arrayContaining(['fs', 'work']));

    const record = JSON.parse(await readFile(join(root, '1.json'), 'utf8')) as Record<string, unknown>;
    expect(record).toMatchObject({ version: 1, id: '1', chainId: L0, parent: null, diffId: L0, size: 1536 });
    expect(typeof record.created).toBe('string');
    expect(await store.has(L0)).toBe(true);
    expect((await store.get(L0))?.fsDir).toBe(snap.fsDir);
    expect(await store.get(L1)).toBeUndefined();
  });

  it('a commit of a chain id committed meanwhile discards the new copy (concurrent pulls)', async () => {
    const store = newStore(await newRoot());
    const a = await store.prepare();
    const b = await store.prepare();
    const c = await store.prepare();
    const results = await Promise.all([
      store.commit(a.key, { chainId: L0, diffId: L0, size: 1 }),
      store.commit(b.key, { chainId: L0, diffId: L0, size: 1 }),
    ]);
    expect(results[0].id).toBe(results[1].id);
    const later = await store.commit(c.key, { chainId: L0, diffId: L0, size: 1 });
    expect(later.id).toBe(results[0].id);
    expect((await store.list()).map((s) => s.chainId)).toEqual([L0]);
    expect((await readdir(store.root)).filter((n) => n.startsWith('tmp-'))).toEqual([]);
  });

  it('abort deletes an active snapshot; an unknown key succeeds; a malformed key is refused', async () => {
    const store = newStore(await newRoot());
    const { key, fsDir } = await store.prepare();
    await writeFile(join(fsDir, 'partial'), 'x');
    await store.abort(key);
    expect(existsSync(join(store.root, key))).toBe(false);
    await store.abort(key);
    await expectError(store.abort('../../etc'), 'invalid-argument', /is not one prepare\(\) returned/);
    await expectError(
      store.commit('tmp-0000000000000000', { chainId: L0, diffId: L0, size: 0 }),
      'not-found',
    );
  });

  it('refuses malformed chain ids, diff ids and parents', async () => {
    const store = newStore(await newRoot());
    const { key } = await store.prepare();
    await expectError(store.commit(key, { chainId: 'sha256:x', diffId: L0, size: 0 }), 'invalid-argument');
    await expectError(
      store.commit(key, { chainId: L0, diffId: L0, parent: 'nope', size: 0 }),
      'invalid-argument',
    );
    await expectError(
      store.commit(key, { chainId: L0, diffId: L0, parent: L0, size: 0 }),
      'invalid-argument',
    );
  });

  it('resolves lower dirs top first through parents, committed in any order', async () => {
    const store = newStore(await newRoot());
    // Layers unpack in parallel: the child may be committed before its parent.
    const top = await addLayer(store, { chainId: L2, parent: L1, diffId: L2, size: 0 });
    await expectError(store.lowerDirs(L2), 'not-found', /parent .* is missing; pull the image again$/);
    const base = await addLayer(store, { chainId: L0, diffId: L0, size: 0 });
    const middle = await addLayer(store, { chainId: L1, parent: L0, diffId: L1, size: 0 });
    expect(await store.lowerDirs(L2)).toEqual([top, middle, base]);
    expect(await store.lowerDirs(L0)).toEqual([base]);
    await expectError(store.lowerDirs(digest('9')), 'not-found', /^snapshot sha256:9+ not found$/);
  });

  it('lists children before parents, and remove refuses a parent while a child exists', async () => {
    const store = newStore(await newRoot());
    await addLayer(store, { chainId: L0, diffId: L0, size: 0 });
    await addLayer(store, { chainId: L1, parent: L0, diffId: L1, size: 0 });
    await addLayer(store, { chainId: L2, parent: L1, diffId: L2, size: 0 });
    expect((await store.list()).map((s) => s.chainId)).toEqual([L2, L1, L0]);
    await expectError(store.remove(L0), 'failed-precondition', /is stacked on it; remove that one first$/);
    // A sweep in list order removes a whole chain.
    for (const s of await store.list()) await store.remove(s.chainId);
    expect(await store.list()).toEqual([]);
    expect(await readdir(store.root)).toEqual([]);
    await store.remove(L0); // idempotent
  });

  it('remove deletes the record before the dir', async () => {
    const store = newStore(await newRoot());
    await addLayer(store, { chainId: L0, diffId: L0, size: 0 });
    const removing = store.remove(L0);
    expect(await store.has(L0)).toBe(false); // gone from the index at once
    await removing;
    expect(existsSync(join(store.root, '1.json'))).toBe(false);
    expect(existsSync(join(store.root, '1'))).toBe(false);
  });

  it('reloads records after a restart and keeps allocating fresh ids', async () => {
    const root = await newRoot();
    const first = newStore(root);
    await addLayer(first, { chainId: L0, diffId: L0, size: 10 });
    await addLayer(first, { chainId: L1, parent: L0, diffId: L1, size: 20 });
    const second = newStore(root);
    await second.cleanup();
    expect(await second.has(L1)).toBe(true);
    expect(await second.lowerDirs(L1)).toEqual([join(root, '2', 'fs'), join(root, '1', 'fs')]);
    const snap = await second.commit((await second.prepare()).key, {
      chainId: L2,
      parent: L1,
      diffId: L2,
      size: 0,
    });
    expect(snap.id).toBe('3');
  });

  it('cleanup removes what a crash left: active snapshots, dirs without records, temp files, orphan records', async () => {
    const root = await newRoot();
    const store = newStore(root);
    await addLayer(store, { chainId: L0, diffId: L0, size: 0 });
    // A crash mid-unpack, mid-commit (renamed, no record), and mid-record-write; a record whose dir vanished.
    await mkdir(join(root, 'tmp-00112233445566aa', 'fs'), { recursive: true });
    await mkdir(join(root, '7', 'fs'), { recursive: true });
    await writeFile(join(root, '.8.json.tmp-abcdef'), '{"half":');
    await writeFile(
      join(root, '9.json'),
      JSON.stringify({
        version: 1,
        id: '9',
        chainId: L2,
        parent: null,
        diffId: L2,
        size: 0,
        usage: { bytes: 0, inodes: 0 },
        created: '',
      }),
    );
    const restarted = newStore(root);
    await restarted.cleanup();
    expect((await readdir(root)).sort()).toEqual(['1', '1.json']);
    expect(await restarted.has(L0)).toBe(true);
    expect(await restarted.has(L2)).toBe(false);
    // The next id is past every id seen, so a leftover name is never reused while it might be mounted.
    const next = await restarted.commit((await restarted.prepare()).key, {
      chainId: L1,
      diffId: L1,
      size: 0,
    });
    expect(Number(next.id)).toBeGreaterThan(9);
  });

  it('cleanup keeps active snapshots of this process', async () => {
    const store = newStore(await newRoot());
    const { key } = await store.prepare();
    await store.cleanup();
    expect(existsSync(join(store.root, key))).toBe(true);
  });

  it('refuses to load a record of an unknown version, naming the file', async () => {
    const root = await newRoot();
    await mkdir(join(root, '1'), { recursive: true });
    await writeFile(join(root, '1.json'), JSON.stringify({ version: 2, id: '1' }));
    await expectError(
      newStore(root).cleanup(),
      'failed-precondition',
      new RegExp(`load snapshot record ${join(root, '1.json')}: unknown version 2 .*upgrade skiff`),
    );
    await writeFile(join(root, '1.json'), '{not json');
    await expectError(newStore(root).has(L0), 'data-loss', /1\.json/);
  });

  it('reports usage: committed snapshots as measured at commit, active ones walked', async () => {
    const store = newStore(await newRoot());
    expect(await store.usage()).toEqual({ bytes: 0, inodes: 0 });
    const { key, fsDir } = await store.prepare();
    await writeFile(join(fsDir, 'big'), Buffer.alloc(100_000, 1));
    const active = await store.usage();
    expect(active.bytes).toBeGreaterThanOrEqual(100_000);
    const snap = await store.commit(key, { chainId: L0, diffId: L0, size: 100_000 });
    expect(snap.usage.bytes).toBeGreaterThanOrEqual(100_000);
    expect(snap.usage.inodes).toBe(2); // fs and big
    expect(await store.usage()).toEqual(snap.usage);
  });

  it('keeps lower dir paths short: ids are small integers', async () => {
    const store = newStore(await newRoot());
    await addLayer(store, { chainId: L0, diffId: L0, size: 0 });
    const [dir] = await store.lowerDirs(L0);
    expect(dir).toBe(join(store.root, '1', 'fs'));
  });
});

describe('overlay mounts', () => {
  it('stacks lower dirs top first, read-only without an upper', () => {
    expect(overlayMount(['/s/3/fs', '/s/2/fs', '/s/1/fs'])).toEqual({
      type: 'overlay',
      source: 'overlay',
      options: ['lowerdir=/s/3/fs:/s/2/fs:/s/1/fs'],
    });
  });

  it('adds upperdir and workdir for a writable container root', () => {
    expect(overlayMount(['/s/1/fs'], '/c/upper', '/c/work')).toEqual({
      type: 'overlay',
      source: 'overlay',
      options: ['workdir=/c/work', 'upperdir=/c/upper', 'lowerdir=/s/1/fs'],
    });
  });

  it('uses a read-only bind mount for a single layer (overlayfs needs two lower dirs without an upper)', () => {
    expect(overlayMount(['/s/1/fs'])).toEqual({ type: 'bind', source: '/s/1/fs', options: ['ro', 'rbind'] });
  });

  it('refuses no lower dirs, a lone upper, and paths overlayfs cannot parse', () => {
    expect(() => overlayMount([])).toThrow(/no lower dirs/);
    expect(() => overlayMount(['/a'], '/u')).toThrow(/upperdir and workdir go together/);
    expect(() => overlayMount(['/a:b', '/c'])).toThrow(/without ':' or ','/);
    expect(() => overlayMount(['relative', '/c'])).toThrow(/absolute path/);
  });

  it('via the store: mountOptions of a chain', async () => {
    const store = newStore(await newRoot());
    await addLayer(store, { chainId: L0, diffId: L0, size: 0 });
    await addLayer(store, { chainId: L1, parent: L0, diffId: L1, size: 0 });
    const m = store.mountOptions(await store.lowerDirs(L1));
    expect(m.options).toEqual([`lowerdir=${join(store.root, '2/fs')}:${join(store.root, '1/fs')}`]);
    expect(MAX_MOUNT_DATA).toBe(4095);
  });
});
