/**
 * The attachment cache, `<cacheDir>/results/<sandboxId>.json`: what ADD was run with and what it returned,
 * as libcni caches it, because DEL and CHECK must get the same parameters and the ADD's result as
 * `prevResult` (CNI SPEC.md 1.0.0, "Section 3: Deleting an attachment": "The previous result provided is
 * always the final result of the add operation"), also after a restart or after conf_dir changed.
 *
 * A record is written before the first plugin runs, without `result`, and again with it when ADD is done:
 * a record without a result is an attach that crashed midway, which recovery deletes like any other
 * (SPEC §3 "Lifecycle & Ordering": "A delete must still be executed even if the add fails").
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SkiffError, messageOf } from '../errdefs.js';
import { fsyncDir, isAtomicTemp as isTempName, writeFileAtomic } from '../util/atomic.js';
import type { NetworkConfList } from './conf.js';

export const CACHE_VERSION = 1;

export interface CacheRecord {
  version: typeof CACHE_VERSION;
  sandboxId: string;
  /** The exact network configuration list ADD ran. */
  network: NetworkConfList;
  /** The capability arguments offered (SPEC §3 "Deriving runtimeConfig"), e.g. `portMappings`. */
  runtimeConfig: Record<string, unknown>;
  ifName: string;
  netnsPath: string;
  cniArgs: string;
  /** The final plugin's result; absent while ADD is running (or when it never finished). */
  result?: Record<string, unknown>;
  createdAt: string;
}

/**
 * Parses a cache file. An unknown `version` refuses to load, naming the file (design: records carry a
 * version); a file that is not a record is `data-loss`.
 */
export function parseCacheRecord(text: string, file: string): CacheRecord {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new SkiffError('data-loss', `load cni cache ${file}: invalid JSON: ${messageOf(err)}`);
  }
  if (typeof v !== 'object' || v === null) {
    throw new SkiffError('data-loss', `load cni cache ${file}: not a JSON object`);
  }
  const r = v as Partial<CacheRecord> & { version?: unknown };
  if (r.version !== CACHE_VERSION) {
    throw new SkiffError(
      'failed-precondition',
      `load cni cache ${file}: unknown version ${JSON.stringify(r.version)} (this skiff reads version ${CACHE_VERSION})`,
    );
  }
  const network = r.network;
  if (
    typeof r.sandboxId !== 'string' ||
    typeof r.ifName !== 'string' ||
    typeof r.netnsPath !== 'string' ||
    typeof r.cniArgs !== 'string' ||
    typeof network !== 'object' ||
    !Array.isArray(network.plugins) ||
    typeof network.name !== 'string' ||
    typeof network.cniVersion !== 'string'
  ) {
    throw new SkiffError('data-loss', `load cni cache ${file}: missing fields of a cache record`);
  }
  return { ...(r as CacheRecord), runtimeConfig: r.runtimeConfig ?? {} };
}

export class ResultCache {
  constructor(readonly dir: string) {}

  path(sandboxId: string): string {
    return join(this.dir, `${sandboxId}.json`);
  }

  async read(sandboxId: string): Promise<CacheRecord | undefined> {
    const file = this.path(sandboxId);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new SkiffError('unknown', `load cni cache ${file}: ${messageOf(err)}`, { cause: err });
    }
    return parseCacheRecord(text, file);
  }

  async write(record: CacheRecord): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(this.path(record.sandboxId), `${JSON.stringify(record, null, 2)}\n`, 0o600);
  }

  async remove(sandboxId: string): Promise<void> {
    await rm(this.path(sandboxId), { force: true });
    await fsyncDir(this.dir).catch(() => undefined);
  }

  /** Sandbox ids with a record, sorted. */
  async list(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return names
      .filter((n) => n.endsWith('.json') && !isTempName(n))
      .map((n) => n.slice(0, -'.json'.length))
      .sort();
  }

  /** Removes temp files a crash left mid-write; returns their names. */
  async removeTemps(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return [];
    }
    const temps = names.filter(isTempName);
    for (const n of temps) await rm(join(this.dir, n), { force: true });
    return temps;
  }
}
