/**
 * What CreateContainer asks for, in domain terms: the CRI adapter (`cri/convert/container-config.ts`)
 * turns a CreateContainerRequest into this, and `oci/spec` turns it (with the image config and the
 * sandbox's facts) into an OCI runtime spec. No CRI types here: services never see a `*Request`.
 */

export type NamespaceMode = 'pod' | 'container' | 'node' | 'target';

export type MountPropagation = 'private' | 'rslave' | 'rshared';

export interface ContainerMount {
  containerPath: string;
  hostPath: string;
  readonly: boolean;
  /** Recursive read-only (needs `readonly` and private propagation; needs kernel ≥ 5.12 and runc `rro`). */
  recursiveReadOnly: boolean;
  propagation: MountPropagation;
  selinuxRelabel: boolean;
}

export interface ContainerDevice {
  containerPath: string;
  hostPath: string;
  /** cgroup device permissions, some of "rwm". */
  permissions: string;
}

/** A seccomp or AppArmor profile as the CRI names it. */
export type SecurityProfile =
  { kind: 'runtime-default' } | { kind: 'unconfined' } | { kind: 'localhost'; path: string };

export interface ContainerResources {
  /** 0 = not set, for every number here. */
  cpuPeriod: number;
  cpuQuota: number;
  cpuShares: number;
  memoryLimitInBytes: number;
  memorySwapLimitInBytes: number;
  /** Requested; the spec builder clamps it to what the daemon may set (see `minOomScoreAdj`). */
  oomScoreAdj: number;
  cpusetCpus: string;
  cpusetMems: string;
  hugepageLimits: { pageSize: string; limit: number }[];
  /** cgroup v2 unified keys (`memory.high` …). */
  unified: Record<string, string>;
}

export interface ContainerSecurity {
  privileged: boolean;
  capabilities: { add: string[]; drop: string[]; addAmbient: string[] };
  namespaces: { pid: NamespaceMode; targetId: string };
  /** Explicit uid (`run_as_user`), or undefined. */
  runAsUser: number | undefined;
  runAsGroup: number | undefined;
  runAsUsername: string;
  runAsNonRoot: boolean;
  readonlyRootfs: boolean;
  supplementalGroups: number[];
  /**
   * `merge` (the CRI default): the user's groups from the image's /etc/group are added to
   * `supplementalGroups`; `strict`: only `supplementalGroups`. Absent = merge.
   */
  supplementalGroupsPolicy?: 'merge' | 'strict';
  noNewPrivs: boolean;
  /** Set by kubelet (procMount Default → the runtime's defaults; Unmasked → empty lists). */
  maskedPaths: string[] | undefined;
  readonlyPaths: string[] | undefined;
  seccomp: SecurityProfile | undefined;
  apparmor: SecurityProfile | undefined;
  selinux: { user: string; role: string; type: string; level: string } | undefined;
}

export interface ContainerConfig {
  name: string;
  attempt: number;
  /** The image as asked (reference or id); the service resolves it. */
  image: string;
  /**
   * ImageSpec.user_specified_image of the request (kubelet: the pod spec's image, while `image` is the id it
   * resolved); absent when the request did not set it, and in records written before skiff kept it.
   */
  userSpecifiedImage?: string;
  command: string[];
  args: string[];
  workingDir: string;
  envs: { key: string; value: string }[];
  mounts: ContainerMount[];
  devices: ContainerDevice[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** Relative to the sandbox's log_directory; '' = no log file. */
  logPath: string;
  stdin: boolean;
  stdinOnce: boolean;
  tty: boolean;
  /** A Linux signal name (`SIGTERM`) from the CRI, or '' to use the image's StopSignal. */
  stopSignal: string;
  resources: ContainerResources;
  security: ContainerSecurity;
}
