/**
 * The pod benchmark's images: `busybox` (the test fixture: static busybox with `sh`, `sleep`, …) for the
 * containers, and a pause image for containerd's sandboxes (skiff runs none: it pins a pod's namespaces
 * with bind mounts, no process).
 *
 * The pause image holds one static binary, `/pause`, built at bench time with `gcc -static` when gcc and
 * a static libc are there: from ../shared/conformance/images/pause.c (what the conformance bed's pause
 * image runs) when that file exists, else from an equivalent source below (sleep in pause(2) until
 * SIGINT/SIGTERM, reap children). Without gcc it falls back to busybox: `/bin/busybox sleep`, a bigger
 * process (busybox's static binary maps more pages than pause); the report says which one ran.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BuiltImage, buildImage, busyboxLayer } from '../test/fixtures/image-builder.js';
import { busybox } from '../test/fixtures/images.js';

/** The same behaviour as Kubernetes' pause: sleep until SIGINT/SIGTERM, reap re-parented children. */
const PAUSE_SOURCE = `#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) ; }
int main(void) {
  struct sigaction a = { 0 };
  a.sa_handler = stop;
  sigaction(SIGINT, &a, 0);
  sigaction(SIGTERM, &a, 0);
  a.sa_handler = reap;
  a.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  sigaction(SIGCHLD, &a, 0);
  for (;;) pause();
}
`;

export interface PauseImage {
  image: BuiltImage;
  /** What `/pause` is, for the report. */
  what: string;
}

/** Compiles `source` (a path) with gcc -static -Os -s; undefined when gcc or a static libc is missing. */
async function compileStatic(sourcePath: string, out: string): Promise<Buffer | undefined> {
  const res = spawnSync('gcc', ['-static', '-Os', '-s', '-o', out, sourcePath], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (res.error || res.status !== 0) return undefined;
  return readFile(out);
}

export async function buildPauseImage(repoRoot: string): Promise<PauseImage> {
  const shared = join(repoRoot, '..', 'shared', 'conformance', 'images', 'pause.c');
  const tmp = await mkdtemp(join(tmpdir(), 'skiff-bench-pause-'));
  try {
    let source = shared;
    let what = `static C pause (../shared/conformance/images/pause.c, gcc -static -Os -s)`;
    if (!existsSync(shared)) {
      source = join(tmp, 'pause.c');
      await writeFile(source, PAUSE_SOURCE);
      what = 'static C pause (bench/pause.ts, gcc -static -Os -s)';
    }
    const binary = await compileStatic(source, join(tmp, 'pause'));
    if (binary) {
      const image = await buildImage({
        layers: [{ entries: [{ path: 'pause', type: 'file', content: binary, mode: 0o755 }] }],
        config: { Entrypoint: ['/pause'] },
      });
      return { image, what: `${what}, ${binary.length} bytes` };
    }
    const image = await buildImage({
      layers: [{ entries: busyboxLayer(), createdBy: 'busybox rootfs' }],
      config: { Entrypoint: ['/bin/sleep', '2147483647'] },
    });
    return { image, what: 'busybox-static `sleep` (no gcc with a static libc here)' };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

export async function buildBusyboxImage(): Promise<BuiltImage> {
  return buildImage(busybox());
}
