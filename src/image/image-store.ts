/**
 * Image records: what the ImageService reports. One JSON file per image under `<root>/images/<hex>.json`
 * (hex of the config digest, which is the image id, as in containerd and CRI-O), written atomically and
 * only after every layer is unpacked and its diffID checked (design: "an image record exists only after
 * every layer is unpacked"). Tags and digests are indexed in memory, rebuilt from the files at start.
 */
import { mkdir, readFile, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { SkiffError } from '../errdefs.js';
import type { Logger } from '../log.js';
import { fsyncDir, isAtomicTemp, writeFileAtomic } from '../util/atomic.js';
import type { ImageConfig } from './oci-image.js';
import { type Reference, nameOf, parseReference } from './reference.js';

export const IMAGE_RECORD_VERSION = 1;

export interface LayerRecord {
  digest: string;
  diffId: string;
  chainId: string;
  mediaType: string;
  size: number;
}

export interface ImageRecord {
  version: typeof IMAGE_RECORD_VERSION;
  /** The config digest, `sha256:<hex>`. */
  id: string;
  /** `domain/path:tag` names, normalised. */
  repoTags: string[];
  /** `domain/path@<manifest or index digest>`. */
  repoDigests: string[];
  /** Digest of the platform manifest the layers came from. */
  manifestDigest: string;
  /** Compressed layers + config + manifest, as containerd reports `size`. */
  size: number;
  layers: LayerRecord[];
  /** ChainID of the top layer: the snapshot a container's rootfs is built on. */
  chainId: string;
  config: ImageConfig;
  annotations: Record<string, string>;
  /** Unix ms of the first pull of this image. */
  createdAt: number;
}

export class ImageStore {
  private readonly dir: string;
  private readonly byId = new Map<string, ImageRecord>();

  constructor(private readonly options: { root: string; log: Logger }) {
    this.dir = join(options.root, 'images');
  }

  /** Loads every record; a record of an unknown version refuses to load, naming the file. */
  async load(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.dir)) {
      const file = join(this.dir, name);
      if (isAtomicTemp(name)) {
        await unlink(file).catch(() => undefined);
        this.options.log.info('removed a partial image record', { file });
        continue;
      }
      if (!name.endsWith('.json')) continue;
      const record = JSON.parse(await readFile(file, 'utf8')) as { version?: unknown };
      if (record.version !== IMAGE_RECORD_VERSION) {
        throw new SkiffError(
          'failed-precondition',
          `load image record ${file}: unknown version ${JSON.stringify(record.version)}; this skiff reads version ${IMAGE_RECORD_VERSION}`,
        );
      }
      const image = record as ImageRecord;
      this.byId.set(image.id, image);
    }
  }

  list(): ImageRecord[] {
    return [...this.byId.values()];
  }

  get(id: string): ImageRecord | undefined {
    return this.byId.get(id);
  }

  /**
   * Finds an image by what a CRI client may name it with: an id (`sha256:<hex>`, the bare hex, or a unique
   * prefix of either, as crictl accepts), a tag, or a `name@digest`.
   */
  find(name: string): ImageRecord | undefined {
    const byId = this.byId.get(name) ?? this.byId.get(`sha256:${name}`);
    if (byId) return byId;
    let ref: Reference | undefined;
    try {
      ref = parseReference(name);
    } catch {
      ref = undefined;
    }
    if (ref) {
      const full = nameOf(ref);
      for (const r of this.byId.values()) {
        if (ref.digest !== undefined) {
          if (r.repoDigests.includes(`${full}@${ref.digest}`)) return r;
        } else if (r.repoTags.includes(`${full}:${ref.tag ?? 'latest'}`)) {
          return r;
        }
      }
    }
    // A unique id prefix of at least a few characters (crictl shortens ids to 13).
    const hex = name.startsWith('sha256:') ? name.slice(7) : name;
    if (/^[0-9a-f]{4,63}$/.test(hex)) {
      const matches = [...this.byId.values()].filter((r) => r.id.slice(7).startsWith(hex));
      if (matches.length === 1) return matches[0];
    }
    return undefined;
  }

  /**
   * Records a pulled image. Tags and digests named here move to it from any other image (a tag names one
   * image); the other image keeps its remaining names, as containerd's image store does.
   */
  async put(record: ImageRecord): Promise<ImageRecord> {
    const existing = this.byId.get(record.id);
    const merged: ImageRecord = existing
      ? {
          ...record,
          repoTags: union(existing.repoTags, record.repoTags),
          repoDigests: union(existing.repoDigests, record.repoDigests),
          createdAt: existing.createdAt,
        }
      : record;
    for (const other of this.byId.values()) {
      if (other.id === record.id) continue;
      const repoTags = other.repoTags.filter((t) => !record.repoTags.includes(t));
      if (repoTags.length !== other.repoTags.length) await this.write({ ...other, repoTags });
    }
    await this.write(merged);
    return merged;
  }

  /** Removes the record (first, per the design's "a record is removed first"). Idempotent. */
  async remove(id: string): Promise<void> {
    if (!this.byId.has(id)) return;
    this.byId.delete(id);
    await unlink(this.file(id)).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    });
    await fsyncDir(this.dir);
  }

  private file(id: string): string {
    return join(this.dir, `${id.replace(/^sha256:/, '')}.json`);
  }

  private async write(record: ImageRecord): Promise<void> {
    await writeFileAtomic(this.file(record.id), JSON.stringify(record), 0o600);
    this.byId.set(record.id, record);
  }
}

function union(a: readonly string[], b: readonly string[]): string[] {
  return [...new Set([...a, ...b])];
}
