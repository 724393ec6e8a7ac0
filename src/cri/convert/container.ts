/**
 * Container records → CRI Container / ContainerStatus messages.
 */
import type { ContainerRecord, ContainerState as DomainState } from '../../container/record.js';
import type { ContainerEvent } from '../../container/service.js';
import type { MountPropagation as DomainPropagation } from '../../oci/spec/container-config.js';
import {
  type Container,
  ContainerEventType,
  ContainerState,
  type ContainerStatus,
  type ImageSpec,
  MountPropagation,
  type Signal,
  signalFromJSON,
} from '../gen/runtime/v1/api.js';

const states: Record<DomainState, ContainerState> = {
  created: ContainerState.CONTAINER_CREATED,
  running: ContainerState.CONTAINER_RUNNING,
  exited: ContainerState.CONTAINER_EXITED,
  unknown: ContainerState.CONTAINER_UNKNOWN,
};

const domainStates = new Map<ContainerState, DomainState>(
  Object.entries(states).map(([k, v]) => [v, k as DomainState]),
);

export function toDomainState(s: ContainerState): DomainState | undefined {
  return domainStates.get(s);
}

const propagations: Record<DomainPropagation, MountPropagation> = {
  private: MountPropagation.PROPAGATION_PRIVATE,
  rslave: MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
  rshared: MountPropagation.PROPAGATION_BIDIRECTIONAL,
};

export const eventTypes: Record<ContainerEvent['type'], ContainerEventType> = {
  created: ContainerEventType.CONTAINER_CREATED_EVENT,
  started: ContainerEventType.CONTAINER_STARTED_EVENT,
  stopped: ContainerEventType.CONTAINER_STOPPED_EVENT,
  deleted: ContainerEventType.CONTAINER_DELETED_EVENT,
};

/**
 * A ListContainers entry. `image_ref` is the image id here, as containerd's list sends it: kubelet's image
 * GC marks images in use by the containers' image_ref and compares with ListImages' ids (a repo digest
 * would never match). `image_id` stays empty: kubelet (1.30+, toKubeContainer) uses it only when set and
 * falls back to image_ref, which already is the id, so it would be 75 bytes per entry for nothing.
 * ContainerStatus keeps the repo digest as image_ref (kubelet shows it as the pod's imageID) and the id.
 */
export function toCriContainer(r: ContainerRecord): Container {
  const m = r.metadata;
  return {
    id: m.id,
    podSandboxId: m.sandboxId,
    metadata: { name: m.config.name, attempt: m.config.attempt },
    image: imageSpecOf(r),
    imageRef: m.imageId,
    imageId: '',
    state: states[r.status.state],
    createdAt: BigInt(m.createdAt),
    labels: m.config.labels,
    annotations: m.config.annotations,
  };
}

export function toCriContainerStatus(r: ContainerRecord): ContainerStatus {
  const m = r.metadata;
  const res = m.config.resources;
  return {
    id: m.id,
    metadata: { name: m.config.name, attempt: m.config.attempt },
    state: states[r.status.state],
    createdAt: BigInt(m.createdAt),
    startedAt: BigInt(r.status.startedAt),
    finishedAt: BigInt(r.status.finishedAt),
    exitCode: r.status.exitCode,
    image: imageSpecOf(r),
    imageRef: m.imageRef,
    imageId: m.imageId,
    reason: r.status.reason,
    message: r.status.message,
    labels: m.config.labels,
    annotations: m.config.annotations,
    mounts: m.config.mounts.map((x) => ({
      containerPath: x.containerPath,
      hostPath: x.hostPath,
      readonly: x.readonly,
      selinuxRelabel: x.selinuxRelabel,
      propagation: propagations[x.propagation],
      uidMappings: [],
      gidMappings: [],
      recursiveReadOnly: x.recursiveReadOnly,
      image: undefined,
      imageSubPath: '',
    })),
    logPath: m.logPath,
    resources: {
      linux: {
        cpuPeriod: BigInt(res.cpuPeriod),
        cpuQuota: BigInt(res.cpuQuota),
        cpuShares: BigInt(res.cpuShares),
        memoryLimitInBytes: BigInt(res.memoryLimitInBytes),
        memorySwapLimitInBytes: BigInt(res.memorySwapLimitInBytes),
        oomScoreAdj: BigInt(res.oomScoreAdj),
        cpusetCpus: res.cpusetCpus,
        cpusetMems: res.cpusetMems,
        hugepageLimits: res.hugepageLimits.map((h) => ({ pageSize: h.pageSize, limit: BigInt(h.limit) })),
        unified: res.unified,
      },
      windows: undefined,
    },
    user: {
      linux: {
        uid: BigInt(m.user.uid),
        gid: BigInt(m.user.gid),
        supplementalGroups: m.user.additionalGids.map((g) => BigInt(g)),
      },
    },
    stopSignal: signalOf(m.stopSignal),
  };
}

/**
 * The image a container runs: the normalised name (what `crictl ps` shows), and user_specified_image only
 * when the create request carried one ("only set if available", as the CRI says). It used to echo the
 * request's `image` there, which is not what the user specified when kubelet sends an image id, and cost
 * every ListContainers entry the name a second time.
 */
function imageSpecOf(r: ContainerRecord): ImageSpec {
  const m = r.metadata;
  return {
    image: m.imageName,
    annotations: {},
    userSpecifiedImage: m.config.userSpecifiedImage ?? '',
    runtimeHandler: '',
    imageRef: '',
  };
}

function signalOf(name: string): Signal {
  return signalFromJSON(name.startsWith('SIG') ? name : `SIG${name}`);
}
