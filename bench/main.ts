/**
 * `npm run bench`: skiff vs containerd, side by side, reported as ratios in BENCHMARKS.md (never part of
 * `npm test`). Runs the image pull benchmark (bench/pull.ts), then the pod and container benchmark
 * (bench/pods.ts); `BENCH_ONLY=pull` or `BENCH_ONLY=pods` runs one of them. Needs root.
 */
import { log } from './common.js';
import { runPodBench } from './pods.js';
import { runPullBench } from './pull.js';

const BENCHES = { pull: runPullBench, pods: runPodBench } as const;
type BenchName = keyof typeof BENCHES;

async function main(): Promise<void> {
  const only = (process.env.BENCH_ONLY ?? '').split(',').filter(Boolean);
  const names = Object.keys(BENCHES) as BenchName[];
  for (const o of only) {
    if (!names.includes(o as BenchName)) throw new Error(`BENCH_ONLY=${o}: want one of ${names.join(', ')}`);
  }
  for (const name of names) {
    if (only.length && !only.includes(name)) continue;
    log(`--- ${name} benchmark ---`);
    await BENCHES[name]();
  }
}

main().catch((err: unknown) => {
  log(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exitCode = 1;
});
