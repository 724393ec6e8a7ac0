/**
 * The process user from the CRI request and the image's `User`, resolved against the image's own
 * /etc/passwd and /etc/group in every form the image spec allows, with runAsNonRoot enforced.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { isSkiffError } from '../../../../src/errdefs.js';
import { parseGroup, parsePasswd, resolveUser, type UserRequest } from '../../../../src/oci/spec/user.js';

const PASSWD = [
  'root:x:0:0:root:/root:/bin/sh',
  '# a comment',
  'daemon:x:1:1::/:/usr/sbin/nologin',
  'nginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin',
  'garbled:x:abc:0::/:/bin/sh',
  'app:x:1000:1000::/home/app:/bin/sh',
  '',
].join('\n');

const GROUP = [
  'root:x:0:',
  'daemon:x:1:app',
  'nginx:x:101:nginx',
  'www:x:33:nginx,app',
  'app:x:1000:app',
  'video:x:44: app ,other',
  '',
].join('\n');

async function rootfs(files: { passwd?: string; group?: string } = { passwd: PASSWD, group: GROUP }) {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-user-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'etc'));
  if (files.passwd !== undefined) await writeFile(join(dir, 'etc/passwd'), files.passwd);
  if (files.group !== undefined) await writeFile(join(dir, 'etc/group'), files.group);
  return dir;
}

function req(over: Partial<UserRequest>): UserRequest {
  return {
    runAsUser: undefined,
    runAsGroup: undefined,
    runAsUsername: '',
    imageUser: '',
    supplementalGroups: [],
    supplementalGroupsPolicy: 'merge',
    runAsNonRoot: false,
    ...over,
  };
}

async function invalid(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  const err: unknown = await p.catch((e: unknown) => e);
  expect(isSkiffError(err, 'invalid-argument'), String(err)).toBe(true);
  expect((err as Error).message).toMatch(pattern);
}

describe('parsePasswd and parseGroup', () => {
  it('skips comments and lines whose ids are not numbers (never reading them as root)', () => {
    expect(parsePasswd(PASSWD).map((u) => u.name)).toEqual(['root', 'daemon', 'nginx', 'app']);
    expect(parseGroup(GROUP).find((g) => g.name === 'video')).toEqual({
      name: 'video',
      gid: 44,
      members: ['app', 'other'],
    });
  });
});

describe('resolveUser', () => {
  it('runs as root with gid 0 when nothing names a user', async () => {
    expect(await resolveUser(await rootfs(), req({}))).toEqual({ uid: 0, gid: 0, additionalGids: [0] });
  });

  it('resolves every image User form', async () => {
    const root = await rootfs();
    const cases: [string, number, number][] = [
      ['nginx', 101, 101],
      ['101', 101, 101],
      ['4242', 4242, 0], // a uid not in /etc/passwd is fine, with gid 0
      ['1000:33', 1000, 33],
      ['nginx:www', 101, 33],
      ['1000:www', 1000, 33],
      ['nginx:5000', 101, 5000],
      ['4242:4343', 4242, 4343],
    ];
    for (const [user, uid, gid] of cases) {
      const got = await resolveUser(root, req({ imageUser: user }));
      expect([got.uid, got.gid], user).toEqual([uid, gid]);
    }
  });

  it('lets the CRI user win over the image, username over uid, and run_as_group set the gid', async () => {
    const root = await rootfs();
    expect((await resolveUser(root, req({ imageUser: 'nginx', runAsUser: 1000 }))).uid).toBe(1000);
    expect((await resolveUser(root, req({ runAsUser: 1000, runAsUsername: 'nginx' }))).uid).toBe(101);
    // The image's group does not apply to a CRI user.
    expect((await resolveUser(root, req({ imageUser: 'nginx:www', runAsUser: 1000 }))).gid).toBe(1000);
    // run_as_group without a CRI user is refused (containerd; critest checks it).
    await expect(resolveUser(root, req({ imageUser: 'nginx:www', runAsGroup: 7 }))).rejects.toThrow(
      /run_as_group 7 is set without run_as_user/,
    );
    expect((await resolveUser(root, req({ runAsUser: 1000, runAsGroup: 7 }))).gid).toBe(7);
  });

  it('adds the groups that list the user, and the supplemental groups, sorted with the primary gid', async () => {
    const root = await rootfs();
    expect((await resolveUser(root, req({ imageUser: 'app' }))).additionalGids).toEqual([1, 33, 44, 1000]);
    // By uid: the name comes from /etc/passwd.
    expect(
      (await resolveUser(root, req({ runAsUser: 101, supplementalGroups: [5, 33] }))).additionalGids,
    ).toEqual([5, 33, 101]);
    // Strict: only the requested groups.
    expect(
      (
        await resolveUser(
          root,
          req({ imageUser: 'app', supplementalGroups: [9], supplementalGroupsPolicy: 'strict' }),
        )
      ).additionalGids,
    ).toEqual([9, 1000]);
  });

  it('needs no /etc/passwd or /etc/group for numeric users', async () => {
    const root = await rootfs({});
    expect(await resolveUser(root, req({ imageUser: '1000' }))).toEqual({
      uid: 1000,
      gid: 0,
      additionalGids: [0],
    });
    expect(await resolveUser(root, req({ imageUser: '1000:1000' }))).toEqual({
      uid: 1000,
      gid: 1000,
      additionalGids: [1000],
    });
  });

  it('refuses names the image does not define, naming them and the fix', async () => {
    const root = await rootfs();
    await invalid(
      resolveUser(root, req({ imageUser: 'ghost' })),
      /user "ghost" \(from the image\) is not in the image's \/etc\/passwd.*runAsUser/,
    );
    await invalid(resolveUser(root, req({ imageUser: 'nginx:ghosts' })), /group "ghosts".*\/etc\/group/);
    await invalid(resolveUser(await rootfs({}), req({ runAsUsername: 'nginx' })), /run_as_username/);
    await invalid(resolveUser(root, req({ imageUser: 'a:b:c' })), /image user "a:b:c"/);
    await invalid(resolveUser(root, req({ imageUser: '99999999999' })), /out of range/);
  });

  it('enforces runAsNonRoot: no names, no uid 0', async () => {
    const root = await rootfs();
    await invalid(
      resolveUser(root, req({ imageUser: 'nginx', runAsNonRoot: true })),
      /container user "nginx" \(from the image\) is not numeric and runAsNonRoot is set.*set runAsUser/,
    );
    await invalid(resolveUser(root, req({ runAsNonRoot: true })), /uid 0.*runAsNonRoot/);
    await invalid(resolveUser(root, req({ runAsUser: 0, runAsNonRoot: true })), /run as root/);
    expect((await resolveUser(root, req({ imageUser: '101', runAsNonRoot: true }))).uid).toBe(101);
  });

  it('reads the image files through symlinks inside the rootfs only', async () => {
    const hostDir = await mkdtemp(join(tmpdir(), 'skiff-user-host-'));
    onTestFinished(() => rm(hostDir, { recursive: true, force: true }));
    await writeFile(join(hostDir, 'passwd'), 'hostonly:x:4000:4000::/:/bin/sh\n');
    const root = await rootfs({});
    await symlink(join(hostDir, 'passwd'), join(root, 'etc/passwd'));
    await invalid(resolveUser(root, req({ imageUser: 'hostonly' })), /not in the image's \/etc\/passwd/);
    // The same link resolved inside the rootfs finds the image's copy.
    await mkdir(join(root, hostDir), { recursive: true });
    await writeFile(join(root, hostDir, 'passwd'), 'inside:x:5000:5000::/:/bin/sh\n');
    expect((await resolveUser(root, req({ imageUser: 'inside' }))).uid).toBe(5000);
  });
});
