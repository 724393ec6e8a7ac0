/**
 * The registry client against a real distribution registry (Debian's docker-registry on loopback) holding
 * the fixture images pushed with skopeo: resolution by tag, digest and tag+digest, platform selection from
 * an index, verified blobs, a mirror standing in for registry.k8s.io with no upstream fallback, and
 * not-found for an unknown tag. No request leaves 127.0.0.1.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { SkiffError } from '../../src/errdefs.js';
import { silentLogger } from '../../src/log.js';
import {
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_MANIFEST,
  hostPlatform,
  parseImageConfig,
  parseManifest,
  selectPlatform,
  type Manifest,
} from '../../src/image/oci-image.js';
import { parseReference } from '../../src/image/reference.js';
import { RegistryClient, type Endpoint, type RegistryHostOptions } from '../../src/image/registry/client.js';
import { pushImage } from '../fixtures/image-builder.js';
import { buildFixture, fixtureRefs, pushAll, type FixtureName } from '../fixtures/images.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';

let registry: Registry | undefined;
let digests: Record<FixtureName, string> | undefined;

beforeAll(async () => {
  registry = await startRegistry();
  digests = await pushAll(registry.host);
});

afterAll(async () => {
  await registry?.stop();
});

function reg(): Registry {
  if (!registry) throw new Error('registry not started');
  return registry;
}

function pushed(name: FixtureName): string {
  const d = digests?.[name];
  if (d === undefined) throw new Error(`fixture ${name} not pushed`);
  return d;
}

function hostOptions(o: Partial<RegistryHostOptions> = {}): RegistryHostOptions {
  return {
    mirrors: [],
    insecure: false,
    caFile: '',
    skipVerify: false,
    username: '',
    password: '',
    auth: '',
    identityToken: '',
    fallbackToUpstream: true,
    ...o,
  };
}

function client(table: Record<string, Partial<RegistryHostOptions>> = {}): RegistryClient {
  const c = new RegistryClient({
    hosts: (h) => (table[h] ? hostOptions(table[h]) : undefined),
    log: silentLogger(),
    retries: 1,
    retryBaseDelayMs: 10,
    requestTimeoutMs: 10_000,
  });
  onTestFinished(() => c.close());
  return c;
}

async function sha256Of(stream: Readable): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}

/** Fetches the config and every layer of a manifest and checks each against its descriptor. */
async function verifyBlobs(
  c: RegistryClient,
  endpoint: Endpoint,
  path: string,
  manifest: Manifest,
): Promise<void> {
  const config = await sha256Of(await c.fetchBlob(endpoint, path, manifest.config));
  expect(config).toEqual({ digest: manifest.config.digest, size: manifest.config.size });
  for (const layer of manifest.layers) {
    expect(
      await sha256Of(await c.fetchBlob(endpoint, path, layer, undefined, { progressTimeoutMs: 5_000 })),
    ).toEqual({
      digest: layer.digest,
      size: layer.size,
    });
  }
}

describe('registry client against docker-registry', () => {
  it('resolves busybox by tag and fetches every blob verified', async () => {
    const c = client();
    const ref = parseReference(`${reg().host}/${fixtureRefs.busybox}`);
    const got = await c.resolve(ref);
    const built = await buildFixture('busybox');
    expect(got.descriptor).toEqual({
      mediaType: MEDIA_TYPE_OCI_MANIFEST,
      digest: pushed('busybox'),
      size: built.manifestBytes.length,
    });
    expect(got.endpoint.url).toBe(reg().url);
    const parsed = parseManifest(got.manifest, got.descriptor.mediaType);
    if (parsed.kind !== 'manifest') throw new Error('expected a manifest');
    await verifyBlobs(c, got.endpoint, ref.path, parsed.manifest);

    const configBytes = await c.fetchBlob(got.endpoint, ref.path, parsed.manifest.config);
    const chunks: Buffer[] = [];
    for await (const chunk of configBytes) chunks.push(chunk as Buffer);
    const config = parseImageConfig(Buffer.concat(chunks));
    expect(config.rootfs.diff_ids).toEqual(built.layers.map((l) => l.diffId));
    expect(config.config?.Cmd).toEqual(['sh']);
  });

  it('resolves by digest and by tag plus digest', async () => {
    const c = client();
    const digest = pushed('withUser');
    const byDigest = await c.resolve(parseReference(`${reg().host}/skiff-test/with-user@${digest}`));
    expect(byDigest.descriptor.digest).toBe(digest);
    const both = await c.resolve(parseReference(`${reg().host}/skiff-test/with-user:latest@${digest}`));
    expect(both.descriptor.digest).toBe(digest);
    expect(both.manifest.equals(byDigest.manifest)).toBe(true);

    // The digest wins over the tag: a tag that does not exist does not matter.
    const staleTag = await c.resolve(parseReference(`${reg().host}/skiff-test/with-user:gone@${digest}`));
    expect(staleTag.descriptor.digest).toBe(digest);
  });

  it('selects the host platform from the multi-platform index and fetches its manifest and blobs', async () => {
    const c = client();
    const ref = parseReference(`${reg().host}/${fixtureRefs.multiPlatform}`);
    const got = await c.resolve(ref);
    expect(got.descriptor.mediaType).toBe(MEDIA_TYPE_OCI_INDEX);
    expect(got.descriptor.digest).toBe(pushed('multiPlatform'));
    const parsed = parseManifest(got.manifest, got.descriptor.mediaType);
    if (parsed.kind !== 'index') throw new Error('expected an index');

    const host = hostPlatform();
    if (host.architecture !== 'amd64' && host.architecture !== 'arm64') {
      expect(() => selectPlatform(parsed.index, host)).toThrow(/no image for platform/);
      return;
    }
    const chosen = selectPlatform(parsed.index);
    expect(chosen.platform?.architecture).toBe(host.architecture);
    const built = await buildFixture('multiPlatform');
    const expected = built.images.find((i) => i.platform.architecture === host.architecture);
    expect(chosen.digest).toBe(expected?.manifestDigest);

    const bytes = await c.fetchManifest(got.endpoint, ref.path, chosen.digest);
    const child = parseManifest(bytes, chosen.mediaType);
    if (child.kind !== 'manifest') throw new Error('expected a manifest');
    await verifyBlobs(c, got.endpoint, ref.path, child.manifest);

    // The other platform is there too, and is not what this host gets.
    const other = selectPlatform(parsed.index, {
      os: 'linux',
      architecture: host.architecture === 'amd64' ? 'arm64' : 'amd64',
    });
    expect(other.digest).not.toBe(chosen.digest);
  });

  it('resolves a registry.k8s.io reference through a loopback mirror without contacting the upstream', async () => {
    const c = client({ 'registry.k8s.io': { mirrors: [reg().url], fallbackToUpstream: false } });
    const ref = parseReference(`registry.k8s.io/${fixtureRefs.busybox}`);
    expect(c.endpointsFor(ref).map((e) => e.url)).toEqual([reg().url]);
    const got = await c.resolve(ref);
    expect(got.endpoint).toMatchObject({ url: reg().url, isMirror: true, registry: 'registry.k8s.io' });
    expect(got.descriptor.digest).toBe(pushed('busybox'));
    const parsed = parseManifest(got.manifest, got.descriptor.mediaType);
    if (parsed.kind !== 'manifest') throw new Error('expected a manifest');
    await verifyBlobs(c, got.endpoint, ref.path, parsed.manifest);
  });

  it('answers not-found for an unknown tag, naming the reference and the endpoint', async () => {
    const c = client();
    let err: unknown;
    try {
      await c.resolve(parseReference(`${reg().host}/skiff-test/busybox:no-such-tag`));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SkiffError);
    expect((err as SkiffError).kind).toBe('not-found');
    expect((err as SkiffError).message).toBe(
      `image "${reg().host}/skiff-test/busybox:no-such-tag" not found in ${reg().url}`,
    );

    // An unknown repository is not-found too (NAME_UNKNOWN), also through a mirror without fallback.
    const mirrored = client({ 'registry.k8s.io': { mirrors: [reg().url], fallbackToUpstream: false } });
    await expect(mirrored.resolve(parseReference('registry.k8s.io/no/such-repo:v1'))).rejects.toMatchObject({
      kind: 'not-found',
      message: `image "registry.k8s.io/no/such-repo:v1" not found in ${reg().url}`,
    });
  });
});

describe('registry client against an htpasswd-protected docker-registry', () => {
  it('answers the Basic challenge with credentials, and says when none or wrong ones were sent', async () => {
    const creds = { username: 'puller', password: 'pull-secret' };
    const secured = await startRegistry({ htpasswd: creds });
    onTestFinished(() => secured.stop());
    const built = await buildFixture('busybox');
    await pushImage(built, secured.host, 'private/busybox:v1', {
      creds: `${creds.username}:${creds.password}`,
    });
    const ref = parseReference(`${secured.host}/private/busybox:v1`);

    await expect(client().resolve(ref)).rejects.toMatchObject({
      kind: 'unauthenticated',
      message: expect.stringContaining(
        `${secured.url}: HTTP 401 unauthorized (no credentials were sent)`,
      ) as string,
    });
    const wrong = client().resolve(ref, { username: 'puller', password: 'wrong' });
    await expect(wrong).rejects.toMatchObject({
      kind: 'unauthenticated',
      message: expect.stringContaining('(credentials were sent)') as string,
    });
    await expect(wrong).rejects.not.toMatchObject({ message: expect.stringContaining('wrong') as string });

    // Request credentials (CRI AuthConfig) ...
    const c = client();
    const got = await c.resolve(ref, creds);
    expect(got.descriptor.digest).toBe(built.manifestDigest);
    const parsed = parseManifest(got.manifest, got.descriptor.mediaType);
    if (parsed.kind !== 'manifest') throw new Error('expected a manifest');
    for (const layer of parsed.manifest.layers) {
      expect(await sha256Of(await c.fetchBlob(got.endpoint, ref.path, layer, creds))).toEqual({
        digest: layer.digest,
        size: layer.size,
      });
    }

    // ... or the host configuration's, here as Docker's base64 `auth`.
    const configured = client({
      [secured.host]: { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') },
    });
    expect((await configured.resolve(ref)).descriptor.digest).toBe(built.manifestDigest);
  });
});
