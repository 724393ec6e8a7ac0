/**
 * Atomic file replacement (design guide, "On disk": a temp file in the same directory, fsync, rename,
 * fsync the directory). A reader, or the next start after a crash, sees the old contents or the new ones,
 * never a mix: rename(2) within one filesystem replaces the name atomically, the file's fsync makes the new
 * bytes durable before the name can point at them, and the directory's fsync makes the rename itself durable.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** The marker in temp-file names, so start-up cleanups can recognise leftovers of a crash mid-write. */
export const ATOMIC_TEMP_MARKER = '.tmp-';

/**
 * Replaces `path` with `data` atomically and durably. `mode` applies to a newly written file (default
 * 0o644); the temp file is created exclusively, so a stale temp never gets reused.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await writeFilesAtomic(dirname(path), [{ name: basename(path), data, mode }]);
}

export interface AtomicFile {
  /** A name in the directory (no slashes). */
  name: string;
  data: string | Uint8Array;
  /** Default 0o644. */
  mode?: number;
}

/**
 * Replaces several files of one directory, each atomically, all durably, for the cost of one round of
 * fsyncs: every temp file is written and fsynced at once (a journaling filesystem commits them together),
 * then they are renamed *in the given order* (so a later name, e.g. a record's "complete" marker, never
 * lands before an earlier one: the renames of one directory reach the journal in order), then the
 * directory is fsynced once. On failure the temps are removed and names already renamed stay replaced.
 */
export async function writeFilesAtomic(dir: string, files: readonly AtomicFile[]): Promise<void> {
  const temps = files.map((f) => ({
    file: f,
    temp: join(dir, `.${f.name}${ATOMIC_TEMP_MARKER}${randomBytes(6).toString('hex')}`),
  }));
  try {
    await Promise.all(temps.map(({ file, temp }) => writeSynced(temp, file.data, file.mode ?? 0o644)));
    for (const { file, temp } of temps) await rename(temp, join(dir, file.name));
  } catch (err) {
    await Promise.all(temps.map(({ temp }) => unlink(temp).catch(() => undefined)));
    throw err;
  }
  await fsyncDir(dir);
}

async function writeSynced(temp: string, data: string | Uint8Array, mode: number): Promise<void> {
  const fh = await open(temp, 'wx', mode);
  try {
    await fh.writeFile(data);
    // writeFile's mode is filtered by the umask at creation; set it exactly.
    await fh.chmod(mode);
    await fh.sync();
  } finally {
    await fh.close();
  }
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

/** True for names `writeFileAtomic` uses for its temp files (for start-up cleanup of a crash's leftovers). */
export function isAtomicTemp(name: string): boolean {
  return name.startsWith('.') && name.includes(ATOMIC_TEMP_MARKER);
}
