import { status } from '@grpc/grpc-js';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { failure } from '../fixtures/cri-client.js';
import { startChildDaemon, type TestDaemon, type TestDaemonOptions } from '../fixtures/daemon.js';
import { type FaultProxy, startFaultProxy } from '../fixtures/fault-proxy.js';
import {
  type BuiltImage,
  type BuiltIndex,
  MEDIA_TYPE_MANIFEST,
  buildImage,
  pushImage,
  pushImageHttp,
  sha256Digest,
} from '../fixtures/image-builder.js';
import { CAP_FILE_XATTR, OWNED_MTIME, buildFixture, fixtureRefs, pushAll } from '../fixtures/images.js';
import { silentLogger } from '../../src/log.js';
import { mount, overlayMount, unmount } from '../../src/snapshot/mount.js';
import { SnapshotStore } from '../../src/snapshot/snapshots.js';
import { type Registry, startRegistry } from '../fixtures/registry.js';

let registry: Registry;
let busybox: BuiltImage;
let multiPlatform: BuiltIndex;

beforeAll(async () => {
  registry = await startRegistry();
  await pushAll(registry.host);
  busybox = await buildFixture('busybox');
  multiPlatform = await buildFixture('multiPlatform');
});

afterAll(async () => {
  await registry.stop();
});

async function daemon(options: TestDaemonOptions = {}): Promise<TestDaemon> {
  const d = await startChildDaemon(options);
  onTestFinished(async () => {
    await d.stop();
  });
  return d;
}

function ref(name: keyof typeof fixtureRefs, host = registry.host): string {
  return `${host}/${fixtureRefs[name]}`;
}

function spec(image: string) {
  return { image, annotations: {}, userSpecifiedImage: '', runtimeHandler: '', imageRef: '' };
}

function pull(d: TestDaemon, image: string, auth?: { username: string; password: string }) {
  return d.cri.image.pullImage(
    {
      image: spec(image),
      auth: auth ? { ...auth, auth: '', serverAddress: '', identityToken: '', registryToken: '' } : undefined,
      sandboxConfig: undefined,
    },
    { deadlineMs: 60_000 },
  );
}

/** Files under a dir, recursively (to prove nothing half-pulled stays). */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => !e.isDirectory())
    .map((e) => join(e.parentPath, e.name));
}

function blobs(d: TestDaemon): string[] {
  return filesUnder(join(d.root, 'content', 'blobs')).map((f) => `sha256:${f.slice(f.lastIndexOf('/') + 1)}`);
}

function ingests(d: TestDaemon): string[] {
  return filesUnder(join(d.root, 'content', 'ingest'));
}

describe('PullImage / ImageStatus / ListImages', () => {
  it('pulls by tag, returns the config digest, and reports the image by tag, id, digest and prefix', async () => {
    const d = await daemon();
    const image = ref('busybox');
    const res = await pull(d, image);
    expect(res.imageRef).toBe(busybox.configDigest);

    const list = await d.cri.image.listImages({ filter: undefined });
    expect(list.images).toHaveLength(1);
    const img = list.images[0]!;
    expect(img.id).toBe(busybox.configDigest);
    expect(img.repoTags).toEqual([image]);
    expect(img.repoDigests).toEqual([`${registry.host}/skiff-test/busybox@${busybox.manifestDigest}`]);
    expect(img.size).toBeGreaterThan(0n);
    expect(img.pinned).toBe(false);

    for (const name of [
      image,
      busybox.configDigest,
      img.repoDigests[0]!,
      busybox.configDigest.slice(7, 20),
    ]) {
      const st = await d.cri.image.imageStatus({ image: spec(name), verbose: false });
      expect(st.image?.id, name).toBe(busybox.configDigest);
    }
    const verbose = await d.cri.image.imageStatus({ image: spec(image), verbose: true });
    const info = JSON.parse(verbose.info.info ?? '{}') as {
      imageSpec?: { rootfs?: { diff_ids?: string[] } };
    };
    expect(info.imageSpec?.rootfs?.diff_ids).toEqual(busybox.layers.map((l) => l.diffId));

    // Absent image: a nil image, not an error (CRI contract).
    const none = await d.cri.image.imageStatus({ image: spec(`${registry.host}/nope:1`), verbose: false });
    expect(none.image).toBeUndefined();

    // Pulling again is cheap and changes nothing.
    expect((await pull(d, image)).imageRef).toBe(busybox.configDigest);
    expect((await d.cri.image.listImages({ filter: undefined })).images).toHaveLength(1);
    expect(ingests(d)).toEqual([]);
  });

  it('pulls by digest and by tag+digest, the digest winning', async () => {
    const d = await daemon();
    const byDigest = `${registry.host}/skiff-test/busybox@${busybox.manifestDigest}`;
    expect((await pull(d, byDigest)).imageRef).toBe(busybox.configDigest);
    const st = await d.cri.image.imageStatus({ image: spec(byDigest), verbose: false });
    expect(st.image?.repoDigests).toEqual([byDigest]);
    // A wrong tag with the right digest still pulls the digest.
    const both = `${registry.host}/skiff-test/busybox:no-such-tag@${busybox.manifestDigest}`;
    expect((await pull(d, both)).imageRef).toBe(busybox.configDigest);
  });

  it('selects this host platform from a multi-platform index', async () => {
    const d = await daemon();
    const res = await pull(d, ref('multiPlatform'));
    const host = multiPlatform.images.find((i) => i.platform.architecture === 'amd64')!;
    expect(res.imageRef).toBe(host.configDigest);
    const st = await d.cri.image.imageStatus({ image: spec(ref('multiPlatform')), verbose: false });
    expect(st.image?.repoDigests).toEqual([
      `${registry.host}/skiff-test/multi-platform@${multiPlatform.manifestDigest}`,
    ]);
  });

  it('pulls a public name through a mirror without ever contacting the public registry', async () => {
    const proxy = await startFaultProxy(registry.url);
    onTestFinished(() => proxy.stop());
    const d = await daemon({
      extraToml: `[registries."registry.k8s.io"]\nmirrors = ["${proxy.url}"]\nfallback_to_upstream = false\n`,
    });
    const image = 'registry.k8s.io/skiff-test/busybox:latest';
    expect((await pull(d, image)).imageRef).toBe(busybox.configDigest);
    const st = await d.cri.image.imageStatus({ image: spec(image), verbose: false });
    expect(st.image?.repoTags).toEqual([image]);
    expect(proxy.requests.some((r) => r.path.startsWith('/v2/skiff-test/busybox/manifests/latest'))).toBe(
      true,
    );

    // Unknown there: NOT_FOUND naming the reference and the mirror, still no public lookup.
    const f = await failure(pull(d, 'registry.k8s.io/skiff-test/absent:1'));
    expect(f.code).toBe(status.NOT_FOUND);
    expect(f.details).toContain('registry.k8s.io/skiff-test/absent:1');
    expect(f.details).toContain(proxy.url);
  });

  it('answers UNAVAILABLE naming the endpoint when the registry is unreachable', async () => {
    const proxy = await startFaultProxy(registry.url);
    await proxy.stop(); // a port nobody listens on any more
    const d = await daemon();
    const f = await failure(pull(d, `${proxy.host}/skiff-test/busybox:latest`));
    expect(f.code).toBe(status.UNAVAILABLE);
    expect(f.details).toContain(proxy.host);
  });

  it('answers INVALID_ARGUMENT naming a malformed reference', async () => {
    const d = await daemon();
    const f = await failure(pull(d, 'UPPER/Case::bad'));
    expect(f.code).toBe(status.INVALID_ARGUMENT);
    expect(f.details).toContain('UPPER/Case::bad');
  });

  it('uses CRI credentials against a registry that wants them, and says UNAUTHENTICATED without', async () => {
    const secured = await startRegistry({ htpasswd: { username: 'kube', password: 's3cret' } });
    onTestFinished(() => secured.stop());
    await pushImage(busybox, secured.host, 'private/busybox:1', { creds: 'kube:s3cret' });
    const d = await daemon();
    const image = `${secured.host}/private/busybox:1`;
    const f = await failure(pull(d, image));
    expect(f.code).toBe(status.UNAUTHENTICATED);
    expect(f.details).toContain(secured.host);
    const wrong = await failure(pull(d, image, { username: 'kube', password: 'nope' }));
    expect(wrong.code).toBe(status.UNAUTHENTICATED);
    expect((await pull(d, image, { username: 'kube', password: 's3cret' })).imageRef).toBe(
      busybox.configDigest,
    );
    expect(d.logs()).not.toContain('s3cret');
  });

  it('marks images named in pinned_images as pinned', async () => {
    const d = await daemon({ extraToml: `[images]\npinned_images = ["${ref('busybox')}"]\n` });
    await pull(d, ref('busybox'));
    await pull(d, ref('withUser'));
    const list = await d.cri.image.listImages({ filter: undefined });
    const pinned = Object.fromEntries(
      list.images.map((i): [string, boolean] => [i.repoTags[0] ?? '', i.pinned]),
    );
    expect(pinned).toEqual({ [ref('busybox')]: true, [ref('withUser')]: false });
  });

  it('reports the image user as uid or username', async () => {
    const d = await daemon();
    await pull(d, ref('withUser'));
    const st = await d.cri.image.imageStatus({ image: spec(ref('withUser')), verbose: false });
    expect(st.image?.username).toBe('app');
    expect(st.image?.uid).toBeUndefined();
  });

  it('streams the image list (StreamImages)', async () => {
    const d = await daemon();
    await pull(d, ref('busybox'));
    await pull(d, ref('withUser'));
    const chunks = await d.cri.image.streamImages({ filter: undefined });
    expect(chunks.flatMap((c) => c.images.map((i) => i.repoTags[0])).sort()).toEqual(
      [ref('busybox'), ref('withUser')].sort(),
    );
  });
});

describe('RemoveImage and ImageFsInfo', () => {
  it('removes an image with all its names, frees what no other image uses, and is idempotent', async () => {
    const d = await daemon();
    await pull(d, ref('busybox'));
    await pull(d, ref('multiLayer')); // shares the busybox base layer
    const before = await d.cri.image.imageFsInfo({});
    const used = before.imageFilesystems[0]!.usedBytes!.value;
    expect(used).toBeGreaterThan(0n);
    expect(before.imageFilesystems[0]!.fsId?.mountpoint).toBe(d.root);

    await d.cri.image.removeImage({ image: spec(ref('multiLayer')) });
    const left = (await d.cri.image.listImages({ filter: undefined })).images;
    expect(left.map((i) => i.id)).toEqual([busybox.configDigest]);
    // The busybox base layer stays (busybox uses it); the multi-layer image's own blobs are gone.
    const multi = await buildFixture('multiLayer');
    const stored = blobs(d);
    expect(stored).toContain(busybox.layers[0]!.digest);
    for (const l of multi.layers.slice(1)) expect(stored).not.toContain(l.digest);
    expect(stored).not.toContain(multi.configDigest);
    const after = await d.cri.image.imageFsInfo({});
    expect(after.imageFilesystems[0]!.usedBytes!.value).toBeLessThan(used);

    await d.cri.image.removeImage({ image: spec(ref('multiLayer')) }); // again: not an error
    await d.cri.image.removeImage({ image: spec(busybox.configDigest) }); // by id
    expect((await d.cri.image.listImages({ filter: undefined })).images).toEqual([]);
    expect(blobs(d)).toEqual([]);
    expect(filesUnder(join(d.root, 'snapshots'))).toEqual([]);
  });
});

describe('pull failures leave nothing behind', () => {
  let proxy: FaultProxy;
  beforeAll(async () => {
    proxy = await startFaultProxy(registry.url);
  });
  afterAll(async () => {
    await proxy.stop();
  });

  async function faultyPull(
    fault: Parameters<FaultProxy['setFault']>[0],
    extraToml = '',
    dir?: string,
  ): Promise<{ d: TestDaemon; result: Promise<unknown> }> {
    const d = await daemon({ extraToml, dir });
    proxy.setFault(fault);
    onTestFinished(() => {
      proxy.setFault(undefined);
    });
    return { d, result: pull(d, `${proxy.host}/skiff-test/busybox:latest`) };
  }

  const layerPath = () => `/v2/skiff-test/busybox/blobs/${busybox.layers[0]!.digest}`;

  it('a corrupted layer is DATA_LOSS naming the digest; no image, blob or ingest remains', async () => {
    const { d, result } = await faultyPull((m, p) =>
      m === 'GET' && p === layerPath() ? { kind: 'corrupt' } : undefined,
    );
    const f = await failure(result);
    expect(f.code).toBe(status.DATA_LOSS);
    expect(f.details).toContain(busybox.layers[0]!.digest);
    expect((await d.cri.image.listImages({ filter: undefined })).images).toEqual([]);
    expect(blobs(d)).not.toContain(busybox.layers[0]!.digest);
    expect(ingests(d)).toEqual([]);
  });

  it('a truncated layer fails the pull and leaves no image or ingest', async () => {
    const { d, result } = await faultyPull((m, p) =>
      m === 'GET' && p === layerPath() ? { kind: 'truncate' } : undefined,
    );
    const f = await failure(result);
    expect([status.UNAVAILABLE, status.DATA_LOSS]).toContain(f.code);
    expect((await d.cri.image.listImages({ filter: undefined })).images).toEqual([]);
    expect(ingests(d)).toEqual([]);
  });

  it('retries 5xx answers and then succeeds', async () => {
    const { d, result } = await faultyPull((m, p, n) =>
      m === 'GET' && p === layerPath() && n <= 2 ? { kind: 'status', status: 503 } : undefined,
    );
    expect(((await result) as { imageRef: string }).imageRef).toBe(busybox.configDigest);
    expect(proxy.requests.filter((r) => r.path === layerPath() && r.fault === 'status')).toHaveLength(2);
    expect((await d.cri.image.listImages({ filter: undefined })).images).toHaveLength(1);
  });

  it('a stalled download ends with DEADLINE_EXCEEDED after the progress timeout', async () => {
    const { d, result } = await faultyPull(
      (m, p) => (m === 'GET' && p === layerPath() ? { kind: 'stall' } : undefined),
      '[images]\nprogress_timeout = "1s"\n',
    );
    const f = await failure(result);
    expect(f.code).toBe(status.DEADLINE_EXCEEDED);
    expect(f.details).toContain(busybox.layers[0]!.digest);
    expect(ingests(d)).toEqual([]);
  });

  it('concurrent pulls of one image download each blob once', async () => {
    const d = await daemon();
    proxy.requests.length = 0;
    const image = `${proxy.host}/skiff-test/multi-layer:latest`;
    const results = await Promise.all([pull(d, image), pull(d, image), pull(d, image)]);
    const multi = await buildFixture('multiLayer');
    for (const r of results) expect(r.imageRef).toBe(multi.configDigest);
    for (const l of multi.layers) {
      expect(
        proxy.requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${l.digest}`)),
      ).toHaveLength(1);
    }
  });

  it('after kill -9 mid-pull, a restart shows no image and no ingest, and the next pull succeeds', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skiff-e2e-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    const { d, result } = await faultyPull(
      (m, p) => (m === 'GET' && p === layerPath() ? { kind: 'stall' } : undefined),
      '',
      dir,
    );
    result.catch(() => undefined);
    const deadline = Date.now() + 10_000;
    while (!proxy.requests.some((r) => r.fault === 'stall') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    process.kill(d.pid, 'SIGKILL');
    await d.stop();
    proxy.setFault(undefined);
    const again = await daemon({ dir: d.dir });
    expect((await again.cri.image.listImages({ filter: undefined })).images).toEqual([]);
    expect(ingests(again)).toEqual([]);
    expect((await pull(again, `${proxy.host}/skiff-test/busybox:latest`)).imageRef).toBe(
      busybox.configDigest,
    );
  });
});

describe('layer content', () => {
  it('shows exactly the image filesystem when the pulled chain is mounted with overlayfs', async () => {
    const d = await daemon();
    await pull(d, ref('multiLayer'));
    const st = await d.cri.image.imageStatus({ image: spec(ref('multiLayer')), verbose: true });
    const { chainID } = JSON.parse(st.info.info ?? '{}') as { chainID: string };
    const snapshots = new SnapshotStore({ root: join(d.root, 'snapshots'), log: silentLogger() });
    const lower = await snapshots.lowerDirs(chainID);
    expect(lower).toHaveLength(3);
    const target = await mkdtemp(join(tmpdir(), 'skiff-merged-'));
    await mount(target, overlayMount(lower));
    onTestFinished(async () => {
      await unmount(target).catch(() => undefined);
      await rm(target, { recursive: true, force: true });
    });
    // Whiteout: gone. Opaque dir: only its own layer's content. Links, modes, owners, xattrs kept.
    expect(existsSync(join(target, 'data/dir/b.txt'))).toBe(false);
    expect(existsSync(join(target, 'data/dir'))).toBe(true);
    expect(readdirSync(join(target, 'etc/opq'))).toEqual(['new.txt']);
    expect(readFileSync(join(target, 'data/link'), 'utf8')).toBe('hello from a\n');
    expect(readlinkSync(join(target, 'data/link'))).toBe('a.txt');
    expect(statSync(join(target, 'data/hard')).ino).toBe(statSync(join(target, 'data/a.txt')).ino);
    expect(lstatSync(join(target, 'data/fifo')).isFIFO()).toBe(true);
    const owned = statSync(join(target, 'data/owned.txt'));
    expect([owned.uid, owned.gid, owned.mode & 0o7777]).toEqual([1000, 1000, 0o640]);
    expect(owned.mtime.toISOString()).toBe(OWNED_MTIME.toISOString());
    const cap = spawnSync(
      'getfattr',
      ['--absolute-names', '-e', 'hex', '-n', 'security.capability', join(target, 'data/cap.bin')],
      { encoding: 'utf8' },
    );
    expect(cap.stdout).toContain(`0x${CAP_FILE_XATTR.toString('hex')}`);
    expect(statSync(join(target, 'bin/busybox')).mode & 0o111).not.toBe(0);
  });

  it('rejects a layer whose uncompressed digest differs from the config diff_id (DATA_LOSS, nothing kept)', async () => {
    const cfg = { ...busybox.config, rootfs: { type: 'layers', diff_ids: [`sha256:${'0'.repeat(64)}`] } };
    const cfgBytes = Buffer.from(JSON.stringify(cfg));
    const manifest = {
      ...busybox.manifest,
      config: { ...busybox.manifest.config, digest: sha256Digest(cfgBytes), size: cfgBytes.length },
    };
    await pushImageHttp(registry.host, 'skiff-test/lying:1', {
      blobs: [cfgBytes, busybox.layers[0]!.bytes],
      manifest: JSON.stringify(manifest),
      mediaType: MEDIA_TYPE_MANIFEST,
    });
    const d = await daemon();
    const f = await failure(pull(d, `${registry.host}/skiff-test/lying:1`));
    expect(f.code).toBe(status.DATA_LOSS);
    expect(f.details).toContain(busybox.layers[0]!.diffId);
    expect(f.details).toContain(`sha256:${'0'.repeat(64)}`);
    expect((await d.cri.image.listImages({ filter: undefined })).images).toEqual([]);
    expect(filesUnder(join(d.root, 'snapshots'))).toEqual([]);
  });

  it('rejects a hostile layer (path traversal) with INVALID_ARGUMENT and writes nothing outside', async () => {
    const hostile = await buildImage({
      layers: [
        {
          entries: [
            { path: 'ok.txt', type: 'file', content: 'fine\n' },
            { path: '../../../../escape-skiff-test.txt', type: 'file', content: 'pwned\n', rawPath: true },
          ],
        },
      ],
    });
    await pushImage(hostile, registry.host, 'skiff-test/hostile:1');
    const d = await daemon();
    const f = await failure(pull(d, `${registry.host}/skiff-test/hostile:1`));
    expect(f.code).toBe(status.INVALID_ARGUMENT);
    expect(f.details).toContain('escape-skiff-test.txt');
    for (const dir of ['/', '/tmp', d.dir, d.root, join(d.root, 'snapshots')]) {
      expect(existsSync(join(dir, 'escape-skiff-test.txt')), dir).toBe(false);
    }
    expect((await d.cri.image.listImages({ filter: undefined })).images).toEqual([]);
    expect(filesUnder(join(d.root, 'snapshots'))).toEqual([]);
  });
});
