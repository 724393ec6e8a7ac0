/**
 * The uid, gid and supplementary groups of a container's process, resolved against the image's own
 * /etc/passwd and /etc/group (never the host's), as containerd does: `pkg/oci/spec_opts.go` (WithUser,
 * WithUserID, WithUsername, WithAdditionalGIDs) and `internal/cri/server/container_create_linux.go`
 * (which user string wins, the supplemental-groups policy).
 *
 * User strings (OCI image-spec config `User`): `name`, `uid`, `uid:gid`, `name:group`, `uid:group`,
 * `name:gid`. A numeric uid missing from /etc/passwd (or no /etc/passwd at all) is fine and gets gid 0; a
 * name must be found. The rootfs is untrusted: files are read through `secure-join.ts`.
 */
import { SkiffError } from '../../errdefs.js';
import { readFileInRoot } from './secure-join.js';

/** What the CRI request and the image say about the user. */
export interface UserRequest {
  /** CRI run_as_user. */
  runAsUser: number | undefined;
  /** CRI run_as_group: replaces the primary gid whatever the user string says. */
  runAsGroup: number | undefined;
  /** CRI run_as_username ('' = none); wins over runAsUser. */
  runAsUsername: string;
  /** The image config's `User` ('' = root). */
  imageUser: string;
  supplementalGroups: number[];
  /** `merge` (the CRI default) adds the user's groups from the image's /etc/group; `strict` does not. */
  supplementalGroupsPolicy: 'merge' | 'strict';
  runAsNonRoot: boolean;
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  /** Sorted, unique, and including `gid` (containerd's ensureAdditionalGids, CVE-2023-25173). */
  additionalGids: number[];
}

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

/** runc refuses ids above 2^31-1 (containerd follows runc's limit). */
const MAX_ID = 0x7fffffff;

/** containerd's cap on a user database file: real ones are far smaller; a huge one is an attack. */
const MAX_USER_FILE_BYTES = 10 << 20;

const numeric = /^[0-9]+$/;

function parseId(text: string): number | undefined {
  if (!numeric.test(text)) return undefined;
  const n = Number(text);
  return n <= MAX_ID ? n : undefined;
}

/**
 * Parses passwd(5) text. Lines whose uid or gid is not a number are skipped: Go's parser reads them as
 * 0, which would make a garbled line root.
 */
export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    const [name, , uidText, gidText] = f;
    if (!name || uidText === undefined || gidText === undefined) continue;
    const uid = parseId(uidText.trim());
    const gid = parseId(gidText.trim());
    if (uid === undefined || gid === undefined) continue;
    out.push({ name, uid, gid });
  }
  return out;
}

/** Parses group(5) text; malformed lines are skipped. */
export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const [name, , gidText, memberText = ''] = line.split(':');
    if (!name || gidText === undefined) continue;
    const gid = parseId(gidText.trim());
    if (gid === undefined) continue;
    const members = memberText
      .split(',')
      .map((m) => m.trim())
      .filter((m) => m !== '');
    out.push({ name, gid, members });
  }
  return out;
}

async function readUserFile(rootfs: string, path: string): Promise<string | undefined> {
  const buf = await readFileInRoot(rootfs, path, MAX_USER_FILE_BYTES);
  return buf?.toString('utf8');
}

/** The user and group parts to resolve, after the CRI-over-image precedence. */
function userString(req: UserRequest): { user: string; group: string; source: string } {
  let user: string;
  let group = '';
  let source: string;
  if (req.runAsUsername !== '') {
    user = req.runAsUsername;
    source = 'run_as_username';
  } else if (req.runAsUser !== undefined) {
    user = String(req.runAsUser);
    source = 'run_as_user';
  } else {
    const parts = req.imageUser.split(':');
    if (parts.length > 2) {
      throw new SkiffError(
        'invalid-argument',
        `image user "${req.imageUser}" is not one of name, uid, name:group or uid:gid; set runAsUser to override it`,
      );
    }
    // An empty image user is root, as Docker runs it.
    user = parts[0] || '0';
    group = parts[1] ?? '';
    source = 'the image';
  }
  // run_as_group overrides the primary group of an explicit user only. Without run_as_user or
  // run_as_username it is refused, as containerd does and the CRI conformance suite expects
  // ("runtime should return error if RunAsGroup is set without RunAsUser").
  if (req.runAsGroup !== undefined) {
    if (source === 'the image') {
      throw new SkiffError(
        'invalid-argument',
        `run_as_group ${req.runAsGroup} is set without run_as_user or run_as_username; set the user too (runAsUser in the pod spec)`,
      );
    }
    group = String(req.runAsGroup);
  }
  return { user, group, source };
}

function checkId(n: number | undefined, what: string): number {
  if (n === undefined || !Number.isInteger(n) || n < 0 || n > MAX_ID) {
    throw new SkiffError(
      'invalid-argument',
      `${what} is out of range: user and group ids must be between 0 and ${MAX_ID}`,
    );
  }
  return n;
}

/** Resolves the process user inside `rootfs` (absolute; the container's mounted root filesystem). */
export async function resolveUser(rootfs: string, req: UserRequest): Promise<ResolvedUser> {
  if (req.runAsUser !== undefined) checkId(req.runAsUser, `run_as_user ${req.runAsUser}`);
  if (req.runAsGroup !== undefined) checkId(req.runAsGroup, `run_as_group ${req.runAsGroup}`);
  for (const g of req.supplementalGroups) checkId(g, `supplemental group ${g}`);
  const { user, group, source } = userString(req);
  const userIsNumeric = numeric.test(user);

  // Kubernetes' runAsNonRoot cannot be checked against a name without trusting the image's /etc/passwd
  // (kubelet's verifyRunAsNonRoot refuses it too), so a name is refused outright.
  if (req.runAsNonRoot && !userIsNumeric) {
    throw new SkiffError(
      'invalid-argument',
      `container user "${user}" (from ${source}) is not numeric and runAsNonRoot is set, so it cannot be verified as non-root: set runAsUser to a non-zero uid`,
    );
  }

  // Files are read lazily: uid:gid needs neither (containerd does not read them either).
  let passwd: PasswdEntry[] | undefined;
  const users = async (): Promise<PasswdEntry[]> => {
    passwd ??= parsePasswd((await readUserFile(rootfs, '/etc/passwd')) ?? '');
    return passwd;
  };
  let groupFile: GroupEntry[] | undefined;
  const groups = async (): Promise<GroupEntry[]> => {
    groupFile ??= parseGroup((await readUserFile(rootfs, '/etc/group')) ?? '');
    return groupFile;
  };

  let uid: number;
  let gid = 0;
  let name: string | undefined;
  if (userIsNumeric) {
    uid = checkId(parseId(user), `user "${user}" (from ${source})`);
    const entry = (await users()).find((u) => u.uid === uid);
    name = entry?.name;
    if (entry) gid = entry.gid;
  } else {
    const entry = (await users()).find((u) => u.name === user);
    if (!entry) {
      throw new SkiffError(
        'invalid-argument',
        `user "${user}" (from ${source}) is not in the image's /etc/passwd: add the user to the image or set a numeric runAsUser`,
      );
    }
    ({ uid, gid, name } = entry);
  }
  if (group !== '') {
    if (numeric.test(group)) {
      gid = checkId(parseId(group), `group "${group}"`);
    } else {
      const entry = (await groups()).find((g) => g.name === group);
      if (!entry) {
        throw new SkiffError(
          'invalid-argument',
          `group "${group}" (from ${source}) is not in the image's /etc/group: add the group to the image or set a numeric runAsGroup`,
        );
      }
      gid = entry.gid;
    }
  }

  if (req.runAsNonRoot && uid === 0) {
    throw new SkiffError(
      'invalid-argument',
      `container would run as root (uid 0, from ${source}) and runAsNonRoot is set: set runAsUser to a non-zero uid`,
    );
  }

  const extra = new Set<number>([gid, ...req.supplementalGroups]);
  if (req.supplementalGroupsPolicy === 'merge' && name !== undefined) {
    // The user's secondary groups: where the user is listed as a member, not its own same-named group
    // (containerd WithAdditionalGIDs).
    const member = name;
    for (const g of await groups()) if (g.name !== member && g.members.includes(member)) extra.add(g.gid);
  }
  return { uid, gid, additionalGids: [...extra].sort((a, b) => a - b) };
}
