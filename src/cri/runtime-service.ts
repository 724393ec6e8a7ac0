/**
 * RuntimeService: CRI requests in, domain calls out. Each RPC lives in this table as a thin adapter; RPCs
 * that are not built yet are simply absent and the wrapper answers UNIMPLEMENTED naming them.
 */
import { CRI_API_VERSION, RUNTIME_NAME, SKIFF_VERSION } from '../version.js';
import type { NodeStatus } from '../node-status.js';
import type { SandboxService } from '../sandbox/service.js';
import { toPodSandbox, toPodSandboxStatus, toSandboxConfig } from './convert/sandbox.js';
import { CgroupDriver, PodSandboxState } from './gen/runtime/v1/api.js';
import type { RuntimeHandlers } from './server.js';

export interface RuntimeServiceDeps {
  nodeStatus: NodeStatus;
  cgroupDriver: 'systemd' | 'cgroupfs';
  /** The effective configuration as JSON-ready data (secrets redacted), for `crictl info`. */
  effectiveConfig: () => Record<string, unknown>;
  /** Image pulls in flight, shown to operators in `crictl info`. */
  pullsInFlight: () => unknown[];
  sandboxes: SandboxService;
}

/** StreamPodSandboxes sends at most this many sandboxes per message. */
const STREAM_CHUNK = 100;

export function runtimeService(deps: RuntimeServiceDeps): RuntimeHandlers {
  return {
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
        containersStatuses: [],
        timestamp: BigInt(Date.now()) * 1_000_000n,
      };
    },

    listPodSandbox: async (req) => ({ items: listSandboxes(deps.sandboxes, req.filter) }),

    streamPodSandboxes: async (req, _ctx, send) => {
      const all = listSandboxes(deps.sandboxes, req.filter);
      for (let i = 0; i < all.length; i += STREAM_CHUNK)
        await send({ podSandboxes: all.slice(i, i + STREAM_CHUNK) });
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
