/**
 * Sandbox records: `<root>/sandboxes/<id>/metadata.json` (immutable: what was asked for) and
 * `status.json` (mutable: what is), through the shared record store; the metadata is written only once the
 * sandbox is ready, so a crash mid-RunPodSandbox leaves only dirs that recovery removes.
 */
import { join } from 'node:path';
import { RecordStore, type StoredRecord } from '../store/records.js';

export const SANDBOX_RECORD_VERSION = 1;

export type NamespaceMode = 'pod' | 'container' | 'node' | 'target';

export interface PortMapping {
  protocol: 'tcp' | 'udp' | 'sctp';
  containerPort: number;
  hostPort: number;
  hostIp: string;
}

/** What RunPodSandbox asked for, in domain terms (the CRI adapter turns the request into this). */
export interface SandboxConfig {
  name: string;
  namespace: string;
  uid: string;
  attempt: number;
  hostname: string;
  logDirectory: string;
  dns: { servers: string[]; searches: string[]; options: string[] } | undefined;
  portMappings: PortMapping[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
  cgroupParent: string;
  sysctls: Record<string, string>;
  namespaces: { network: NamespaceMode; pid: NamespaceMode; ipc: NamespaceMode; targetId: string };
  privileged: boolean;
  runtimeHandler: string;
}

export interface SandboxMetadata {
  version: typeof SANDBOX_RECORD_VERSION;
  id: string;
  config: SandboxConfig;
  /** Unix nanoseconds, as a decimal string (beyond 2^53). */
  createdAt: string;
  /** The handler actually used (the configured default when the request named none). */
  runtimeHandler: string;
}

export interface SandboxStatus {
  version: typeof SANDBOX_RECORD_VERSION;
  state: 'ready' | 'notready';
  /** Pod IPs, v4 first. */
  ips: string[];
  /** Pinned namespace files (absent for the node's). */
  namespaces: { net?: string; ipc?: string; uts?: string; pid?: string };
  /** The process holding a shared PID namespace, with its start time to detect PID reuse. */
  infra?: { pid: number; startTime: string; containerId?: string };
  shmPath?: string;
  /** Why a recovered sandbox is not ready, for `crictl inspectp`. */
  reason?: string;
  stoppedAt?: string;
}

export type SandboxRecord = StoredRecord<SandboxMetadata, SandboxStatus>;

export class SandboxRecords extends RecordStore<SandboxMetadata, SandboxStatus> {
  constructor(root: string) {
    super({ dir: join(root, 'sandboxes'), what: 'pod sandbox', version: SANDBOX_RECORD_VERSION });
  }
}
