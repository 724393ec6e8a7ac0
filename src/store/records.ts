/**
 * Records of sandboxes and containers: `<dir>/<id>/metadata.json` (immutable: what was asked for) and
 * `status.json` (mutable: what is), written atomically. The metadata is written last and removed first
 * (design: "a record is written last and removed first"), so a dir without metadata is an interrupted
 * create that recovery tears down. Lookups take a full id or a unique prefix, as crictl does.
 */
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SkiffError } from '../errdefs.js';
import { writeFileAtomic, writeFilesAtomic } from '../util/atomic.js';

export interface Versioned {
  version: number;
}

/** What every record's metadata has: an id, a creation time (unix ns, decimal) and labels. */
export interface RecordMetadata extends Versioned {
  id: string;
  createdAt: string;
  config: { labels: Record<string, string> };
}

export interface StoredRecord<M extends RecordMetadata, S extends Versioned> {
  metadata: M;
  status: S;
}

export interface RecordStoreOptions {
  dir: string;
  /** What a record is, for messages: "pod sandbox", "container". */
  what: string;
  version: number;
}

export class RecordStore<M extends RecordMetadata, S extends Versioned> {
  readonly dir: string;
  private readonly byId = new Map<string, StoredRecord<M, S>>();
  /** The records oldest first, kept until one is added or removed (List* runs far more often). */
  private ordered: StoredRecord<M, S>[] | undefined;

  constructor(private readonly o: RecordStoreOptions) {
    this.dir = o.dir;
  }

  /** Loads every complete record; returns the ids of dirs without metadata (interrupted creates). */
  async load(): Promise<string[]> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const orphans: string[] = [];
    for (const id of await readdir(this.dir)) {
      let metadata: M;
      let status: S;
      try {
        metadata = JSON.parse(await readFile(join(this.dir, id, 'metadata.json'), 'utf8')) as M;
        status = JSON.parse(await readFile(join(this.dir, id, 'status.json'), 'utf8')) as S;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          orphans.push(id);
          continue;
        }
        throw new SkiffError(
          'data-loss',
          `load ${this.o.what} record ${join(this.dir, id)}: ${String(err)}`,
          {
            cause: err,
          },
        );
      }
      for (const [part, v] of [
        ['metadata', metadata.version as unknown],
        ['status', status.version as unknown],
      ] as const) {
        if (v !== this.o.version) {
          throw new SkiffError(
            'failed-precondition',
            `load ${this.o.what} ${part} ${join(this.dir, id)}: unknown version ${JSON.stringify(v)}; this skiff reads version ${this.o.version}`,
          );
        }
      }
      this.byId.set(id, { metadata, status });
      this.ordered = undefined;
    }
    return orphans;
  }

  list(): StoredRecord<M, S>[] {
    return [...this.byId.values()];
  }

  /**
   * The List* filter: records whose id starts with `idPrefix`, whose labels include every pair of
   * `labels` (the CRI label selector) and that pass `where`, oldest first.
   */
  select(filter: {
    idPrefix?: string | undefined;
    labels?: Record<string, string> | undefined;
    where?: (r: StoredRecord<M, S>) => boolean;
  }): StoredRecord<M, S>[] {
    const { idPrefix, where } = filter;
    const labels = Object.entries(filter.labels ?? {});
    this.ordered ??= [...this.byId.values()].sort((a, b) =>
      compareDecimal(a.metadata.createdAt, b.metadata.createdAt),
    );
    return this.ordered.filter(
      (r) =>
        (!idPrefix || r.metadata.id.startsWith(idPrefix)) &&
        labels.every(([k, v]) => r.metadata.config.labels[k] === v) &&
        (!where || where(r)),
    );
  }

  get(id: string): StoredRecord<M, S> | undefined {
    return this.byId.get(id);
  }

  /**
   * The record a full id or a unique prefix names. Unknown → not-found; a prefix that matches several →
   * invalid-argument listing them.
   */
  resolve(idOrPrefix: string): StoredRecord<M, S> {
    const exact = this.byId.get(idOrPrefix);
    if (exact) return exact;
    const matches = idOrPrefix
      ? [...this.byId.values()].filter((r) => r.metadata.id.startsWith(idOrPrefix))
      : [];
    if (matches.length === 1 && matches[0]) return matches[0];
    if (matches.length > 1) {
      throw new SkiffError(
        'invalid-argument',
        `${this.o.what} id prefix "${idOrPrefix}" is ambiguous: it matches ${matches.map((m) => m.metadata.id.slice(0, 13)).join(', ')}; give more characters`,
      );
    }
    throw new SkiffError('not-found', `${this.o.what} "${idOrPrefix}" not found`);
  }

  /** The record's persistent dir (other persistent files of the object may live here too). */
  dirOf(id: string): string {
    return join(this.dir, id);
  }

  async writeStatus(id: string, status: S): Promise<void> {
    await writeFileAtomic(join(this.dirOf(id), 'status.json'), JSON.stringify(status), 0o600);
    const r = this.byId.get(id);
    if (r) r.status = status;
  }

  /** Makes the object exist: status first, metadata last (its presence means "complete"). */
  async create(record: StoredRecord<M, S>): Promise<void> {
    const dir = this.dirOf(record.metadata.id);
    await writeFilesAtomic(dir, [
      { name: 'status.json', data: JSON.stringify(record.status), mode: 0o600 },
      { name: 'metadata.json', data: JSON.stringify(record.metadata), mode: 0o600 },
    ]);
    this.byId.set(record.metadata.id, record);
    this.ordered = undefined;
  }

  /** Forgets the record first, then deletes its dir. Idempotent. */
  async remove(id: string): Promise<void> {
    this.byId.delete(id);
    this.ordered = undefined;
    await rm(join(this.dirOf(id), 'metadata.json'), { force: true });
    await rm(this.dirOf(id), { recursive: true, force: true });
  }
}

/**
 * Orders two non-negative decimal strings numerically without parsing them: a shorter one is smaller,
 * equal lengths compare as text. (Parsing createdAt into BigInts in every comparison was most of
 * ListContainers' sort with 500 containers.)
 */
function compareDecimal(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
