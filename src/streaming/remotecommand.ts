/**
 * What exec and attach sessions share whatever the transport (SPDY or WebSocket): the subprotocol
 * versions, the metav1.Status written on the error stream, terminal resize messages, and the call into
 * the runtime. Mirrors kubelet `pkg/kubelet/cri/streaming/remotecommand/` and client-go
 * `tools/remotecommand/` (v1-v5), which decode what we write.
 */
import { finished } from 'node:stream/promises';
import type { Writable } from 'node:stream';
import { messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';
import type { AttachRequest, ExecRequest, StreamIO, StreamRuntime, TerminalSize } from './types.js';

/** remotecommand subprotocols (apimachinery `pkg/util/remotecommand/constants.go`). */
export const StreamProtocol = {
  v1: 'channel.k8s.io',
  v2: 'v2.channel.k8s.io',
  v3: 'v3.channel.k8s.io',
  v4: 'v4.channel.k8s.io',
  v5: 'v5.channel.k8s.io',
} as const;

/** What kubelet offers over SPDY, most preferred first (`SupportedStreamingProtocols`). */
export const spdyRemoteCommandProtocols: readonly string[] = [
  StreamProtocol.v4,
  StreamProtocol.v3,
  StreamProtocol.v2,
  StreamProtocol.v1,
];

/** The stream types of the `streamType` header (k8s.io/api/core/v1 `StreamType*`). */
export type RemoteStreamType = 'stdin' | 'stdout' | 'stderr' | 'error' | 'resize';

/** The subset of metav1.Status that remotecommand uses; key order is Go's json.Marshal order. */
export interface Status {
  metadata: Record<string, never>;
  status: 'Success' | 'Failure';
  message?: string;
  reason?: string;
  details?: { causes: { reason?: string; message?: string }[] };
  code?: number;
}

export function successStatus(): Status {
  return { metadata: {}, status: 'Success' };
}

/**
 * kubelet's status for a process that exited non-zero (remotecommand/exec.go): reason NonZeroExitCode
 * with an ExitCode cause whose message is the code, which client-go parses as a uint8 into CodeExitError.
 */
export function exitCodeStatus(exitCode: number, cmd: readonly string[]): Status {
  const code = Math.min(Math.max(Math.trunc(exitCode), 1), 255);
  return {
    metadata: {},
    status: 'Failure',
    message: `command terminated with non-zero exit code: error executing command [${cmd.join(' ')}], exit code ${code}`,
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: String(code) }] },
  };
}

/** apimachinery `errors.NewInternalError(err)`. */
export function internalErrorStatus(message: string): Status {
  return {
    metadata: {},
    status: 'Failure',
    message: `Internal error occurred: ${message}`,
    reason: 'InternalError',
    details: { causes: [{ message }] },
    code: 500,
  };
}

/**
 * The bytes for the error stream: v4 and later carry the Status as JSON (`v4WriteStatusFunc`); older
 * versions carry only a failure's message as text and nothing on success (`v1WriteStatusFunc`).
 */
export function encodeStatus(status: Status, protocol: string): Buffer | undefined {
  if (protocol === StreamProtocol.v4 || protocol === StreamProtocol.v5)
    return Buffer.from(JSON.stringify(status));
  if (status.status === 'Success') return undefined;
  return Buffer.from(status.message ?? 'error');
}

/** Whether the protocol version carries a resize stream (v3 and later). */
export function supportsResize(protocol: string): boolean {
  return protocol === StreamProtocol.v3 || protocol === StreamProtocol.v4 || protocol === StreamProtocol.v5;
}

/**
 * Splits a byte stream of concatenated JSON objects (client-go writes `{"Width":80,"Height":24}\n` per
 * resize with a json.Encoder; WebSocket clients send one object per message, with or without the newline)
 * into terminal sizes. Field names match case-insensitively, as Go's decoder does; objects that are not a
 * size in uint16 range are skipped. A run of bytes that never closes an object is dropped past 4 KiB.
 */
export class ResizeParser {
  private buf = '';
  private depth = 0;
  private inString = false;
  private escaped = false;

  push(chunk: Buffer | string): TerminalSize[] {
    const out: TerminalSize[] = [];
    for (const ch of typeof chunk === 'string' ? chunk : chunk.toString('utf8')) {
      if (this.depth === 0) {
        if (ch !== '{') continue;
        this.buf = '';
      }
      this.buf += ch;
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (ch === '\\') this.escaped = true;
        else if (ch === '"') this.inString = false;
      } else if (ch === '"') {
        this.inString = true;
      } else if (ch === '{') {
        this.depth++;
      } else if (ch === '}') {
        this.depth--;
        if (this.depth === 0) {
          const size = parseSize(this.buf);
          if (size !== undefined) out.push(size);
        }
      }
      if (this.buf.length > 4096) {
        this.buf = '';
        this.depth = 0;
        this.inString = false;
        this.escaped = false;
      }
    }
    return out;
  }
}

function parseSize(text: string): TerminalSize | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  let width: unknown;
  let height: unknown;
  for (const [k, v] of Object.entries(value)) {
    if (k.toLowerCase() === 'width') width = v;
    else if (k.toLowerCase() === 'height') height = v;
  }
  const ok = (n: unknown): n is number =>
    typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffff;
  return ok(width) && ok(height) ? { width, height } : undefined;
}

/**
 * Terminal sizes for the runtime. Only the latest unread size is kept: a terminal cares about its
 * current size, and a runtime that reads slowly (or not at all) must not make sizes pile up.
 */
export class ResizeQueue implements AsyncIterable<TerminalSize> {
  private latest: TerminalSize | undefined;
  private waiter: ((r: IteratorResult<TerminalSize>) => void) | undefined;
  private ended = false;

  push(size: TerminalSize): void {
    if (this.ended) return;
    const waiter = this.waiter;
    if (waiter !== undefined) {
      this.waiter = undefined;
      waiter({ value: size, done: false });
    } else {
      this.latest = size;
    }
  }

  end(): void {
    this.ended = true;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<TerminalSize> {
    return {
      next: (): Promise<IteratorResult<TerminalSize>> => {
        const latest = this.latest;
        if (latest !== undefined) {
          this.latest = undefined;
          return Promise.resolve({ value: latest, done: false });
        }
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.waiter = resolve));
      },
      return: (): Promise<IteratorResult<TerminalSize>> => {
        this.end();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/** The request behind an exec or attach session. */
export type RemoteCommand =
  { kind: 'exec'; request: ExecRequest } | { kind: 'attach'; request: AttachRequest };

/**
 * Calls the runtime and turns the outcome into the Status for the client (kubelet ServeExec /
 * ServeAttach): success, NonZeroExitCode, or InternalError with the runtime's message.
 */
export async function runRemoteCommand(
  command: RemoteCommand,
  io: StreamIO,
  runtime: StreamRuntime,
  log: Logger,
): Promise<Status> {
  const started = Date.now();
  try {
    if (command.kind === 'exec') {
      const { exitCode } = await runtime.exec(command.request, io);
      log.debug('exec finished', { exitCode, durationMs: Date.now() - started });
      return exitCode === 0 ? successStatus() : exitCodeStatus(exitCode, command.request.cmd);
    }
    await runtime.attach(command.request, io);
    log.debug('attach finished', { durationMs: Date.now() - started });
    return successStatus();
  } catch (err) {
    const what =
      command.kind === 'exec' ? 'error executing command in container' : 'error attaching to container';
    if (!io.signal.aborted) log.warn(`${command.kind} failed`, { error: err });
    return internalErrorStatus(`${what}: ${messageOf(err)}`);
  }
}

/** Ends a writable and waits until everything written is flushed; a stream already gone is fine. */
export async function endWritable(stream: Writable | undefined): Promise<void> {
  if (stream === undefined || stream.destroyed) return;
  if (!stream.writableEnded) stream.end();
  try {
    await finished(stream, { readable: false });
  } catch {
    // Destroyed or reset on the way: the client is gone or did not want it; nothing more to do.
  }
}

/** Writes `data` then ends the stream, waiting for both to be flushed. */
export async function writeAndEnd(stream: Writable | undefined, data: Buffer | undefined): Promise<void> {
  if (stream === undefined || stream.destroyed) return;
  if (data !== undefined && data.length > 0 && !stream.writableEnded) stream.write(data);
  await endWritable(stream);
}
