/**
 * Runtime handlers (`[runtimes.<name>]`): which OCI runtime binary each name runs and what it supports.
 * Status reports them to kubelet (cri-api v0.36 `runtime_handlers`), so features are probed, not assumed.
 */
import { release } from 'node:os';
import type { Logger } from '../log.js';
import { findExecutable, run } from '../util/exec.js';

export interface RuntimeHandlerOptions {
  name: string;
  binaryPath: string;
  extraArgs: readonly string[];
}

export interface RuntimeHandlerInfo {
  name: string;
  binaryPath: string;
  /** Absolute path of the binary, or undefined when it is not installed. */
  resolvedPath: string | undefined;
  /** `runc features` lists `rro` and the kernel is ≥ 5.12 (mount_setattr with MOUNT_ATTR_RDONLY recursive). */
  recursiveReadOnlyMounts: boolean;
  /** skiff does not implement Kubernetes user namespaces yet. */
  userNamespaces: false;
}

/** Probes one handler: finds its binary and asks it (`<runtime> features`, OCI runtime-spec features.md). */
export async function probeRuntimeHandler(
  options: RuntimeHandlerOptions,
  log: Logger,
): Promise<RuntimeHandlerInfo> {
  const resolvedPath = await findExecutable(options.binaryPath);
  let rro = false;
  if (resolvedPath && kernelAtLeast(5, 12)) {
    try {
      const res = await run(resolvedPath, ['features'], { timeoutMs: 5000 });
      if (res.code === 0) {
        const features = JSON.parse(res.stdout) as { mountOptions?: unknown };
        rro = Array.isArray(features.mountOptions) && features.mountOptions.includes('rro');
      }
    } catch (err) {
      log.debug('runtime features probe failed', { handler: options.name, error: err });
    }
  }
  return {
    name: options.name,
    binaryPath: options.binaryPath,
    resolvedPath,
    recursiveReadOnlyMounts: rro,
    userNamespaces: false,
  };
}

export function kernelAtLeast(major: number, minor: number, version = release()): boolean {
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (!m) return false;
  const [maj, min] = [Number(m[1]), Number(m[2])];
  return maj > major || (maj === major && min >= minor);
}
