/**
 * Paths inside an untrusted rootfs stay inside it whatever its symlinks say: absolute targets restart at
 * the rootfs, `..` stops at it, loops end with an error, and files that are not regular are not read.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { isSkiffError } from '../../../../src/errdefs.js';
import {
  MAX_SYMLINKS,
  mkdirInRoot,
  readFileInRoot,
  secureJoin,
} from '../../../../src/oci/spec/secure-join.js';

/** A temp dir with `rootfs/` (the untrusted tree) and `host/secret` (what must never be read). */
async function layout(): Promise<{ dir: string; root: string; secret: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-securejoin-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  const root = join(dir, 'rootfs');
  await mkdir(join(root, 'etc'), { recursive: true });
  await mkdir(join(dir, 'host'));
  const secret = join(dir, 'host', 'secret');
  await writeFile(secret, 'HOST SECRET\n');
  return { dir, root, secret };
}

describe('secureJoin', () => {
  it('joins plain paths, absolute or relative, and keeps ".." at the root', async () => {
    const { root } = await layout();
    expect(await secureJoin(root, '/etc/passwd')).toBe(join(root, 'etc/passwd'));
    expect(await secureJoin(root, 'etc//./passwd')).toBe(join(root, 'etc/passwd'));
    expect(await secureJoin(root, '../../../etc/passwd')).toBe(join(root, 'etc/passwd'));
    expect(await secureJoin(root, '/')).toBe(root);
    expect(await secureJoin(root, 'a/missing/../../../b')).toBe(join(root, 'b'));
  });

  it('resolves an absolute symlink target inside the root, not on the host', async () => {
    const { root, secret } = await layout();
    await symlink(secret, join(root, 'etc/passwd'));
    expect(await secureJoin(root, '/etc/passwd')).toBe(join(root, secret));
  });

  it('clamps a relative target that climbs out with ..', async () => {
    const { root } = await layout();
    await symlink('../../../../../host/secret', join(root, 'etc/passwd'));
    expect(await secureJoin(root, '/etc/passwd')).toBe(join(root, 'host/secret'));
  });

  it('resolves symlinked directories in the middle of a path, relative to the link', async () => {
    const { root, dir } = await layout();
    await mkdir(join(root, 'private/etc'), { recursive: true });
    await rm(join(root, 'etc'), { recursive: true });
    await symlink('private/etc', join(root, 'etc'));
    expect(await secureJoin(root, '/etc/passwd')).toBe(join(root, 'private/etc/passwd'));
    // A directory link to the host's root is the rootfs's root.
    await symlink(dir, join(root, 'up'));
    expect(await secureJoin(root, '/up/host/secret')).toBe(join(root, dir, 'host/secret'));
    await symlink('/', join(root, 'slash'));
    expect(await secureJoin(root, '/slash/../../etc')).toBe(join(root, 'private/etc'));
  });

  it('follows a chain of links and refuses a loop after the limit', async () => {
    const { root } = await layout();
    await symlink('b', join(root, 'a'));
    await symlink('c', join(root, 'b'));
    await symlink('/etc/passwd', join(root, 'c'));
    expect(await secureJoin(root, 'a')).toBe(join(root, 'etc/passwd'));

    await symlink('loop2', join(root, 'loop1'));
    await symlink('/loop1', join(root, 'loop2'));
    const err: unknown = await secureJoin(root, 'loop1/x').catch((e: unknown) => e);
    expect(isSkiffError(err, 'invalid-argument')).toBe(true);
    expect((err as Error).message).toContain(`more than ${MAX_SYMLINKS} symbolic links`);
  });
});

describe('readFileInRoot', () => {
  it('reads a regular file, and undefined when it is missing', async () => {
    const { root } = await layout();
    await writeFile(join(root, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
    expect((await readFileInRoot(root, '/etc/passwd', 1024))?.toString()).toContain('root:x:0:0');
    expect(await readFileInRoot(root, '/etc/group', 1024)).toBeUndefined();
    expect(await readFileInRoot(root, '/etc/passwd/x', 1024)).toBeUndefined();
  });

  it('never reads a host file a symlink points at', async () => {
    const { root, secret } = await layout();
    await symlink(secret, join(root, 'etc/passwd'));
    await symlink('../../host/secret', join(root, 'etc/group'));
    expect(await readFileInRoot(root, '/etc/passwd', 1024)).toBeUndefined();
    expect(await readFileInRoot(root, '/etc/group', 1024)).toBeUndefined();
  });

  it('refuses a FIFO without blocking, a directory and an oversized file', async () => {
    const { root } = await layout();
    execFileSync('mkfifo', [join(root, 'etc/passwd')]);
    await mkdir(join(root, 'etc/group'));
    await writeFile(join(root, 'etc/big'), 'x'.repeat(2048));
    for (const [path, pattern] of [
      ['/etc/passwd', /not a regular file/],
      ['/etc/group', /not a regular file/],
      ['/etc/big', /larger than 1024 bytes/],
    ] as const) {
      const err: unknown = await readFileInRoot(root, path, 1024).catch((e: unknown) => e);
      expect(isSkiffError(err, 'invalid-argument'), path).toBe(true);
      expect((err as Error).message).toMatch(pattern);
    }
  });
});

describe('mkdirInRoot', () => {
  it('creates the directory inside the root even through a link to the host', async () => {
    const { root, dir } = await layout();
    await symlink(join(dir, 'host'), join(root, 'data'));
    const made = await mkdirInRoot(root, '/data/volume');
    expect(made).toBe(join(root, dir, 'host', 'volume'));
    expect(await readdir(join(dir, 'host'))).toEqual(['secret']);
  });
});
