/**
 * Container records: `<root>/containers/<id>/{metadata,status}.json` through the shared record store.
 * The writable layer (`upper/`, `work/`) lives beside them, so it survives a restart; the bundle and
 * conmon's files live under `state` (volatile, as the processes they describe).
 */
import { join } from 'node:path';
import type { ContainerConfig } from '../oci/spec/container-config.js';
import { RecordStore, type StoredRecord } from '../store/records.js';

export const CONTAINER_RECORD_VERSION = 1;

export interface ContainerMetadata {
  version: typeof CONTAINER_RECORD_VERSION;
  id: string;
  sandboxId: string;
  config: ContainerConfig;
  /** The image id (config digest) the rootfs was built from. */
  imageId: string;
  /** The top snapshot chain the rootfs stacks (kept by image GC while the container exists). */
  chainId: string;
  /** The image as the request named it, normalised (what `crictl ps` shows). */
  imageName: string;
  /** A repo digest of the image when it has one (`image_ref`), else the id. */
  imageRef: string;
  /** Absolute CRI log path, or '' when the pod has no log directory or the container no log path. */
  logPath: string;
  runtimeHandler: string;
  /** The signal Stop sends first (CRI stop_signal, else the image's StopSignal, else SIGTERM). */
  stopSignal: string;
  /** The cgroup the runtime put the container in (spec `linux.cgroupsPath`), for stats. */
  cgroupsPath: string;
  /** The process user the spec resolved (image /etc/passwd, run_as_*), for ContainerStatus.user. */
  user: { uid: number; gid: number; additionalGids: number[] };
  /** Unix ns, decimal string. */
  createdAt: string;
  /** The pod's pause container (`[images] sandbox_image`): owned by its sandbox, hidden from List. */
  infra?: boolean;
}

export type ContainerState = 'created' | 'running' | 'exited' | 'unknown';

export interface ContainerStatus {
  version: typeof CONTAINER_RECORD_VERSION;
  state: ContainerState;
  pid: number;
  /** Unix ns, decimal strings; '0' when not yet. */
  startedAt: string;
  finishedAt: string;
  exitCode: number;
  /** Completed, Error, OOMKilled, or why the state is unknown. */
  reason: string;
  message: string;
}

export type ContainerRecord = StoredRecord<ContainerMetadata, ContainerStatus>;

export class ContainerRecords extends RecordStore<ContainerMetadata, ContainerStatus> {
  constructor(root: string) {
    super({ dir: join(root, 'containers'), what: 'container', version: CONTAINER_RECORD_VERSION });
  }
}
