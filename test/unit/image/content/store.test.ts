/**
 * The content store only ever holds verified blobs (image-spec descriptor.md: content must be verified
 * against its digest and size), shares one download among concurrent ingests of a digest, and leaves no
 * ingest behind whatever goes wrong.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { describe, expect, it, onTestFinished } from 'vitest';
import { isSkiffError, type ErrorKind } from '../../../../src/errdefs.js';
import { digestOf, parseDigest } from '../../../../src/image/content/digest.js';
import { ContentStore, type BlobSource } from '../../../../src/image/content/store.js';
import { unpackLayer } from '../../../../src/image/unpack.js';
import { silentLogger } from '../../../../src/log.js';
import { run } from '../../../../src/util/exec.js';
import { MEDIA_TYPE_LAYER_GZIP, buildLayer } from '../../../fixtures/image-builder.js';

const isRoot = process.getuid?.() === 0;

async function newStore(): Promise<ContentStore> {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-content-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return new ContentStore({ root: join(dir, 'content'), log: silentLogger() });
}

function blob(text: string): { bytes: Buffer; digest: string; size: number } {
  const bytes = Buffer.from(text);
  return { bytes, digest: digestOf(bytes), size: bytes.length };
}

/** A source serving `bytes` in chunks, counting its calls. */
function counting(bytes: Buffer, chunk = 1024): { source: BlobSource; calls: () => number } {
  let calls = 0;
  return {
    source: () => {
      calls++;
      const parts: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += chunk) parts.push(bytes.subarray(i, i + chunk));
      return Promise.resolve(Readable.from(parts));
    },
    calls: () => calls,
  };
}

async function ingestDirs(store: ContentStore): Promise<string[]> {
  return readdir(join(store.root, 'ingest')).catch(() => []);
}

async function expectError(p: Promise<unknown>, kind: ErrorKind, message?: RegExp | string): Promise<Error> {
  const err: unknown = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isSkiffError(err, kind), `${String(err)} is not ${kind}`).toBe(true);
  if (typeof message === 'string') expect((err as Error).message).toBe(message);
  else if (message) expect((err as Error).message).toMatch(message);
  return err as Error;
}

describe('digests', () => {
  it('accepts sha256 and sha512 and refuses anything else before it becomes a path', () => {
    expect(parseDigest(`sha256:${'a'.repeat(64)}`)).toEqual({ algorithm: 'sha256', hex: 'a'.repeat(64) });
    expect(parseDigest(`sha512:${'b'.repeat(128)}`).algorithm).toBe('sha512');
    for (const bad of [
      'sha256:../../etc',
      `sha256:${'A'.repeat(64)}`,
      `md5:${'a'.repeat(32)}`,
      'sha256:',
      '',
    ]) {
      expect(() => parseDigest(bad)).toThrow(/want sha256:<64 hex>/);
    }
  });
});

describe('ContentStore', () => {
  it('ingests a blob: streams, verifies, stores; then has/size/read/open/list/usage/delete', async () => {
    const store = await newStore();
    const b = blob('hello content store'.repeat(500));
    const { source, calls } = counting(b.bytes);
    let progress = 0;
    await store.ingest(b, source, { onProgress: (n) => (progress += n) });
    expect(calls()).toBe(1);
    expect(progress).toBe(b.size);
    expect(await store.has(b.digest)).toBe(true);
    expect(await store.size(b.digest)).toBe(b.size);
    expect((await store.read(b.digest)).equals(b.bytes)).toBe(true);
    expect(await text(store.open(b.digest))).toBe(b.bytes.toString());
    expect(await store.list()).toEqual([{ digest: b.digest, size: b.size }]);
    expect(store.path(b.digest)).toBe(join(store.root, 'blobs/sha256', parseDigest(b.digest).hex));
    const usage = await store.usage();
    expect(usage.bytes).toBeGreaterThanOrEqual(b.size);
    expect(usage.inodes).toBeGreaterThanOrEqual(5);
    expect(await ingestDirs(store)).toEqual([]);
    await store.delete(b.digest);
    await store.delete(b.digest); // idempotent
    expect(await store.has(b.digest)).toBe(false);
  });

  it('returns at once for a stored blob without calling the source', async () => {
    const store = await newStore();
    const b = blob('present');
    await store.writeBlob(b.bytes, b.digest);
    const { source, calls } = counting(b.bytes);
    await store.ingest(b, source);
    expect(calls()).toBe(0);
  });

  it('discards a blob whose digest does not match, naming both digests and the source', async () => {
    const store = await newStore();
    const b = blob('expected bytes');
    const wrong = Buffer.from('tampered bytes');
    const err = await expectError(
      store.ingest(b, counting(wrong).source, { label: 'registry.test/library/x' }),
      'data-loss',
    );
    expect(err.message).toBe(
      `blob ${b.digest} from registry.test/library/x: expected digest ${b.digest}, got ${digestOf(wrong)}`,
    );
    expect(await store.has(b.digest)).toBe(false);
    expect(await ingestDirs(store)).toEqual([]);
  });

  it('discards a blob that is longer or shorter than its descriptor says', async () => {
    const store = await newStore();
    const b = blob('x'.repeat(5000));
    await expectError(
      store.ingest({ digest: b.digest, size: 100 }, counting(b.bytes).source),
      'data-loss',
      `blob ${b.digest}: expected size 100, got more than 100 bytes`,
    );
    await expectError(
      store.ingest({ digest: b.digest, size: 6000 }, counting(b.bytes).source),
      'data-loss',
      `blob ${b.digest}: expected size 6000, got 5000 bytes`,
    );
    expect(await store.list()).toEqual([]);
    expect(await ingestDirs(store)).toEqual([]);
  });

  it('shares one download among concurrent ingests of a digest', async () => {
    const store = await newStore();
    const b = blob('shared'.repeat(10_000));
    const { source, calls } = counting(b.bytes);
    const slow: BlobSource = async (signal) => {
      await new Promise((r) => setTimeout(r, 30));
      return source(signal);
    };
    await Promise.all(Array.from({ length: 5 }, () => store.ingest(b, slow)));
    expect(calls()).toBe(1);
    expect(await store.has(b.digest)).toBe(true);
  });

  it('reports a shared download failure to every caller that joined it', async () => {
    const store = await newStore();
    const b = blob('the real thing');
    const { source, calls } = counting(Buffer.from('something else'));
    const results = await Promise.allSettled(Array.from({ length: 3 }, () => store.ingest(b, source)));
    expect(calls()).toBe(1);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect(isSkiffError((r as PromiseRejectedResult).reason, 'data-loss')).toBe(true);
    }
  });

  it('aborting removes the ingest and stops the download', async () => {
    const store = await newStore();
    const b = blob('never arrives'.repeat(1000));
    let sourceSignal: AbortSignal | undefined;
    const stalling: BlobSource = (signal) => {
      sourceSignal = signal;
      const s = new PassThrough();
      s.write(b.bytes.subarray(0, 100)); // then nothing: a stalled registry
      return Promise.resolve(s);
    };
    const controller = new AbortController();
    const ingesting = store.ingest(b, stalling, { signal: controller.signal });
    await new Promise((r) => setTimeout(r, 50));
    expect(await ingestDirs(store)).toHaveLength(1);
    controller.abort();
    await expectError(ingesting, 'canceled');
    // By the time the caller hears of it, the download has stopped and its ingest is gone.
    expect(sourceSignal?.aborted).toBe(true);
    expect(await ingestDirs(store)).toEqual([]);
    expect(await store.has(b.digest)).toBe(false);
  });

  it('one caller aborting does not stop the download for the others', async () => {
    const store = await newStore();
    const b = blob('for the patient one'.repeat(1000));
    const { source, calls } = counting(b.bytes);
    const slow: BlobSource = async (signal) => {
      await new Promise((r) => setTimeout(r, 50));
      return source(signal);
    };
    const impatient = new AbortController();
    const first = store.ingest(b, slow, { signal: impatient.signal });
    const second = store.ingest(b, slow);
    impatient.abort();
    await expectError(first, 'canceled');
    await second;
    expect(calls()).toBe(1);
    expect(await store.has(b.digest)).toBe(true);
  });

  it('maps a network stream breaking mid-download to unavailable', async () => {
    const store = await newStore();
    const b = blob('y'.repeat(10_000));
    const breaking: BlobSource = () => {
      const s = new PassThrough();
      s.write(b.bytes.subarray(0, 500));
      setTimeout(
        () => s.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', syscall: 'read' })),
        10,
      );
      return Promise.resolve(s);
    };
    await expectError(
      store.ingest(b, breaking, { label: 'r.test' }),
      'unavailable',
      /^download blob .* from r\.test: read ECONNRESET$/,
    );
    expect(await ingestDirs(store)).toEqual([]);
  });

  it('passes on the SkiffError of a source that fails before streaming', async () => {
    const store = await newStore();
    const b = blob('z');
    const { SkiffError } = await import('../../../../src/errdefs.js');
    await expectError(
      store.ingest(b, () => Promise.reject(new SkiffError('unauthenticated', 'registry said 401'))),
      'unauthenticated',
      'registry said 401',
    );
  });

  it.skipIf(!isRoot)(
    'maps ENOSPC to resource-exhausted and cleans the ingest (a 1 MiB tmpfs; root)',
    async () => {
      const dir = await mkdtemp(join(tmpdir(), 'skiff-enospc-'));
      onTestFinished(async () => {
        await run('umount', [dir]);
        await rm(dir, { recursive: true, force: true });
      });
      const mounted = await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir]);
      expect(mounted.code).toBe(0);
      const store = new ContentStore({ root: join(dir, 'content'), log: silentLogger() });
      const bytes = Buffer.alloc(3 * 1024 * 1024, 7);
      const err = await expectError(
        store.ingest({ digest: digestOf(bytes), size: bytes.length }, counting(bytes, 64 * 1024).source),
        'resource-exhausted',
      );
      expect(err.message).toMatch(/no space left on device/);
      expect(await ingestDirs(store)).toEqual([]);
    },
  );

  it('cleanup() removes ingests left by a crash', async () => {
    const store = await newStore();
    await store.cleanup();
    const stale = join(store.root, 'ingest', `sha256-${'c'.repeat(64)}`);
    await mkdir(stale);
    await writeFile(join(stale, 'data'), 'partial');
    await store.cleanup();
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(join(store.root, 'blobs/sha256'))).toBe(true);
  });

  it('writeBlob verifies against the expected digest and is idempotent', async () => {
    const store = await newStore();
    const b = blob('{"schemaVersion":2}');
    expect(await store.writeBlob(b.bytes, b.digest)).toBe(b.digest);
    expect(await store.writeBlob(b.bytes)).toBe(b.digest);
    await expectError(
      store.writeBlob(Buffer.from('other'), b.digest),
      'data-loss',
      `blob ${b.digest}: expected digest ${b.digest}, got ${digestOf(Buffer.from('other'))}`,
    );
    expect(await store.list()).toEqual([{ digest: b.digest, size: b.size }]);
    expect(await ingestDirs(store)).toEqual([]);
  });

  it('answers not-found for a missing blob and invalid-argument for a malformed digest', async () => {
    const store = await newStore();
    const missing = digestOf('missing');
    await expectError(store.read(missing), 'not-found', `blob ${missing} not found in the content store`);
    await expectError(store.size(missing), 'not-found');
    await expectError(text(store.open(missing)), 'not-found');
    expect(await store.has(missing)).toBe(false);
    await expectError(
      store.ingest({ digest: 'sha256:nope', size: 1 }, counting(Buffer.alloc(1)).source),
      'invalid-argument',
    );
    expect(() => store.path('../etc/passwd')).toThrow(/want sha256/);
  });
});

describe('ContentStore tee: unpacking while downloading', () => {
  it('feeds the layer bytes to unpackLayer as they arrive, and both succeed', async () => {
    const store = await newStore();
    const layer = await buildLayer({
      entries: [
        { path: 'a', type: 'dir' },
        { path: 'a/file', type: 'file', content: 'x'.repeat(300_000) },
      ],
    });
    const target = await mkdtemp(join(tmpdir(), 'skiff-tee-'));
    onTestFinished(() => rm(target, { recursive: true, force: true }));
    const tee = new PassThrough({ highWaterMark: 64 * 1024 });
    const [, unpacked] = await Promise.all([
      store.ingest({ digest: layer.digest, size: layer.size }, counting(layer.bytes, 4096).source, { tee }),
      unpackLayer(tee, MEDIA_TYPE_LAYER_GZIP, target),
    ]);
    expect(unpacked.diffId).toBe(layer.diffId);
    expect(await store.has(layer.digest)).toBe(true);

    // A second ingest of the stored blob feeds its tee from disk.
    const target2 = await mkdtemp(join(tmpdir(), 'skiff-tee-'));
    onTestFinished(() => rm(target2, { recursive: true, force: true }));
    const tee2 = new PassThrough();
    const { source, calls } = counting(layer.bytes);
    const [, again] = await Promise.all([
      store.ingest({ digest: layer.digest, size: layer.size }, source, { tee: tee2 }),
      unpackLayer(tee2, MEDIA_TYPE_LAYER_GZIP, target2),
    ]);
    expect(calls()).toBe(0);
    expect(again.diffId).toBe(layer.diffId);
  });

  it('a corrupted download fails the unpack with the ingest error (never acts on unverified bytes)', async () => {
    const store = await newStore();
    const layer = await buildLayer({ entries: [{ path: 'f', type: 'file', content: 'genuine' }] });
    const evil = await buildLayer({ entries: [{ path: 'f', type: 'file', content: 'evil!!!' }] });
    const target = await mkdtemp(join(tmpdir(), 'skiff-tee-'));
    onTestFinished(() => rm(target, { recursive: true, force: true }));
    const tee = new PassThrough();
    const [ingested, unpacked] = await Promise.allSettled([
      store.ingest({ digest: layer.digest, size: evil.size }, counting(evil.bytes).source, { tee }),
      unpackLayer(tee, MEDIA_TYPE_LAYER_GZIP, target),
    ]);
    expect(ingested.status).toBe('rejected');
    expect(unpacked.status).toBe('rejected');
    const reason = (unpacked as PromiseRejectedResult).reason as Error;
    expect(isSkiffError(reason, 'data-loss')).toBe(true);
    expect(reason.message).toMatch(/expected digest/);
    expect(await store.has(layer.digest)).toBe(false);
  });

  it('a download breaking mid-layer fails the unpack with the download error', async () => {
    const store = await newStore();
    const layer = await buildLayer({
      entries: [{ path: 'big', type: 'file', content: Buffer.alloc(2 * 1024 * 1024, 'ab') }],
      compression: 'none',
    });
    const breaking: BlobSource = () => {
      const s = new PassThrough();
      s.write(layer.bytes.subarray(0, 300_000));
      setTimeout(() => s.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })), 20);
      return Promise.resolve(s);
    };
    const target = await mkdtemp(join(tmpdir(), 'skiff-tee-'));
    onTestFinished(() => rm(target, { recursive: true, force: true }));
    const tee = new PassThrough();
    const [ingested, unpacked] = await Promise.allSettled([
      store.ingest({ digest: layer.digest, size: layer.size }, breaking, { tee, label: 'r.test' }),
      unpackLayer(tee, layer.mediaType, target),
    ]);
    expect(isSkiffError((ingested as PromiseRejectedResult).reason, 'unavailable')).toBe(true);
    const reason = (unpacked as PromiseRejectedResult).reason as Error;
    expect(isSkiffError(reason, 'unavailable'), String(reason)).toBe(true);
    expect(reason.message).toMatch(/ECONNRESET/);
  });

  it('a slow consumer slows the download instead of buffering it', async () => {
    const store = await newStore();
    const total = 64 * 1024 * 1024;
    let produced = 0;
    const hash = createHash('sha256');
    const chunk = Buffer.alloc(64 * 1024, 3);
    for (let i = 0; i < total / chunk.length; i++) hash.update(chunk);
    const digest = `sha256:${hash.digest('hex')}`;
    const source: BlobSource = () =>
      Promise.resolve(
        new Readable({
          highWaterMark: 64 * 1024,
          read() {
            if (produced >= total) this.push(null);
            else {
              produced += chunk.length;
              this.push(chunk);
            }
          },
        }),
      );
    const tee = new PassThrough({ highWaterMark: 64 * 1024 });
    const ingesting = store.ingest({ digest, size: total }, source, { tee });
    await new Promise((r) => setTimeout(r, 300));
    // Nobody reads the tee yet: only a few buffers' worth may have been pulled from the source.
    expect(produced).toBeLessThan(4 * 1024 * 1024);
    let consumed = 0;
    for await (const c of tee) consumed += (c as Buffer).length;
    await ingesting;
    expect(consumed).toBe(total);
    expect(produced).toBe(total);
  });

  it('when the consumer goes away the download still completes and stores the blob', async () => {
    const store = await newStore();
    const b = blob('q'.repeat(200_000));
    const tee = new PassThrough({ highWaterMark: 1024 });
    const ingesting = store.ingest(b, counting(b.bytes).source, { tee });
    tee.destroy(new Error('unpacker gave up'));
    await ingesting;
    expect(await store.has(b.digest)).toBe(true);
  });
});
