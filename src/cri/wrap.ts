/**
 * The one wrapper every RPC goes through: decode (done by grpc-js with the generated codec), log, call one
 * handler, map errors (cri/status.ts). A handler that throws or rejects never crashes the daemon; an RPC
 * without a handler answers UNIMPLEMENTED naming the RPC; while draining for shutdown, new calls get
 * UNAVAILABLE so kubelet retries against the next daemon.
 */
import type {
  ServerUnaryCall,
  ServerWritableStream,
  UntypedServiceImplementation,
  sendUnaryData,
} from '@grpc/grpc-js';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { SkiffError } from '../errdefs.js';
import type { Logger } from '../log.js';
import { codeName, toServiceError, toStatus, unimplemented, type StatusError } from './status.js';

export interface CallContext {
  /** The RPC name as the CRI spells it, e.g. `RunPodSandbox`. */
  rpc: string;
  log: Logger;
  /** Aborted when the client cancels the call or its deadline passes. */
  signal: AbortSignal;
}

export type UnaryHandler<Req, Res> = (req: Req, ctx: CallContext) => Promise<Res>;
/** `send` resolves once the message is handed to the transport; await it to honour back-pressure. */
export type StreamHandler<Req, Res> = (
  req: Req,
  ctx: CallContext,
  send: (res: Res) => Promise<void>,
) => Promise<void>;

interface MethodDefinition {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
}

/** Handler types derived from a ts-proto service definition: unary or server-streaming per method. */
export type HandlersFor<D> = {
  [K in keyof D]?: D[K] extends {
    requestStream: false;
    responseStream: false;
    requestDeserialize: (b: Buffer) => infer Req;
    responseSerialize: (v: infer Res) => Buffer;
  }
    ? UnaryHandler<Req, Res>
    : D[K] extends {
          requestStream: false;
          responseStream: true;
          requestDeserialize: (b: Buffer) => infer Req;
          responseSerialize: (v: infer Res) => Buffer;
        }
      ? StreamHandler<Req, Res>
      : never;
};

/** Counts calls in flight so shutdown can wait for them (bounded) before closing. */
export class CallTracker {
  private inFlight = 0;
  private draining = false;
  private waiters: (() => void)[] = [];

  get count(): number {
    return this.inFlight;
  }

  /** Returns false when draining: the call must be refused. */
  enter(): boolean {
    if (this.draining) return false;
    this.inFlight++;
    return true;
  }

  leave(): void {
    this.inFlight--;
    if (this.inFlight === 0) for (const w of this.waiters.splice(0)) w();
  }

  /** Refuses new calls from now on; resolves true when all calls finished, false on timeout. */
  async drain(timeoutMs: number): Promise<boolean> {
    this.draining = true;
    if (this.inFlight === 0) return true;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        resolve(false);
      }, timeoutMs);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }
}

export interface WrapOptions {
  log: Logger;
  tracker: CallTracker;
}

function rpcName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** Builds the grpc-js implementation object for a whole service definition. */
export function wrapService<D extends Record<string, MethodDefinition>>(
  definition: D,
  handlers: HandlersFor<D>,
  options: WrapOptions,
): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  for (const [key, method] of Object.entries(definition)) {
    const rpc = rpcName(method.path);
    const handler = (handlers as Record<string, unknown>)[key] as
      UnaryHandler<unknown, unknown> | StreamHandler<unknown, unknown> | undefined;
    if (method.requestStream) throw new Error(`client-streaming RPC ${rpc} is not part of the CRI`);
    impl[key] = method.responseStream
      ? wrapStream(rpc, handler as StreamHandler<unknown, unknown> | undefined, options)
      : wrapUnary(rpc, handler as UnaryHandler<unknown, unknown> | undefined, options);
  }
  return impl;
}

interface Invocation {
  ctx: CallContext;
  finish(err: unknown): StatusError | undefined;
}

/**
 * Shared start/finish bookkeeping for unary and streaming calls. `log` is the RPC's child logger, made once
 * per RPC rather than per call.
 */
function begin(
  rpc: string,
  log: Logger,
  call: { on(event: 'cancelled', cb: () => void): unknown },
): Invocation {
  const started = process.hrtime.bigint();
  let finished = false;
  // Made when a handler first asks for the signal: most RPCs never do, and an AbortController with its
  // signal costs more than the rest of this bookkeeping together.
  let abort: AbortController | undefined;
  let cancelled: SkiffError | undefined;
  call.on('cancelled', () => {
    // grpc-js emits 'cancelled' when a call's stream closes, also after the answer went out; only a call
    // still running was cancelled (and only then is an error with its stack worth making).
    if (finished) return;
    cancelled = new SkiffError('canceled', `${rpc}: the client cancelled the call`);
    abort?.abort(cancelled);
  });
  return {
    ctx: {
      rpc,
      log,
      get signal() {
        if (!abort) {
          abort = new AbortController();
          if (cancelled) abort.abort(cancelled);
        }
        return abort.signal;
      },
    },
    finish(err) {
      finished = true;
      if (err === undefined) {
        if (log.isEnabled('debug')) {
          const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
          log.debug('rpc done', { durationMs: round(durationMs), code: 'OK' });
        }
        return undefined;
      }
      const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
      const s = toStatus(err);
      const fields = { durationMs: round(durationMs), code: codeName(s.code), error: s.details };
      if (s.isBug) {
        log.error('rpc failed with a bug', {
          ...fields,
          stack: err instanceof Error ? err.stack : undefined,
        });
      } else if (s.code === GrpcStatus.UNIMPLEMENTED || s.code === GrpcStatus.NOT_FOUND) {
        // kubelet probes optional RPCs and looks up ids it only suspects exist: not operator news.
        log.debug('rpc failed', fields);
      } else {
        log.warn('rpc failed', fields);
      }
      return s;
    },
  };
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

const draining = (): SkiffError =>
  new SkiffError('unavailable', 'skiff is shutting down: retry against the restarted daemon');

function wrapUnary(
  rpc: string,
  handler: UnaryHandler<unknown, unknown> | undefined,
  options: WrapOptions,
): (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => void {
  const log = options.log.child({ rpc });
  return (call, callback) => {
    if (!options.tracker.enter()) {
      callback(toServiceError(toStatus(draining())));
      return;
    }
    const inv = begin(rpc, log, call);
    const run = async (): Promise<unknown> => {
      if (!handler) throw unimplemented(rpc);
      return handler(call.request, inv.ctx);
    };
    run()
      .then(
        (res) => {
          inv.finish(undefined);
          callback(null, res);
        },
        (err: unknown) => {
          const s = inv.finish(err);
          if (s) callback(toServiceError(s));
        },
      )
      .finally(() => {
        options.tracker.leave();
      });
  };
}

function wrapStream(
  rpc: string,
  handler: StreamHandler<unknown, unknown> | undefined,
  options: WrapOptions,
): (call: ServerWritableStream<unknown, unknown>) => void {
  const log = options.log.child({ rpc });
  return (call) => {
    if (!options.tracker.enter()) {
      call.emit('error', toServiceError(toStatus(draining())));
      return;
    }
    const inv = begin(rpc, log, call);
    const send = (res: unknown): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        if (inv.ctx.signal.aborted) {
          reject(inv.ctx.signal.reason as Error);
          return;
        }
        const ok = call.write(res);
        if (ok) resolve();
        else
          call.once('drain', () => {
            resolve();
          });
      });
    const run = async (): Promise<void> => {
      if (!handler) throw unimplemented(rpc);
      await handler(call.request, inv.ctx, send);
    };
    run()
      .then(
        () => {
          inv.finish(undefined);
          call.end();
        },
        (err: unknown) => {
          const s = inv.finish(err);
          if (s && !inv.ctx.signal.aborted) call.emit('error', toServiceError(s));
          else call.end();
        },
      )
      .finally(() => {
        options.tracker.leave();
      });
  };
}
