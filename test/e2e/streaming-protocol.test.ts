/**
 * The streaming server end to end over loopback, with a fake StreamRuntime (no root, no containers):
 * exec echoes stdin to stdout and exits with the code it is given; port-forward pipes to a local TCP
 * echo server. Driven by SPDY/3.1 and WebSocket clients as client-go speaks them
 * (test/fixtures/stream-client.ts). crictl (v1.26, SPDY) is exercised against the real daemon later.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { type Duplex, type Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { SkiffError } from '../../src/errdefs.js';
import { Logger, silentLogger } from '../../src/log.js';
import { StreamServer, type StreamServerOptions } from '../../src/streaming/server.js';
import type {
  AttachRequest,
  ExecRequest,
  StreamIO,
  StreamRuntime,
  TerminalSize,
} from '../../src/streaming/types.js';
import {
  openRemoteCommandStreams,
  readAll,
  sendPattern,
  spdyDial,
  spdyExec,
  spdyForward,
  streamWriter,
  upgradeRequest,
  UpgradeFailed,
  wsDial,
  wsExec,
  wsWriter,
} from '../fixtures/stream-client.js';

const megabytes = 1024 * 1024;

/** What the fake runtime saw, for assertions. */
interface Observed {
  execs: ExecRequest[];
  resizes: TerminalSize[];
  aborted: string[];
  forwards: { port: number; receivedSha: string }[];
}

/** A TCP echo server on 127.0.0.1 that hashes what it receives. */
async function echoServer(): Promise<{ server: Server; port: number; hashes: string[] }> {
  const hashes: string[] = [];
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    const hash = createHash('sha256');
    socket.on('data', (c: Buffer) => hash.update(c));
    socket.on('end', () => hashes.push(hash.digest('hex')));
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  return { server, port: address.port, hashes };
}

function waitAbort(signal: AbortSignal): Promise<void> {
  return signal.aborted
    ? Promise.resolve()
    : new Promise((resolve) => {
        signal.addEventListener('abort', () => {
          resolve();
        });
      });
}

/**
 * exec commands: `echo [code]` copies stdin to stdout (and "err:" + it to stderr if present) and exits
 * with code; `resize N` prints the first N sizes; `hang` waits for the abort signal; `fail` throws.
 * portForward: port 1 is refused; any other port goes to the echo server.
 */
function fakeRuntime(echoPort: number, observed: Observed): StreamRuntime {
  const copy = async (
    from: Readable | undefined,
    to: Writable | undefined,
    extra?: Writable,
  ): Promise<void> => {
    if (from === undefined) return;
    for await (const chunk of from) {
      const b = chunk as Buffer;
      if (to !== undefined && !to.write(b)) await once(to, 'drain');
      if (extra !== undefined && !extra.write(Buffer.concat([Buffer.from('err:'), b])))
        await once(extra, 'drain');
    }
  };
  return {
    async exec(req: ExecRequest, io: StreamIO): Promise<{ exitCode: number }> {
      observed.execs.push(req);
      const [cmd, arg] = req.cmd;
      switch (cmd) {
        case 'echo':
          await copy(io.stdin, io.stdout, io.stderr);
          return { exitCode: Number(arg ?? 0) };
        case 'resize': {
          const want = Number(arg);
          const seen: TerminalSize[] = [];
          if (io.resize !== undefined) {
            for await (const size of io.resize) {
              seen.push(size);
              observed.resizes.push(size);
              io.stdout?.write(`${size.width}x${size.height}\n`);
              if (seen.length >= want) break;
            }
          }
          return { exitCode: 0 };
        }
        case 'hang':
          await waitAbort(io.signal);
          observed.aborted.push(req.cmd.join(' '));
          return { exitCode: 137 };
        case 'fail':
          throw new SkiffError('not-found', 'container "c1" is not running');
        default:
          return { exitCode: 127 };
      }
    },
    async attach(_req: AttachRequest, io: StreamIO): Promise<void> {
      await copy(io.stdin, io.stdout);
    },
    async portForward(_podSandboxId: string, port: number, conn: Duplex, signal: AbortSignal): Promise<void> {
      if (port === 1) throw new Error(`dial tcp4 127.0.0.1:${port}: connect: connection refused`);
      const tcp: Socket = connect(echoPort, '127.0.0.1');
      await once(tcp, 'connect');
      const onAbort = (): void => {
        tcp.destroy();
      };
      signal.addEventListener('abort', onAbort);
      const received = createHash('sha256');
      // A Transform, not an async generator: iterating `conn` would destroy it at its end, before the
      // echo has been written back (see StreamRuntime.portForward).
      const hash = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          received.update(chunk);
          cb(null, chunk);
        },
      });
      try {
        await Promise.all([pipeline(conn, hash, tcp), pipeline(tcp, conn)]);
      } catch (err) {
        if (!signal.aborted) throw err;
      } finally {
        signal.removeEventListener('abort', onAbort);
        observed.forwards.push({ port, receivedSha: received.digest('hex') });
      }
    },
  };
}

let echo: Awaited<ReturnType<typeof echoServer>>;

beforeAll(async () => {
  echo = await echoServer();
});
afterAll(() => {
  echo.server.close();
});

async function startServer(
  options: Partial<StreamServerOptions> = {},
): Promise<{ server: StreamServer; observed: Observed }> {
  const observed: Observed = { execs: [], resizes: [], aborted: [], forwards: [] };
  const server = new StreamServer({
    address: '127.0.0.1',
    port: 0,
    runtime: fakeRuntime(echo.port, observed),
    // STREAM_DEBUG=1 shows the server's log.
    log: process.env.STREAM_DEBUG ? new Logger({ level: 'debug', format: 'text' }) : silentLogger(),
    ...options,
  });
  await server.start();
  onTestFinished(() => server.stop());
  return { server, observed };
}

const exec = (cmd: string[], opts: Partial<ExecRequest> = {}): ExecRequest => ({
  containerId: 'c1',
  cmd,
  tty: false,
  stdin: true,
  stdout: true,
  stderr: false,
  ...opts,
});

async function eventually(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await sleep(20);
  }
}

describe('StreamServer over SPDY/3.1', () => {
  it('hands out URLs with a long random token on its base URL', async () => {
    const { server } = await startServer();
    const url = server.getExec(exec(['echo']));
    expect(url).toMatch(new RegExp(`^${server.url}/exec/[A-Za-z0-9_-]{43}$`));
    expect(
      server.getAttach({ containerId: 'c1', tty: true, stdin: true, stdout: true, stderr: false }),
    ).toMatch(/\/attach\//);
    expect(server.getPortForward({ podSandboxId: 'p1', ports: [80] })).toMatch(/\/portforward\//);
  });

  it('rejects tty with stderr, and a request with no streams, when the URL is asked for', async () => {
    const { server } = await startServer();
    expect(() => server.getExec(exec(['sh'], { tty: true, stderr: true }))).toThrow(/tty and stderr/);
    expect(() => server.getExec(exec(['sh'], { stdin: false, stdout: false }))).toThrow(/one of stdin/);
  });

  it('round-trips stdin to stdout and reports success as a v4 Status', async () => {
    const { server } = await startServer();
    const r = await spdyExec(server.getExec(exec(['echo'])), { input: 'hello skiff\n' });
    expect(r.protocol).toBe('v4.channel.k8s.io');
    expect(r.stdout).toBe('hello skiff\n');
    expect(JSON.parse(r.error)).toEqual({ metadata: {}, status: 'Success' });
  });

  it('carries stderr as its own stream', async () => {
    const { server } = await startServer();
    const r = await spdyExec(server.getExec(exec(['echo'], { stderr: true })), { input: 'x', stderr: true });
    expect(r.stdout).toBe('x');
    expect(r.stderr).toBe('err:x');
  });

  it('reports a non-zero exit code as a NonZeroExitCode Status with the code as its cause', async () => {
    const { server } = await startServer();
    const r = await spdyExec(server.getExec(exec(['echo', '3'])), { input: '' });
    expect(JSON.parse(r.error)).toEqual({
      metadata: {},
      status: 'Failure',
      message: 'command terminated with non-zero exit code: error executing command [echo 3], exit code 3',
      reason: 'NonZeroExitCode',
      details: { causes: [{ reason: 'ExitCode', message: '3' }] },
    });
  });

  it('reports a runtime failure as an InternalError Status', async () => {
    const { server } = await startServer();
    const r = await spdyExec(server.getExec(exec(['fail'])), { input: '' });
    expect(JSON.parse(r.error)).toMatchObject({
      status: 'Failure',
      reason: 'InternalError',
      code: 500,
      message: 'Internal error occurred: error executing command in container: container "c1" is not running',
    });
  });

  it('writes only the failure text on the error stream for v2 and v3 clients', async () => {
    const { server } = await startServer();
    const ok = await spdyExec(server.getExec(exec(['echo'])), {
      input: 'a',
      protocols: ['v3.channel.k8s.io'],
    });
    expect(ok.protocol).toBe('v3.channel.k8s.io');
    expect(ok.error).toBe('');
    const bad = await spdyExec(server.getExec(exec(['echo', '2'])), {
      input: 'a',
      protocols: ['v2.channel.k8s.io'],
    });
    expect(bad.stdout).toBe('a');
    expect(bad.error).toMatch(/exit code 2$/);
  });

  it('delivers terminal resizes from the resize stream (tty)', async () => {
    const { server, observed } = await startServer();
    const url = server.getExec(exec(['resize', '2'], { tty: true, stdin: false }));
    const r = await spdyExec(url, {
      tty: true,
      resizes: [
        { width: 80, height: 24 },
        { width: 132, height: 43 },
      ],
    });
    expect(r.stdout).toBe('80x24\n132x43\n');
    expect(observed.resizes).toEqual([
      { width: 80, height: 24 },
      { width: 132, height: 43 },
    ]);
  });

  it('attaches stdin and stdout', async () => {
    const { server } = await startServer();
    const url = server.getAttach({ containerId: 'c1', tty: false, stdin: true, stdout: true, stderr: false });
    const r = await spdyExec(url, { input: 'attached' });
    expect(r.stdout).toBe('attached');
    expect(JSON.parse(r.error)).toEqual({ metadata: {}, status: 'Success' });
  });

  it('moves 50 MB through exec stdin/stdout with flow control (sha256 both ways)', async () => {
    const { server } = await startServer();
    const { session, protocol } = await spdyDial(server.getExec(exec(['echo'])), ['v4.channel.k8s.io']);
    const streams = await openRemoteCommandStreams(session, protocol, { stdin: true });
    const received = createHash('sha256');
    let bytes = 0;
    streams.stdout!.on('data', (c: Buffer) => {
      received.update(c);
      bytes += c.length;
    });
    const stdoutDone = once(streams.stdout!, 'end');
    const sent = await sendPattern(streamWriter(streams.stdin!), 50 * megabytes, 7);
    streams.stdin!.end();
    await stdoutDone;
    expect(bytes).toBe(50 * megabytes);
    expect(received.digest('hex')).toBe(sent);
    expect(JSON.parse((await readAll(streams.error)).toString())).toEqual({
      metadata: {},
      status: 'Success',
    });
    session.destroy();
  });

  it('forwards 50 MB each way to a port, checked by sha256 at both ends', async () => {
    const { server, observed } = await startServer();
    const { session, protocol } = await spdyDial(server.getPortForward({ podSandboxId: 'p1', ports: [] }), [
      'portforward.k8s.io',
    ]);
    expect(protocol).toBe('portforward.k8s.io');
    const { data, error } = await spdyForward(session, 8080, 0);
    const received = createHash('sha256');
    let bytes = 0;
    data.on('data', (c: Buffer) => {
      received.update(c);
      bytes += c.length;
    });
    const ended = once(data, 'end');
    const sent = await sendPattern(streamWriter(data), 50 * megabytes, 11);
    data.end();
    await ended;
    expect(bytes).toBe(50 * megabytes);
    expect(received.digest('hex')).toBe(sent);
    expect((await readAll(error)).toString()).toBe('');
    await eventually(() => observed.forwards.length === 1);
    expect(observed.forwards[0]).toEqual({ port: 8080, receivedSha: sent });
    expect(echo.hashes).toContain(sent);
    session.destroy();
  });

  it('carries many connections concurrently on one port-forward session', async () => {
    const { server } = await startServer();
    const { session } = await spdyDial(server.getPortForward({ podSandboxId: 'p1', ports: [] }), [
      'portforward.k8s.io',
    ]);
    const results = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const { data } = await spdyForward(session, 9000 + i, i);
        const body = `connection ${i} `.repeat(1000);
        data.end(body);
        return (await readAll(data)).toString() === body;
      }),
    );
    expect(results.every(Boolean)).toBe(true);
    session.destroy();
  });

  it('reports a refused connection on the error stream and keeps the session', async () => {
    const { server } = await startServer();
    const { session } = await spdyDial(server.getPortForward({ podSandboxId: 'p1', ports: [] }), [
      'portforward.k8s.io',
    ]);
    const refused = await spdyForward(session, 1, 0);
    expect((await readAll(refused.error)).toString()).toBe(
      'error forwarding port 1 to pod p1, uid : dial tcp4 127.0.0.1:1: connect: connection refused',
    );
    const ok = await spdyForward(session, 80, 1);
    ok.data.end('still here');
    expect((await readAll(ok.data)).toString()).toBe('still here');
    session.destroy();
  });

  it('refuses ports outside a non-empty port list with a message', async () => {
    const { server } = await startServer();
    const { session } = await spdyDial(server.getPortForward({ podSandboxId: 'p1', ports: [80] }), [
      'portforward.k8s.io',
    ]);
    const other = await spdyForward(session, 81, 0);
    expect((await readAll(other.error)).toString()).toMatch(/port 81 is not one of the ports/);
    session.destroy();
  });

  it('answers 404 for a reused token and for an expired one', async () => {
    const { server } = await startServer({ tokenTtlMs: 200 });
    const url = server.getExec(exec(['echo']));
    await spdyExec(url, { input: 'once' });
    await expect(spdyExec(url, { input: 'twice' })).rejects.toMatchObject({ status: 404 });
    const late = server.getExec(exec(['echo']));
    await sleep(300);
    await expect(spdyExec(late, { input: 'late' })).rejects.toMatchObject({ status: 404 });
    await expect(spdyExec(`${server.url}/exec/not-a-token`, { input: '' })).rejects.toMatchObject({
      status: 404,
    });
    // A token is bound to its kind.
    const execUrl = server.getExec(exec(['echo']));
    await expect(spdyExec(execUrl.replace('/exec/', '/attach/'), { input: '' })).rejects.toMatchObject({
      status: 404,
    });
  });

  it('answers 400 with the reason for malformed upgrades, and 403 for an unknown subprotocol', async () => {
    const { server } = await startServer();
    const noVersion = upgradeRequest(server.getExec(exec(['echo'])), {
      Connection: 'Upgrade',
      Upgrade: 'SPDY/3.1',
    });
    await expect(noVersion).rejects.toMatchObject({
      status: 400,
      body: 'unable to upgrade: X-Stream-Protocol-Version is required\n',
    });
    const wrongUpgrade = upgradeRequest(server.getExec(exec(['echo'])), {
      Connection: 'Upgrade',
      Upgrade: 'h2c',
      'X-Stream-Protocol-Version': 'v4.channel.k8s.io',
    });
    await expect(wrongUpgrade).rejects.toMatchObject({ status: 400, body: /missing upgrade headers/ });
    const plain = await fetch(server.getExec(exec(['echo'])), { method: 'POST' });
    expect(plain.status).toBe(400);
    expect(await plain.text()).toBe('unable to upgrade: missing upgrade headers in request\n');
    const unknown = upgradeRequest(server.getExec(exec(['echo'])), {
      Connection: 'Upgrade',
      Upgrade: 'SPDY/3.1',
      'X-Stream-Protocol-Version': 'v9.channel.k8s.io',
    });
    const err = (await unknown.catch((e: unknown) => e)) as UpgradeFailed;
    expect(err.status).toBe(403);
    expect(err.headers['x-accepted-stream-protocol-versions']).toMatch(/v4\.channel\.k8s\.io/);
  });

  it('aborts the runtime signal when the client disappears mid-stream', async () => {
    const { server, observed } = await startServer();
    const { session, protocol, socket } = await spdyDial(server.getExec(exec(['hang'])), [
      'v4.channel.k8s.io',
    ]);
    await openRemoteCommandStreams(session, protocol, { stdin: true });
    await eventually(() => observed.execs.length === 1);
    socket.resetAndDestroy();
    await eventually(() => observed.aborted.length === 1);
  });

  it('closes an idle session and aborts its runtime call', async () => {
    const { server, observed } = await startServer({ idleTimeoutMs: 300 });
    const { session, protocol } = await spdyDial(server.getExec(exec(['hang'])), ['v4.channel.k8s.io']);
    await openRemoteCommandStreams(session, protocol, { stdin: true });
    await session.closed;
    await eventually(() => observed.aborted.length === 1);
  });

  it('gives up on a client that never opens its streams', async () => {
    const { server, observed } = await startServer({ streamCreationTimeoutMs: 200 });
    const { session } = await spdyDial(server.getExec(exec(['echo'])), ['v4.channel.k8s.io']);
    await session.closed;
    expect(observed.execs).toEqual([]);
  });

  it('serves 50 concurrent sessions', async () => {
    const { server } = await startServer();
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        spdyExec(server.getExec(exec(['echo'])), { input: `session ${i}` }),
      ),
    );
    results.forEach((r, i) => {
      expect(r.stdout).toBe(`session ${i}`);
    });
  });

  it('stop() aborts running sessions and closes their connections', async () => {
    const { server, observed } = await startServer();
    const { session, protocol } = await spdyDial(server.getExec(exec(['hang'])), ['v4.channel.k8s.io']);
    await openRemoteCommandStreams(session, protocol, { stdin: true });
    await eventually(() => observed.execs.length === 1);
    await server.stop();
    await session.closed;
    expect(observed.aborted).toEqual(['hang']);
  });
});

describe('StreamServer over TLS', () => {
  const haveOpenssl = ['/usr/bin/openssl', '/bin/openssl', '/usr/local/bin/openssl'].some((p) =>
    existsSync(p),
  );

  it.skipIf(!haveOpenssl)('serves SPDY and WebSocket sessions on https URLs', async () => {
    // A throwaway self-signed certificate, made here rather than committed.
    const dir = await mkdtemp(join(tmpdir(), 'skiff-stream-tls-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    const tlsCertFile = join(dir, 'cert.pem');
    const tlsKeyFile = join(dir, 'key.pem');
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', tlsKeyFile, '-out', tlsCertFile, '-days', '1', '-subj', '/CN=127.0.0.1',
    ], { stdio: 'ignore' }); // prettier-ignore
    const { server } = await startServer({ tlsCertFile, tlsKeyFile });
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const spdy = await spdyExec(server.getExec(exec(['echo'])), { input: 'over tls' });
    expect(spdy.stdout).toBe('over tls');
    const ws = await wsExec(server.getExec(exec(['echo'])), { input: 'over wss' });
    expect(ws.stdout).toBe('over wss');
  });

  it('refuses a certificate without its key', () => {
    expect(
      () =>
        new StreamServer({
          address: '127.0.0.1',
          port: 0,
          tlsCertFile: '/x',
          runtime: fakeRuntime(1, { execs: [], resizes: [], aborted: [], forwards: [] }),
          log: silentLogger(),
        }),
    ).toThrow(/both a certificate file and a key file/);
  });
});

describe('StreamServer over WebSocket', () => {
  it('runs exec on v5.channel.k8s.io: hello on stdout, stdin closed by the close signal, Status on channel 3', async () => {
    const { server } = await startServer();
    const r = await wsExec(server.getExec(exec(['echo'])), { input: 'over websocket' });
    expect(r.protocol).toBe('v5.channel.k8s.io');
    expect(r.channels[0]).toBe(1);
    expect(r.stdout).toBe('over websocket');
    expect(JSON.parse(r.error)).toEqual({ metadata: {}, status: 'Success' });
    expect(r.closeCode).toBe(1000);
  });

  it('reports the exit code on v4.channel.k8s.io', async () => {
    const { server } = await startServer();
    // v4 has no close signal: a command that does not wait for stdin EOF.
    const r = await wsExec(server.getExec(exec(['resize', '0'], { stdin: false })), {
      protocols: ['v4.channel.k8s.io'],
    });
    expect(r.protocol).toBe('v4.channel.k8s.io');
    expect(JSON.parse(r.error)).toEqual({ metadata: {}, status: 'Success' });
    const failing = await wsExec(server.getExec(exec(['nosuch'], { stdin: false })), {
      protocols: ['v4.channel.k8s.io'],
    });
    expect(JSON.parse(failing.error)).toMatchObject({
      reason: 'NonZeroExitCode',
      details: { causes: [{ message: '127' }] },
    });
  });

  it('delivers resizes on channel 4', async () => {
    const { server, observed } = await startServer();
    const r = await wsExec(server.getExec(exec(['resize', '1'], { tty: true, stdin: false })), {
      tty: true,
      resizes: [{ width: 100, height: 30 }],
    });
    expect(r.stdout).toBe('100x30\n');
    expect(observed.resizes).toEqual([{ width: 100, height: 30 }]);
  });

  it('forwards 50 MB each way on the port-forward channels, after the port prefixes', async () => {
    const { server, observed } = await startServer();
    const received = createHash('sha256');
    let bytes = 0;
    const first: Record<number, Buffer> = {};
    const errors: Buffer[] = [];
    let done!: () => void;
    const allBack = new Promise<void>((resolve) => (done = resolve));
    const ws = await wsDial(
      server.getPortForward({ podSandboxId: 'p1', ports: [8080] }),
      ['v4.channel.k8s.io'],
      (m) => {
        const channel = m[0]!;
        if (first[channel] === undefined) {
          first[channel] = m.subarray(1);
          return;
        }
        if (channel === 1) errors.push(m.subarray(1));
        if (channel !== 0) return;
        received.update(m.subarray(1));
        bytes += m.length - 1;
        if (bytes === 50 * megabytes) done();
      },
    );
    await eventually(() => first[0] !== undefined && first[1] !== undefined);
    expect(first[0]!.readUInt16LE(0)).toBe(8080);
    expect(first[1]!.readUInt16LE(0)).toBe(8080);
    const sent = await sendPattern(wsWriter(ws, 0), 50 * megabytes, 13);
    await allBack;
    expect(received.digest('hex')).toBe(sent);
    expect(Buffer.concat(errors).toString()).toBe('');
    ws.close();
    await eventually(() => observed.forwards.length === 1);
    expect(observed.forwards[0]!.receivedSha).toBe(sent);
  });

  it('reports a refused port on its error channel', async () => {
    const { server } = await startServer();
    const messages: Buffer[] = [];
    const ws = await wsDial(
      server.getPortForward({ podSandboxId: 'p1', ports: [1] }),
      ['v2.portforward.k8s.io'],
      (m) => messages.push(m),
    );
    if (ws.readyState !== ws.CLOSED) await once(ws, 'close');
    const errorText = messages
      .filter((m) => m[0] === 1)
      .slice(1)
      .map((m) => m.subarray(1).toString())
      .join('');
    expect(errorText).toBe(
      'error forwarding port 1 to pod p1, uid : dial tcp4 127.0.0.1:1: connect: connection refused',
    );
  });

  it('answers 404 for a spent token, 403 for an unknown subprotocol, 400 for a bad handshake', async () => {
    const { server } = await startServer();
    const url = server.getExec(exec(['echo']));
    await wsExec(url, { input: 'x' });
    await expect(wsDial(url, ['v5.channel.k8s.io'])).rejects.toMatchObject({ status: 404 });
    await expect(wsDial(server.getExec(exec(['echo'])), ['v9.channel.k8s.io'])).rejects.toMatchObject({
      status: 403,
    });
    const bad = upgradeRequest(
      server.getExec(exec(['echo'])),
      { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13' },
      'GET',
    );
    await expect(bad).rejects.toMatchObject({ status: 400 });
    const noPorts = wsDial(server.getPortForward({ podSandboxId: 'p1', ports: [] }), ['v4.channel.k8s.io']);
    await expect(noPorts).rejects.toMatchObject({
      status: 400,
      body: 'query parameter "port" is required\n',
    });
  });

  it('aborts the runtime signal when the WebSocket client disappears', async () => {
    const { server, observed } = await startServer();
    const ws = await wsDial(server.getExec(exec(['hang'])), ['v5.channel.k8s.io']);
    await eventually(() => observed.execs.length === 1);
    ws.terminate();
    await eventually(() => observed.aborted.length === 1);
  });

  it('serves 50 concurrent sessions', async () => {
    const { server } = await startServer();
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => wsExec(server.getExec(exec(['echo'])), { input: `ws ${i}` })),
    );
    results.forEach((r, i) => {
      expect(r.stdout).toBe(`ws ${i}`);
    });
  });
});
