/**
 * Paths inside an untrusted root filesystem. An image's `/etc/passwd` may be a symlink to `/etc/shadow`
 * of the host (an absolute target) or to `../../../../etc/shadow`; the kernel would follow either out of
 * the rootfs, because the rootfs is only a directory to us, not our `/`. So every symlink is resolved here
 * as if the rootfs were `/` (what cyphar/filepath-securejoin's SecureJoin does for runc and containerd):
 * components are walked one at a time, `..` never climbs above the root, an absolute link target restarts
 * at the root, and at most 255 links are followed (Linux's MAXSYMLINKS is 40; securejoin allows 255).
 *
 * Residual race: a component could be swapped for a symlink between the walk and the open. The rootfs is
 * an image snapshot nothing in the container has run in yet, and the final open refuses a symlink
 * (O_NOFOLLOW), so the walk is the check that matters.
 */
import { constants } from 'node:fs';
import { lstat, mkdir, open, readlink } from 'node:fs/promises';
import { join, posix, resolve } from 'node:path';
import { SkiffError, errnoOf } from '../../errdefs.js';

/** The most symlinks one resolution follows (filepath-securejoin's limit). */
export const MAX_SYMLINKS = 255;

/**
 * The host path of `unsafePath` (absolute or relative, it does not matter) inside `root`, with every
 * existing symlink resolved as if `root` were `/`. Components that do not exist are joined lexically, so
 * the result may not exist; it is always `root` or below it.
 */
export async function secureJoin(root: string, unsafePath: string): Promise<string> {
  const base = resolve(root);
  let remaining = unsafePath;
  /** The resolved part so far, relative to root, without leading or trailing '/'; '' is the root. */
  let current = '';
  let links = 0;
  while (remaining !== '') {
    const slash = remaining.indexOf('/');
    const part = slash === -1 ? remaining : remaining.slice(0, slash);
    remaining = slash === -1 ? '' : remaining.slice(slash + 1);
    if (part === '' || part === '.') continue;
    if (part === '..') {
      // Lexical: `current` holds no symlinks, so its parent is its dirname; the root is its own parent.
      current = posix.dirname(`/${current}`).slice(1);
      continue;
    }
    const next = current === '' ? part : `${current}/${part}`;
    const full = join(base, next);
    let isLink: boolean;
    try {
      isLink = (await lstat(full)).isSymbolicLink();
    } catch (err) {
      // A missing component (or one under a non-directory) cannot be a link: the rest is lexical.
      if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') {
        current = next;
        continue;
      }
      throw err;
    }
    if (!isLink) {
      current = next;
      continue;
    }
    links += 1;
    if (links > MAX_SYMLINKS) {
      throw new SkiffError(
        'invalid-argument',
        `resolve "${unsafePath}" in the container's root filesystem: more than ${MAX_SYMLINKS} symbolic links (a loop?); fix the image`,
      );
    }
    const target = await readlink(full);
    // An absolute target restarts at the root; a relative one continues from the link's directory.
    if (target.startsWith('/')) current = '';
    remaining = remaining === '' ? target : `${target}/${remaining}`;
  }
  return current === '' ? base : join(base, current);
}

/**
 * Reads a regular file inside `root` (symlinks resolved inside it), at most `maxBytes`. Returns undefined
 * when the file does not exist. A FIFO, device or directory is refused rather than read (a FIFO would
 * block, /dev/zero would never end), as is a file larger than `maxBytes`.
 */
export async function readFileInRoot(
  root: string,
  path: string,
  maxBytes: number,
): Promise<Buffer | undefined> {
  const resolved = await secureJoin(root, path);
  let handle;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: the walk resolved every link.
    handle = await open(resolved, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return undefined;
    throw err;
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) {
      throw new SkiffError(
        'invalid-argument',
        `read ${path} in the container's root filesystem: it is not a regular file; fix the image`,
      );
    }
    const buf = Buffer.alloc(Math.min(st.size, maxBytes) + 1);
    let length = 0;
    while (length < buf.length) {
      const { bytesRead } = await handle.read(buf, length, buf.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length > maxBytes) {
      throw new SkiffError(
        'invalid-argument',
        `read ${path} in the container's root filesystem: larger than ${maxBytes} bytes; fix the image`,
      );
    }
    return buf.subarray(0, length);
  } finally {
    await handle.close();
  }
}

/** Creates `path` (and its parents) inside `root`, symlinks resolved inside it; returns the host path. */
export async function mkdirInRoot(root: string, path: string, mode = 0o755): Promise<string> {
  const resolved = await secureJoin(root, path);
  await mkdir(resolved, { recursive: true, mode });
  return resolved;
}
