/**
 * CRI ContainerConfig → skiff's domain `ContainerConfig` (what `oci/spec/build.ts` turns into a runtime
 * spec). Wrappers become `undefined` when unset, int64s become numbers (refused past 2^53), enums become
 * names, and the deprecated string forms of seccomp/AppArmor profiles are read when the structured field
 * is absent (containerd `internal/cri/sputil`).
 */
import { SkiffError } from '../../errdefs.js';
import type {
  ContainerConfig as DomainConfig,
  ContainerResources,
  MountPropagation as DomainPropagation,
  NamespaceMode as DomainMode,
  SecurityProfile as DomainProfile,
} from '../../oci/spec/container-config.js';
import {
  type ContainerConfig,
  type Int64Value,
  type LinuxContainerResources,
  type LinuxContainerSecurityContext,
  MountPropagation,
  NamespaceMode,
  type SecurityProfile,
  SecurityProfile_ProfileType,
  Signal,
  SupplementalGroupsPolicy,
} from '../gen/runtime/v1/api.js';

const WHAT = 'create container';

function invalid(message: string): SkiffError {
  return new SkiffError('invalid-argument', `${WHAT}: ${message}`);
}

/** An int64 as a JS number; values past 2^53 cannot be represented exactly and are refused. */
function num(v: bigint, field: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw invalid(`${field} ${v} is out of range`);
  return n;
}

function wrapped(v: Int64Value | undefined, field: string): number | undefined {
  return v === undefined ? undefined : num(v.value, field);
}

const propagations: Record<number, DomainPropagation> = {
  [MountPropagation.PROPAGATION_PRIVATE]: 'private',
  [MountPropagation.PROPAGATION_HOST_TO_CONTAINER]: 'rslave',
  [MountPropagation.PROPAGATION_BIDIRECTIONAL]: 'rshared',
};

const modes: Record<number, DomainMode> = {
  [NamespaceMode.POD]: 'pod',
  [NamespaceMode.CONTAINER]: 'container',
  [NamespaceMode.NODE]: 'node',
  [NamespaceMode.TARGET]: 'target',
};

/** `Signal.SIGTERM` → 'SIGTERM' (the enum's own names); RUNTIME_DEFAULT → '' (the image's, else SIGTERM). */
export function signalName(s: Signal): string {
  if (s === Signal.RUNTIME_DEFAULT) return '';
  const name = Signal[s] as string | undefined;
  if (name === undefined || s === Signal.UNRECOGNIZED) throw invalid(`unknown stop signal ${s}`);
  return name;
}

/** The structured profile, else the deprecated string ("runtime/default", "localhost/<path>", …). */
function profileOf(
  structured: SecurityProfile | undefined,
  legacy: string,
  what: string,
): DomainProfile | undefined {
  if (structured) {
    switch (structured.profileType) {
      case SecurityProfile_ProfileType.RuntimeDefault:
        return { kind: 'runtime-default' };
      case SecurityProfile_ProfileType.Unconfined:
        return { kind: 'unconfined' };
      case SecurityProfile_ProfileType.Localhost: {
        // containerd trims a "localhost/" prefix even here, in case a client sends the old form.
        const path = structured.localhostRef.replace(/^localhost\//, '');
        if (path === '') throw invalid(`${what} profile type Localhost needs localhost_ref`);
        return { kind: 'localhost', path };
      }
      default:
        throw invalid(`unknown ${what} profile type ${structured.profileType}`);
    }
  }
  switch (legacy) {
    case '':
      return undefined;
    case 'runtime/default':
    case 'docker/default':
      return { kind: 'runtime-default' };
    case 'unconfined':
      return { kind: 'unconfined' };
    default:
      if (legacy.startsWith('localhost/') && legacy.length > 'localhost/'.length) {
        return { kind: 'localhost', path: legacy.slice('localhost/'.length) };
      }
      throw invalid(
        `${what} profile "${legacy}" is invalid: use runtime/default, unconfined or localhost/<profile>`,
      );
  }
}

/** CRI LinuxContainerResources → domain resources (also for UpdateContainerResources). */
export function toContainerResources(r: LinuxContainerResources | undefined): ContainerResources {
  if (!r) {
    return {
      cpuPeriod: 0,
      cpuQuota: 0,
      cpuShares: 0,
      memoryLimitInBytes: 0,
      memorySwapLimitInBytes: 0,
      oomScoreAdj: 0,
      cpusetCpus: '',
      cpusetMems: '',
      hugepageLimits: [],
      unified: {},
    };
  }
  return {
    cpuPeriod: num(r.cpuPeriod, 'cpu_period'),
    cpuQuota: num(r.cpuQuota, 'cpu_quota'),
    cpuShares: num(r.cpuShares, 'cpu_shares'),
    memoryLimitInBytes: num(r.memoryLimitInBytes, 'memory_limit_in_bytes'),
    memorySwapLimitInBytes: num(r.memorySwapLimitInBytes, 'memory_swap_limit_in_bytes'),
    oomScoreAdj: num(r.oomScoreAdj, 'oom_score_adj'),
    cpusetCpus: r.cpusetCpus,
    cpusetMems: r.cpusetMems,
    hugepageLimits: r.hugepageLimits.map((h) => ({
      pageSize: h.pageSize,
      limit: num(h.limit, `hugepage limit for ${h.pageSize}`),
    })),
    unified: { ...r.unified },
  };
}

function security(sc: LinuxContainerSecurityContext | undefined): DomainConfig['security'] {
  const ns = sc?.namespaceOptions;
  // Without namespace options a container gets its own PID namespace, as a sandbox does
  // (convert/sandbox.ts); a POD mode needs the sandbox to share one.
  const pid = modes[ns?.pid ?? NamespaceMode.CONTAINER];
  if (!pid) throw invalid(`unknown pid namespace mode ${ns?.pid}`);
  if (ns?.usernsOptions && ns.usernsOptions.mode !== NamespaceMode.NODE) {
    throw invalid('user namespaces are not supported by skiff: set hostUsers: true (or leave it unset)');
  }
  let policy: 'merge' | 'strict';
  switch (sc?.supplementalGroupsPolicy ?? SupplementalGroupsPolicy.Merge) {
    case SupplementalGroupsPolicy.Merge:
      policy = 'merge';
      break;
    case SupplementalGroupsPolicy.Strict:
      policy = 'strict';
      break;
    default:
      throw invalid(`unknown supplemental groups policy ${sc?.supplementalGroupsPolicy}`);
  }
  const se = sc?.selinuxOptions;
  return {
    privileged: sc?.privileged ?? false,
    capabilities: {
      add: sc?.capabilities?.addCapabilities ?? [],
      drop: sc?.capabilities?.dropCapabilities ?? [],
      addAmbient: sc?.capabilities?.addAmbientCapabilities ?? [],
    },
    namespaces: { pid, targetId: ns?.targetId ?? '' },
    runAsUser: wrapped(sc?.runAsUser, 'run_as_user'),
    runAsGroup: wrapped(sc?.runAsGroup, 'run_as_group'),
    runAsUsername: sc?.runAsUsername ?? '',
    // The CRI has no run_as_non_root: kubelet checks runAsNonRoot itself (verifyRunAsNonRoot).
    runAsNonRoot: false,
    readonlyRootfs: sc?.readonlyRootfs ?? false,
    supplementalGroups: (sc?.supplementalGroups ?? []).map((g) => num(g, 'supplemental group')),
    supplementalGroupsPolicy: policy,
    noNewPrivs: sc?.noNewPrivs ?? false,
    // proto3 cannot tell an unset list from an empty one; kubelet sends the lists for procMount Default
    // and empty ones for Unmasked, so empty means "none" (as containerd reads it).
    maskedPaths: [...(sc?.maskedPaths ?? [])],
    readonlyPaths: [...(sc?.readonlyPaths ?? [])],
    // The deprecated strings are still sent by older kubelets and crictl; containerd reads them too.
    // eslint-disable-next-line @typescript-eslint/no-deprecated
    seccomp: profileOf(sc?.seccomp, sc?.seccompProfilePath ?? '', 'seccomp'),
    // eslint-disable-next-line @typescript-eslint/no-deprecated
    apparmor: profileOf(sc?.apparmor, sc?.apparmorProfile ?? '', 'AppArmor'),
    selinux:
      se && (se.user || se.role || se.type || se.level)
        ? { user: se.user, role: se.role, type: se.type, level: se.level }
        : undefined,
  };
}

/** CreateContainer's config in domain terms. */
export function toContainerConfig(c: ContainerConfig): DomainConfig {
  if (c.CDIDevices.length > 0) {
    throw invalid(
      `CDI devices (${c.CDIDevices.map((d) => d.name).join(', ')}) are not supported by skiff: use devices instead`,
    );
  }
  return {
    name: c.metadata?.name ?? '',
    attempt: c.metadata?.attempt ?? 0,
    image: c.image?.image ?? '',
    ...(c.image?.userSpecifiedImage ? { userSpecifiedImage: c.image.userSpecifiedImage } : {}),
    command: [...c.command],
    args: [...c.args],
    workingDir: c.workingDir,
    envs: c.envs.map((e) => ({ key: e.key, value: Buffer.from(e.value).toString('utf8') })),
    mounts: c.mounts.map((m) => {
      if (m.image?.image) {
        throw invalid(`image volume mounts (at "${m.containerPath}") are not supported by skiff`);
      }
      if (m.uidMappings.length > 0 || m.gidMappings.length > 0) {
        throw invalid(`idmapped mounts (at "${m.containerPath}") are not supported by skiff`);
      }
      const propagation = propagations[m.propagation];
      if (!propagation) throw invalid(`unknown mount propagation ${m.propagation} for "${m.containerPath}"`);
      return {
        containerPath: m.containerPath,
        hostPath: m.hostPath,
        readonly: m.readonly,
        recursiveReadOnly: m.recursiveReadOnly,
        propagation,
        selinuxRelabel: m.selinuxRelabel,
      };
    }),
    devices: c.devices.map((d) => ({
      containerPath: d.containerPath,
      hostPath: d.hostPath,
      permissions: d.permissions,
    })),
    labels: { ...c.labels },
    annotations: { ...c.annotations },
    logPath: c.logPath,
    stdin: c.stdin,
    stdinOnce: c.stdinOnce,
    tty: c.tty,
    stopSignal: signalName(c.stopSignal),
    resources: toContainerResources(c.linux?.resources),
    security: security(c.linux?.securityContext),
  };
}
