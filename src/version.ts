import { readFileSync } from 'node:fs';

/**
 * skiff's version, read once from package.json so `Version` and `--version` never disagree with the
 * package. Resolved relative to this file: src/ in development, dist/src/ when built.
 */
function readVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'skiff' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return '0.0.0-unknown';
}

export const SKIFF_VERSION = readVersion();
export const RUNTIME_NAME = 'skiff';
/** The CRI API version skiff speaks (cri-api v0.36.3, package runtime.v1). */
export const CRI_API_VERSION = 'v1';
