/**
 * CRI pod sandbox messages ⇄ skiff's domain sandbox types.
 */
import { SkiffError } from '../../errdefs.js';
import type { NamespaceMode as DomainMode, SandboxConfig, SandboxRecord } from '../../sandbox/record.js';
import {
  NamespaceMode,
  type PodSandbox,
  type PodSandboxConfig,
  PodSandboxState,
  type PodSandboxStatus,
  Protocol,
} from '../gen/runtime/v1/api.js';

const modeNames: Record<number, DomainMode> = {
  [NamespaceMode.POD]: 'pod',
  [NamespaceMode.CONTAINER]: 'container',
  [NamespaceMode.NODE]: 'node',
  [NamespaceMode.TARGET]: 'target',
};

const modeValues: Record<DomainMode, NamespaceMode> = {
  pod: NamespaceMode.POD,
  container: NamespaceMode.CONTAINER,
  node: NamespaceMode.NODE,
  target: NamespaceMode.TARGET,
};

function mode(value: NamespaceMode, what: string): DomainMode {
  const m = modeNames[value];
  if (!m)
    throw new SkiffError('invalid-argument', `run pod sandbox: unknown namespace mode ${value} for ${what}`);
  return m;
}

const protocols: Record<number, 'tcp' | 'udp' | 'sctp'> = {
  [Protocol.TCP]: 'tcp',
  [Protocol.UDP]: 'udp',
  [Protocol.SCTP]: 'sctp',
};

export function toSandboxConfig(c: PodSandboxConfig | undefined, runtimeHandler: string): SandboxConfig {
  if (!c) throw new SkiffError('invalid-argument', 'run pod sandbox: config is missing');
  const ns = c.linux?.securityContext?.namespaceOptions;
  // A pod that shares the node's network is not given its own IPC/UTS either, as kubelet expects for
  // hostNetwork (UTS follows the network namespace in Kubernetes).
  return {
    name: c.metadata?.name ?? '',
    namespace: c.metadata?.namespace ?? '',
    uid: c.metadata?.uid ?? '',
    attempt: c.metadata?.attempt ?? 0,
    hostname: c.hostname,
    logDirectory: c.logDirectory,
    dns: c.dnsConfig
      ? { servers: c.dnsConfig.servers, searches: c.dnsConfig.searches, options: c.dnsConfig.options }
      : undefined,
    portMappings: c.portMappings.map((p) => {
      const protocol = protocols[p.protocol];
      if (!protocol)
        throw new SkiffError('invalid-argument', `run pod sandbox: unknown port protocol ${p.protocol}`);
      return { protocol, containerPort: p.containerPort, hostPort: p.hostPort, hostIp: p.hostIp };
    }),
    labels: c.labels,
    annotations: c.annotations,
    cgroupParent: c.linux?.cgroupParent ?? '',
    sysctls: c.linux?.sysctls ?? {},
    namespaces: {
      network: mode(ns?.network ?? NamespaceMode.POD, 'network'),
      pid: mode(ns?.pid ?? NamespaceMode.CONTAINER, 'pid'),
      ipc: mode(ns?.ipc ?? NamespaceMode.POD, 'ipc'),
      targetId: ns?.targetId ?? '',
    },
    privileged: c.linux?.securityContext?.privileged ?? false,
    runtimeHandler,
  };
}

function metadataOf(r: SandboxRecord) {
  const c = r.metadata.config;
  return { name: c.name, uid: c.uid, namespace: c.namespace, attempt: c.attempt };
}

function stateOf(r: SandboxRecord): PodSandboxState {
  return r.status.state === 'ready' ? PodSandboxState.SANDBOX_READY : PodSandboxState.SANDBOX_NOTREADY;
}

export function toPodSandbox(r: SandboxRecord): PodSandbox {
  return {
    id: r.metadata.id,
    metadata: metadataOf(r),
    state: stateOf(r),
    createdAt: BigInt(r.metadata.createdAt),
    labels: r.metadata.config.labels,
    annotations: r.metadata.config.annotations,
    runtimeHandler: r.metadata.runtimeHandler,
  };
}

export function toPodSandboxStatus(r: SandboxRecord): PodSandboxStatus {
  const ns = r.metadata.config.namespaces;
  const [ip = '', ...additional] = r.status.state === 'ready' ? r.status.ips : [];
  return {
    id: r.metadata.id,
    metadata: metadataOf(r),
    state: stateOf(r),
    createdAt: BigInt(r.metadata.createdAt),
    network: { ip, additionalIps: additional.map((a) => ({ ip: a })) },
    linux: {
      namespaces: {
        options: {
          network: modeValues[ns.network],
          pid: modeValues[ns.pid],
          ipc: modeValues[ns.ipc],
          targetId: ns.targetId,
          usernsOptions: undefined,
        },
      },
    },
    labels: r.metadata.config.labels,
    annotations: r.metadata.config.annotations,
    runtimeHandler: r.metadata.runtimeHandler,
  };
}
