/**
 * What the streaming drivers (exec-stream, attach, port-forward) share: the client's streams as the
 * streaming server hands them over, the terminal resizes that come with them, and the process helpers
 * that find and kill an exec'd process by pid without hitting a reused pid.
 *
 * The streams belong to the caller: a driver writes to them and reads from them but never ends or
 * destroys them, so the server can still report the outcome (exit code, error) on its own channel.
 */
import { readFile, readdir } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';

export interface TerminalSize {
  width: number;
  height: number;
}

/** The client's side of a session (structurally the streaming server's `StreamIO`). */
export interface StdioStreams {
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
  resize?: AsyncIterable<TerminalSize>;
  /** Aborts when the client is gone. */
  signal: AbortSignal;
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** A terminal size a pty or conmon accepts: positive integers that fit a `struct winsize` (u16). */
export function validSize(s: TerminalSize): boolean {
  const ok = (n: number): boolean => Number.isInteger(n) && n > 0 && n <= 0xffff;
  return ok(s.width) && ok(s.height);
}

/**
 * Applies each resize from `source` with `apply` until `stop()`; invalid sizes are skipped, a failing
 * `apply` is logged (a resize racing the end of the session is not an error worth failing it for).
 */
export function followResizes(
  source: AsyncIterable<TerminalSize> | undefined,
  apply: (s: TerminalSize) => void | Promise<void>,
  log: Logger,
): { stop: () => void } {
  if (source === undefined) return { stop: () => undefined };
  const it = source[Symbol.asyncIterator]();
  const state = { stopped: false };
  void (async () => {
    try {
      for (;;) {
        const r = await it.next();
        if (r.done === true || state.stopped) return;
        if (!validSize(r.value)) {
          log.debug('ignoring an invalid terminal size', { width: r.value.width, height: r.value.height });
          continue;
        }
        try {
          await apply(r.value);
        } catch (err) {
          log.debug('terminal resize failed', { error: messageOf(err) });
        }
      }
    } catch (err) {
      if (!state.stopped) log.debug('reading terminal resizes failed', { error: messageOf(err) });
    }
  })();
  return {
    stop: () => {
      if (state.stopped) return;
      state.stopped = true;
      // Tells the producer we are done (a generator's finally runs, a stream is released).
      it.return?.().catch(() => undefined);
    },
  };
}

/** Fields of /proc/<pid>/stat (proc(5)): comm is parenthesised and may hold spaces, so split after it. */
export async function procStat(
  pid: number,
): Promise<{ state: string; ppid: number; pgrp: number } | undefined> {
  try {
    const text = await readFile(`/proc/${String(pid)}/stat`, 'utf8');
    const [state = '', ppid = '', pgrp = ''] = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state, ppid: Number(ppid), pgrp: Number(pgrp) };
  } catch {
    return undefined;
  }
}

/** Live (not zombie) processes of process group `pgid` other than its leader, from /proc. */
export async function groupMembers(pgid: number): Promise<number[]> {
  const pids = (await readdir('/proc').catch(() => [] as string[]))
    .filter((e) => /^\d+$/.test(e))
    .map(Number)
    .filter((p) => p !== pgid);
  const out: number[] = [];
  for (const p of pids) {
    const st = await procStat(p);
    if (st?.pgrp === pgid && st.state !== 'Z' && st.state !== 'X') out.push(p);
  }
  return out;
}

/**
 * SIGKILLs process group `pgid`: first its members other than the leader, giving the leader a moment
 * to reap them (a shell waiting for its job does), then the whole group. Killed all at once, a child
 * whose parent died with it is handed to the container's PID 1, which (a `sleep`, an app) may never
 * reap it, and a zombie would stay in the container.
 */
export async function killGroupChildrenFirst(pgid: number, reapWaitMs = 500): Promise<void> {
  const members = await groupMembers(pgid);
  for (const p of members) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  const deadline = Date.now() + reapWaitMs;
  while (members.length > 0 && Date.now() < deadline) {
    const left = await Promise.all(members.map((p) => procStat(p)));
    if (left.every((st) => st === undefined)) break;
    await sleep(20);
  }
  killGroup(pgid);
}

export async function readPidFile(path: string): Promise<number | undefined> {
  try {
    const n = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

export function killGroup(pgid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // the group is gone already
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
