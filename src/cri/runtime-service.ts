/**
 * RuntimeService: CRI requests in, domain calls out. Each RPC lives in this table as a thin adapter; RPCs
 * that are not built yet are simply absent and the wrapper answers UNIMPLEMENTED naming them.
 */
import { CRI_API_VERSION, RUNTIME_NAME, SKIFF_VERSION } from '../version.js';
import type { NodeStatus } from '../node-status.js';
import { CgroupDriver } from './gen/runtime/v1/api.js';
import type { RuntimeHandlers } from './server.js';

export interface RuntimeServiceDeps {
  nodeStatus: NodeStatus;
  cgroupDriver: 'systemd' | 'cgroupfs';
  /** The effective configuration as JSON-ready data (secrets redacted), for `crictl info`. */
  effectiveConfig: () => Record<string, unknown>;
  /** Image pulls in flight, shown to operators in `crictl info`. */
  pullsInFlight: () => unknown[];
}

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
        status: { conditions: nodeStatus.conditions() },
        info,
        runtimeHandlers,
        features: { supplementalGroupsPolicy: false, userNamespacesHostNetwork: false },
      };
    },

    runtimeConfig: async () => ({
      linux: {
        cgroupDriver: deps.cgroupDriver === 'systemd' ? CgroupDriver.SYSTEMD : CgroupDriver.CGROUPFS,
      },
    }),
  };
}
