/**
 * Composition root: the only place that builds services from Config. It prepares the directories,
 * probes the runtime handlers, wires the CRI adapters to the services and serves; `stop` drains and closes.
 */
import { availableParallelism } from 'node:os';
import { access, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Config, configToJSON } from './config/index.js';
import { CriServer } from './cri/server.js';
import { imageService } from './cri/image-service.js';
import { runtimeService } from './cri/runtime-service.js';
import { type HandlerInfo, ContainerService } from './container/service.js';
import { StatsCollector } from './container/stats.js';
import { ContainerStreamRuntime } from './container/stream-runtime.js';
import { StreamServer } from './streaming/server.js';
import { ContentStore } from './image/content/store.js';
import { ImageStore } from './image/image-store.js';
import type { RegistryHostOptions } from './image/registry/hosts.js';
import { RegistryClient } from './image/registry/client.js';
import { ImageService } from './image/service.js';
import type { Logger } from './log.js';
import { NetworkManager } from './network/manager.js';
import { NodeStatus } from './node-status.js';
import { SandboxService } from './sandbox/service.js';
import { ConmonRuntime } from './oci/conmon.js';
import { probeRuntimeHandler } from './oci/handlers.js';
import { findExecutable } from './util/exec.js';
import { Helper } from './util/helper.js';
import { PriorityGate } from './util/priority-gate.js';
import { SnapshotStore } from './snapshot/snapshots.js';
import { SKIFF_VERSION } from './version.js';

export interface DaemonOptions {
  config: Config;
  /** Where the config came from (a file path, or "built-in defaults"), for the start-up log line. */
  configSource: string;
  log: Logger;
}

export class Daemon {
  private constructor(
    private readonly server: CriServer,
    private readonly log: Logger,
    private readonly registry: RegistryClient,
    private readonly containers: ContainerService,
    private readonly streams: StreamServer,
  ) {}

  get socketPath(): string {
    return this.server.socketPath;
  }

  static async start(options: DaemonOptions): Promise<Daemon> {
    const { config, log } = options;
    await mkdir(config.root, { recursive: true, mode: 0o711 });
    await mkdir(config.state, { recursive: true, mode: 0o711 });

    const handlers = await Promise.all(
      Object.entries(config.runtimes).map(([name, h]) =>
        probeRuntimeHandler({ name, binaryPath: h.binary_path || name, extraArgs: h.extra_args }, log),
      ),
    );
    for (const h of handlers) {
      if (!h.resolvedPath)
        log.warn('runtime handler binary not found', { handler: h.name, binary: h.binaryPath });
    }
    const helper = Helper.shared();
    if (helper === undefined) {
      log.warn('skiff-helper is not built: processes start by forking the daemon and mounts run mount(8)', {
        expected: Helper.missing(),
        fix: 'npm run build (needs gcc and libc6-dev)',
      });
    }
    const network = new NetworkManager({
      confDir: config.network.conf_dir,
      binDirs: config.network.bin_dirs,
      cacheDir: join(config.root, 'cni'),
      defaultSubnet: config.network.default_subnet,
      bridgeName: config.network.bridge_name,
      enabled: config.network.enabled,
      log: log.child({ area: 'network' }),
      // The sandbox service brings lo up in the helper run that makes the namespaces (one process, not two).
      loopback: 'caller',
    });
    await network.init();
    const nodeStatus = new NodeStatus({
      defaultHandler: config.runtime.default_runtime_handler,
      handlers,
      network: () => network.status(),
    });

    // Built after images and sandboxes, which call back into it (GC holds, StopPodSandbox).
    const late: { containers?: ContainerService } = {};
    const snapshots = new SnapshotStore({ root: join(config.root, 'snapshots'), log });
    const registry = new RegistryClient({
      hosts: (host) => registryHost(config, host),
      log: log.child({ area: 'registry' }),
      userAgent: `skiff/${SKIFF_VERSION}`,
    });
    const images = new ImageService({
      root: config.root,
      log: log.child({ area: 'image' }),
      registry,
      content: new ContentStore({ root: join(config.root, 'content'), log }),
      snapshots,
      images: new ImageStore({ root: config.root, log }),
      maxConcurrentDownloads: config.images.max_concurrent_downloads,
      progressTimeoutMs: config.images.progress_timeout,
      minBytesPerSecond: config.images.progress_min_bytes_per_second,
      pinned: [
        ...config.images.pinned_images,
        ...(config.images.sandbox_image ? [config.images.sandbox_image] : []),
      ],
      chainsInUse: () => late.containers?.chainsInUse() ?? [],
    });
    await images.start();

    // One gate for the start-up steps of every pod (util/priority-gate.ts).
    const admission = new PriorityGate(
      config.sandbox.start_concurrency || Math.max(2, availableParallelism()),
    );
    const sandboxes = new SandboxService({
      root: config.root,
      state: config.state,
      log: log.child({ area: 'sandbox' }),
      network,
      runtimeHandlers: Object.keys(config.runtimes),
      defaultRuntimeHandler: config.runtime.default_runtime_handler,
      cgroupDriver: config.cgroup_driver,
      shmSizeBytes: config.sandbox.shm_size,
      admission,
      ...(config.images.sandbox_image
        ? {
            infraContainer: {
              start: (id, c, handler, status) => {
                if (!late.containers) throw new Error('container service not started');
                return late.containers.startInfra(id, c, handler, status);
              },
              remove: (id) => late.containers?.removeInfra(id) ?? Promise.resolve(),
            },
          }
        : {}),
      containers: {
        stopAll: (id) => late.containers?.stopAll(id) ?? Promise.resolve(),
        removeAll: (id) => late.containers?.removeAll(id) ?? Promise.resolve(),
      },
    });
    await sandboxes.start();

    const handlerInfos = new Map<string, HandlerInfo>();
    for (const h of handlers) {
      if (!h.resolvedPath) continue;
      const c = config.runtimes[h.name];
      handlerInfos.set(h.name, {
        name: h.name,
        binaryPath: h.resolvedPath,
        root: c?.root || join(config.state, 'runtime', h.name),
        extraArgs: c?.extra_args ?? [],
        recursiveReadOnlyMounts: h.recursiveReadOnlyMounts,
      });
    }
    const monitor = config.runtimes[config.runtime.default_runtime_handler]?.monitor_path || 'conmon';
    const conmonPath = (await findExecutable(monitor)) ?? monitor;
    // Without CAP_SYS_RESOURCE no process may go below the daemon's own oom_score_adj (runc then fails
    // with "can't get final child's PID"); containerd's restrict_oom_score_adj clamps the same way.
    const minOomScoreAdj = Number((await readFile('/proc/self/oom_score_adj', 'utf8')).trim()) || 0;
    const cgroupV2 = await exists('/sys/fs/cgroup/cgroup.controllers');
    const containers = new ContainerService({
      root: config.root,
      state: config.state,
      log: log.child({ area: 'container' }),
      runtime: new ConmonRuntime({ conmonPath, log: log.child({ area: 'oci' }) }),
      handlers: handlerInfos,
      images,
      snapshots,
      sandboxes,
      admission,
      cgroupDriver: config.cgroup_driver,
      cgroupV2,
      swapAccounting: cgroupV2 || (await exists('/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes')),
      hugetlb: cgroupV2
        ? (await readFile('/sys/fs/cgroup/cgroup.controllers', 'utf8')).includes('hugetlb')
        : await exists('/sys/fs/cgroup/hugetlb'),
      minOomScoreAdj,
      sandboxImage: config.images.sandbox_image,
      seccompAvailable: /^Seccomp:/m.test(await readFile('/proc/self/status', 'utf8')),
    });
    late.containers = containers;
    await containers.start();
    const stats = new StatsCollector({
      containers,
      sandboxes,
      cgroupDriver: config.cgroup_driver,
      cgroupV2,
      log: log.child({ area: 'stats' }),
    });

    const streams = new StreamServer({
      address: config.stream.address,
      port: config.stream.port,
      ...(config.stream.tls_cert_file
        ? { tlsCertFile: config.stream.tls_cert_file, tlsKeyFile: config.stream.tls_key_file }
        : {}),
      idleTimeoutMs: config.stream.idle_timeout,
      tokenTtlMs: config.stream.token_ttl,
      runtime: new ContainerStreamRuntime({ containers, sandboxes, log }),
      log: log.child({ area: 'streaming' }),
    });
    await streams.start();

    const server = new CriServer({
      socketPath: config.grpc.address,
      log,
      maxReceiveMessageLength: config.grpc.max_recv_message_size,
      maxSendMessageLength: config.grpc.max_send_message_size,
      runtime: runtimeService({
        nodeStatus,
        cgroupDriver: config.cgroup_driver,
        effectiveConfig: () => configToJSON(config),
        pullsInFlight: () => images.inFlight(),
        sandboxes,
        containers,
        stats,
        streams,
      }),
      image: imageService(images),
    });
    await server.start();
    log.info('skiff started', {
      config: options.configSource,
      root: config.root,
      state: config.state,
      defaultRuntimeHandler: config.runtime.default_runtime_handler,
      helperPid: helper?.pid,
    });
    return new Daemon(server, log, registry, containers, streams);
  }

  /** Stops serving: in-flight calls get up to `graceMs`; containers keep running under conmon. */
  async stop(graceMs = 10_000): Promise<void> {
    this.log.info('skiff stopping');
    await this.server.stop(graceMs);
    await this.streams.stop();
    this.containers.close();
    await this.registry.close();
    this.log.info('skiff stopped');
  }
}

/** The `[registries."host"]` table for a host, in the registry client's terms. */
function registryHost(config: Config, host: string): RegistryHostOptions | undefined {
  const r = config.registries[host];
  if (!r) return undefined;
  return {
    mirrors: r.mirrors,
    insecure: r.insecure,
    caFile: r.ca_file,
    skipVerify: r.skip_verify,
    username: r.username,
    password: r.password,
    auth: r.auth,
    identityToken: r.identity_token,
    fallbackToUpstream: r.fallback_to_upstream,
  };
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
