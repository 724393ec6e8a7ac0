/**
 * Overlay snapshots: one directory per unpacked layer, named by the layer's ChainID (image-spec config.md)
 * through a record, and stacked by overlayfs into an image's root filesystem.
 *
 * Vocabulary and lifecycle:
 * - `prepare()` makes an *active* snapshot: `<root>/tmp-<random>/{fs,work}`; its `fs` dir is where a
 *   layer is unpacked. Nothing else sees it; `abort(key)` deletes it, and so does `cleanup()` after a crash.
 * - `commit(key, …)` makes it *committed*: the dir is renamed to `<root>/<id>` (one rename, so a snapshot
 *   dir is either complete or absent), then its record `<root>/<id>.json` is written atomically. The record
 *   is the commit point (design: "a record is written last and removed first"): a dir without a record is
 *   garbage, removed at start-up. Committed snapshots are immutable.
 * - `remove(chainId)` deletes the record, then the dir. It refuses while another snapshot names it as
 *   parent (containerd's snapshotters refuse too), and `list()` returns children before parents so that a
 *   sweep in list order can remove a whole chain.
 *
 * Idempotence: `commit` of a chain ID that is already committed (another pull won the race) discards the
 * new copy and returns the existing snapshot; `abort` of an unknown key and `remove` of an unknown chain
 * ID succeed.
 *
 * Ids are small integers, not the 64-hex chain ID: overlayfs takes all lower dirs in one mount option
 * string of at most 4095 bytes, and `<root>/12/fs` is ~60 bytes shorter per layer than a digest would be,
 * which with mount.ts's relative-path fallback fits hundreds of layers (containerd does the same).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { SkiffError, messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';
import { overlayMount, type Mount } from './mount.js';
import { fsyncDir, isAtomicTemp, writeFileAtomic } from '../util/atomic.js';
import { diskUsage, type DiskUsage } from './usage.js';

export const SNAPSHOT_RECORD_VERSION = 1;

/** `<root>/<id>.json`: immutable once written. */
export interface SnapshotRecord {
  version: typeof SNAPSHOT_RECORD_VERSION;
  /** The directory name under the snapshots root (a decimal integer). */
  id: string;
  chainId: string;
  /** The chain ID of the layers below, or null for a base layer. */
  parent: string | null;
  diffId: string;
  /** Uncompressed tar bytes of the layer. */
  size: number;
  /** Disk usage of the `fs` dir, measured once at commit (committed snapshots never change). */
  usage: DiskUsage;
  /** RFC 3339. */
  created: string;
}

export interface Snapshot extends SnapshotRecord {
  /** The layer's files: an overlay lower dir. */
  fsDir: string;
}

export interface CommitInfo {
  chainId: string;
  parent?: string | undefined;
  diffId: string;
  size: number;
}

export interface SnapshotStoreOptions {
  /** `<root>/snapshots`. */
  root: string;
  log: Logger;
}

const KEY = /^tmp-[a-f0-9]{16}$/;
const ID = /^[1-9][0-9]*$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;

export class SnapshotStore {
  readonly root: string;
  private readonly log: Logger;
  /** chainId → record; changed only synchronously, never across an await. */
  private readonly index = new Map<string, SnapshotRecord>();
  private readonly committing = new Map<string, Promise<Snapshot>>();
  private readonly active = new Set<string>();
  private nextId = 1;
  private loading: Promise<void> | undefined;

  constructor(options: SnapshotStoreOptions) {
    this.root = options.root;
    this.log = options.log;
  }

  async has(chainId: string): Promise<boolean> {
    await this.ready();
    return this.index.has(chainId);
  }

  async get(chainId: string): Promise<Snapshot | undefined> {
    await this.ready();
    const record = this.index.get(chainId);
    return record ? this.snapshot(record) : undefined;
  }

  /** Committed snapshots, children before their parents. */
  async list(): Promise<Snapshot[]> {
    await this.ready();
    const depth = (r: SnapshotRecord): number => {
      let n = 0;
      for (let p = r.parent; p !== null && n <= this.index.size; n++) p = this.index.get(p)?.parent ?? null;
      return n;
    };
    return [...this.index.values()]
      .map((r) => ({ r, d: depth(r) }))
      .sort((a, b) => b.d - a.d || Number(b.r.id) - Number(a.r.id))
      .map(({ r }) => this.snapshot(r));
  }

  /** A new active snapshot to unpack a layer into; `fsDir` is empty. */
  async prepare(): Promise<{ key: string; fsDir: string }> {
    await this.ready();
    const key = `tmp-${randomBytes(8).toString('hex')}`;
    const dir = join(this.root, key);
    this.active.add(key);
    try {
      await mkdir(dir, { mode: 0o700 });
      await mkdir(join(dir, 'fs'), { mode: 0o755 });
      await mkdir(join(dir, 'work'), { mode: 0o700 });
    } catch (err) {
      this.active.delete(key);
      await rm(dir, { recursive: true, force: true });
      throw fsError(err, `prepare snapshot in ${this.root}`);
    }
    return { key, fsDir: join(dir, 'fs') };
  }

  /**
   * Commits the active snapshot `key` as `info.chainId`. The parent need not be committed yet (layers
   * unpack in parallel); it must be by the time the chain is mounted.
   */
  async commit(key: string, info: CommitInfo): Promise<Snapshot> {
    checkKey(key);
    const digests: [string, string | undefined][] = [
      ['chain id', info.chainId],
      ['diff id', info.diffId],
      ['parent', info.parent],
    ];
    for (const [what, d] of digests) {
      if (d !== undefined && !DIGEST.test(d)) {
        throw new SkiffError(
          'invalid-argument',
          `commit snapshot: ${what} ${JSON.stringify(d)} is not a sha256 digest`,
        );
      }
    }
    if (info.parent === info.chainId) {
      throw new SkiffError(
        'invalid-argument',
        `commit snapshot ${info.chainId}: it cannot be its own parent`,
      );
    }
    await this.ready();
    for (;;) {
      const existing = this.index.get(info.chainId);
      if (existing) {
        // Another pull committed the same layer first: ours is a duplicate.
        await this.abort(key);
        return this.snapshot(existing);
      }
      const inFlight = this.committing.get(info.chainId);
      if (!inFlight) break;
      await inFlight.catch(() => undefined); // then look again: it either committed or failed
    }
    const committing = this.commitNow(key, info);
    this.committing.set(info.chainId, committing);
    try {
      return await committing;
    } finally {
      this.committing.delete(info.chainId);
    }
  }

  /** Deletes an active snapshot; an unknown key succeeds. */
  async abort(key: string): Promise<void> {
    checkKey(key);
    await rm(join(this.root, key), { recursive: true, force: true });
    this.active.delete(key);
  }

  /** Removes a committed snapshot: record first, then the dir. An unknown chain ID succeeds. */
  async remove(chainId: string): Promise<void> {
    await this.ready();
    const record = this.index.get(chainId);
    if (!record) return;
    const child = [...this.index.values()].find((r) => r.parent === chainId);
    if (child) {
      throw new SkiffError(
        'failed-precondition',
        `remove snapshot ${chainId}: snapshot ${child.chainId} is stacked on it; remove that one first`,
      );
    }
    this.index.delete(chainId);
    try {
      await unlink(this.recordPath(record.id));
      await fsyncDir(this.root);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.index.set(chainId, record);
        throw fsError(err, `remove snapshot ${chainId}`);
      }
    }
    await rm(join(this.root, record.id), { recursive: true, force: true });
  }

  /** Disk usage of committed snapshots (measured at commit) plus active ones (walked now). */
  async usage(): Promise<DiskUsage> {
    await this.ready();
    const total: DiskUsage = { bytes: 0, inodes: 0 };
    for (const r of this.index.values()) {
      total.bytes += r.usage.bytes;
      total.inodes += r.usage.inodes;
    }
    for (const key of this.active) {
      const u = await diskUsage(join(this.root, key));
      total.bytes += u.bytes;
      total.inodes += u.inodes;
    }
    return total;
  }

  /**
   * The `fs` dirs of the chain ending at `topChainId`, top layer first (overlayfs lowerdir order).
   * `not-found` when the snapshot or any parent is missing.
   */
  async lowerDirs(topChainId: string): Promise<string[]> {
    await this.ready();
    const dirs: string[] = [];
    const seen = new Set<string>();
    for (let chainId: string | null = topChainId; chainId !== null;) {
      const record = this.index.get(chainId);
      if (!record) {
        throw new SkiffError(
          'not-found',
          chainId === topChainId
            ? `snapshot ${topChainId} not found`
            : `snapshot chain of ${topChainId} is broken: parent ${chainId} is missing; pull the image again`,
        );
      }
      if (seen.has(chainId))
        throw new SkiffError('data-loss', `snapshot chain of ${topChainId} loops at ${chainId}`);
      seen.add(chainId);
      dirs.push(this.fsDir(record.id));
      chainId = record.parent;
    }
    return dirs;
  }

  /** The mount for a chain's lower dirs (from `lowerDirs`), optionally with a writable upper. */
  mountOptions(lowerDirs: readonly string[], upperDir?: string, workDir?: string): Mount {
    return overlayMount(lowerDirs, upperDir, workDir);
  }

  /**
   * Start-up: loads the records, and removes what a crash left: active snapshots (`tmp-*`), snapshot
   * dirs without a record, temp files of interrupted record writes, and records whose dir is gone.
   * An unreadable record or one of an unknown version stops the load, naming the file.
   */
  async cleanup(): Promise<void> {
    await this.ready();
    for (const name of await readdir(this.root)) {
      const path = join(this.root, name);
      if (KEY.test(name)) {
        if (this.active.has(name)) continue;
        await rm(path, { recursive: true, force: true });
        this.log.info('removed unfinished snapshot', { snapshot: name });
      } else if (isAtomicTemp(name)) {
        await rm(path, { force: true });
      } else if (ID.test(name) && !this.hasId(name)) {
        await rm(path, { recursive: true, force: true });
        this.log.info('removed snapshot dir without a record', { snapshot: name });
      }
    }
  }

  // -------------------------------------------------------------------------------------------------------

  private async commitNow(key: string, info: CommitInfo): Promise<Snapshot> {
    const tmp = join(this.root, key);
    try {
      if (!(await stat(join(tmp, 'fs'))).isDirectory()) throw new Error('fs is not a directory');
    } catch (err) {
      throw new SkiffError('not-found', `commit snapshot ${info.chainId}: no active snapshot ${key}`, {
        cause: err,
      });
    }
    const usage = await diskUsage(join(tmp, 'fs'));
    // Allocated synchronously: two commits never get one id.
    const id = String(this.nextId++);
    const record: SnapshotRecord = {
      version: SNAPSHOT_RECORD_VERSION,
      id,
      chainId: info.chainId,
      parent: info.parent ?? null,
      diffId: info.diffId,
      size: info.size,
      usage,
      created: new Date().toISOString(),
    };
    const dir = join(this.root, id);
    try {
      await rename(tmp, dir);
      this.active.delete(key);
      await fsyncDir(this.root);
      await writeFileAtomic(this.recordPath(id), `${JSON.stringify(record, null, 2)}\n`);
    } catch (err) {
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      await this.abort(key).catch(() => undefined);
      throw fsError(err, `commit snapshot ${info.chainId}`);
    }
    this.index.set(info.chainId, record);
    this.log.debug('snapshot committed', { chainId: info.chainId, snapshot: id, bytes: usage.bytes });
    return this.snapshot(record);
  }

  /** Loads the index once (non-destructive; `cleanup` does the removals). */
  private ready(): Promise<void> {
    this.loading ??= this.load().catch((err: unknown) => {
      this.loading = undefined;
      throw err;
    });
    return this.loading;
  }

  private async load(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    const names = await readdir(this.root);
    let maxId = 0;
    for (const name of names) {
      const m = /^([1-9][0-9]*)(\.json)?$/.exec(name);
      if (!m?.[1]) continue;
      maxId = Math.max(maxId, Number(m[1]));
      if (m[2] === undefined) continue;
      const file = join(this.root, name);
      const record = parseRecord(await readFile(file, 'utf8'), file);
      if (record.id !== m[1]) {
        throw new SkiffError(
          'data-loss',
          `load snapshot record ${file}: it names id ${JSON.stringify(record.id)}`,
        );
      }
      if (!names.includes(record.id)) {
        // Cannot come from our own order of writes (dir first, record last); repair it.
        this.log.warn('removed snapshot record without its dir', { file, chainId: record.chainId });
        await unlink(file);
        continue;
      }
      const other = this.index.get(record.chainId);
      if (other) {
        // Also impossible by construction; keep one, the older.
        const [keep, drop] = Number(other.id) < Number(record.id) ? [other, record] : [record, other];
        this.index.set(keep.chainId, keep);
        await unlink(this.recordPath(drop.id));
        this.log.warn('removed duplicate snapshot record', { chainId: record.chainId, snapshot: drop.id });
        continue;
      }
      this.index.set(record.chainId, record);
    }
    this.nextId = Math.max(this.nextId, maxId + 1);
  }

  private hasId(id: string): boolean {
    for (const r of this.index.values()) if (r.id === id) return true;
    return false;
  }

  private snapshot(record: SnapshotRecord): Snapshot {
    return { ...record, usage: { ...record.usage }, fsDir: this.fsDir(record.id) };
  }

  private fsDir(id: string): string {
    return join(this.root, id, 'fs');
  }

  private recordPath(id: string): string {
    return join(this.root, `${id}.json`);
  }
}

function checkKey(key: string): void {
  if (!KEY.test(key))
    throw new SkiffError(
      'invalid-argument',
      `snapshot key ${JSON.stringify(key)} is not one prepare() returned`,
    );
}

function parseRecord(text: string, file: string): SnapshotRecord {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new SkiffError(
      'data-loss',
      `load snapshot record ${file}: ${messageOf(err)}; remove it and its dir to re-pull`,
      {
        cause: err,
      },
    );
  }
  const r = value as Partial<SnapshotRecord> | null;
  if (r?.version !== SNAPSHOT_RECORD_VERSION) {
    throw new SkiffError(
      'failed-precondition',
      `load snapshot record ${file}: unknown version ${JSON.stringify(r?.version)} (this skiff reads version ${SNAPSHOT_RECORD_VERSION}); upgrade skiff or remove the snapshots dir`,
    );
  }
  const ok =
    typeof r.id === 'string' &&
    typeof r.chainId === 'string' &&
    DIGEST.test(r.chainId) &&
    (r.parent === null || (typeof r.parent === 'string' && DIGEST.test(r.parent))) &&
    typeof r.diffId === 'string' &&
    typeof r.size === 'number' &&
    typeof r.usage?.bytes === 'number' &&
    typeof r.usage.inodes === 'number' &&
    typeof r.created === 'string';
  if (!ok) throw new SkiffError('data-loss', `load snapshot record ${file}: missing or malformed fields`);
  return r as SnapshotRecord;
}

function fsError(err: unknown, what: string): SkiffError {
  if (err instanceof SkiffError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new SkiffError('resource-exhausted', `${what}: no space left on device`, { cause: err });
  }
  return new SkiffError('internal', `${what}: ${messageOf(err)}`, { cause: err });
}
