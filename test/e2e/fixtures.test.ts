/**
 * The test bed itself: a loopback registry comes up, fixture images pushed with skopeo (and over plain
 * HTTP) read back byte-for-byte with the digests the builder computed (distribution-spec "Pulling";
 * image-spec descriptor.md, config.md diff_ids), and the registry leaves no process or temp dir behind.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MEDIA_TYPE_INDEX,
  MEDIA_TYPE_MANIFEST,
  decompressLayer,
  pushImageHttp,
  sha256Digest,
  type BuiltImage,
  type OciImageConfig,
  type OciIndex,
  type OciManifest,
} from '../fixtures/image-builder.js';
import { buildFixture, fixtureRefs, pushAll, type FixtureName } from '../fixtures/images.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';

const ACCEPT = [MEDIA_TYPE_MANIFEST, MEDIA_TYPE_INDEX].join(', ');

let registry: Registry | undefined;

function reg(): Registry {
  if (!registry) throw new Error('registry not started');
  return registry;
}

async function get(path: string, accept?: string): Promise<{ res: Response; body: Buffer }> {
  const res = await fetch(`${reg().url}${path}`, accept ? { headers: { accept } } : {});
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200)
    throw new Error(`GET ${path}: HTTP ${res.status}: ${body.toString().slice(0, 500)}`);
  return { res, body };
}

/** Fetches a manifest and checks its bytes hash to `digest`, the digest the registry reports. */
async function getManifest(
  repo: string,
  ref: string,
  digest: string,
): Promise<{ mediaType: string; body: Buffer }> {
  const { res, body } = await get(`/v2/${repo}/manifests/${ref}`, ACCEPT);
  expect(sha256Digest(body)).toBe(digest);
  expect(res.headers.get('docker-content-digest')).toBe(digest);
  return { mediaType: res.headers.get('content-type') ?? '', body };
}

/** Pulls an image by hand and checks every blob against its descriptor and the config's diff_ids. */
async function verifyImage(repo: string, ref: string, expected: BuiltImage): Promise<void> {
  const { mediaType, body } = await getManifest(repo, ref, expected.manifestDigest);
  expect(mediaType).toBe(MEDIA_TYPE_MANIFEST);
  const manifest = JSON.parse(body.toString()) as OciManifest;
  expect(manifest).toEqual(expected.manifest);

  const config = await get(`/v2/${repo}/blobs/${manifest.config.digest}`);
  expect(sha256Digest(config.body)).toBe(manifest.config.digest);
  expect(config.body.length).toBe(manifest.config.size);
  const parsed = JSON.parse(config.body.toString()) as OciImageConfig;
  expect(parsed.rootfs.diff_ids).toEqual(expected.layers.map((l) => l.diffId));
  expect(parsed.architecture).toBe(expected.platform.architecture);

  expect(manifest.layers).toHaveLength(parsed.rootfs.diff_ids.length);
  for (const [i, desc] of manifest.layers.entries()) {
    const blob = await get(`/v2/${repo}/blobs/${desc.digest}`);
    expect(sha256Digest(blob.body)).toBe(desc.digest);
    expect(blob.body.length).toBe(desc.size);
    const tar = await decompressLayer(desc.mediaType, blob.body);
    expect(sha256Digest(tar)).toBe(parsed.rootfs.diff_ids[i]);
  }
}

describe('fixture registry and images', () => {
  let digests: Record<FixtureName, string> | undefined;

  beforeAll(async () => {
    registry = await startRegistry();
  });

  afterAll(async () => {
    await registry?.stop();
  });

  it('serves the distribution API on loopback', async () => {
    const r = reg();
    expect(r.host).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(r.url).toBe(`http://${r.host}`);
    expect(existsSync(r.dataDir)).toBe(true);
    const { res } = await get('/v2/');
    expect(res.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  });

  it('pushes every fixture with skopeo, keeping the built digests', async () => {
    digests = await pushAll(reg().host);
    for (const name of Object.keys(fixtureRefs) as FixtureName[]) {
      expect(digests[name]).toBe((await buildFixture(name)).manifestDigest);
    }
  });

  it('busybox reads back byte-for-byte', async () => {
    expect(digests).toBeDefined();
    await verifyImage('skiff-test/busybox', 'latest', await buildFixture('busybox'));
  });

  it('multiLayer reads back, including its uncompressed layer', async () => {
    expect(digests).toBeDefined();
    await verifyImage('skiff-test/multi-layer', 'latest', await buildFixture('multiLayer'));
  });

  it('multiPlatform is an index with amd64 and arm64/v8 images', async () => {
    const expected = await buildFixture('multiPlatform');
    const { mediaType, body } = await getManifest(
      'skiff-test/multi-platform',
      'latest',
      expected.manifestDigest,
    );
    expect(mediaType).toBe(MEDIA_TYPE_INDEX);
    const index = JSON.parse(body.toString()) as OciIndex;
    expect(index.manifests.map((m) => m.platform)).toEqual([
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux', variant: 'v8' },
    ]);
    for (const [i, desc] of index.manifests.entries()) {
      const img = expected.images[i]!;
      expect(desc.digest).toBe(img.manifestDigest);
      await verifyImage('skiff-test/multi-platform', desc.digest, img);
    }
  });

  it('pushImageHttp pushes built images and hand-made manifests', async () => {
    const img = await buildFixture('withUser');
    expect((await pushImageHttp(reg().host, 'skiff-test/http-with-user:v1', img)).digest).toBe(
      img.manifestDigest,
    );
    await verifyImage('skiff-test/http-with-user', 'v1', img);

    // A hostile manifest: the first layer's size is wrong. The registry only checks that blobs exist.
    const lying = structuredClone(img.manifest);
    lying.layers[0]!.size = 5;
    const bytes = Buffer.from(JSON.stringify(lying));
    const pushed = await pushImageHttp(reg().host, 'skiff-test/lying-size:latest', {
      manifest: bytes,
      mediaType: MEDIA_TYPE_MANIFEST,
      blobs: [...img.blobs.values()],
    });
    expect(pushed.digest).toBe(sha256Digest(bytes));
    await getManifest('skiff-test/lying-size', 'latest', pushed.digest);

    // The registry refuses a manifest naming a blob it does not have.
    const unknown = structuredClone(img.manifest);
    unknown.layers[0]!.digest = sha256Digest('not uploaded');
    await expect(
      pushImageHttp(reg().host, 'skiff-test/unknown-blob:latest', {
        manifest: JSON.stringify(unknown),
        mediaType: MEDIA_TYPE_MANIFEST,
      }),
    ).rejects.toThrow(/MANIFEST_BLOB_UNKNOWN/);
  });

  it('stop() ends the registry process and removes its temp dir', async () => {
    const r = reg();
    await r.stop();
    await r.stop(); // idempotent
    expect(() => process.kill(r.pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }) as Error);
    expect(existsSync(r.dataDir)).toBe(false);
  });
});

describe('registry with a caller-owned storage dir', () => {
  it('keeps content across a restart and leaves the dir to the caller', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skiff-registry-data-'));
    try {
      const img = await buildFixture('multiPlatform');
      const first = await startRegistry({ dir });
      try {
        await pushImageHttp(first.host, 'skiff-test/persist:v1', img);
      } finally {
        await first.stop();
      }
      expect(existsSync(dir)).toBe(true);
      const second = await startRegistry({ dir });
      try {
        expect(second.dataDir).toBe(dir);
        const res = await fetch(`${second.url}/v2/skiff-test/persist/manifests/v1`, {
          headers: { accept: ACCEPT },
        });
        expect(res.status).toBe(200);
        expect(sha256Digest(Buffer.from(await res.arrayBuffer()))).toBe(img.manifestDigest);
      } finally {
        await second.stop();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
