/**
 * Manifests, indexes and configs parse per image-spec and Docker schema 2; schema 1 is refused with the
 * message users need; digests follow descriptor.md; platform choice follows containerd's matcher.
 */
import { describe, expect, it } from 'vitest';
import { SkiffError } from '../../../src/errdefs.js';
import {
  MEDIA_TYPE_DOCKER_LAYER_GZIP,
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_DOCKER_MANIFEST_LIST,
  MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST,
  MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST,
  MEDIA_TYPE_OCI_CONFIG,
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_LAYER,
  MEDIA_TYPE_OCI_LAYER_GZIP,
  MEDIA_TYPE_OCI_LAYER_ZSTD,
  MEDIA_TYPE_OCI_MANIFEST,
  MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP,
  SCHEMA1_MESSAGE,
  armVariantFromCpuinfo,
  compatiblePlatforms,
  digestOf,
  formatPlatform,
  hostPlatform,
  isForeignLayerMediaType,
  layerCompression,
  matchesPlatform,
  normalizePlatform,
  parseImageConfig,
  parseManifest,
  selectPlatform,
  validateDigest,
  type Descriptor,
  type Index,
  type Platform,
} from '../../../src/image/oci-image.js';

const d = (c: string): string => `sha256:${c.repeat(64)}`;

function thrown(fn: () => unknown): SkiffError {
  try {
    fn();
  } catch (e) {
    if (e instanceof SkiffError) return e;
    throw e;
  }
  throw new Error('expected a SkiffError');
}

const manifest = {
  schemaVersion: 2,
  mediaType: MEDIA_TYPE_OCI_MANIFEST,
  config: { mediaType: MEDIA_TYPE_OCI_CONFIG, digest: d('c'), size: 100 },
  layers: [{ mediaType: MEDIA_TYPE_OCI_LAYER_GZIP, digest: d('1'), size: 10 }],
};

const entry = (
  platform: Platform | undefined,
  c: string,
  mediaType = MEDIA_TYPE_OCI_MANIFEST,
): Descriptor => ({
  mediaType,
  digest: d(c),
  size: 500,
  ...(platform ? { platform } : {}),
});

const index = (...manifests: Descriptor[]): Index => ({
  schemaVersion: 2,
  mediaType: MEDIA_TYPE_OCI_INDEX,
  manifests,
});

describe('digests', () => {
  it('computes sha256 digests', () => {
    expect(digestOf('')).toBe('sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  it.each([
    [`sha256:${'0'.repeat(64)}`, undefined],
    [`sha512:${'0'.repeat(128)}`, undefined],
    [`sha256:${'0'.repeat(63)}`, /needs 64/],
    [`sha256:${'G'.repeat(64)}`, /needs 64 lowercase hex/],
    [`md5:${'0'.repeat(32)}`, /unsupported algorithm/],
    ['sha256', /expected <algorithm>:<hex>/],
    ['', /expected <algorithm>:<hex>/],
  ])('validates %s', (digest, problem) => {
    if (problem === undefined) expect(validateDigest(digest)).toBe(digest);
    else expect(thrown(() => validateDigest(digest)).message).toMatch(problem);
  });
});

describe('media types', () => {
  it('knows layer compressions and foreign layers', () => {
    expect(layerCompression(MEDIA_TYPE_OCI_LAYER)).toBe('none');
    expect(layerCompression(MEDIA_TYPE_OCI_LAYER_GZIP)).toBe('gzip');
    expect(layerCompression(MEDIA_TYPE_OCI_LAYER_ZSTD)).toBe('zstd');
    expect(layerCompression(MEDIA_TYPE_DOCKER_LAYER_GZIP)).toBe('gzip');
    expect(layerCompression('application/octet-stream')).toBeUndefined();
    expect(isForeignLayerMediaType(MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP)).toBe(true);
    expect(isForeignLayerMediaType(MEDIA_TYPE_OCI_LAYER_GZIP)).toBe(false);
  });
});

describe('parseManifest', () => {
  it('parses an OCI manifest', () => {
    const p = parseManifest(JSON.stringify(manifest), MEDIA_TYPE_OCI_MANIFEST);
    expect(p.kind).toBe('manifest');
    expect(p.mediaType).toBe(MEDIA_TYPE_OCI_MANIFEST);
    if (p.kind === 'manifest') expect(p.manifest.layers[0]?.digest).toBe(d('1'));
  });

  it('parses a Docker schema 2 manifest and manifest list', () => {
    const docker = { ...manifest, mediaType: MEDIA_TYPE_DOCKER_MANIFEST };
    expect(parseManifest(JSON.stringify(docker), MEDIA_TYPE_DOCKER_MANIFEST).kind).toBe('manifest');
    const list = { schemaVersion: 2, mediaType: MEDIA_TYPE_DOCKER_MANIFEST_LIST, manifests: [] };
    const p = parseManifest(JSON.stringify(list), `${MEDIA_TYPE_DOCKER_MANIFEST_LIST}; charset=utf-8`);
    expect(p).toEqual({ kind: 'index', mediaType: MEDIA_TYPE_DOCKER_MANIFEST_LIST, index: list });
  });

  it('falls back to the document mediaType, then its shape, for a generic Content-Type', () => {
    expect(parseManifest(JSON.stringify(manifest), 'application/json').mediaType).toBe(
      MEDIA_TYPE_OCI_MANIFEST,
    );
    const { mediaType: _m, ...untyped } = manifest;
    expect(parseManifest(JSON.stringify(untyped), '').mediaType).toBe(MEDIA_TYPE_OCI_MANIFEST);
    expect(parseManifest(JSON.stringify({ schemaVersion: 2, manifests: [] }), '').kind).toBe('index');
  });

  it.each([
    [
      'a schema 1 media type',
      { schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] },
      MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST,
    ],
    ['the v1+json media type', { schemaVersion: 1 }, MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST],
    ['schemaVersion 1 served as JSON', { schemaVersion: 1, fsLayers: [] }, 'application/json'],
  ])('refuses schema 1 by %s', (_what, doc, mediaType) => {
    const e = thrown(() => parseManifest(JSON.stringify(doc), mediaType));
    expect(e.kind).toBe('failed-precondition');
    expect(e.message).toBe(SCHEMA1_MESSAGE);
    expect(e.message).toContain('re-push the image with a current client');
  });

  it.each([
    ['not JSON', '{', MEDIA_TYPE_OCI_MANIFEST, /invalid JSON/],
    ['an array', '[]', MEDIA_TYPE_OCI_MANIFEST, /expected an object/],
    ['schemaVersion 3', JSON.stringify({ ...manifest, schemaVersion: 3 }), '', /schemaVersion: expected 2/],
    [
      'a bad layer digest',
      JSON.stringify({ ...manifest, layers: [{ mediaType: 'x', digest: 'sha256:zz', size: 1 }] }),
      '',
      /layers\[0\]\.digest/,
    ],
    [
      'a negative size',
      JSON.stringify({ ...manifest, config: { ...manifest.config, size: -1 } }),
      '',
      /config\.size/,
    ],
    [
      'no layers',
      JSON.stringify({ ...manifest, layers: undefined }),
      MEDIA_TYPE_OCI_MANIFEST,
      /layers: expected an array/,
    ],
    [
      'a type mismatch',
      JSON.stringify(manifest),
      MEDIA_TYPE_OCI_INDEX,
      /the document says .* but was served as/,
    ],
    [
      'an index with layers',
      JSON.stringify({ schemaVersion: 2, manifests: [], layers: [] }),
      MEDIA_TYPE_OCI_INDEX,
      /must not have config or layers/,
    ],
    ['an unknown shape', JSON.stringify({ schemaVersion: 2 }), 'text/plain', /unknown media type/],
    [
      'a platform without os',
      JSON.stringify(index(entry({ architecture: 'amd64' } as Platform, '1'))),
      '',
      /platform\.os/,
    ],
  ])('refuses %s', (_what, body, mediaType, why) => {
    const e = thrown(() => parseManifest(body, mediaType));
    expect(e.kind).toBe('invalid-argument');
    expect(e.message).toMatch(why);
  });
});

describe('parseImageConfig', () => {
  const config = {
    architecture: 'amd64',
    os: 'linux',
    config: {
      User: 'app',
      Env: ['PATH=/bin'],
      Entrypoint: ['/bin/sh'],
      Cmd: ['-c', 'true'],
      WorkingDir: '/tmp',
      Labels: { a: 'b' },
      StopSignal: 'SIGTERM',
      Volumes: { '/data': {} },
      ExposedPorts: { '80/tcp': {} },
    },
    rootfs: { type: 'layers', diff_ids: [d('e')] },
    history: [{ created_by: 'x' }],
  };

  it('keeps the spec keys', () => {
    const c = parseImageConfig(JSON.stringify(config));
    expect(c.config?.User).toBe('app');
    expect(c.rootfs.diff_ids).toEqual([d('e')]);
    expect(c).toEqual(config);
  });

  it.each([
    [{ ...config, rootfs: { type: 'layers', diff_ids: ['nope'] } }, /rootfs\.diff_ids\[0\]/],
    [{ ...config, rootfs: { type: 'other', diff_ids: [] } }, /rootfs\.type/],
    [{ ...config, os: 1 }, /os: expected a string/],
    [{ ...config, config: { Env: 'PATH=/bin' } }, /config\.Env/],
  ])('refuses invalid configs (%#)', (bad, why) => {
    const e = thrown(() => parseImageConfig(JSON.stringify(bad)));
    expect(e.kind).toBe('invalid-argument');
    expect(e.message).toMatch(why);
  });
});

describe('platforms', () => {
  it('normalises as containerd does', () => {
    expect(normalizePlatform({ os: 'Linux', architecture: 'x86_64' })).toEqual({
      os: 'linux',
      architecture: 'amd64',
    });
    expect(normalizePlatform({ os: 'linux', architecture: 'aarch64', variant: 'v8' })).toEqual({
      os: 'linux',
      architecture: 'arm64',
    });
    expect(normalizePlatform({ os: 'linux', architecture: 'armhf' })).toEqual({
      os: 'linux',
      architecture: 'arm',
      variant: 'v7',
    });
    expect(normalizePlatform({ os: 'linux', architecture: 'arm' })).toEqual({
      os: 'linux',
      architecture: 'arm',
      variant: 'v7',
    });
    expect(normalizePlatform({ os: 'linux', architecture: 'i386' })).toEqual({
      os: 'linux',
      architecture: '386',
    });
  });

  it('lists compatible lower variants, best first', () => {
    const f = (p: Platform): string[] => compatiblePlatforms(p).map(formatPlatform);
    expect(f({ os: 'linux', architecture: 'amd64' })).toEqual(['linux/amd64', 'linux/386']);
    expect(f({ os: 'linux', architecture: 'amd64', variant: 'v3' })).toEqual([
      'linux/amd64/v3',
      'linux/amd64/v2',
      'linux/amd64',
      'linux/386',
    ]);
    expect(f({ os: 'linux', architecture: 'arm64', variant: 'v8' })).toEqual([
      'linux/arm64',
      'linux/arm/v8',
      'linux/arm/v7',
      'linux/arm/v6',
      'linux/arm/v5',
    ]);
    expect(f({ os: 'linux', architecture: 'arm', variant: 'v7' })).toEqual([
      'linux/arm/v7',
      'linux/arm/v6',
      'linux/arm/v5',
    ]);
    expect(f({ os: 'linux', architecture: 'arm64', variant: 'v9.1' }).slice(0, 4)).toEqual([
      'linux/arm64/v9.1',
      'linux/arm64/v9',
      'linux/arm64/v8.6',
      'linux/arm64/v8.5',
    ]);
  });

  it('matches arm64 with and without the default v8 variant', () => {
    const host = { os: 'linux', architecture: 'arm64', variant: 'v8' };
    expect(matchesPlatform({ os: 'linux', architecture: 'arm64' }, host)).toBe(true);
    expect(matchesPlatform({ os: 'linux', architecture: 'arm64', variant: 'v8' }, host)).toBe(true);
    expect(matchesPlatform({ os: 'linux', architecture: 'arm64', variant: 'v9' }, host)).toBe(false);
    expect(matchesPlatform({ os: 'linux', architecture: 'amd64' }, host)).toBe(false);
    expect(matchesPlatform({ os: 'windows', architecture: 'arm64' }, host)).toBe(false);
  });

  const amd64 = { os: 'linux', architecture: 'amd64' };
  const arm64 = { os: 'linux', architecture: 'arm64', variant: 'v8' };

  it('selects the exact platform from an index', () => {
    const idx = index(entry(amd64, '1'), entry({ os: 'linux', architecture: 'arm64', variant: 'v8' }, '2'));
    expect(selectPlatform(idx, amd64).digest).toBe(d('1'));
    expect(selectPlatform(idx, arm64).digest).toBe(d('2'));
    expect(selectPlatform(idx, { os: 'linux', architecture: 'aarch64' }).digest).toBe(d('2'));
  });

  it('prefers the best variant over index order, and falls back to lower ones', () => {
    const armHost = { os: 'linux', architecture: 'arm', variant: 'v7' };
    const idx = index(
      entry({ os: 'linux', architecture: 'arm', variant: 'v5' }, '5'),
      entry({ os: 'linux', architecture: 'arm', variant: 'v6' }, '6'),
    );
    expect(selectPlatform(idx, armHost).digest).toBe(d('6'));
    expect(
      selectPlatform(index(entry({ os: 'linux', architecture: '386' }, '3'), entry(amd64, '1')), amd64)
        .digest,
    ).toBe(d('1'));
    expect(selectPlatform(index(entry({ os: 'linux', architecture: '386' }, '3')), amd64).digest).toBe(
      d('3'),
    );
  });

  it('skips attestations and non-manifest entries, and takes platform-less entries last', () => {
    const idx = index(
      entry({ os: 'unknown', architecture: 'unknown' }, 'a'),
      entry(amd64, 'b', 'application/vnd.in-toto+json'),
      entry(undefined, 'c'),
    );
    expect(selectPlatform(idx, amd64).digest).toBe(d('c'));
    expect(selectPlatform(index(entry(undefined, 'c'), entry(amd64, 'd')), amd64).digest).toBe(d('d'));
  });

  it('names the platforms an index offers when none matches', () => {
    const idx = index(
      entry({ os: 'linux', architecture: 's390x' }, '1'),
      entry(arm64, '2'),
      entry(arm64, '3'),
    );
    const e = thrown(() => selectPlatform(idx, amd64));
    expect(e.kind).toBe('not-found');
    expect(e.message).toBe(
      'no image for platform linux/amd64 in the index: it offers linux/s390x, linux/arm64/v8',
    );
  });

  it('reads the arm variant from /proc/cpuinfo', () => {
    expect(armVariantFromCpuinfo('processor\t: 0\nCPU architecture: 7\n')).toBe('v7');
    expect(armVariantFromCpuinfo('CPU architecture: 8\n')).toBe('v8');
    expect(
      armVariantFromCpuinfo('model name\t: ARMv6-compatible processor rev 7 (v6l)\nCPU architecture: 7\n'),
    ).toBe('v6');
    expect(armVariantFromCpuinfo('vendor_id: GenuineIntel\n')).toBeUndefined();
  });

  it('describes this host as linux with an OCI architecture name', () => {
    const host = hostPlatform();
    expect(host.os).toBe('linux');
    expect(host.architecture).not.toBe('x64');
    if (process.arch === 'x64') expect(host).toEqual({ os: 'linux', architecture: 'amd64' });
    if (process.arch === 'arm64') expect(host).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
  });
});
