/**
 * Disk usage of a tree, as `du` counts it: allocated blocks (st_blocks × 512, so sparse files are not
 * over-counted) and inodes, each hardlinked inode once. CRI's ImageFsInfo reports exactly these two numbers
 * (FilesystemUsage.used_bytes and inodes_used).
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

export interface DiskUsage {
  bytes: number;
  inodes: number;
}

/** lstat calls in flight at once: enough to keep libuv's threadpool busy without flooding it. */
const PARALLEL = 32;

/**
 * Walks `root` without following symlinks; a missing root counts as empty, and entries that vanish
 * mid-walk are skipped (a concurrent removal is not an error for a usage figure).
 */
export async function diskUsage(root: string): Promise<DiskUsage> {
  const seen = new Set<string>();
  const usage: DiskUsage = { bytes: 0, inodes: 0 };
  const visit = async (path: string): Promise<string | undefined> => {
    let st;
    try {
      st = await lstat(path);
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
    if (st.nlink > 1 && !st.isDirectory()) {
      const id = `${st.dev}:${st.ino}`;
      if (seen.has(id)) return undefined;
      seen.add(id);
    }
    usage.inodes += 1;
    usage.bytes += st.blocks * 512;
    return st.isDirectory() ? path : undefined;
  };

  let dirs = [await visit(root)].filter((d): d is string => d !== undefined);
  while (dirs.length > 0) {
    const next: string[] = [];
    for (const dir of dirs) {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if (isMissing(err)) continue;
        throw err;
      }
      for (let i = 0; i < names.length; i += PARALLEL) {
        const found = await Promise.all(names.slice(i, i + PARALLEL).map((n) => visit(join(dir, n))));
        for (const d of found) if (d !== undefined) next.push(d);
      }
    }
    dirs = next;
  }
  return usage;
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
