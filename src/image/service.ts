/**
 * The image service: pull, list, status, remove and disk usage, over the registry client, the verified
 * content store, the overlay snapshots and the image records. Plain domain arguments in and out; the CRI
 * adapter (cri/image-service.ts) converts.
 *
 * A pull: resolve the reference (mirrors first, per host config) → pick this host's platform from an
 * index → fetch and verify the config → for every layer not yet unpacked, in parallel up to
 * `maxConcurrentDownloads`: stream the blob into the content store while the same bytes are unpacked into
 * a fresh snapshot dir (layers are independent overlay lower dirs, so they need no order to unpack) →
 * check each layer's uncompressed digest against the config's diff_ids → commit the snapshots under their
 * chain IDs → write the image record last. Nothing is reported as pulled before that final write.
 */
import { PassThrough } from 'node:stream';
import { SkiffError, isSkiffError, messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';
import type { SnapshotStore } from '../snapshot/snapshots.js';
import { diskUsage } from '../snapshot/usage.js';
import { KeyedMutex } from '../store/keyed-mutex.js';
import { chainIds } from './chain-id.js';
import type { ContentStore } from './content/store.js';
import { IMAGE_RECORD_VERSION, type ImageRecord, type ImageStore, type LayerRecord } from './image-store.js';
import {
  type Descriptor,
  type ImageConfig,
  type Manifest,
  formatPlatform,
  hostPlatform,
  matchesPlatform,
  parseImageConfig,
  parseManifest,
  selectPlatform,
} from './oci-image.js';
import { type Reference, digested, formatReference, nameOf, parseReference, tagged } from './reference.js';
import type { Credentials, Endpoint, RegistryClient } from './registry/client.js';
import { unpackLayer } from './unpack.js';

export interface ImageServiceOptions {
  root: string;
  log: Logger;
  registry: RegistryClient;
  content: ContentStore;
  snapshots: SnapshotStore;
  images: ImageStore;
  maxConcurrentDownloads: number;
  progressTimeoutMs: number;
  minBytesPerSecond: number;
  /** References reported as pinned (config `images.pinned_images`, plus the sandbox image). */
  pinned: readonly string[];
  /** Interval of the progress log lines. */
  progressLogIntervalMs?: number;
  /** Top chain IDs that live containers are built on; GC keeps them and their parents. */
  chainsInUse?: () => Iterable<string>;
}

export interface PullProgress {
  image: string;
  startedAt: number;
  layersTotal: number;
  layersDone: number;
  bytesTotal: number;
  bytesDone: number;
}

export interface FsUsage {
  mountpoint: string;
  bytes: number;
  inodes: number;
}

export class ImageService {
  private readonly pulls = new Map<string, Promise<ImageRecord>>();
  private readonly progress = new Map<string, PullProgress>();
  private readonly unpacks = new Map<string, Promise<void>>();
  private readonly lock = new KeyedMutex();
  private readonly pinnedNames: Set<string>;

  constructor(private readonly o: ImageServiceOptions) {
    this.pinnedNames = new Set(o.pinned.map((p) => normalise(p)));
  }

  /** Loads records and removes what a crash left half-done (ingests, uncommitted snapshots). */
  async start(): Promise<void> {
    await this.o.content.cleanup();
    await this.o.snapshots.cleanup();
    await this.o.images.load();
    await this.gc();
  }

  /** Pulls in flight, for operators (Status verbose info). */
  inFlight(): PullProgress[] {
    return [...this.progress.values()].map((p) => ({ ...p }));
  }

  list(filter?: string): ImageRecord[] {
    if (!filter) return this.o.images.list();
    const one = this.o.images.find(filter);
    return one ? [one] : [];
  }

  /** The image a name or id refers to, or undefined (ImageStatus answers a nil image, not an error). */
  status(name: string): ImageRecord | undefined {
    return this.o.images.find(name);
  }

  isPinned(record: ImageRecord): boolean {
    return [...record.repoTags, ...record.repoDigests].some((n) => this.pinnedNames.has(n));
  }

  /**
   * Pulls `image` and returns its record. Concurrent pulls of one reference share one pull; a pull goes on
   * when its caller gives up (kubelet retries after its own timeout and then joins it), bounded by the
   * progress timeout rather than by the caller's deadline.
   */
  async pull(image: string, credentials?: Credentials): Promise<ImageRecord> {
    const ref = parseReference(image);
    const key = formatReference(ref);
    let pull = this.pulls.get(key);
    if (!pull) {
      pull = this.doPull(ref, credentials).finally(() => {
        this.pulls.delete(key);
        this.progress.delete(key);
      });
      this.pulls.set(key, pull);
    }
    return pull;
  }

  /** Removes the image with all its names (CRI RemoveImage); idempotent. Frees unreferenced data. */
  async remove(name: string): Promise<void> {
    await this.lock.run('records', async () => {
      const record = this.o.images.find(name);
      if (!record) return;
      await this.o.images.remove(record.id);
      this.o.log.info('image removed', { image: record.repoTags[0] ?? record.id, id: record.id });
    });
    await this.gc();
  }

  /** Bytes and inodes of everything images occupy: snapshots and the compressed content store. */
  async fsUsage(): Promise<FsUsage> {
    const [snapshots, content, records] = await Promise.all([
      this.o.snapshots.usage(),
      this.o.content.usage(),
      diskUsage(`${this.o.root}/images`),
    ]);
    return {
      mountpoint: this.o.root,
      bytes: snapshots.bytes + content.bytes + records.bytes,
      inodes: snapshots.inodes + content.inodes + records.inodes,
    };
  }

  /**
   * Deletes blobs and snapshots no image refers to. Runs under the records lock so that a pull's final
   * record write and this sweep never interleave; a pull in flight holds its layers via `unpacks`.
   */
  async gc(): Promise<void> {
    await this.lock.run('records', async () => {
      if (this.pulls.size > 0) return; // a pull in flight may be about to reference anything unrecorded
      const blobs = new Set<string>();
      const chains = new Set<string>();
      for (const r of this.o.images.list()) {
        blobs.add(r.id);
        blobs.add(r.manifestDigest);
        for (const d of r.repoDigests) blobs.add(d.slice(d.lastIndexOf('@') + 1));
        for (const l of r.layers) {
          blobs.add(l.digest);
          chains.add(l.chainId);
        }
      }
      const snapshots = await this.o.snapshots.list();
      const parents = new Map(snapshots.map((s) => [s.chainId, s.parent]));
      for (const top of this.o.chainsInUse?.() ?? []) {
        // A container's rootfs stacks its image's whole chain, even once the image itself is removed.
        for (let c: string | null | undefined = top; c && !chains.has(c); c = parents.get(c)) chains.add(c);
      }
      for (const s of snapshots) {
        if (!chains.has(s.chainId)) await this.o.snapshots.remove(s.chainId);
      }
      for (const b of await this.o.content.list()) {
        if (!blobs.has(b.digest)) await this.o.content.delete(b.digest);
      }
    });
  }

  private async doPull(ref: Reference, credentials: Credentials | undefined): Promise<ImageRecord> {
    const image = formatReference(ref);
    const started = Date.now();
    const { registry, content } = this.o;
    const resolved = await registry.resolve(ref, credentials);
    const { endpoint } = resolved;
    let manifestDesc: Descriptor = resolved.descriptor;
    let manifestBytes = resolved.manifest;
    const top = parseManifest(manifestBytes, resolved.descriptor.mediaType);
    await content.writeBlob(manifestBytes, resolved.descriptor.digest);
    if (top.kind === 'index') {
      manifestDesc = selectPlatform(top.index);
      manifestBytes = await registry.fetchManifest(endpoint, ref.path, manifestDesc.digest, credentials);
      await content.writeBlob(manifestBytes, manifestDesc.digest);
    }
    const parsed = parseManifest(manifestBytes, manifestDesc.mediaType);
    if (parsed.kind !== 'manifest') {
      throw new SkiffError(
        'invalid-argument',
        `pull image ${JSON.stringify(image)}: ${manifestDesc.digest} is an index inside an index; skiff selects one level only`,
      );
    }
    const manifest: Manifest = parsed.manifest;
    const config = await this.fetchConfig(ref, endpoint, manifest.config, credentials);
    // An index entry without a platform, or a single-platform manifest, may still be for another machine.
    const platform = { os: config.os, architecture: config.architecture, variant: config.variant };
    if (!matchesPlatform(platform)) {
      throw new SkiffError(
        'not-found',
        `pull image ${JSON.stringify(image)}: it is built for ${formatPlatform(platform)}, and this node is ${formatPlatform(hostPlatform())}; use an image (or index) that includes this platform`,
      );
    }
    const diffIds = config.rootfs.diff_ids;
    if (diffIds.length !== manifest.layers.length) {
      throw new SkiffError(
        'invalid-argument',
        `pull image ${JSON.stringify(image)}: the manifest lists ${manifest.layers.length} layers but the config has ${diffIds.length} diff_ids`,
      );
    }
    const chains = chainIds(diffIds);
    const layers: LayerRecord[] = manifest.layers.map((l, i) => ({
      digest: l.digest,
      diffId: diffIds[i] ?? '',
      chainId: chains[i] ?? '',
      mediaType: l.mediaType,
      size: l.size,
    }));

    const progress: PullProgress = {
      image,
      startedAt: started,
      layersTotal: layers.length,
      layersDone: 0,
      bytesTotal: layers.reduce((n, l) => n + l.size, 0),
      bytesDone: 0,
    };
    this.progress.set(image, progress);
    const ticker = setInterval(() => {
      this.logProgress(progress);
    }, this.o.progressLogIntervalMs ?? 5000);
    try {
      await runLimited(layers, this.o.maxConcurrentDownloads, async (layer, i) => {
        await this.ensureLayer(
          ref,
          endpoint,
          layer,
          i === 0 ? undefined : chains[i - 1],
          credentials,
          progress,
        );
        progress.layersDone++;
      });
    } finally {
      clearInterval(ticker);
    }

    const names = {
      repoTags: ref.digest === undefined ? [tagged(ref)].filter((t): t is string => t !== undefined) : [],
      repoDigests: [digested(ref, resolved.descriptor.digest)].filter((d): d is string => d !== undefined),
    };
    const record = await this.lock.run('records', () =>
      this.o.images.put({
        version: IMAGE_RECORD_VERSION,
        id: manifest.config.digest,
        ...names,
        manifestDigest: manifestDesc.digest,
        size: manifest.config.size + manifestBytes.length + layers.reduce((n, l) => n + l.size, 0),
        layers,
        chainId: chains[chains.length - 1] ?? '',
        config,
        annotations: manifest.annotations ?? {},
        createdAt: Date.now(),
      }),
    );
    const ms = Date.now() - started;
    this.o.log.info('image pulled', {
      image,
      id: record.id,
      endpoint: endpoint.url,
      layers: layers.length,
      bytes: progress.bytesDone,
      durationMs: ms,
    });
    return record;
  }

  private async fetchConfig(
    ref: Reference,
    endpoint: Endpoint,
    desc: Descriptor,
    credentials: Credentials | undefined,
  ): Promise<ImageConfig> {
    await this.o.content.ingest(
      { digest: desc.digest, size: desc.size },
      (signal) =>
        this.o.registry.fetchBlob(endpoint, ref.path, desc, credentials, { signal, ...this.blobLimits() }),
      { label: `${endpoint.url} (${nameOf(ref)})` },
    );
    return parseImageConfig(await this.o.content.read(desc.digest));
  }

  private blobLimits(): { progressTimeoutMs: number; minBytesPerSecond: number } {
    return { progressTimeoutMs: this.o.progressTimeoutMs, minBytesPerSecond: this.o.minBytesPerSecond };
  }

  /** Makes sure the layer's snapshot exists; concurrent pulls needing the same chain ID share one unpack. */
  private async ensureLayer(
    ref: Reference,
    endpoint: Endpoint,
    layer: LayerRecord,
    parent: string | undefined,
    credentials: Credentials | undefined,
    progress: PullProgress,
  ): Promise<void> {
    if (await this.o.snapshots.has(layer.chainId)) {
      progress.bytesDone += layer.size;
      return;
    }
    let unpack = this.unpacks.get(layer.chainId);
    if (!unpack) {
      unpack = this.fetchAndUnpack(ref, endpoint, layer, parent, credentials, progress).finally(() => {
        this.unpacks.delete(layer.chainId);
      });
      this.unpacks.set(layer.chainId, unpack);
    }
    await unpack;
  }

  private async fetchAndUnpack(
    ref: Reference,
    endpoint: Endpoint,
    layer: LayerRecord,
    parent: string | undefined,
    credentials: Credentials | undefined,
    progress: PullProgress,
  ): Promise<void> {
    const label = `layer ${layer.digest} of ${formatReference(ref)} from ${endpoint.url}`;
    const { key, fsDir } = await this.o.snapshots.prepare();
    try {
      const tee = new PassThrough({ highWaterMark: 1 << 20 });
      const [unpacked, ingested] = await Promise.allSettled([
        unpackLayer(tee, layer.mediaType, fsDir, { label: `layer ${layer.digest}` }),
        this.o.content.ingest(
          { digest: layer.digest, size: layer.size },
          (signal) =>
            this.o.registry.fetchBlob(
              endpoint,
              ref.path,
              { mediaType: layer.mediaType, digest: layer.digest, size: layer.size },
              credentials,
              { signal, ...this.blobLimits() },
            ),
          {
            tee,
            label: `${endpoint.url} (${nameOf(ref)})`,
            onProgress: (bytes) => {
              progress.bytesDone += bytes;
            },
          },
        ),
      ]);
      if (ingested.status === 'rejected') throw ingested.reason;
      if (unpacked.status === 'rejected') {
        // A hostile or broken layer is verified content we refuse: drop it so it is not kept around.
        await this.o.content.delete(layer.digest).catch(() => undefined);
        throw isSkiffError(unpacked.reason)
          ? new SkiffError(
              unpacked.reason.kind,
              `pull image ${JSON.stringify(formatReference(ref))}: ${unpacked.reason.message}`,
              {
                cause: unpacked.reason,
              },
            )
          : unpacked.reason;
      }
      if (unpacked.value.diffId !== layer.diffId) {
        throw new SkiffError(
          'data-loss',
          `unpack ${label}: uncompressed digest ${unpacked.value.diffId} does not match the config's diff_id ${layer.diffId}`,
        );
      }
      await this.o.snapshots.commit(key, {
        chainId: layer.chainId,
        parent,
        diffId: layer.diffId,
        size: unpacked.value.size,
      });
    } catch (err) {
      await this.o.snapshots.abort(key).catch((e: unknown) => {
        this.o.log.warn('could not remove a failed snapshot', { key, error: messageOf(e) });
      });
      throw err;
    }
  }

  private logProgress(p: PullProgress): void {
    const seconds = (Date.now() - p.startedAt) / 1000;
    this.o.log.info('pulling image', {
      image: p.image,
      layers: `${p.layersDone}/${p.layersTotal}`,
      bytes: `${p.bytesDone}/${p.bytesTotal}`,
      rateBytesPerSecond: Math.round(p.bytesDone / Math.max(seconds, 0.001)),
      elapsedSeconds: Math.round(seconds),
    });
  }
}

function normalise(name: string): string {
  try {
    const ref = parseReference(name);
    return ref.digest !== undefined ? (digested(ref) ?? name) : (tagged(ref) ?? name);
  } catch {
    return name;
  }
}

/** Runs `fn` over `items` with at most `limit` at once; the first failure rejects after all settle. */
async function runLimited<T>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<void>) {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (next < items.length && !failure) {
      const i = next++;
      try {
        await fn(items[i] as T, i);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.err;
}
