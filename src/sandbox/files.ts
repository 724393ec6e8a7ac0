/**
 * The pod's own files, kept in the sandbox's dir under `root` and bind-mounted into its containers later:
 * `hostname`, `hosts` and `resolv.conf`, plus the pod's /dev/shm (a tmpfs under `state`, shared by the
 * containers of a pod with its own IPC namespace, as containerd and CRI-O do).
 *
 * The renderers are pure functions (golden-tested in test/unit/sandbox/files.test.ts); the writers replace
 * files atomically (util/atomic.ts). A bind mount pins the inode it was given, so a file rewritten after
 * containers started is not seen by them: these files are written once, before the first container.
 */
import { mkdir, readFile, realpath, rmdir } from 'node:fs/promises';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { SkiffError, messageOf } from '../errdefs.js';
import { mount, mountsUnder, unmount } from '../snapshot/mount.js';
import { writeFilesAtomic } from '../util/atomic.js';

/** A CRI `DNSConfig`: nameservers, search domains and resolver options (resolv.conf(5)). */
export interface DnsConfig {
  servers: string[];
  searches: string[];
  options: string[];
}

/** Extra /etc/hosts lines (Kubernetes `hostAliases`): one IP, its names. */
export interface HostAlias {
  ip: string;
  hostnames: string[];
}

/** The contents of the pod's files (not paths). */
export interface PodFiles {
  hostname: string;
  hosts: string;
  resolvConf: string;
}

/** Where `writePodFiles` put each file. */
export interface PodFilePaths {
  hostname: string;
  hosts: string;
  resolvConf: string;
}

/** containerd's default /dev/shm size for a pod (defaultShmSize, 64 MiB), as Docker's. */
export const DEFAULT_SHM_SIZE = 64 * 1024 * 1024;

/**
 * kubelet's managed /etc/hosts (pkg/kubelet/kubelet_pods.go, managedHostsFileContent): its header, the
 * loopback names, the IPv6 names, one `<ip>\t<hostname>` line per pod IP, then the host aliases under their
 * own comment. The IPv6 lines use the addresses RFC 4291 assigns (ff00::/8 multicast, ff02::1 all nodes,
 * ff02::2 all routers), as Docker's and Debian's files do; kubelet writes fe00::0/1/2 there, a long-lived
 * typo nothing resolves against.
 */
export function renderHosts(
  hostname: string,
  ips: readonly string[],
  extra: readonly HostAlias[] = [],
): string {
  checkToken('render hosts file', 'hostname', hostname);
  for (const ip of ips) checkToken('render hosts file', 'pod IP', ip);
  const lines = [
    '# Kubernetes-managed hosts file.',
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    'fe00::0\tip6-localnet',
    'ff00::0\tip6-mcastprefix',
    'ff02::1\tip6-allnodes',
    'ff02::2\tip6-allrouters',
    ...ips.map((ip) => `${ip}\t${hostname}`),
  ];
  const aliases = extra.filter((a) => a.hostnames.length > 0);
  if (aliases.length > 0) {
    lines.push('', '# Entries added by HostAliases.');
    for (const a of aliases) {
      checkToken('render hosts file', 'host alias IP', a.ip);
      for (const name of a.hostnames) checkToken('render hosts file', 'host alias', name);
      lines.push(`${a.ip}\t${a.hostnames.join('\t')}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The pod's resolv.conf. With a DNS config (kubelet sends one for every dnsPolicy but `None` without
 * settings), containerd's rendering (parseDNSOptions): `search` with all domains, one `nameserver` line per
 * server, `options` with all options, each line only when it has entries. Without one, the host's
 * resolv.conf text as it is (the caller reads it; kubelet's own limits, 3 nameservers and 32 search
 * domains, are kubelet's to enforce). Entries that are empty or hold whitespace would corrupt the file's
 * syntax (resolv.conf(5): keyword, then space-separated values, one line each) and are `invalid-argument`.
 */
export function renderResolvConf(dns: DnsConfig | undefined, hostResolvConf: string): string {
  if (dns === undefined) return hostResolvConf;
  for (const s of dns.servers) checkToken('render resolv.conf', 'nameserver', s);
  for (const s of dns.searches) checkToken('render resolv.conf', 'search domain', s);
  for (const o of dns.options) checkToken('render resolv.conf', 'option', o);
  let text = '';
  if (dns.searches.length > 0) text += `search ${dns.searches.join(' ')}\n`;
  for (const server of dns.servers) text += `nameserver ${server}\n`;
  if (dns.options.length > 0) text += `options ${dns.options.join(' ')}\n`;
  return text;
}

/** The pod's /etc/hostname: the name on one line (hostname(5)). */
export function renderHostname(name: string): string {
  checkToken('render hostname file', 'hostname', name);
  return `${name}\n`;
}

/**
 * Writes `hostname`, `hosts` and `resolv.conf` into `dir` (created if missing), each atomically (temp file,
 * fsync, rename, fsync the dir), mode 0644 so any container user can read them. `files.hostname` is the
 * file's content; a name without its final newline gets one, so `hostFiles().hostname` can be passed as is.
 */
export async function writePodFiles(dir: string, files: PodFiles): Promise<PodFilePaths> {
  const paths: PodFilePaths = {
    hostname: join(dir, 'hostname'),
    hosts: join(dir, 'hosts'),
    resolvConf: join(dir, 'resolv.conf'),
  };
  const hostname = files.hostname.endsWith('\n') ? files.hostname : `${files.hostname}\n`;
  try {
    await mkdir(dir, { recursive: true });
    await writeFilesAtomic(dir, [
      { name: 'hostname', data: hostname },
      { name: 'hosts', data: files.hosts },
      { name: 'resolv.conf', data: files.resolvConf },
    ]);
  } catch (err) {
    throw fsError(`write pod files in "${dir}"`, err);
  }
  return paths;
}

/**
 * Mounts the pod's /dev/shm: a tmpfs of `sizeBytes` at `path` (created if missing), mode 1777 like
 * /dev/shm, `nosuid,nodev,noexec` as containerd and runc's defaults mount it (tmpfs(5)). Containers of the
 * pod bind it onto their /dev/shm, so POSIX shared memory is shared within the pod and nowhere else.
 * `already-exists` when something is mounted there already (a stacked second tmpfs would hide the first).
 */
export async function mountShm(path: string, sizeBytes: number): Promise<void> {
  const what = `mount shm on "${path}"`;
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
    throw new SkiffError(
      'invalid-argument',
      `${what}: size ${String(sizeBytes)} is not a positive number of bytes`,
    );
  }
  let real: string;
  try {
    await mkdir(path, { recursive: true, mode: 0o755 });
    // mountinfo spells mount points canonically.
    real = await realpath(path);
  } catch (err) {
    throw fsError(what, err);
  }
  if ((await mountsUnder(real)).includes(real)) {
    throw new SkiffError('already-exists', `${what}: something is already mounted there`);
  }
  await mount(real, {
    type: 'tmpfs',
    source: 'shm',
    options: ['nosuid', 'nodev', 'noexec', 'mode=1777', `size=${String(sizeBytes)}`],
  });
}

/**
 * Unmounts the pod's /dev/shm (every mount stacked at `path`) and removes the then empty directory.
 * Idempotent: a path that is not mounted, or does not exist, is fine.
 */
export async function unmountShm(path: string): Promise<void> {
  let real: string;
  try {
    real = await realpath(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw fsError(`unmount shm on "${path}"`, err);
  }
  for (let i = 0; i < 8 && (await mountsUnder(real)).includes(real); i++) {
    // Lazy: a container still running would otherwise make this fail; its own bind keeps the tmpfs alive.
    await unmount(real, { lazy: true });
  }
  try {
    await rmdir(real);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'EBUSY') {
      throw fsError(`unmount shm on "${path}"`, err);
    }
  }
}

/**
 * A hostNetwork pod's files are the node's: its hostname (os.hostname(), i.e. uname's nodename, which is
 * what /etc/hostname was applied as), /etc/hosts and /etc/resolv.conf. A missing file reads as empty.
 */
export async function hostFiles(
  paths: { hosts: string; resolvConf: string } = { hosts: '/etc/hosts', resolvConf: '/etc/resolv.conf' },
): Promise<PodFiles> {
  return {
    hostname: osHostname(),
    hosts: await readOptional(paths.hosts),
    resolvConf: await readOptional(paths.resolvConf),
  };
}

async function readOptional(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw fsError(`read "${path}"`, err);
  }
}

/** A value that goes into a file as one whitespace-free token: not empty, no spaces, tabs or line breaks. */
function checkToken(what: string, kind: string, value: string): void {
  if (value === '' || /[\s\0]/.test(value)) {
    throw new SkiffError(
      'invalid-argument',
      `${what}: ${kind} ${JSON.stringify(value)} is empty or holds whitespace`,
    );
  }
}

function fsError(what: string, err: unknown): SkiffError {
  if (err instanceof SkiffError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const kind =
    code === 'EPERM' || code === 'EACCES'
      ? 'permission-denied'
      : code === 'ENOSPC'
        ? 'resource-exhausted'
        : 'unknown';
  return new SkiffError(kind, `${what}: ${messageOf(err)}`, { cause: err });
}
