/**
 * OCI image-spec v1.1 and Docker image manifest v2 schema 2 wire types, their media types, the parsers
 * that validate them, digests, and platform selection from an index.
 *
 * Wire types keep the JSON keys of the specs (image-spec descriptor.md, manifest.md, image-index.md,
 * config.md; Docker's "Image Manifest V2, Schema 2"), so a parsed value re-serialises to the same fields.
 * Parsers are pure: they take bytes and return a typed value or throw a SkiffError naming the field.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SkiffError } from '../errdefs.js';

// ---------------------------------------------------------------------------------------------------------
// Media types (image-spec media-types.md; Docker "Image Manifest V2, Schema 2" "Media Types")

export const MEDIA_TYPE_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MEDIA_TYPE_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MEDIA_TYPE_OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const MEDIA_TYPE_OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';
export const MEDIA_TYPE_OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const MEDIA_TYPE_OCI_LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
/** Deprecated by image-spec v1.1 ("non-distributable layers"), still found in Windows images. */
export const MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE =
  'application/vnd.oci.image.layer.nondistributable.v1.tar';
export const MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_GZIP =
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip';
export const MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_ZSTD =
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd';
/** image-spec manifest.md "Guidance for an Empty Descriptor". */
export const MEDIA_TYPE_OCI_EMPTY = 'application/vnd.oci.empty.v1+json';

export const MEDIA_TYPE_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const MEDIA_TYPE_DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const MEDIA_TYPE_DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const MEDIA_TYPE_DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar';
export const MEDIA_TYPE_DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
export const MEDIA_TYPE_DOCKER_LAYER_ZSTD = 'application/vnd.docker.image.rootfs.diff.tar.zstd';
/** Foreign layers (Windows base layers) are fetched from their `urls`, not the registry. */
export const MEDIA_TYPE_DOCKER_FOREIGN_LAYER = 'application/vnd.docker.image.rootfs.foreign.diff.tar';
export const MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP =
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip';

/** Docker "Image Manifest Version 2, Schema 1": deprecated, refused (see {@link SCHEMA1_MESSAGE}). */
export const MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST = 'application/vnd.docker.distribution.manifest.v1+json';
export const MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST =
  'application/vnd.docker.distribution.manifest.v1+prettyjws';

export const SCHEMA1_MESSAGE =
  'schema 1 manifests are not supported (deprecated by the registry spec); re-push the image with a current client';

/** Single-image manifest media types. */
export const MANIFEST_MEDIA_TYPES: readonly string[] = [MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST];
/** Multi-platform index media types. */
export const INDEX_MEDIA_TYPES: readonly string[] = [MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST];
export const CONFIG_MEDIA_TYPES: readonly string[] = [MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG];

export type LayerCompression = 'none' | 'gzip' | 'zstd';

const LAYER_COMPRESSION: Readonly<Record<string, LayerCompression>> = {
  [MEDIA_TYPE_OCI_LAYER]: 'none',
  [MEDIA_TYPE_OCI_LAYER_GZIP]: 'gzip',
  [MEDIA_TYPE_OCI_LAYER_ZSTD]: 'zstd',
  [MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE]: 'none',
  [MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_GZIP]: 'gzip',
  [MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_ZSTD]: 'zstd',
  [MEDIA_TYPE_DOCKER_LAYER]: 'none',
  [MEDIA_TYPE_DOCKER_LAYER_GZIP]: 'gzip',
  [MEDIA_TYPE_DOCKER_LAYER_ZSTD]: 'zstd',
  [MEDIA_TYPE_DOCKER_FOREIGN_LAYER]: 'none',
  [MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP]: 'gzip',
};

const FOREIGN_LAYER_MEDIA_TYPES: readonly string[] = [
  MEDIA_TYPE_DOCKER_FOREIGN_LAYER,
  MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP,
  MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE,
  MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_GZIP,
  MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
];

/** The compression of a layer media type, or undefined when it is not a layer type we can unpack. */
export function layerCompression(mediaType: string): LayerCompression | undefined {
  return LAYER_COMPRESSION[mediaType];
}

export function isLayerMediaType(mediaType: string): boolean {
  return layerCompression(mediaType) !== undefined;
}

/** Foreign / non-distributable layers: fetched from the descriptor's `urls`, if at all. */
export function isForeignLayerMediaType(mediaType: string): boolean {
  return FOREIGN_LAYER_MEDIA_TYPES.includes(mediaType);
}

export function isManifestMediaType(mediaType: string): boolean {
  return MANIFEST_MEDIA_TYPES.includes(mediaType);
}

export function isIndexMediaType(mediaType: string): boolean {
  return INDEX_MEDIA_TYPES.includes(mediaType);
}

export function isSchema1MediaType(mediaType: string): boolean {
  return (
    mediaType === MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST ||
    mediaType === MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST
  );
}

// ---------------------------------------------------------------------------------------------------------
// Wire types

/** image-index.md `platform` / config.md `architecture`, `os`, `variant`, `os.version`, `os.features`. */
export interface Platform {
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
}

/** descriptor.md */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  data?: string;
  artifactType?: string;
  /** Only in an index's `manifests` (image-index.md). */
  platform?: Platform;
}

/** manifest.md (and Docker schema 2, which has the same shape). */
export interface Manifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** image-index.md (and Docker's manifest list). */
export interface Index {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** config.md `config`: the execution parameters, with the spec's Docker-cased keys. */
export interface ContainerConfig {
  User?: string;
  /** Keys like `8080/tcp`; values are empty objects. */
  ExposedPorts?: Record<string, object>;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
  ArgsEscaped?: boolean;
}

/** config.md `history[]` */
export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

/** config.md: the image configuration blob. */
export interface ImageConfig {
  created?: string;
  author?: string;
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
  config?: ContainerConfig;
  rootfs: { type: 'layers'; diff_ids: string[] };
  history?: HistoryEntry[];
}

export type ParsedManifest =
  | { kind: 'manifest'; mediaType: string; manifest: Manifest }
  | { kind: 'index'; mediaType: string; index: Index };

// ---------------------------------------------------------------------------------------------------------
// Digests (descriptor.md "Digests")

/**
 * descriptor.md "Registered algorithms": sha256 (64 hex) and sha512 (128 hex), lowercase hex only;
 * sha384 is accepted too, as go-digest (and so containerd) does.
 */
const DIGEST_HEX_LENGTH: Readonly<Record<string, number>> = { sha256: 64, sha384: 96, sha512: 128 };
/** descriptor.md: `algorithm-component (algorithm-separator algorithm-component)* ":" encoded`. */
const DIGEST_SHAPE_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** `sha256:<hex>` of the bytes. */
export function digestOf(bytes: Buffer | Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** The digest of `bytes` computed with the algorithm of `like` (a validated digest). */
export function digestWithAlgorithmOf(like: string, bytes: Buffer | Uint8Array): string {
  const algorithm = like.slice(0, like.indexOf(':'));
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/**
 * Checks a digest string against descriptor.md; throws `invalid-argument` saying what is wrong. Returns
 * the digest, so it can be used inline.
 */
export function validateDigest(s: string): string {
  if (!DIGEST_SHAPE_RE.test(s)) {
    throw new SkiffError(
      'invalid-argument',
      `invalid digest ${JSON.stringify(s)}: expected <algorithm>:<hex>`,
    );
  }
  const colon = s.indexOf(':');
  const algorithm = s.slice(0, colon);
  const hex = s.slice(colon + 1);
  const length = DIGEST_HEX_LENGTH[algorithm];
  if (length === undefined) {
    throw new SkiffError(
      'invalid-argument',
      `invalid digest ${JSON.stringify(s)}: unsupported algorithm ${JSON.stringify(algorithm)} (sha256, sha384 or sha512)`,
    );
  }
  if (hex.length !== length || !/^[a-f0-9]+$/.test(hex)) {
    throw new SkiffError(
      'invalid-argument',
      `invalid digest ${JSON.stringify(s)}: ${algorithm} needs ${length} lowercase hex characters`,
    );
  }
  return s;
}

export function isValidDigest(s: string): boolean {
  try {
    validateDigest(s);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Parsing and validation

class FieldError extends Error {}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function expectObject(v: unknown, field: string): Json {
  if (!isObject(v)) throw new FieldError(`${field}: expected an object`);
  return v;
}

function optionalString(o: Json, key: string, field: string): void {
  if (o[key] !== undefined && typeof o[key] !== 'string')
    throw new FieldError(`${field}.${key}: expected a string`);
}

function optionalStringArray(o: Json, key: string, field: string): void {
  const v = o[key];
  if (v === undefined || v === null) return;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
    throw new FieldError(`${field}.${key}: expected an array of strings`);
  }
}

function optionalStringMap(o: Json, key: string, field: string): void {
  const v = o[key];
  if (v === undefined || v === null) return;
  if (!isObject(v) || Object.values(v).some((x) => typeof x !== 'string')) {
    throw new FieldError(`${field}.${key}: expected an object of strings`);
  }
}

function optionalObjectMap(o: Json, key: string, field: string): void {
  const v = o[key];
  if (v === undefined || v === null) return;
  if (!isObject(v) || Object.values(v).some((x) => !isObject(x))) {
    throw new FieldError(`${field}.${key}: expected an object of objects`);
  }
}

function checkPlatform(v: unknown, field: string): void {
  const p = expectObject(v, field);
  if (typeof p.architecture !== 'string') throw new FieldError(`${field}.architecture: expected a string`);
  if (typeof p.os !== 'string') throw new FieldError(`${field}.os: expected a string`);
  optionalString(p, 'os.version', field);
  optionalStringArray(p, 'os.features', field);
  optionalString(p, 'variant', field);
}

/** descriptor.md "Properties": mediaType, digest and size are required. */
function checkDescriptor(v: unknown, field: string): Descriptor {
  const d = expectObject(v, field);
  if (typeof d.mediaType !== 'string' || d.mediaType === '') {
    throw new FieldError(`${field}.mediaType: expected a non-empty string`);
  }
  if (typeof d.digest !== 'string' || !isValidDigest(d.digest)) {
    throw new FieldError(`${field}.digest: invalid digest ${JSON.stringify(d.digest)}`);
  }
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw new FieldError(`${field}.size: expected a non-negative integer`);
  }
  optionalStringArray(d, 'urls', field);
  optionalStringMap(d, 'annotations', field);
  optionalString(d, 'data', field);
  optionalString(d, 'artifactType', field);
  if (d.platform !== undefined) checkPlatform(d.platform, `${field}.platform`);
  return d as unknown as Descriptor;
}

function checkSchemaVersion(o: Json): void {
  if (o.schemaVersion === 1) throw new SkiffError('failed-precondition', SCHEMA1_MESSAGE);
  if (o.schemaVersion !== 2) {
    throw new FieldError(`schemaVersion: expected 2, found ${JSON.stringify(o.schemaVersion)}`);
  }
}

function parseJson(bytes: Buffer | Uint8Array | string, what: string): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    throw new SkiffError(
      'invalid-argument',
      `parse ${what}: invalid JSON: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
}

/** Strips parameters and case from a Content-Type (`application/json; charset=utf-8`). */
function bareMediaType(mediaType: string): string {
  return (mediaType.split(';')[0] ?? '').trim().toLowerCase();
}

/**
 * Parses a manifest or index fetched with Content-Type `mediaType` (which may be empty or generic, e.g.
 * `application/json`: then the document's own `mediaType` field, and failing that its shape, decides).
 *
 * Docker schema 1 (by media type or `schemaVersion: 1`) is refused with `failed-precondition` and
 * {@link SCHEMA1_MESSAGE}. A document whose `mediaType` field contradicts the Content-Type, or whose shape
 * contradicts its type (image-spec manifest.md / image-index.md: an index has `manifests`, a manifest has
 * `config` and `layers`), is `invalid-argument`.
 */
export function parseManifest(bytes: Buffer | Uint8Array | string, mediaType: string): ParsedManifest {
  const header = bareMediaType(mediaType);
  if (isSchema1MediaType(header)) throw new SkiffError('failed-precondition', SCHEMA1_MESSAGE);
  const doc = parseJson(bytes, 'manifest');
  try {
    const o = expectObject(doc, 'manifest');
    checkSchemaVersion(o);
    optionalString(o, 'mediaType', 'manifest');
    const field = typeof o.mediaType === 'string' ? o.mediaType : undefined;
    if (field !== undefined && isSchema1MediaType(field))
      throw new SkiffError('failed-precondition', SCHEMA1_MESSAGE);

    const known = (t: string | undefined): boolean =>
      t !== undefined && (isManifestMediaType(t) || isIndexMediaType(t));
    if (known(header) && known(field) && header !== field) {
      throw new FieldError(`mediaType: the document says ${field} but was served as ${header}`);
    }
    let type: string;
    if (known(header)) type = header;
    else if (field !== undefined && known(field)) type = field;
    else if (Array.isArray(o.manifests)) type = MEDIA_TYPE_OCI_INDEX;
    else if (o.config !== undefined || o.layers !== undefined) type = MEDIA_TYPE_OCI_MANIFEST;
    else {
      throw new FieldError(
        `unknown media type ${JSON.stringify(field ?? (header || '(none)'))}: expected an OCI or Docker schema 2 manifest or index`,
      );
    }

    optionalStringMap(o, 'annotations', 'manifest');
    optionalString(o, 'artifactType', 'manifest');
    if (o.subject !== undefined) checkDescriptor(o.subject, 'subject');

    if (isIndexMediaType(type)) {
      if (o.config !== undefined || o.layers !== undefined) {
        throw new FieldError('an index must not have config or layers');
      }
      if (!Array.isArray(o.manifests)) throw new FieldError('manifests: expected an array');
      o.manifests.forEach((m, i) => checkDescriptor(m, `manifests[${i}]`));
      return { kind: 'index', mediaType: type, index: o as unknown as Index };
    }
    if (o.manifests !== undefined) throw new FieldError('a manifest must not have manifests');
    checkDescriptor(o.config, 'config');
    if (!Array.isArray(o.layers)) throw new FieldError('layers: expected an array');
    o.layers.forEach((l, i) => checkDescriptor(l, `layers[${i}]`));
    return { kind: 'manifest', mediaType: type, manifest: o as unknown as Manifest };
  } catch (e) {
    if (e instanceof FieldError) throw new SkiffError('invalid-argument', `invalid manifest: ${e.message}`);
    throw e;
  }
}

/** Parses and checks an image configuration blob (config.md: `architecture`, `os`, `rootfs` required). */
export function parseImageConfig(bytes: Buffer | Uint8Array | string): ImageConfig {
  const doc = parseJson(bytes, 'image config');
  try {
    const o = expectObject(doc, 'config');
    if (typeof o.architecture !== 'string') throw new FieldError('architecture: expected a string');
    if (typeof o.os !== 'string') throw new FieldError('os: expected a string');
    optionalString(o, 'variant', 'config');
    optionalString(o, 'created', 'config');
    optionalString(o, 'author', 'config');
    const rootfs = expectObject(o.rootfs, 'rootfs');
    if (rootfs.type !== 'layers')
      throw new FieldError(`rootfs.type: expected "layers", found ${JSON.stringify(rootfs.type)}`);
    if (!Array.isArray(rootfs.diff_ids)) throw new FieldError('rootfs.diff_ids: expected an array');
    rootfs.diff_ids.forEach((d, i) => {
      if (typeof d !== 'string' || !isValidDigest(d)) {
        throw new FieldError(`rootfs.diff_ids[${i}]: invalid digest ${JSON.stringify(d)}`);
      }
    });
    if (o.config !== undefined && o.config !== null) {
      const c = expectObject(o.config, 'config.config');
      for (const k of ['User', 'WorkingDir', 'StopSignal']) optionalString(c, k, 'config');
      for (const k of ['Env', 'Entrypoint', 'Cmd']) optionalStringArray(c, k, 'config');
      optionalStringMap(c, 'Labels', 'config');
      optionalObjectMap(c, 'ExposedPorts', 'config');
      optionalObjectMap(c, 'Volumes', 'config');
    }
    if (o.history !== undefined && o.history !== null) {
      if (!Array.isArray(o.history)) throw new FieldError('history: expected an array');
      o.history.forEach((h, i) => expectObject(h, `history[${i}]`));
    }
    return o as unknown as ImageConfig;
  } catch (e) {
    if (e instanceof FieldError)
      throw new SkiffError('invalid-argument', `invalid image config: ${e.message}`);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Platforms (containerd/platforms: database.go normalizeArch, compare.go platformVector / Only)

/** Normalised per containerd's `Normalize`: lowercase, aliases folded, default variants dropped. */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os === '' ? 'linux' : p.os.toLowerCase() === 'macos' ? 'darwin' : p.os.toLowerCase();
  let architecture = p.architecture.toLowerCase();
  let variant = (p.variant ?? '').toLowerCase();
  switch (architecture) {
    case 'i386':
      architecture = '386';
      variant = '';
      break;
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      architecture = 'amd64';
      if (variant === 'v1') variant = '';
      break;
    case 'aarch64':
    case 'arm64':
      // arm64 v8 is the baseline and is written without a variant.
      architecture = 'arm64';
      if (variant === '8' || variant === 'v8') variant = '';
      break;
    case 'armhf':
      architecture = 'arm';
      variant = 'v7';
      break;
    case 'armel':
      architecture = 'arm';
      variant = 'v6';
      break;
    case 'arm':
      if (variant === '' || variant === '7') variant = 'v7';
      else if (variant === '5' || variant === '6' || variant === '8') variant = `v${variant}`;
      break;
  }
  return { os, architecture, ...(variant !== '' ? { variant } : {}) };
}

/** `os/arch[/variant]` */
export function formatPlatform(p: Platform): string {
  return [p.os || 'unknown', p.architecture, ...(p.variant ? [p.variant] : [])].join('/');
}

/**
 * The platforms a host runs, best first (containerd `platformVector`): the host itself, then compatible
 * lower variants — amd64/vN → amd64/v(N-1)…v1 → 386; arm/vN → arm/v(N-1)…v5; arm64/v8.x → arm64/v8.(x-1)…v8,
 * arm64/v9.x → lower v9.x, then v8.(x+5)…v8 (v9.0 diverged from v8.5); arm64 → arm/v8…v5.
 */
export function compatiblePlatforms(host: Platform): Platform[] {
  const p = normalizePlatform(host);
  const vector: Platform[] = [p];
  const same = (variant: string): Platform => ({
    os: p.os,
    architecture: p.architecture,
    ...(variant ? { variant } : {}),
  });
  const number = (v: string): number => (/^v?\d+$/.test(v) ? Number(v.replace(/^v/, '')) : NaN);
  switch (p.architecture) {
    case 'amd64': {
      const level = number(p.variant ?? '');
      if (level > 1) for (let l = level - 1; l >= 1; l--) vector.push(same(l === 1 ? '' : `v${l}`));
      vector.push({ os: p.os, architecture: '386' });
      break;
    }
    case 'arm': {
      const level = number(p.variant ?? '');
      if (level > 5) for (let l = level - 1; l >= 5; l--) vector.push(same(`v${l}`));
      break;
    }
    case 'arm64': {
      let variant = p.variant ?? 'v8';
      const m = /^v(\d+)(?:\.(\d+))?$/.exec(variant);
      if (m) {
        let major = Number(m[1]);
        let minor = m[2] !== undefined ? Number(m[2]) : 0;
        if (major >= 8) {
          if (major === 9) {
            for (let n = minor - 1; n >= 0; n--) vector.push(same(n === 0 ? 'v9' : `v9.${n}`));
            major = 8;
            minor += 5;
            vector.push(same(`v8.${minor}`));
          }
          for (let n = minor - 1; n >= 0; n--) vector.push(same(n === 0 ? '' : `v${major}.${n}`));
        }
      }
      if (variant.startsWith('v8.') || variant.startsWith('v9.')) variant = 'v8';
      vector.push(...compatiblePlatforms({ os: p.os, architecture: 'arm', variant }));
      break;
    }
  }
  return vector;
}

/** True when `candidate` is exactly `host` after normalisation (containerd `NewMatcher(host).Match`). */
export function platformEquals(candidate: Platform, host: Platform): boolean {
  const a = normalizePlatform(candidate);
  const b = normalizePlatform(host);
  return a.os === b.os && a.architecture === b.architecture && (a.variant ?? '') === (b.variant ?? '');
}

/** True when the host can run an image built for `candidate` (containerd `platforms.Only(host).Match`). */
export function matchesPlatform(candidate: Platform, host: Platform = hostPlatform()): boolean {
  return compatiblePlatforms(host).some((p) => platformEquals(candidate, p));
}

/** Node's `process.arch` → the OCI / Go architecture name (config.md refers to GOARCH values). */
const NODE_ARCH: Readonly<Record<string, string>> = {
  x64: 'amd64',
  ia32: '386',
  arm64: 'arm64',
  arm: 'arm',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
};

/**
 * The arm variant from /proc/cpuinfo's "CPU architecture" line (containerd `cpuVariant`): 7 → v7, 8 → v8;
 * the ARMv6 and ARMv5 cores report their architecture in "model name"/"Processor" instead.
 */
export function armVariantFromCpuinfo(cpuinfo: string): string | undefined {
  const arch = /^CPU architecture\s*:\s*(\S+)/im.exec(cpuinfo)?.[1]?.toLowerCase();
  if (arch === undefined) return undefined;
  if (arch === 'aarch64' || arch === '8') return 'v8';
  if (arch === '7' || arch === '6' || arch === '5') {
    if (arch === '7' && /^model name\s*:.*\bARMv6/im.test(cpuinfo)) return 'v6';
    return `v${arch}`;
  }
  return undefined;
}

let cachedHost: Platform | undefined;

/** This machine's platform: linux, process.arch mapped, arm64 → v8, arm → variant from /proc/cpuinfo. */
export function hostPlatform(): Platform {
  if (cachedHost) return cachedHost;
  const architecture = NODE_ARCH[process.arch] ?? process.arch;
  let variant: string | undefined;
  if (architecture === 'arm64') variant = 'v8';
  if (architecture === 'arm') {
    try {
      variant = armVariantFromCpuinfo(readFileSync('/proc/cpuinfo', 'utf8')) ?? 'v7';
    } catch {
      variant = 'v7';
    }
  }
  cachedHost = { os: 'linux', architecture, ...(variant !== undefined ? { variant } : {}) };
  return cachedHost;
}

/**
 * Picks the manifest for `host` from an index, as containerd's `images.Manifest` with `platforms.Only`:
 * only manifest and index entries are candidates; among those whose platform the host runs, the one
 * best in {@link compatiblePlatforms} order wins (ties: index order); entries without a platform come
 * last (the caller should check the config's os/architecture with {@link matchesPlatform}).
 *
 * Throws `not-found` naming the host platform and every platform the index offers.
 */
export function selectPlatform(index: Index, host: Platform = hostPlatform()): Descriptor {
  const vector = compatiblePlatforms(host);
  const rank = (d: Descriptor): number => {
    if (d.platform === undefined) return vector.length;
    const platform = d.platform;
    const i = vector.findIndex((p) => platformEquals(platform, p));
    return i === -1 ? -1 : i;
  };
  let best: { d: Descriptor; rank: number } | undefined;
  for (const d of index.manifests) {
    if (!isManifestMediaType(d.mediaType) && !isIndexMediaType(d.mediaType)) continue;
    const r = rank(d);
    if (r === -1) continue;
    if (best === undefined || r < best.rank) best = { d, rank: r };
  }
  if (best) return best.d;
  const offered = index.manifests
    .filter((d) => isManifestMediaType(d.mediaType) || isIndexMediaType(d.mediaType))
    .map((d) => (d.platform ? formatPlatform(d.platform) : 'unspecified'));
  throw new SkiffError(
    'not-found',
    `no image for platform ${formatPlatform(host)} in the index: it offers ${
      offered.length > 0 ? [...new Set(offered)].join(', ') : 'no images'
    }`,
  );
}
