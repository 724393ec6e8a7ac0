/**
 * Stats and metrics samples → CRI ContainerStats / PodSandboxStats / Metric messages, and CRI stats
 * filters → the collector's filters.
 */
import type {
  ContainerStatsSample,
  CpuStats,
  FsUsage,
  IoStats,
  MemoryStats,
  MetricDescriptor as DomainDescriptor,
  MetricSample,
  NetworkStats,
  PodMetrics,
  PodStatsSample,
  StatsContainerFilter,
  StatsPodFilter,
} from '../../container/stats.js';
import type { Psi, PsiLine } from '../../oci/cgroups.js';
import {
  type ContainerStats,
  type ContainerStatsFilter,
  type CpuUsage,
  type FilesystemUsage,
  type IoUsage,
  type MemoryUsage,
  type Metric,
  type MetricDescriptor,
  MetricType,
  type NetworkInterfaceUsage,
  type NetworkUsage,
  type PodSandboxMetrics,
  type PodSandboxStats,
  type PodSandboxStatsFilter,
  type PsiData,
  type PsiStats,
  type UInt64Value,
} from '../gen/runtime/v1/api.js';

function u64(value: bigint): UInt64Value {
  return { value };
}

function optU64(value: bigint | undefined): UInt64Value | undefined {
  return value === undefined ? undefined : { value };
}

/** The kernel's PSI totals are µs; the CRI's PsiData.Total is ns (containerd's convertCg2PSIToCRI). */
function toPsiData(l: PsiLine | undefined): PsiData | undefined {
  return l && { Total: l.total * 1000n, Avg10: l.avg10, Avg60: l.avg60, Avg300: l.avg300 };
}

export function toCriPsi(p: Psi | undefined): PsiStats | undefined {
  return p && { Full: toPsiData(p.full), Some: toPsiData(p.some) };
}

function toCpu(c: CpuStats | undefined): CpuUsage | undefined {
  return (
    c && {
      timestamp: c.timestamp,
      usageCoreNanoSeconds: u64(c.usageCoreNanoSeconds),
      usageNanoCores: optU64(c.usageNanoCores),
      psi: toCriPsi(c.psi),
    }
  );
}

function toMemory(m: MemoryStats | undefined): MemoryUsage | undefined {
  return (
    m && {
      timestamp: m.timestamp,
      workingSetBytes: u64(m.workingSetBytes),
      availableBytes: optU64(m.availableBytes),
      usageBytes: u64(m.usageBytes),
      rssBytes: u64(m.rssBytes),
      pageFaults: u64(m.pageFaults),
      majorPageFaults: u64(m.majorPageFaults),
      psi: toCriPsi(m.psi),
    }
  );
}

function toIo(io: IoStats | undefined): IoUsage | undefined {
  return io && { timestamp: io.timestamp, psi: toCriPsi(io.psi) };
}

function toFs(f: FsUsage): FilesystemUsage {
  return {
    timestamp: f.timestamp,
    fsId: { mountpoint: f.mountpoint },
    usedBytes: u64(f.usedBytes),
    inodesUsed: u64(f.inodesUsed),
  };
}

export function toCriContainerStats(s: ContainerStatsSample): ContainerStats {
  const m = s.container.metadata;
  return {
    attributes: {
      id: m.id,
      metadata: { name: m.config.name, attempt: m.config.attempt },
      labels: m.config.labels,
      annotations: m.config.annotations,
    },
    cpu: toCpu(s.cpu),
    memory: toMemory(s.memory),
    writableLayer: toFs(s.writableLayer),
    swap: undefined,
    io: toIo(s.io),
  };
}

function toNetwork(n: NetworkStats | undefined): NetworkUsage | undefined {
  if (!n) return undefined;
  const iface = (i: NetworkStats['interfaces'][number]): NetworkInterfaceUsage => ({
    name: i.name,
    rxBytes: u64(i.rxBytes),
    rxErrors: u64(i.rxErrors),
    txBytes: u64(i.txBytes),
    txErrors: u64(i.txErrors),
  });
  return {
    timestamp: n.timestamp,
    defaultInterface: n.defaultInterface && iface(n.defaultInterface),
    interfaces: n.interfaces.map(iface),
  };
}

export function toCriPodSandboxStats(s: PodStatsSample): PodSandboxStats {
  const m = s.sandbox.metadata;
  return {
    attributes: {
      id: m.id,
      metadata: {
        name: m.config.name,
        uid: m.config.uid,
        namespace: m.config.namespace,
        attempt: m.config.attempt,
      },
      labels: m.config.labels,
      annotations: m.config.annotations,
    },
    linux: {
      cpu: toCpu(s.cpu),
      memory: toMemory(s.memory),
      network: toNetwork(s.network),
      process: { timestamp: s.process.timestamp, processCount: u64(s.process.count) },
      containers: s.containers.map(toCriContainerStats),
      io: toIo(s.io),
    },
    windows: undefined,
  };
}

export function toCriMetricDescriptor(d: DomainDescriptor): MetricDescriptor {
  return { name: d.name, help: d.help, labelKeys: d.labelKeys };
}

function toMetric(m: MetricSample): Metric {
  return {
    name: m.name,
    timestamp: m.timestamp,
    metricType: m.kind === 'counter' ? MetricType.COUNTER : MetricType.GAUGE,
    labelValues: m.labelValues,
    value: u64(m.value),
  };
}

export function toCriPodSandboxMetrics(p: PodMetrics): PodSandboxMetrics {
  return {
    podSandboxId: p.podSandboxId,
    metrics: p.metrics.map(toMetric),
    containerMetrics: p.containerMetrics.map((c) => ({
      containerId: c.containerId,
      metrics: c.metrics.map(toMetric),
    })),
  };
}

/** Empty strings and an empty selector mean "any", as in ListContainers. */
export function toStatsContainerFilter(f: ContainerStatsFilter | undefined): StatsContainerFilter {
  return {
    id: f?.id || undefined,
    sandboxId: f?.podSandboxId || undefined,
    labels: f?.labelSelector,
  };
}

export function toStatsPodFilter(f: PodSandboxStatsFilter | undefined): StatsPodFilter {
  return { id: f?.id || undefined, labels: f?.labelSelector };
}
