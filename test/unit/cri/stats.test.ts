/**
 * The stats RPCs end to end over gRPC (in-process server on a temp socket), backed by a real
 * StatsCollector over record stores and a fake cgroup v1 tree: values survive the wire as uint64, unknown
 * ids are NOT_FOUND, streams deliver everything. Plus the pure converters (PSI µs → ns, filters).
 */
import { status } from '@grpc/grpc-js';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { ContainerRecords } from '../../../src/container/record.js';
import { StatsCollector } from '../../../src/container/stats.js';
import {
  toCriContainerStats,
  toCriPsi,
  toStatsContainerFilter,
  toStatsPodFilter,
} from '../../../src/cri/convert/stats.js';
import { MetricType } from '../../../src/cri/gen/runtime/v1/api.js';
import { CriServer } from '../../../src/cri/server.js';
import { statsHandlers } from '../../../src/cri/stats-service.js';
import { silentLogger } from '../../../src/log.js';
import type { ContainerConfig } from '../../../src/oci/spec/container-config.js';
import { SandboxRecords } from '../../../src/sandbox/record.js';
import { connectCri, failure } from '../../fixtures/cri-client.js';

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-cri-stats-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function files(dir: string, entries: Record<string, string>): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, text] of Object.entries(entries)) await writeFile(join(dir, name), text);
}

/** One ready pod (pod cgroup set) with `n` running containers, each with a v1 cgroup. */
async function world(n: number) {
  const dir = await tempDir();
  const root = join(dir, 'root');
  const cg = join(dir, 'cg');
  const crecords = new ContainerRecords(root);
  const srecords = new SandboxRecords(root);
  await crecords.load();
  await srecords.load();
  const v1 = async (path: string, cpuNs: bigint, usage: number) => {
    await files(join(cg, 'cpuacct', path), { 'cpuacct.usage': `${cpuNs}\n` });
    await files(join(cg, 'memory', path), {
      'memory.usage_in_bytes': `${usage}\n`,
      'memory.limit_in_bytes': '1073741824\n',
      'memory.stat': 'total_rss 100\ntotal_inactive_file 24\n',
    });
    await files(join(cg, 'pids', path), { 'pids.current': '2\n' });
  };
  await mkdir(srecords.dirOf('pod1'), { recursive: true });
  await srecords.create({
    metadata: {
      version: 1,
      id: 'pod1',
      config: {
        name: 'web',
        namespace: 'default',
        uid: 'u1',
        attempt: 2,
        hostname: 'web',
        logDirectory: '',
        dns: undefined,
        portMappings: [],
        labels: { app: 'web' },
        annotations: {},
        cgroupParent: '/kubepods/pod-u1',
        sysctls: {},
        namespaces: { network: 'pod', pid: 'container', ipc: 'pod', targetId: '' },
        privileged: false,
        runtimeHandler: '',
      },
      createdAt: '1',
      runtimeHandler: 'runc',
    },
    status: { version: 1, state: 'ready', ips: [], namespaces: {} },
  });
  await v1('/kubepods/pod-u1', 123_000_000_000n, 4096);
  for (let i = 0; i < n; i++) {
    const id = `c${String(i).padStart(4, '0')}`;
    await mkdir(crecords.dirOf(id), { recursive: true });
    await crecords.create({
      metadata: {
        version: 1,
        id,
        sandboxId: 'pod1',
        config: { name: id, attempt: 0, labels: {}, annotations: {} } as unknown as ContainerConfig,
        imageId: 'sha256:i',
        chainId: 'sha256:c',
        imageName: 'busybox',
        imageRef: 'sha256:i',
        logPath: '',
        runtimeHandler: 'runc',
        stopSignal: 'SIGTERM',
        cgroupsPath: `/skiff/${id}`,
        user: { uid: 0, gid: 0, additionalGids: [] },
        createdAt: String(i + 1),
      },
      status: {
        version: 1,
        state: 'running',
        pid: 0,
        startedAt: '1',
        finishedAt: '0',
        exitCode: 0,
        reason: '',
        message: '',
      },
    });
    await mkdir(join(crecords.dirOf(id), 'upper'), { recursive: true });
    await v1(`/skiff/${id}`, 2n ** 40n + BigInt(i), 1000 + i);
  }
  const collector = new StatsCollector({
    containers: {
      records: crecords,
      status: (id) => crecords.resolve(id),
      list: (f) =>
        crecords
          .list()
          .filter(
            (r) =>
              r.metadata.id.startsWith(f?.id ?? '') && r.metadata.sandboxId.startsWith(f?.sandboxId ?? ''),
          ),
    },
    sandboxes: {
      status: (id) => srecords.resolve(id),
      list: (f) =>
        srecords
          .list()
          .filter((r) => r.metadata.id.startsWith(f?.id ?? '') && (!f?.state || r.status.state === f.state)),
    },
    cgroupDriver: 'cgroupfs',
    cgroupV2: false,
    cgroupRoot: cg,
    log: silentLogger(),
  });
  const server = new CriServer({
    socketPath: join(dir, 'cri.sock'),
    log: silentLogger(),
    runtime: { ...statsHandlers(collector) },
    image: {},
  });
  await server.start();
  const cri = connectCri(join(dir, 'cri.sock'));
  onTestFinished(async () => {
    cri.close();
    await server.stop(1000);
  });
  return { cri, root };
}

describe('stats RPCs over gRPC', () => {
  it('ContainerStats and ListContainerStats carry uint64 values and attributes', async () => {
    const { cri, root } = await world(2);
    const one = await cri.runtime.containerStats({ containerId: 'c0001' });
    expect(one.stats?.attributes).toEqual({
      id: 'c0001',
      metadata: { name: 'c0001', attempt: 0 },
      labels: {},
      annotations: {},
    });
    expect(one.stats?.cpu?.usageCoreNanoSeconds?.value).toBe(2n ** 40n + 1n);
    expect(one.stats?.memory?.workingSetBytes?.value).toBe(1001n - 24n);
    expect(one.stats?.memory?.availableBytes?.value).toBe(1073741824n - 977n);
    expect(one.stats?.writableLayer?.fsId?.mountpoint).toBe(root);
    expect(one.stats?.writableLayer?.inodesUsed?.value).toBe(1n);

    const list = await cri.runtime.listContainerStats({
      filter: { id: '', podSandboxId: 'pod1', labelSelector: {} },
    });
    expect(list.stats.map((s) => s.attributes?.id)).toEqual(['c0000', 'c0001']);
  });

  it('answers NOT_FOUND for unknown ids', async () => {
    const { cri } = await world(0);
    expect((await failure(cri.runtime.containerStats({ containerId: 'nope' }))).code).toBe(status.NOT_FOUND);
    expect((await failure(cri.runtime.podSandboxStats({ podSandboxId: 'nope' }))).code).toBe(
      status.NOT_FOUND,
    );
  });

  it('PodSandboxStats reports the pod cgroup, its containers and attributes', async () => {
    const { cri } = await world(1);
    const { stats } = await cri.runtime.podSandboxStats({ podSandboxId: 'pod1' });
    expect(stats?.attributes?.metadata).toEqual({ name: 'web', uid: 'u1', namespace: 'default', attempt: 2 });
    expect(stats?.linux?.cpu?.usageCoreNanoSeconds?.value).toBe(123_000_000_000n);
    expect(stats?.linux?.process?.processCount?.value).toBe(2n);
    expect(stats?.linux?.containers.map((c) => c.attributes?.id)).toEqual(['c0000']);
    const listed = await cri.runtime.listPodSandboxStats({
      filter: { id: '', labelSelector: { app: 'web' } },
    });
    expect(listed.stats).toHaveLength(1);
  });

  it('streams every container in chunks', async () => {
    const { cri } = await world(150);
    const chunks = await cri.runtime.streamContainerStats({ filter: undefined });
    expect(chunks.map((c) => c.containerStats.length)).toEqual([100, 50]);
  });

  it('ListMetricDescriptors and ListPodSandboxMetrics agree on names and label counts', async () => {
    const { cri } = await world(1);
    const { descriptors } = await cri.runtime.listMetricDescriptors({});
    const keys = new Map(descriptors.map((d) => [d.name, d.labelKeys.length]));
    const { podMetrics } = await cri.runtime.listPodSandboxMetrics({});
    const metrics = podMetrics[0]?.containerMetrics[0]?.metrics ?? [];
    expect(metrics.length).toBeGreaterThan(0);
    for (const m of metrics) expect(keys.get(m.name), m.name).toBe(m.labelValues.length);
    const cpu = metrics.find((m) => m.name === 'container_cpu_usage_seconds_total');
    expect(cpu?.metricType).toBe(MetricType.COUNTER);
    expect(cpu?.value?.value).toBe(2n ** 40n / 1_000_000_000n);
    const streamed = await cri.runtime.streamPodSandboxMetrics({});
    expect(streamed.flatMap((s) => s.podSandboxMetrics.map((p) => p.podSandboxId))).toEqual(['pod1']);
  });
});

describe('stats converters', () => {
  it('turns PSI totals from µs into ns', () => {
    expect(toCriPsi({ some: { avg10: 1.5, avg60: 0.5, avg300: 0.1, total: 7n }, full: undefined })).toEqual({
      Some: { Total: 7000n, Avg10: 1.5, Avg60: 0.5, Avg300: 0.1 },
      Full: undefined,
    });
    expect(toCriPsi(undefined)).toBeUndefined();
  });

  it('leaves cpu and memory unset for a container without a live cgroup', () => {
    const s = toCriContainerStats({
      container: {
        metadata: { id: 'x', config: { name: 'n', attempt: 1, labels: {}, annotations: {} } },
      } as unknown as Parameters<typeof toCriContainerStats>[0]['container'],
      timestamp: 5n,
      writableLayer: { timestamp: 5n, mountpoint: '/var/lib/skiff', usedBytes: 4096n, inodesUsed: 2n },
    });
    expect(s.cpu).toBeUndefined();
    expect(s.memory).toBeUndefined();
    expect(s.writableLayer).toEqual({
      timestamp: 5n,
      fsId: { mountpoint: '/var/lib/skiff' },
      usedBytes: { value: 4096n },
      inodesUsed: { value: 2n },
    });
  });

  it('maps empty filter fields to "any"', () => {
    expect(toStatsContainerFilter(undefined)).toEqual({
      id: undefined,
      sandboxId: undefined,
      labels: undefined,
    });
    expect(toStatsContainerFilter({ id: '', podSandboxId: 'p', labelSelector: { a: 'b' } })).toEqual({
      id: undefined,
      sandboxId: 'p',
      labels: { a: 'b' },
    });
    expect(toStatsPodFilter({ id: 'x', labelSelector: {} })).toEqual({ id: 'x', labels: {} });
  });
});
