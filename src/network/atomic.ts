/**
 * Atomic file replacement for the CNI result cache (design guide, "On disk": a temp file in the same
 * directory, fsync, rename, fsync the directory). network/ may not import store/, so this is the same
 * pattern as `src/store/atomic.ts`, kept small; if it moves to util/ both can share it.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** The marker in temp-file names, so start-up can remove the leftovers of a crash mid-write. */
export const TEMP_MARKER = '.tmp-';

/** Replaces `path` with `data`: readers, and the next start after a crash, see old or new, never a mix. */
export async function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}${TEMP_MARKER}${randomBytes(6).toString('hex')}`);
  const fh = await open(temp, 'wx', mode);
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dir);
}

/** Makes the directory entries of `dir` (creations, renames, unlinks) durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** True for names `writeFileAtomic` uses for its temp files. */
export function isTempName(name: string): boolean {
  return name.startsWith('.') && name.includes(TEMP_MARKER);
}
