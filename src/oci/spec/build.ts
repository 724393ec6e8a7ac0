/**
 * CreateContainer's OCI runtime spec (the bundle's config.json) from the domain `ContainerConfig`, the
 * image config and the pod sandbox's facts, with Kubernetes semantics. The reference is containerd's CRI
 * plugin (Apache-2.0): `internal/cri/server/container_create.go` (buildLinuxSpec, linuxContainerMounts,
 * volumeMounts), `internal/cri/opts/spec_opts.go` and `spec_linux_opts.go` (process args, capabilities,
 * mounts, devices, resources, OOM score), `internal/cri/sputil/` (seccomp, AppArmor). Where skiff differs,
 * the comment says so.
 *
 * It reads (never writes) the host: the image's /etc/passwd and /etc/group through `secure-join.ts`, CRI
 * device nodes, CRI mount host paths (to resolve symlinks) and a localhost seccomp profile. The only write
 * is the image-volume directories inside the rootfs when no `volumesDir` is given.
 */
import { createHash } from 'node:crypto';
import { readFile, realpath } from 'node:fs/promises';
import { hostname as osHostname } from 'node:os';
import { join, posix } from 'node:path';
import { SkiffError, errnoOf } from '../../errdefs.js';
import type {
  ContainerConfig,
  ContainerResources,
  MountPropagation,
  SecurityProfile,
} from './container-config.js';
import {
  ALL_CAPABILITIES,
  DEFAULT_CAPABILITIES,
  DEFAULT_MASKED_PATHS,
  DEFAULT_PATH_ENV,
  DEFAULT_READONLY_PATHS,
  defaultDeviceRules,
  defaultMounts,
} from './defaults.js';
import { devicesFor, hostDevices } from './devices.js';
import { defaultSeccompProfile } from './seccomp-default.js';
import { mkdirInRoot, readFileInRoot } from './secure-join.js';
import {
  type LinuxCapabilities,
  type LinuxDevice,
  type LinuxDeviceCgroup,
  type LinuxNamespace,
  type LinuxResources,
  type LinuxSeccomp,
  type Mount,
  OCI_VERSION,
  type Process,
  type Spec,
} from './types.js';
import { resolveUser } from './user.js';

/** The AppArmor profile RuntimeDefault names; the container service must have it loaded. */
export const APPARMOR_DEFAULT_PROFILE = 'skiff-default';

/** The image config fields the spec needs (OCI image-spec `config`). */
export interface ImageConfigInput {
  env: string[];
  entrypoint: string[];
  cmd: string[];
  workingDir: string;
  user: string;
  /** `Volumes` keys: container paths. */
  volumes: string[];
  stopSignal: string;
}

/** The pod sandbox's facts a container joins. */
export interface SandboxInput {
  id: string;
  /** '' = the node's hostname (the HOSTNAME env of a host-network pod). */
  hostname: string;
  /** Pinned namespace files; absent = the node's. */
  namespaces: { net?: string; ipc?: string; uts?: string; pid?: string };
  hostNetwork: boolean;
  hostIpc: boolean;
  hostPid: boolean;
  /** The pod's /dev/shm tmpfs; absent (and not host IPC) = the container's own default tmpfs. */
  shmPath?: string;
  /** '' = do not mount. */
  hostsPath: string;
  resolvConfPath: string;
  hostnamePath: string;
  cgroupParent: string;
  sysctls: Record<string, string>;
  privileged: boolean;
  /** Pod metadata for the io.kubernetes.cri.sandbox-* annotations; absent ones are not written. */
  name?: string;
  namespace?: string;
  uid?: string;
}

export interface SpecInput {
  id: string;
  config: ContainerConfig;
  /** The image as the spec annotation names it (a repo tag, else the reference asked for). */
  imageName: string;
  image: ImageConfigInput;
  /** Absolute, already mounted; the image's /etc/passwd is read from here. */
  rootfs: string;
  sandbox: SandboxInput;
  /** `/proc/<pid>/ns/pid` of the target container, for namespaces.pid === 'target'. */
  targetPidNsPath?: string;
  cgroupDriver: 'systemd' | 'cgroupfs';
  /** cgroup v2 (unified): a private cgroup namespace, and `unified` resources are allowed. */
  cgroupV2: boolean;
  /** The daemon's own oom_score_adj: a container may not ask for a lower one (it could not set it). */
  minOomScoreAdj: number;
  /** The runtime handler supports `rro` mounts (`runc features`). */
  recursiveReadOnlyMounts: boolean;
  seccompAvailable: boolean;
  apparmorAvailable: boolean;
  selinuxAvailable: boolean;
  /** Swap accounting exists (v1 memory.memsw.*, v2 memory.swap.max); absent = no. */
  swapControllerAvailable?: boolean;
  /** The hugetlb controller exists; absent = no (limits are then dropped with a warning, as containerd's tolerate_missing_hugetlb_controller). */
  hugetlbAvailable?: boolean;
  /**
   * Where image volumes get their host directories (containerd: `<container root>/volumes/<id>`); the
   * caller creates them (`BuildResult.volumes`). Absent = the directories are made inside the rootfs
   * instead, unmounted.
   */
  volumesDir?: string;
  /** Host devices for a privileged container; default: everything under the host's /dev. */
  listHostDevices?: () => Promise<LinuxDevice[]>;
  /** Node `process.arch` for the seccomp profile's architectures; default: this process's. */
  arch?: string;
  /**
   * What a privileged container (or `add: ["ALL"]`) gets: the daemon's own effective capabilities, as
   * containerd's cap.Current(), because runc cannot grant one the daemon lacks (a daemon in a container
   * often lacks some). Default: read from /proc/self/status.
   */
  allCapabilities?: readonly string[];
}

export interface ImageVolume {
  containerPath: string;
  /** The directory to create (under `volumesDir`), or the one made inside the rootfs. */
  hostPath: string;
}

export interface BuildResult {
  spec: Spec;
  /** Things asked for that this node cannot honour but that do not fail the container. */
  warnings: string[];
  /** Image volumes not covered by a CRI mount. */
  volumes: ImageVolume[];
  /**
   * CRI mount host paths that do not exist: containerd creates them (mkdir -p, 0755) before starting,
   * and so should the caller, or runc fails on the bind mount.
   */
  missingHostPaths: string[];
}

export interface ResourceOptions {
  cgroupV2?: boolean;
  swapControllerAvailable?: boolean;
  hugetlbAvailable?: boolean;
  /** Collects what was dropped; absent = dropped silently. */
  warnings?: string[];
}

const ANNOTATION_PREFIX = 'io.kubernetes.cri.';

/** Real profiles are a few tens of KiB (the default one is about 20 KiB). */
const MAX_SECCOMP_PROFILE_BYTES = 4 << 20;

function invalid(message: string): SkiffError {
  return new SkiffError('invalid-argument', message);
}

// ------------------------------------------------------------------------------------------ process

/**
 * Docker's rule (containerd WithProcessArgs): a CRI command replaces the image Entrypoint and drops its
 * Cmd; CRI args replace Cmd. An Entrypoint of [""] means "none".
 */
export function processArgs(command: string[], args: string[], image: ImageConfigInput): string[] {
  let cmd = command;
  let rest = args;
  if (cmd.length === 0) {
    if (rest.length === 0) rest = image.cmd;
    if (!(image.entrypoint.length === 1 && image.entrypoint[0] === '')) cmd = image.entrypoint;
  }
  const out = [...cmd, ...rest];
  if (out.length === 0) {
    throw invalid(
      'no command specified: set command or args in the container config, or use an image with an ENTRYPOINT or CMD',
    );
  }
  return out;
}

/**
 * Environment `KEY=value` lists merged in order, later ones replacing earlier ones by key in place
 * (containerd replaceOrAppendEnvValues); a bare `KEY` removes it. Unlike containerd, a key repeated
 * within one list also replaces (its version appends both; getenv would then return the first).
 */
export function mergeEnv(...lists: string[][]): string[] {
  const out: (string | undefined)[] = [];
  const index = new Map<string, number>();
  for (const list of lists) {
    for (const entry of list) {
      const eq = entry.indexOf('=');
      const key = eq === -1 ? entry : entry.slice(0, eq);
      const at = index.get(key);
      if (eq === -1) {
        if (at !== undefined) out[at] = undefined;
        index.delete(key);
      } else if (at !== undefined) {
        out[at] = entry;
      } else {
        index.set(key, out.length);
        out.push(entry);
      }
    }
  }
  return out.filter((e): e is string => e !== undefined);
}

function buildEnv(input: SpecInput): string[] {
  const { config } = input;
  const envs = config.envs.map(({ key, value }) => {
    if (key === '' || key.includes('=') || key.includes('\0')) {
      throw invalid(
        `environment variable name "${key}" is invalid: names must be non-empty without "=" or NUL`,
      );
    }
    return `${key}=${value}`;
  });
  // Order as containerd: PATH default, TERM for a tty, HOSTNAME, then the image's, then the request's.
  return mergeEnv(
    [DEFAULT_PATH_ENV],
    config.tty ? ['TERM=xterm'] : [],
    [`HOSTNAME=${input.sandbox.hostname || osHostname()}`],
    input.image.env,
    envs,
  );
}

/** `net_admin`, `CAP_NET_ADMIN`, `Net_Admin` → `CAP_NET_ADMIN`; unknown names are refused. */
export function capabilityName(name: string): string {
  const upper = name.toUpperCase();
  const full = upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
  if (!ALL_CAPABILITIES.includes(full)) {
    throw invalid(`unknown capability "${name}": use a name from capabilities(7), such as NET_ADMIN`);
  }
  return full;
}

/**
 * containerd WithCapabilities: the default set, "ALL" in add/drop first (so `add ALL, drop CHOWN` is all
 * but CHOWN), then individual adds, then drops. Privileged containers get all of `allCaps`. Ambient
 * capabilities (CRI add_ambient_capabilities; containerd clears ambient) are raised in every set, since
 * the kernel keeps an ambient capability only while it is permitted and inheritable.
 */
export function capabilities(
  config: ContainerConfig,
  allCaps: readonly string[] = ALL_CAPABILITIES,
): LinuxCapabilities {
  const { add, drop, addAmbient } = config.security.capabilities;
  const isAll = (c: string): boolean => c.toUpperCase() === 'ALL';
  let caps: string[] = [...DEFAULT_CAPABILITIES];
  if (add.some(isAll)) caps = [...allCaps];
  if (drop.some(isAll)) caps = [];
  for (const c of add.filter((c) => !isAll(c)).map(capabilityName)) if (!caps.includes(c)) caps.push(c);
  const dropped = new Set(drop.filter((c) => !isAll(c)).map(capabilityName));
  caps = caps.filter((c) => !dropped.has(c));
  if (config.security.privileged) caps = [...allCaps];
  const ambient = addAmbient.map(capabilityName);
  for (const c of ambient) if (!caps.includes(c)) caps.push(c);
  const out: LinuxCapabilities = { bounding: caps, effective: [...caps], permitted: [...caps] };
  if (ambient.length > 0) {
    out.inheritable = [...ambient];
    out.ambient = [...ambient];
  }
  return out;
}

/**
 * The capability names in a /proc/<pid>/status `CapEff:` mask (proc(5)); bits past the known list (a
 * kernel newer than this table) are left out.
 */
export function capabilitiesFromStatus(status: string): string[] {
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  if (hex === undefined)
    throw new SkiffError('internal', 'read capabilities: no CapEff line in the process status');
  const mask = BigInt(`0x${hex}`);
  return ALL_CAPABILITIES.filter((_, bit) => ((mask >> BigInt(bit)) & 1n) === 1n);
}

/** The daemon's effective capabilities. */
export async function currentCapabilities(): Promise<string[]> {
  return capabilitiesFromStatus(await readFile('/proc/self/status', 'utf8'));
}

// ------------------------------------------------------------------------------------------- mounts

interface Supplied {
  destination: string;
  hostPath: string;
  readonly: boolean;
  recursiveReadOnly: boolean;
  propagation: MountPropagation;
  /** CRI mounts have their host path resolved (and created if missing); the runtime's own are ours. */
  fromCri: boolean;
}

const depth = (p: string): number => (posix.normalize(p).match(/\//g) ?? []).length;
const clean = (p: string): string => posix.normalize(p).replace(/(.)\/$/, '$1');

async function buildMounts(
  input: SpecInput,
  volumes: Supplied[],
): Promise<{ mounts: Mount[]; rootfsPropagation?: string; missingHostPaths: string[] }> {
  const { config, sandbox } = input;
  const sec = config.security;
  const cri: Supplied[] = config.mounts.map((m) => {
    if (!posix.isAbsolute(m.containerPath)) {
      throw invalid(`mount container path "${m.containerPath}" is not absolute: use an absolute path`);
    }
    if (!posix.isAbsolute(m.hostPath)) {
      throw invalid(`mount host path "${m.hostPath}" is not absolute: use an absolute path`);
    }
    return {
      destination: m.containerPath,
      hostPath: m.hostPath,
      readonly: m.readonly,
      recursiveReadOnly: m.recursiveReadOnly,
      propagation: m.propagation,
      fromCri: true,
    };
  });
  const criDestinations = new Set(cri.map((m) => clean(m.destination)));

  // The sandbox's files (containerd linuxContainerMounts): read-only with a read-only rootfs.
  const runtimeMounts: Supplied[] = [];
  const file = (destination: string, hostPath: string, readonly: boolean): void => {
    if (hostPath !== '') {
      runtimeMounts.push({
        destination,
        hostPath,
        readonly,
        recursiveReadOnly: false,
        propagation: 'private',
        fromCri: false,
      });
    }
  };
  file('/etc/hostname', sandbox.hostnamePath, sec.readonlyRootfs);
  file('/etc/hosts', sandbox.hostsPath, sec.readonlyRootfs);
  file('/etc/resolv.conf', sandbox.resolvConfPath, sec.readonlyRootfs);
  // /dev/shm: the pod's tmpfs; with host IPC the host's /dev/shm (containerd binds it, so POSIX shared
  // memory is shared with the host like SysV IPC is); else the default tmpfs mount stays.
  if (sandbox.hostIpc) file('/dev/shm', '/dev/shm', false);
  else if (sandbox.shmPath) file('/dev/shm', sandbox.shmPath, false);

  // A CRI mount wins over the runtime's at the same destination; then parents before children (sorted
  // by depth, stable, as containerd's orderedMounts).
  const supplied = [
    ...cri,
    ...[...runtimeMounts, ...volumes].filter((m) => !criDestinations.has(clean(m.destination))),
  ].sort((a, b) => depth(a.destination) - depth(b.destination));
  const suppliedDestinations = new Set(supplied.map((m) => clean(m.destination)));

  // Defaults not overridden, and nothing under /dev when /dev itself is supplied.
  const mounts = defaultMounts().filter((m) => {
    const dst = clean(m.destination);
    return !suppliedDestinations.has(dst) && !(suppliedDestinations.has('/dev') && dst.startsWith('/dev/'));
  });
  if (sec.privileged) {
    // containerd WithPrivileged: writable sysfs and cgroupfs.
    for (const m of mounts) {
      if (m.type === 'sysfs' || m.type === 'cgroup')
        m.options = m.options?.map((o) => (o === 'ro' ? 'rw' : o));
    }
  }

  let rootfsPropagation: string | undefined;
  const missingHostPaths: string[] = [];
  for (const m of supplied) {
    let source = m.hostPath;
    if (m.fromCri) {
      try {
        source = await realpath(m.hostPath);
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT') throw err;
        missingHostPaths.push(m.hostPath);
      }
    }
    const options = ['rbind'];
    switch (m.propagation) {
      case 'private':
        options.push('rprivate');
        break;
      case 'rshared':
        // A shared mount only propagates back if the container's root is shared too.
        options.push('rshared');
        rootfsPropagation = 'rshared';
        break;
      case 'rslave':
        options.push('rslave');
        if (rootfsPropagation !== 'rshared') rootfsPropagation = 'rslave';
        break;
    }
    if (m.readonly) {
      if (m.recursiveReadOnly) {
        if (!input.recursiveReadOnlyMounts) {
          throw invalid(
            `recursive read-only mount of "${m.hostPath}" is not supported by this runtime handler (needs runc ≥ 1.1 and Linux ≥ 5.12): drop recursiveReadOnly or use a handler that supports it`,
          );
        }
        if (m.propagation !== 'private') {
          throw invalid(
            `recursive read-only mount of "${m.hostPath}" needs private propagation, not ${m.propagation}: set propagation to None`,
          );
        }
        options.push('rro');
      } else {
        options.push('ro');
      }
    } else {
      if (m.recursiveReadOnly) {
        throw invalid(
          `recursive read-only mount of "${m.hostPath}" must also be read-only: set readOnly or drop recursiveReadOnly`,
        );
      }
      options.push('rw');
    }
    // Not adopted from containerd: its check that the host mount is itself shared/slave (mountinfo).
    // Without it runc still mounts; propagation then just does not happen.
    mounts.push({ destination: m.destination, type: 'bind', source, options });
  }
  return rootfsPropagation === undefined
    ? { mounts, missingHostPaths }
    : { mounts, rootfsPropagation, missingHostPaths };
}

async function imageVolumes(input: SpecInput): Promise<{ supplied: Supplied[]; volumes: ImageVolume[] }> {
  const criDestinations = new Set(input.config.mounts.map((m) => clean(m.containerPath)));
  const supplied: Supplied[] = [];
  const volumes: ImageVolume[] = [];
  const seen = new Set<string>();
  for (const v of input.image.volumes) {
    // A relative VOLUME is taken from the root (containerd does the same).
    const containerPath = clean(posix.join('/', v));
    if (containerPath === '/' || criDestinations.has(containerPath) || seen.has(containerPath)) continue;
    seen.add(containerPath);
    if (input.volumesDir !== undefined) {
      const name = createHash('sha256').update(containerPath).digest('hex').slice(0, 16);
      const hostPath = join(input.volumesDir, name);
      volumes.push({ containerPath, hostPath });
      supplied.push({
        destination: containerPath,
        hostPath,
        readonly: false,
        recursiveReadOnly: false,
        propagation: 'private',
        fromCri: false,
      });
    } else {
      // Inside the (untrusted) rootfs: resolved there, never following a link out of it.
      volumes.push({ containerPath, hostPath: await mkdirInRoot(input.rootfs, containerPath) });
    }
  }
  return { supplied, volumes };
}

// --------------------------------------------------------------------------------------- namespaces

function namespaces(input: SpecInput): LinuxNamespace[] {
  const { sandbox, config } = input;
  const ns: LinuxNamespace[] = [];
  const pinned = (what: string, path: string | undefined): string => {
    if (!path) {
      throw new SkiffError(
        'failed-precondition',
        `pod sandbox "${sandbox.id}" has no ${what} namespace to join: stop and recreate the pod sandbox`,
      );
    }
    return path;
  };
  switch (config.security.namespaces.pid) {
    case 'container':
      ns.push({ type: 'pid' });
      break;
    case 'pod':
      ns.push({ type: 'pid', path: pinned('shared pid', sandbox.namespaces.pid) });
      break;
    case 'target':
      if (!input.targetPidNsPath) {
        throw new SkiffError(
          'failed-precondition',
          `target container "${config.security.namespaces.targetId}" has no pid namespace to join: start it first`,
        );
      }
      ns.push({ type: 'pid', path: input.targetPidNsPath });
      break;
    case 'node':
      break;
  }
  if (!sandbox.hostIpc) ns.push({ type: 'ipc', path: pinned('ipc', sandbox.namespaces.ipc) });
  // UTS follows the network namespace in Kubernetes: a host-network pod has the node's hostname.
  if (!sandbox.hostNetwork) ns.push({ type: 'uts', path: pinned('uts', sandbox.namespaces.uts) });
  else if (sandbox.namespaces.uts) ns.push({ type: 'uts', path: sandbox.namespaces.uts });
  ns.push({ type: 'mount' });
  if (!sandbox.hostNetwork) ns.push({ type: 'network', path: pinned('network', sandbox.namespaces.net) });
  // A cgroup namespace hides the host's hierarchy; containerd uses one only on cgroup v2 and not for
  // privileged containers (containers/libpod#4363).
  if (input.cgroupV2 && !config.security.privileged) ns.push({ type: 'cgroup' });
  return ns;
}

/**
 * runc's cgroupsPath: systemd `slice:prefix:name` (containerd getCgroupsPath with prefix "skiff"), or a
 * cgroupfs path under the pod's parent.
 */
export function cgroupsPath(driver: 'systemd' | 'cgroupfs', parent: string, id: string): string {
  if (driver === 'systemd') {
    const slice = parent === '' ? 'system.slice' : posix.basename(parent);
    if (!slice.endsWith('.slice')) {
      throw invalid(
        `cgroup parent "${parent}" is not a systemd slice but the cgroup driver is systemd: use a parent ending in .slice or the cgroupfs driver`,
      );
    }
    return `${slice}:skiff:${id}`;
  }
  return parent === '' ? `/skiff/${id}` : posix.join(parent, id);
}

// ---------------------------------------------------------------------------------------- resources

/**
 * The OCI resources for CreateContainer and UpdateContainerResources (containerd WithResources): zero
 * means unset; swap defaults to the memory limit (no swapping) where swap is accounted; hugepage limits
 * need the hugetlb controller; `unified` needs cgroup v2 (runc refuses it on v1).
 */
export function toLinuxResources(r: ContainerResources, options: ResourceOptions = {}): LinuxResources {
  const out: LinuxResources = {};
  const cpu: NonNullable<LinuxResources['cpu']> = {};
  if (r.cpuShares !== 0) cpu.shares = r.cpuShares;
  if (r.cpuQuota !== 0) cpu.quota = r.cpuQuota;
  if (r.cpuPeriod !== 0) cpu.period = r.cpuPeriod;
  if (r.cpusetCpus !== '') cpu.cpus = r.cpusetCpus;
  if (r.cpusetMems !== '') cpu.mems = r.cpusetMems;
  if (Object.keys(cpu).length > 0) out.cpu = cpu;

  const memory: NonNullable<LinuxResources['memory']> = {};
  if (r.memoryLimitInBytes !== 0) memory.limit = r.memoryLimitInBytes;
  if (options.swapControllerAvailable) {
    if (r.memorySwapLimitInBytes !== 0) memory.swap = r.memorySwapLimitInBytes;
    else if (r.memoryLimitInBytes !== 0) memory.swap = r.memoryLimitInBytes;
  } else if (r.memorySwapLimitInBytes !== 0) {
    options.warnings?.push('swap limit dropped: this node has no swap accounting');
  }
  if (Object.keys(memory).length > 0) out.memory = memory;

  if (r.hugepageLimits.length > 0) {
    if (options.hugetlbAvailable) {
      out.hugepageLimits = r.hugepageLimits.map((h) => ({ pageSize: h.pageSize, limit: h.limit }));
    } else if (r.hugepageLimits.some((h) => h.limit > 0)) {
      options.warnings?.push('huge page limits dropped: this node has no hugetlb cgroup controller');
    }
  }

  const unifiedKeys = Object.keys(r.unified);
  if (unifiedKeys.length > 0) {
    if (!options.cgroupV2) {
      throw invalid(
        `unified cgroup resources (${unifiedKeys.join(', ')}) need cgroup v2 but this node uses cgroup v1: drop them`,
      );
    }
    out.unified = { ...r.unified };
  }
  return out;
}

/** Kubernetes' range, raised to the daemon's own score (containerd restrictOOMScoreAdj). */
export function clampOomScoreAdj(requested: number, minOomScoreAdj: number): number {
  return Math.min(1000, Math.max(requested, minOomScoreAdj, -1000));
}

// ----------------------------------------------------------------------------------------- security

async function loadSeccompProfile(path: string): Promise<LinuxSeccomp> {
  if (!posix.isAbsolute(path)) {
    throw invalid(
      `seccomp profile "${path}" is not an absolute path: give localhostProfile as an absolute path`,
    );
  }
  // Bounded and regular files only: a FIFO or /dev/zero named by mistake must not hang the call.
  const buf = await readFileInRoot('/', path, MAX_SECCOMP_PROFILE_BYTES).catch((err: unknown) => {
    throw err instanceof SkiffError
      ? invalid(`seccomp profile "${path}" cannot be used: it must be a regular file of at most 4 MiB`)
      : err;
  });
  if (buf === undefined) {
    throw invalid(`seccomp profile "${path}" not found: put the profile on the node or fix localhostProfile`);
  }
  const text = buf.toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new SkiffError('invalid-argument', `seccomp profile "${path}" is not valid JSON: fix the profile`, {
      cause: err,
    });
  }
  // The OCI LinuxSeccomp shape, as containerd unmarshals it (unknown keys such as Docker's archMap are
  // ignored there and dropped here).
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw invalid(`seccomp profile "${path}" is not a JSON object: fix the profile`);
  }
  const p = parsed as Record<string, unknown>;
  if (typeof p.defaultAction !== 'string') {
    throw invalid(`seccomp profile "${path}" has no defaultAction: fix the profile`);
  }
  const out: Record<string, unknown> = {};
  for (const key of [
    'defaultAction',
    'defaultErrnoRet',
    'architectures',
    'flags',
    'listenerPath',
    'listenerMetadata',
    'syscalls',
  ]) {
    if (p[key] !== undefined && p[key] !== null) out[key] = p[key];
  }
  if (out.syscalls !== undefined && !Array.isArray(out.syscalls)) {
    throw invalid(`seccomp profile "${path}": syscalls is not a list: fix the profile`);
  }
  return out as unknown as LinuxSeccomp;
}

async function seccomp(
  input: SpecInput,
  bounding: string[],
  warnings: string[],
): Promise<LinuxSeccomp | undefined> {
  const profile = input.config.security.seccomp;
  // Privileged containers run unconfined (containerd GenerateSeccompSpecOpts); no profile asked = none.
  if (input.config.security.privileged || !profile || profile.kind === 'unconfined') return undefined;
  if (!input.seccompAvailable) {
    if (profile.kind === 'runtime-default') {
      warnings.push('seccomp is not available on this node: running without the RuntimeDefault profile');
      return undefined;
    }
    throw new SkiffError(
      'failed-precondition',
      `seccomp profile "${profile.path}" was asked for but seccomp is not available on this node: enable seccomp in the kernel or schedule the pod elsewhere`,
    );
  }
  if (profile.kind === 'runtime-default') return defaultSeccompProfile(bounding, input.arch);
  return loadSeccompProfile(profile.path);
}

function apparmor(input: SpecInput, warnings: string[]): string | undefined {
  const profile: SecurityProfile | undefined = input.config.security.apparmor;
  if (!input.apparmorAvailable) {
    if (profile?.kind === 'runtime-default') {
      warnings.push('AppArmor is not available on this node: running without the RuntimeDefault profile');
    } else if (profile?.kind === 'localhost') {
      throw new SkiffError(
        'failed-precondition',
        `AppArmor profile "${profile.path}" was asked for but AppArmor is not available on this node: schedule the pod on a node with AppArmor`,
      );
    }
    return undefined;
  }
  // containerd: no profile asked = RuntimeDefault (kubernetes#51746); privileged = none, whatever was
  // asked (its WithPrivileged clears the profile).
  if (input.config.security.privileged) return undefined;
  const p = profile ?? { kind: 'runtime-default' };
  switch (p.kind) {
    case 'unconfined':
      return undefined;
    case 'runtime-default':
      return APPARMOR_DEFAULT_PROFILE;
    case 'localhost':
      return p.path;
  }
}

function selinux(input: SpecInput, warnings: string[]): { process?: string; mount?: string } {
  const o = input.config.security.selinux;
  if (!o || (o.user === '' && o.role === '' && o.type === '' && o.level === '')) return {};
  if (!input.selinuxAvailable) {
    // containerd and CRI-O ignore SELinux options on a node without SELinux (label.InitLabels is a
    // no-op there), so a manifest written for SELinux nodes still runs here.
    warnings.push('SELinux is not enabled on this node: the container SELinux options are ignored');
    return {};
  }
  const level = o.level || 's0';
  return {
    process: `${o.user || 'system_u'}:${o.role || 'system_r'}:${o.type || 'container_t'}:${level}`,
    mount: `system_u:object_r:container_file_t:${level}`,
  };
}

/** Sysctls whose namespace the container shares with the node are dropped (runc refuses them). */
function sysctls(input: SpecInput, warnings: string[]): Record<string, string> {
  const { sandbox } = input;
  const out: Record<string, string> = {};
  const ipc = (k: string): boolean =>
    k.startsWith('kernel.shm') ||
    k.startsWith('kernel.msg') ||
    k === 'kernel.sem' ||
    k.startsWith('fs.mqueue.');
  const uts = (k: string): boolean => k === 'kernel.hostname' || k === 'kernel.domainname';
  for (const [k, v] of Object.entries(sandbox.sysctls)) {
    if (sandbox.hostNetwork && (k.startsWith('net.') || uts(k))) {
      warnings.push(`sysctl ${k} dropped: the pod uses the node's network namespace`);
      continue;
    }
    if (sandbox.hostIpc && ipc(k)) {
      warnings.push(`sysctl ${k} dropped: the pod uses the node's IPC namespace`);
      continue;
    }
    out[k] = v;
  }
  return out;
}

async function devices(input: SpecInput): Promise<{ devices: LinuxDevice[]; rules: LinuxDeviceCgroup[] }> {
  const out: LinuxDevice[] = [];
  const rules: LinuxDeviceCgroup[] = [];
  for (const d of input.config.devices) {
    const access = d.permissions === '' ? 'rwm' : d.permissions;
    if (!/^[rwm]{1,3}$/.test(access) || new Set(access).size !== access.length) {
      throw invalid(
        `device "${d.hostPath}" permissions "${d.permissions}" are invalid: use some of r, w and m`,
      );
    }
    for (const dev of await devicesFor(d.hostPath, d.containerPath)) {
      out.push(dev);
      rules.push({ allow: true, type: dev.type, major: dev.major, minor: dev.minor, access });
    }
  }
  if (input.config.security.privileged) {
    // Every host device, and the whole device cgroup (containerd WithHostDevices, WithAllDevicesAllowed).
    const have = new Set(out.map((d) => d.path));
    for (const dev of await (input.listHostDevices ?? hostDevices)()) if (!have.has(dev.path)) out.push(dev);
    return { devices: out, rules: [{ allow: true, access: 'rwm' }] };
  }
  return { devices: out, rules: [...defaultDeviceRules(), ...rules] };
}

// -------------------------------------------------------------------------------------------- build

/** The OCI spec for CreateContainer. */
export async function buildSpec(input: SpecInput): Promise<BuildResult> {
  const { config, sandbox } = input;
  const sec = config.security;
  const warnings: string[] = [];
  if (sec.privileged && !sandbox.privileged) {
    throw invalid(
      `privileged container "${config.name}" in pod sandbox "${sandbox.id}", which is not privileged: a privileged container needs a privileged pod`,
    );
  }

  const args = processArgs(config.command, config.args, input.image);
  const cwd = config.workingDir || input.image.workingDir || '/';
  if (!posix.isAbsolute(cwd))
    throw invalid(`working directory "${cwd}" is not absolute: use an absolute path`);
  const user = await resolveUser(input.rootfs, {
    runAsUser: sec.runAsUser,
    runAsGroup: sec.runAsGroup,
    runAsUsername: sec.runAsUsername,
    imageUser: input.image.user,
    supplementalGroups: sec.supplementalGroups,
    supplementalGroupsPolicy: sec.supplementalGroupsPolicy ?? 'merge',
    runAsNonRoot: sec.runAsNonRoot,
  });
  const caps = capabilities(config, input.allCapabilities ?? (await currentCapabilities()));

  const process: Process = {
    ...(config.tty ? { terminal: true } : {}),
    user: { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids },
    args,
    env: buildEnv(input),
    cwd,
    capabilities: caps,
    noNewPrivileges: sec.noNewPrivs,
    oomScoreAdj: clampOomScoreAdj(config.resources.oomScoreAdj, input.minOomScoreAdj),
  };
  const apparmorProfile = apparmor(input, warnings);
  if (apparmorProfile !== undefined) process.apparmorProfile = apparmorProfile;
  const labels = selinux(input, warnings);
  if (labels.process !== undefined) process.selinuxLabel = labels.process;

  const { supplied: volumeMounts, volumes } = await imageVolumes(input);
  const { mounts, rootfsPropagation, missingHostPaths } = await buildMounts(input, volumeMounts);
  const dev = await devices(input);
  const resources: LinuxResources = {
    devices: dev.rules,
    ...toLinuxResources(config.resources, {
      cgroupV2: input.cgroupV2,
      swapControllerAvailable: input.swapControllerAvailable ?? false,
      hugetlbAvailable: input.hugetlbAvailable ?? false,
      warnings,
    }),
  };
  const profile = await seccomp(input, caps.bounding ?? [], warnings);
  const sysctl = sysctls(input, warnings);

  const annotations: Record<string, string> = {};
  // Kubernetes' own keys are the runtime's to set: a request cannot forge them.
  for (const [k, v] of Object.entries(config.annotations))
    if (!k.startsWith(ANNOTATION_PREFIX)) annotations[k] = v;
  Object.assign(annotations, {
    'io.kubernetes.cri.container-type': 'container',
    'io.kubernetes.cri.sandbox-id': sandbox.id,
    ...(sandbox.namespace !== undefined ? { 'io.kubernetes.cri.sandbox-namespace': sandbox.namespace } : {}),
    ...(sandbox.uid !== undefined ? { 'io.kubernetes.cri.sandbox-uid': sandbox.uid } : {}),
    ...(sandbox.name !== undefined ? { 'io.kubernetes.cri.sandbox-name': sandbox.name } : {}),
    'io.kubernetes.cri.container-name': config.name,
    'io.kubernetes.cri.image-name': input.imageName,
  });

  const spec: Spec = {
    ociVersion: OCI_VERSION,
    process,
    root: sec.readonlyRootfs ? { path: input.rootfs, readonly: true } : { path: input.rootfs },
    // No `hostname`: the container joins the pod's UTS namespace, whose hostname the sandbox set
    // (containerd sets none for containers either; runc refuses one without a private UTS namespace).
    mounts,
    annotations,
    linux: {
      ...(Object.keys(sysctl).length > 0 ? { sysctl } : {}),
      resources,
      cgroupsPath: cgroupsPath(input.cgroupDriver, sandbox.cgroupParent, input.id),
      namespaces: namespaces(input),
      ...(dev.devices.length > 0 ? { devices: dev.devices } : {}),
      ...(profile ? { seccomp: profile } : {}),
      ...(rootfsPropagation ? { rootfsPropagation } : {}),
      // Privileged: nothing masked (containerd WithPrivileged). Otherwise what kubelet sent (its
      // procMount Default lists, or empty for Unmasked), else the runtime's defaults.
      ...(sec.privileged
        ? {}
        : {
            maskedPaths: [...(sec.maskedPaths ?? DEFAULT_MASKED_PATHS)],
            readonlyPaths: [...(sec.readonlyPaths ?? DEFAULT_READONLY_PATHS)],
          }),
      ...(labels.mount !== undefined ? { mountLabel: labels.mount } : {}),
    },
  };
  return { spec, warnings, volumes, missingHostPaths };
}
