/**
 * RuntimeService: CRI requests in, domain calls out. Each RPC lives in this table as a thin adapter; RPCs
 * that are not built yet are simply absent and the wrapper answers UNIMPLEMENTED naming them.
 */
import { CRI_API_VERSION, RUNTIME_NAME, SKIFF_VERSION } from '../version.js';
import type { NodeStatus } from '../node-status.js';
import type { ContainerEvent, ContainerService } from '../container/service.js';
import type { StatsCollector } from '../container/stats.js';
import { SkiffError } from '../errdefs.js';
import type { SandboxService } from '../sandbox/service.js';
import { listedContainer } from './container-wire.js';
import { eventTypes, toCriContainerStatus, toDomainState } from './convert/container.js';
import { toContainerConfig, toContainerResources } from './convert/container-config.js';
import { toPodSandbox, toPodSandboxStatus, toSandboxConfig } from './convert/sandbox.js';
import {
  CgroupDriver,
  type ContainerFilter,
  type ContainerStatus,
  PodSandboxState,
} from './gen/runtime/v1/api.js';
import type { RuntimeHandlers } from './server.js';
import { statsHandlers } from './stats-service.js';
import type { StreamServer } from '../streaming/server.js';

export interface RuntimeServiceDeps {
  nodeStatus: NodeStatus;
  cgroupDriver: 'systemd' | 'cgroupfs';
  /** The effective configuration as JSON-ready data (secrets redacted), for `crictl info`. */
  effectiveConfig: () => Record<string, unknown>;
  /** Image pulls in flight, shown to operators in `crictl info`. */
  pullsInFlight: () => unknown[];
  sandboxes: SandboxService;
  containers: ContainerService;
  stats: StatsCollector;
  /** The streaming server Exec/Attach/PortForward hand URLs out on. */
  streams: StreamServer;
}

/** StreamPodSandboxes sends at most this many sandboxes per message. */
const STREAM_CHUNK = 100;

export function runtimeService(deps: RuntimeServiceDeps): RuntimeHandlers {
  return {
    ...statsHandlers(deps.stats),

    version: async () => ({
      // The CRI's `version` field is the kubelet API version this answer is for (cri-api: "0.1.0").
      version: '0.1.0',
      runtimeName: RUNTIME_NAME,
      runtimeVersion: SKIFF_VERSION,
      runtimeApiVersion: CRI_API_VERSION,
    }),

    status: async (req) => {
      const { nodeStatus } = deps;
      const handlerFeatures = (name: string) => {
        const h = nodeStatus.handlers.find((x) => x.name === name);
        return {
          recursiveReadOnlyMounts: h?.recursiveReadOnlyMounts ?? false,
          userNamespaces: h?.userNamespaces ?? false,
        };
      };
      // As containerd does: the default handler is listed twice, once under "" (what kubelet uses for
      // pods without a RuntimeClass) and once under its own name.
      const runtimeHandlers = [
        { name: '', features: handlerFeatures(nodeStatus.defaultHandler) },
        ...nodeStatus.handlers.map((h) => ({ name: h.name, features: handlerFeatures(h.name) })),
      ];
      const info: Record<string, string> = {};
      if (req.verbose) {
        info.config = JSON.stringify(deps.effectiveConfig());
        info.version = JSON.stringify({ name: RUNTIME_NAME, version: SKIFF_VERSION });
        info.runtimeHandlers = JSON.stringify(nodeStatus.handlers);
        info.pulls = JSON.stringify(deps.pullsInFlight());
      }
      return {
        status: { conditions: await nodeStatus.conditions() },
        info,
        runtimeHandlers,
        features: { supplementalGroupsPolicy: false, userNamespacesHostNetwork: false },
      };
    },

    runPodSandbox: async (req, ctx) => ({
      podSandboxId: await deps.sandboxes.run(toSandboxConfig(req.config, req.runtimeHandler), ctx.signal),
    }),

    stopPodSandbox: async (req) => {
      await deps.sandboxes.stop(req.podSandboxId);
      return {};
    },

    removePodSandbox: async (req) => {
      await deps.sandboxes.remove(req.podSandboxId);
      return {};
    },

    podSandboxStatus: async (req) => {
      const r = deps.sandboxes.status(req.podSandboxId);
      const info: Record<string, string> = {};
      if (req.verbose) {
        info.info = JSON.stringify({
          pid: r.status.infra?.pid ?? 0,
          netnsPath: r.status.namespaces.net ?? '',
          namespaces: r.status.namespaces,
          ips: r.status.ips,
          reason: r.status.reason,
          runtimeHandler: r.metadata.runtimeHandler,
          config: r.metadata.config,
        });
      }
      return {
        status: toPodSandboxStatus(r),
        info,
        containersStatuses: deps.containers.list({ sandboxId: r.metadata.id }).map(toCriContainerStatus),
        timestamp: BigInt(Date.now()) * 1_000_000n,
      };
    },

    listPodSandbox: async (req) => ({ items: listSandboxes(deps.sandboxes, req.filter) }),

    streamPodSandboxes: async (req, _ctx, send) => {
      const all = listSandboxes(deps.sandboxes, req.filter);
      for (let i = 0; i < all.length; i += STREAM_CHUNK)
        await send({ podSandboxes: all.slice(i, i + STREAM_CHUNK) });
    },

    createContainer: async (req) => {
      if (!req.config) throw new SkiffError('invalid-argument', 'create container: config is missing');
      return {
        containerId: await deps.containers.create(req.podSandboxId, toContainerConfig(req.config)),
      };
    },

    startContainer: async (req) => {
      await deps.containers.startContainer(req.containerId);
      return {};
    },

    stopContainer: async (req) => {
      await deps.containers.stop(req.containerId, Number(req.timeout));
      return {};
    },

    removeContainer: async (req) => {
      await deps.containers.remove(req.containerId);
      return {};
    },

    listContainers: async (req) => ({ containers: listContainers(deps.containers, req.filter) }),

    streamContainers: async (req, _ctx, send) => {
      const all = listContainers(deps.containers, req.filter);
      for (let i = 0; i < all.length; i += STREAM_CHUNK)
        await send({ containers: all.slice(i, i + STREAM_CHUNK) });
    },

    containerStatus: async (req) => {
      const r = deps.containers.status(req.containerId);
      const info: Record<string, string> = {};
      if (req.verbose) {
        info.info = JSON.stringify({
          sandboxID: r.metadata.sandboxId,
          pid: r.status.pid,
          runtimeHandler: r.metadata.runtimeHandler,
          bundle: deps.containers.targetOf(r).bundle,
          cgroupsPath: r.metadata.cgroupsPath,
          config: r.metadata.config,
        });
      }
      return { status: toCriContainerStatus(r), info };
    },

    execSync: async (req) => {
      const res = await deps.containers.execSync(req.containerId, req.cmd, Number(req.timeout));
      return { stdout: res.stdout, stderr: res.stderr, exitCode: res.exitCode };
    },

    reopenContainerLog: async (req) => {
      await deps.containers.reopenLog(req.containerId);
      return {};
    },

    updateContainerResources: async (req) => {
      if (!req.linux) return {}; // Windows resources do not apply here
      await deps.containers.updateResources(req.containerId, toContainerResources(req.linux));
      return {};
    },

    getContainerEvents: async (_req, ctx, send) => {
      // Every event is queued for this stream and sent in order, with back-pressure from the transport;
      // none is dropped (kubelet's evented PLEG relies on seeing each one).
      const queue: ContainerEvent[] = [];
      let wake: (() => void) | undefined;
      const onEvent = (e: ContainerEvent) => {
        queue.push(e);
        wake?.();
      };
      deps.containers.events.on('event', onEvent);
      try {
        while (!ctx.signal.aborted) {
          const e = queue.shift();
          if (!e) {
            await new Promise<void>((resolve) => {
              wake = resolve;
              ctx.signal.addEventListener(
                'abort',
                () => {
                  resolve();
                },
                { once: true },
              );
            });
            wake = undefined;
            continue;
          }
          const sandbox = deps.sandboxes.records.get(e.sandboxId);
          const statuses: ContainerStatus[] = [];
          const c = deps.containers.records.get(e.containerId);
          if (c) statuses.push(toCriContainerStatus(c));
          await send({
            containerId: e.containerId,
            containerEventType: eventTypes[e.type],
            createdAt: e.createdAt,
            podSandboxStatus: sandbox ? toPodSandboxStatus(sandbox) : undefined,
            containersStatuses: statuses,
          });
        }
      } finally {
        deps.containers.events.off('event', onEvent);
      }
    },

    // kubelet sends the node's pod CIDR here; CNI configs (ours or the operator's) carry their own
    // ranges, so there is nothing to change, as with CRI-O. Accepted, not an error.
    updateRuntimeConfig: async () => ({}),

    // Best effort per the contract: the pod's cgroup belongs to kubelet, which has already resized it;
    // skiff holds no pod-level resources of its own to update. It checks the sandbox exists.
    updatePodSandboxResources: async (req) => {
      deps.sandboxes.status(req.podSandboxId);
      return {};
    },

    exec: async (req) => {
      const id = streamTarget(deps.containers, req, 'exec in');
      if (req.cmd.length === 0)
        throw new SkiffError('invalid-argument', `exec in container "${id}": cmd must not be empty`);
      return { url: deps.streams.getExec({ ...req, containerId: id }) };
    },

    attach: async (req) => {
      const id = streamTarget(deps.containers, req, 'attach to');
      return { url: deps.streams.getAttach({ ...req, containerId: id }) };
    },

    portForward: async (req) => {
      const r = deps.sandboxes.status(req.podSandboxId);
      if (r.status.state !== 'ready') {
        throw new SkiffError(
          'failed-precondition',
          `port-forward to pod sandbox "${r.metadata.id}": it is not ready`,
        );
      }
      for (const p of req.port) {
        if (!Number.isInteger(p) || p < 1 || p > 65535) {
          throw new SkiffError(
            'invalid-argument',
            `port-forward to pod sandbox "${r.metadata.id}": invalid port ${p}`,
          );
        }
      }
      return { url: deps.streams.getPortForward({ podSandboxId: r.metadata.id, ports: req.port }) };
    },

    runtimeConfig: async () => ({
      linux: {
        cgroupDriver: deps.cgroupDriver === 'systemd' ? CgroupDriver.SYSTEMD : CgroupDriver.CGROUPFS,
      },
    }),
  };
}

function listSandboxes(
  sandboxes: SandboxService,
  filter:
    | { id: string; state: { state: PodSandboxState } | undefined; labelSelector: Record<string, string> }
    | undefined,
) {
  return sandboxes
    .list({
      id: filter?.id || undefined,
      state:
        filter?.state === undefined
          ? undefined
          : filter.state.state === PodSandboxState.SANDBOX_READY
            ? 'ready'
            : 'notready',
      labels: filter?.labelSelector,
    })
    .map(toPodSandbox);
}

function listContainers(containers: ContainerService, filter: ContainerFilter | undefined) {
  return containers
    .list({
      id: filter?.id || undefined,
      sandboxId: filter?.podSandboxId || undefined,
      state: filter?.state === undefined ? undefined : toDomainState(filter.state.state),
      labels: filter?.labelSelector,
    })
    .map(listedContainer);
}

/**
 * The checks containerd and the CRI contract make before handing out an exec/attach URL: the container
 * exists and runs, at least one stream is asked for, and a tty is not combined with stderr (a terminal
 * merges the two). Returns the full container id.
 */
function streamTarget(
  containers: ContainerService,
  req: { containerId: string; tty: boolean; stdin: boolean; stdout: boolean; stderr: boolean },
  verb: string,
): string {
  const r = containers.status(req.containerId);
  const id = r.metadata.id;
  if (r.status.state !== 'running') {
    throw new SkiffError(
      'failed-precondition',
      `${verb} container "${id}": it is ${r.status.state}, not running`,
    );
  }
  if (!req.stdin && !req.stdout && !req.stderr) {
    throw new SkiffError(
      'invalid-argument',
      `${verb} container "${id}": one of stdin, stdout or stderr must be set`,
    );
  }
  if (req.tty && req.stderr) {
    throw new SkiffError(
      'invalid-argument',
      `${verb} container "${id}": tty and stderr cannot both be set (a terminal carries stderr on stdout)`,
    );
  }
  return id;
}
