/**
 * The stats and metrics RPCs of RuntimeService, as a slice of the handler table that runtime-service.ts
 * spreads in: CRI request → StatsCollector call → CRI response. Unknown ids are NOT_FOUND through the
 * services' SkiffError('not-found'); a pod that is not ready is UNAVAILABLE (containerd's answer).
 */
import type { StatsCollector } from '../container/stats.js';
import {
  toCriContainerStats,
  toCriMetricDescriptor,
  toCriPodSandboxMetrics,
  toCriPodSandboxStats,
  toStatsContainerFilter,
  toStatsPodFilter,
} from './convert/stats.js';
import type { RuntimeHandlers } from './server.js';

export type StatsHandlers = Required<
  Pick<
    RuntimeHandlers,
    | 'containerStats'
    | 'listContainerStats'
    | 'streamContainerStats'
    | 'podSandboxStats'
    | 'listPodSandboxStats'
    | 'streamPodSandboxStats'
    | 'listMetricDescriptors'
    | 'listPodSandboxMetrics'
    | 'streamPodSandboxMetrics'
  >
>;

/** Stream RPCs send at most this many items per message, as StreamContainers does. */
const STREAM_CHUNK = 100;

export function statsHandlers(collector: StatsCollector): StatsHandlers {
  return {
    containerStats: async (req) => ({
      stats: toCriContainerStats(await collector.containerStats(req.containerId)),
    }),

    listContainerStats: async (req) => ({
      stats: (await collector.listContainerStats(toStatsContainerFilter(req.filter))).map(
        toCriContainerStats,
      ),
    }),

    streamContainerStats: async (req, _ctx, send) => {
      const all = (await collector.listContainerStats(toStatsContainerFilter(req.filter))).map(
        toCriContainerStats,
      );
      for (let i = 0; i < all.length; i += STREAM_CHUNK)
        await send({ containerStats: all.slice(i, i + STREAM_CHUNK) });
    },

    podSandboxStats: async (req) => ({
      stats: toCriPodSandboxStats(await collector.podSandboxStats(req.podSandboxId)),
    }),

    listPodSandboxStats: async (req) => ({
      stats: (await collector.listPodSandboxStats(toStatsPodFilter(req.filter))).map(toCriPodSandboxStats),
    }),

    streamPodSandboxStats: async (req, _ctx, send) => {
      const all = (await collector.listPodSandboxStats(toStatsPodFilter(req.filter))).map(
        toCriPodSandboxStats,
      );
      for (let i = 0; i < all.length; i += STREAM_CHUNK)
        await send({ podSandboxStats: all.slice(i, i + STREAM_CHUNK) });
    },

    listMetricDescriptors: async () => ({
      descriptors: collector.listMetricDescriptors().map(toCriMetricDescriptor),
    }),

    listPodSandboxMetrics: async () => ({
      podMetrics: (await collector.listPodSandboxMetrics()).map(toCriPodSandboxMetrics),
    }),

    streamPodSandboxMetrics: async (_req, _ctx, send) => {
      const all = (await collector.listPodSandboxMetrics()).map(toCriPodSandboxMetrics);
      for (let i = 0; i < all.length; i += STREAM_CHUNK)
        await send({ podSandboxMetrics: all.slice(i, i + STREAM_CHUNK) });
    },
  };
}
