/**
 * remotecommand pieces shared by SPDY and WebSocket: the metav1.Status bytes client-go decodes, and the
 * resize messages it sends.
 */
import { describe, expect, it } from 'vitest';
import {
  encodeStatus,
  exitCodeStatus,
  internalErrorStatus,
  ResizeParser,
  ResizeQueue,
  StreamProtocol,
  successStatus,
} from '../../../src/streaming/remotecommand.js';
import type { TerminalSize } from '../../../src/streaming/types.js';

describe('error stream Status', () => {
  it('is the JSON kubelet writes for success, a non-zero exit and an internal error (v4, v5)', () => {
    expect(encodeStatus(successStatus(), StreamProtocol.v4)?.toString()).toBe(
      '{"metadata":{},"status":"Success"}',
    );
    expect(encodeStatus(exitCodeStatus(42, ['sh', '-c', 'exit 42']), StreamProtocol.v5)?.toString()).toBe(
      '{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing ' +
        'command [sh -c exit 42], exit code 42","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode",' +
        '"message":"42"}]}}',
    );
    expect(encodeStatus(internalErrorStatus('boom'), StreamProtocol.v4)?.toString()).toBe(
      '{"metadata":{},"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError",' +
        '"details":{"causes":[{"message":"boom"}]},"code":500}',
    );
  });

  it('keeps exit codes in the uint8 range client-go parses', () => {
    expect(exitCodeStatus(300, ['x']).details?.causes[0]?.message).toBe('255');
    expect(exitCodeStatus(-1, ['x']).details?.causes[0]?.message).toBe('1');
  });

  it('is only the failure message before v4, and nothing on success', () => {
    for (const p of [StreamProtocol.v1, StreamProtocol.v2, StreamProtocol.v3]) {
      expect(encodeStatus(successStatus(), p)).toBeUndefined();
      expect(encodeStatus(exitCodeStatus(1, ['false']), p)?.toString()).toMatch(
        /^command terminated .* exit code 1$/,
      );
    }
  });
});

describe('ResizeParser', () => {
  it("reads client-go's newline-separated JSON, split anywhere", () => {
    const parser = new ResizeParser();
    const wire = '{"Width":80,"Height":24}\n{"Width":132,"Height":43}\n';
    const sizes: TerminalSize[] = [];
    for (const ch of wire) sizes.push(...parser.push(Buffer.from(ch)));
    expect(sizes).toEqual([
      { width: 80, height: 24 },
      { width: 132, height: 43 },
    ]);
  });

  it('reads objects without separators, in any key case, with strings holding braces', () => {
    const parser = new ResizeParser();
    expect(parser.push('{"width":1,"height":2}{"WIDTH":3,"Height":4,"x":"}{"}')).toEqual([
      { width: 1, height: 2 },
      { width: 3, height: 4 },
    ]);
  });

  it('skips what is not a size in uint16 range, and recovers from garbage', () => {
    const parser = new ResizeParser();
    expect(parser.push('{"Width":-1,"Height":2}{"Width":70000,"Height":2}{"Width":"80"}{bad json}')).toEqual(
      [],
    );
    expect(parser.push(`{${'x'.repeat(5000)}`)).toEqual([]);
    expect(parser.push('}{"Width":5,"Height":6}')).toEqual([{ width: 5, height: 6 }]);
  });
});

describe('ResizeQueue', () => {
  it('delivers sizes to a waiting reader and ends', async () => {
    const q = new ResizeQueue();
    const it = q[Symbol.asyncIterator]();
    const next = it.next();
    q.push({ width: 10, height: 20 });
    expect(await next).toEqual({ value: { width: 10, height: 20 }, done: false });
    q.end();
    expect(await it.next()).toEqual({ value: undefined, done: true });
  });

  it('keeps only the latest size for a slow reader', async () => {
    const q = new ResizeQueue();
    q.push({ width: 1, height: 1 });
    q.push({ width: 2, height: 2 });
    q.push({ width: 3, height: 3 });
    q.end();
    const seen: TerminalSize[] = [];
    for await (const s of q) seen.push(s);
    expect(seen).toEqual([{ width: 3, height: 3 }]);
  });
});
