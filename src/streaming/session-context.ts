/** What every protocol handler gets from the server for one session. */
import type { Logger } from '../log.js';
import type { StreamRuntime } from './types.js';

export interface SessionContext {
  runtime: StreamRuntime;
  /** Carries the session's fields (kind, protocol, remote address). */
  log: Logger;
  /** Close the connection after this long without traffic (0: never). */
  idleTimeoutMs: number;
  /** How long a client may take to open the streams of a session or of a port-forward connection. */
  streamCreationTimeoutMs: number;
  /** Aborted when the server stops: the handler tears its session down. */
  serverSignal: AbortSignal;
}

/** Resolves with which of `ready` / `closed` settled first, or 'timeout' after `ms`. */
export async function firstOf(
  ready: Promise<void>,
  closed: Promise<void>,
  ms: number,
): Promise<'ready' | 'closed' | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>(
    (resolve) =>
      (timer = setTimeout(() => {
        resolve('timeout');
      }, ms)),
  );
  try {
    return await Promise.race([
      ready.then(() => 'ready' as const),
      closed.then(() => 'closed' as const),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
