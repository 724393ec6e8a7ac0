/**
 * The one process-spawning helper: argument arrays (never a shell), explicit env, a timeout with a kill
 * signal, capped output, and the exit code plus stderr tail in the error.
 */
import { spawn } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';
import { SkiffError } from '../errdefs.js';
import { Helper } from './helper.js';

export interface RunOptions {
  /** Defaults to a minimal PATH-only environment, so nothing leaks from the daemon's own. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string | Buffer;
  timeoutMs?: number;
  killSignal?: NodeJS.Signals;
  /** Bytes kept of stdout and of stderr each (the tail past this is dropped). */
  maxOutputBytes?: number;
  signal?: AbortSignal;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Runs a program to completion; never throws for a non-zero exit (see `runChecked`). Started through
 * skiff-helper when it is there (util/helper.ts: no fork of the daemon), else with child_process.
 */
export function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const helper = Helper.shared();
  return helper ? runViaHelper(helper, file, args, options) : runViaNode(file, args, options);
}

async function runViaHelper(
  helper: Helper,
  file: string,
  args: readonly string[],
  options: RunOptions,
): Promise<RunResult> {
  const max = options.maxOutputBytes ?? 1024 * 1024;
  if (options.signal?.aborted) throw new SkiffError('canceled', `run ${file}: cancelled`);
  let child;
  try {
    child = await helper.spawn(file, args, {
      env: options.env ?? { PATH: process.env.PATH ?? DEFAULT_PATH },
      ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
      stdio: ['write', 'read', 'read'],
    });
  } catch (e) {
    throw spawnError(file, e as NodeJS.ErrnoException);
  }
  const out = capped(max);
  const err = capped(max);
  child.stdio[1]?.on('data', out.push);
  child.stdio[2]?.on('data', err.push);
  const stdin = child.stdio[0] as NodeJS.WritableStream;
  stdin.end(options.input ?? '');
  const killSignal = options.killSignal ?? 'SIGKILL';
  const onAbort = (): void => {
    child.kill(killSignal);
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  const timer =
    options.timeoutMs !== undefined && options.timeoutMs > 0
      ? setTimeout(() => child.kill(killSignal), options.timeoutMs)
      : undefined;
  try {
    const { code, signal } = await child.closed;
    if (options.signal?.aborted) throw new SkiffError('canceled', `run ${file}: cancelled`);
    return { code, signal, stdout: out.text(), stderr: err.text() };
  } finally {
    if (timer) clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
  }
}

function spawnError(file: string, e: NodeJS.ErrnoException): SkiffError {
  if (e.code === 'ENOENT') {
    return new SkiffError('failed-precondition', `run ${file}: executable not found in PATH`, { cause: e });
  }
  if (e.name === 'AbortError') return new SkiffError('canceled', `run ${file}: cancelled`, { cause: e });
  if (e instanceof SkiffError) return e;
  return new SkiffError('unknown', `run ${file}: ${e.message}`, { cause: e });
}

function runViaNode(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  const max = options.maxOutputBytes ?? 1024 * 1024;
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(file, args, {
      env: options.env ?? { PATH: process.env.PATH ?? DEFAULT_PATH },
      cwd: options.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
      signal: options.signal,
      timeout: options.timeoutMs,
      killSignal: options.killSignal ?? 'SIGKILL',
    });
    const out = capped(max);
    const err = capped(max);
    child.stdout.on('data', out.push);
    child.stderr.on('data', err.push);
    child.once('error', (e: NodeJS.ErrnoException) => {
      reject(spawnError(file, e));
    });
    child.once('close', (code, signal) => {
      resolve({ code, signal, stdout: out.text(), stderr: err.text() });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input);
  });
}

/** Runs a program and throws `unknown` with the exit status and stderr tail unless it exits 0. */
export async function runChecked(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const res = await run(file, args, options);
  if (res.code !== 0) {
    const how = res.signal ? `was killed by ${res.signal}` : `exited with status ${String(res.code)}`;
    const tail = stderrTail(res.stderr);
    throw new SkiffError('unknown', `${file} ${args[0] ?? ''} ${how}${tail ? `: ${tail}` : ''}`);
  }
  return res;
}

/** The last few lines of stderr, trimmed, for error messages. */
export function stderrTail(stderr: string, maxChars = 2000): string {
  const t = stderr.trim();
  return t.length > maxChars ? `…${t.slice(-maxChars)}` : t;
}

function capped(max: number): { push: (b: Buffer) => void; text: () => string } {
  const chunks: Buffer[] = [];
  let size = 0;
  return {
    push: (b: Buffer) => {
      chunks.push(b);
      size += b.length;
      while (size > max && chunks.length > 1) size -= chunks.shift()?.length ?? 0;
    },
    text: () => {
      const all = Buffer.concat(chunks);
      return all.subarray(Math.max(0, all.length - max)).toString('utf8');
    },
  };
}

/**
 * Resolves a program name to an executable path: an absolute path is checked as is, a bare name is
 * looked up in `dirs` (default: $PATH). Returns undefined when there is none.
 */
export async function findExecutable(name: string, dirs?: readonly string[]): Promise<string | undefined> {
  const candidates = isAbsolute(name)
    ? [name]
    : (dirs ?? (process.env.PATH ?? DEFAULT_PATH).split(delimiter)).filter(Boolean).map((d) => join(d, name));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}
