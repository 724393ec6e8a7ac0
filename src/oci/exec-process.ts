/**
 * The process spec an exec runs with (`runc exec --process`): the container's own process from its
 * bundle's config.json (user, cwd, capabilities, env, limits) with the exec's command, as CRI-O's
 * prepareProcessExec builds it. Shared by ExecSync (conmon.ts) and streaming exec (exec-stream.ts).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SkiffError, messageOf } from '../errdefs.js';
import { mergeEnv } from './spec/build.js';

export async function execProcessSpec(
  bundle: string,
  cmd: string[],
  o: { tty: boolean; env?: string[]; cwd?: string },
  what: string,
): Promise<Record<string, unknown>> {
  let spec: unknown;
  try {
    spec = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SkiffError(
      code === 'ENOENT' ? 'not-found' : 'unknown',
      `${what}: read bundle config: ${messageOf(err)}`,
    );
  }
  const base =
    typeof spec === 'object' && spec !== null && 'process' in spec && typeof spec.process === 'object'
      ? (spec.process as Record<string, unknown>)
      : {};
  const own = Array.isArray(base.env) ? base.env.filter((e): e is string => typeof e === 'string') : [];
  // The exec's variables override the container's by name, as kubelet's exec env does.
  const env = mergeEnv(own, o.env ?? []);
  // A tty exec gets TERM=xterm unless the container sets TERM (containerd does the same).
  if (o.tty && !env.some((e) => e.startsWith('TERM='))) env.push('TERM=xterm');
  // `terminal` is the exec's own: the container's setting must not leak into it (CRI-O does the same).
  const proc: Record<string, unknown> = { ...base, args: cmd, terminal: o.tty, env };
  if (o.cwd !== undefined && o.cwd !== '') proc.cwd = o.cwd;
  delete proc.consoleSize;
  return proc;
}
