import { status } from '@grpc/grpc-js';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Container } from '../../../src/cri/gen/runtime/v1/api.js';
import { CriServer, type ImageHandlers, type RuntimeHandlers } from '../../../src/cri/server.js';
import { SkiffError } from '../../../src/errdefs.js';
import { Logger } from '../../../src/log.js';
import { connectCri, failure } from '../../fixtures/cri-client.js';

/** An in-process CRI server on a temp socket with stub handlers: the only fakes the design allows. */
async function serve(runtime: RuntimeHandlers, image: ImageHandlers = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-wrap-'));
  const lines: string[] = [];
  const log = new Logger({ level: 'debug', format: 'json', sink: { write: (l) => void lines.push(l) } });
  const socketPath = join(dir, 'nested', 'cri.sock');
  const server = new CriServer({ socketPath, log, runtime, image });
  await server.start();
  const cri = connectCri(socketPath);
  onTestFinished(async () => {
    cri.close();
    await server.stop(1000);
    await rm(dir, { recursive: true, force: true });
  });
  const logs = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { server, cri, socketPath, logs };
}

const version = async () => ({
  version: '0.1.0',
  runtimeName: 'stub',
  runtimeVersion: '1',
  runtimeApiVersion: 'v1',
});

describe('the CRI wrapper', () => {
  it('creates the socket parent dirs and makes the socket mode 0660', async () => {
    const { socketPath } = await serve({ version });
    const st = await stat(socketPath);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
  });

  it('answers an RPC without a handler with UNIMPLEMENTED naming it, and keeps serving', async () => {
    const { cri } = await serve({ version });
    const f = await failure(cri.runtime.listPodSandbox({ filter: undefined }));
    expect(f.code).toBe(status.UNIMPLEMENTED);
    expect(f.details).toContain('ListPodSandbox');
    const s = await failure(cri.image.listImages({ filter: undefined }));
    expect(s.code).toBe(status.UNIMPLEMENTED);
    expect(s.details).toContain('ListImages');
    const stream = await failure(cri.runtime.streamPodSandboxes({ filter: undefined }));
    expect(stream.code).toBe(status.UNIMPLEMENTED);
    expect(stream.details).toContain('StreamPodSandboxes');
    expect((await cri.runtime.version({ version: '' })).runtimeName).toBe('stub');
  });

  it('serves clients that send the socket path as :authority, as crictl/critest 1.26 (grpc-go) do', async () => {
    const { socketPath } = await serve({ version });
    // Without AuthorityFixer, Node's nghttp2 resets these streams with PROTOCOL_ERROR.
    const old = connectCri(socketPath, { authority: socketPath });
    onTestFinished(() => {
      old.close();
    });
    for (let i = 0; i < 3; i++) expect((await old.runtime.version({ version: '' })).runtimeName).toBe('stub');
    const f = await failure(old.runtime.listContainers({ filter: undefined }));
    expect(f.code).toBe(status.UNIMPLEMENTED);
  });

  it('gives grpc-js the native socket of a client with a valid authority, a fixing stream otherwise', async () => {
    const { cri, socketPath, logs } = await serve({ version });
    await cri.runtime.version({ version: '' });
    const old = connectCri(socketPath, { authority: socketPath });
    onTestFinished(() => {
      old.close();
    });
    await old.runtime.version({ version: '' });
    const conns = logs().filter((l) => l.msg === 'client connection');
    expect(conns).toEqual([
      expect.objectContaining({ native: true, authorityRewritten: false }),
      expect.objectContaining({ native: false, authorityRewritten: true }),
    ]);
  });

  it('serves clients that send nothing after their preface until the server has sent its own (grpc-go)', async () => {
    const { socketPath, logs } = await serve({ version });
    const proxyPath = `${socketPath}.waiting`;
    const proxy = createServer((client) => {
      const upstream = connect(socketPath);
      let seen = Buffer.alloc(0);
      const held: Buffer[] = [];
      let serverSpoke = false;
      client.on('data', (chunk: Buffer) => {
        if (serverSpoke) {
          upstream.write(chunk);
          return;
        }
        // Preface (24 bytes) and the first frame (SETTINGS) go on; the rest waits for the server.
        seen = Buffer.concat([seen, chunk]);
        const first = seen.length >= 33 ? 33 + seen.readUIntBE(24, 3) : Infinity;
        const sent = seen.length - chunk.length;
        const upTo = Math.min(seen.length, first);
        if (upTo > sent) upstream.write(seen.subarray(sent, upTo));
        if (seen.length > upTo) held.push(seen.subarray(Math.max(sent, upTo)));
      });
      upstream.on('data', (chunk: Buffer) => {
        if (!serverSpoke) {
          serverSpoke = true;
          for (const h of held) upstream.write(h);
        }
        client.write(chunk);
      });
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      client.on('error', () => undefined);
      upstream.on('error', () => undefined);
    });
    await new Promise<void>((r) => proxy.listen(proxyPath, r));
    onTestFinished(() => {
      proxy.close();
    });
    for (const authority of [undefined, socketPath]) {
      const waiting = connectCri(proxyPath, authority === undefined ? {} : { authority });
      onTestFinished(() => {
        waiting.close();
      });
      for (let i = 0; i < 3; i++) {
        expect((await waiting.runtime.version({ version: '' }, { deadlineMs: 5000 })).runtimeName).toBe(
          'stub',
        );
      }
    }
    expect(logs().filter((l) => l.msg === 'client connection')).toEqual([
      expect.objectContaining({ native: true }),
      expect.objectContaining({ native: false, authorityRewritten: true }),
    ]);
  });

  it('carries answers larger than the socket buffers, to clients with either authority', async () => {
    // About 3 MB (the client takes up to 4): the socket fills, so writes wait for it to drain.
    const containers = Array.from({ length: 1500 }, (_, n) =>
      Container.fromPartial({ id: `c${n}`, annotations: { blob: `${n}`.padEnd(2000, '.') } }),
    );
    const { cri, socketPath } = await serve({ version, listContainers: async () => ({ containers }) });
    const old = connectCri(socketPath, { authority: socketPath });
    onTestFinished(() => {
      old.close();
    });
    const answers = await Promise.all(
      [cri, old, cri, old].map((c) => c.runtime.listContainers({ filter: undefined })),
    );
    for (const a of answers) expect(a.containers).toEqual(containers);
  });

  it('maps a SkiffError kind to its gRPC code with the message unchanged', async () => {
    const { cri } = await serve({
      version,
      podSandboxStatus: async (req) => {
        throw new SkiffError('not-found', `pod sandbox "${req.podSandboxId}" not found`);
      },
    });
    const f = await failure(cri.runtime.podSandboxStatus({ podSandboxId: 'abc', verbose: false }));
    expect(f).toEqual({ code: status.NOT_FOUND, details: 'pod sandbox "abc" not found' });
  });

  it('answers INTERNAL for a handler bug (a thrown TypeError), logs its stack once, and keeps serving', async () => {
    const { cri, logs } = await serve({
      version,
      status: async () => {
        const o = undefined as unknown as { x: number };
        return Promise.resolve({ x: o.x } as never);
      },
    });
    const f = await failure(cri.runtime.status({ verbose: false }));
    expect(f.code).toBe(status.INTERNAL);
    expect(f.details).toMatch(/^internal error: /);
    const bug = logs().filter((l) => l.msg === 'rpc failed with a bug');
    expect(bug).toHaveLength(1);
    expect(bug[0]).toMatchObject({ level: 'error', rpc: 'Status', code: 'INTERNAL' });
    expect(String(bug[0]?.stack)).toContain('TypeError');
    expect((await cri.runtime.version({ version: '' })).runtimeApiVersion).toBe('v1');
  });

  it('logs every RPC at debug with method, duration and status code; failures at warn with the message', async () => {
    const { cri, logs } = await serve({
      version,
      removeContainer: async () => {
        throw new SkiffError('failed-precondition', 'remove container "x": it is busy');
      },
    });
    await cri.runtime.version({ version: '' });
    await failure(cri.runtime.removeContainer({ containerId: 'x' }));
    const done = logs().find((l) => l.msg === 'rpc done');
    expect(done).toMatchObject({ level: 'debug', rpc: 'Version', code: 'OK' });
    expect(typeof done?.durationMs).toBe('number');
    const failed = logs().find((l) => l.msg === 'rpc failed');
    expect(failed).toMatchObject({
      level: 'warn',
      rpc: 'RemoveContainer',
      code: 'FAILED_PRECONDITION',
      error: 'remove container "x": it is busy',
    });
  });

  it("aborts a running call's signal when its client goes away, and not a call that already answered", async () => {
    const signals: AbortSignal[] = [];
    let aborted!: (reason: unknown) => void;
    const reason = new Promise<unknown>((r) => (aborted = r));
    const { cri } = await serve({
      version: async (_req, ctx) => {
        signals.push(ctx.signal);
        return version();
      },
      status: async (_req, ctx) => {
        await new Promise<void>((resolve) => {
          ctx.signal.addEventListener('abort', () => {
            aborted(ctx.signal.reason);
            resolve();
          });
        });
        return { status: { conditions: [] }, info: {}, runtimeHandlers: [], features: undefined };
      },
    });
    for (let i = 0; i < 3; i++) await cri.runtime.version({ version: '' });
    const f = await failure(cri.runtime.status({ verbose: false }, { deadlineMs: 200 }));
    expect(f.code).toBe(status.DEADLINE_EXCEEDED);
    expect(await reason).toMatchObject({ kind: 'canceled' });
    // A handler that looks at its signal only after the client went away finds it aborted too.
    let late!: (s: AbortSignal) => void;
    const lateSignal = new Promise<AbortSignal>((r) => (late = r));
    const { cri: cri2 } = await serve({
      version,
      status: async (_req, ctx) => {
        await new Promise((r) => setTimeout(r, 500));
        late(ctx.signal);
        return { status: { conditions: [] }, info: {}, runtimeHandlers: [], features: undefined };
      },
    });
    await failure(cri2.runtime.status({ verbose: false }, { deadlineMs: 200 }));
    const s = await lateSignal;
    expect(s.aborted).toBe(true);
    expect(s.reason).toMatchObject({ kind: 'canceled' });
    // By now every Version call's stream has closed; answered calls were not cancelled.
    expect(signals.map((s) => s.aborted)).toEqual([false, false, false]);
  });

  it('sends ListContainers and StreamContainers through the container list serializer', async () => {
    const containers = Array.from({ length: 250 }, (_, n) =>
      Container.fromPartial({ id: `c${n}`, labels: { n: `${n}` }, createdAt: BigInt(n) }),
    );
    const { cri } = await serve({
      version,
      listContainers: async () => ({ containers }),
      streamContainers: async (_req, _ctx, send) => {
        await send({ containers: containers.slice(0, 100) });
        await send({ containers: containers.slice(100) });
      },
    });
    expect((await cri.runtime.listContainers({ filter: undefined })).containers).toEqual(containers);
    const chunks = await cri.runtime.streamContainers({ filter: undefined });
    expect(chunks.flatMap((c) => c.containers)).toEqual(containers);
  });

  it('streams server-streaming responses through the same wrapper', async () => {
    const { cri } = await serve({
      version,
      streamPodSandboxes: async (_req, _ctx, send) => {
        for (let i = 0; i < 3; i++) await send({ podSandboxes: [] });
      },
    });
    expect(await cri.runtime.streamPodSandboxes({ filter: undefined })).toHaveLength(3);
  });

  it('on stop, lets an in-flight call finish, refuses new ones, and removes the socket', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const started = new Promise<void>((r) => (entered = r));
    const { server, cri, socketPath } = await serve({
      version,
      status: async () => {
        entered();
        await gate;
        return { status: { conditions: [] }, info: {}, runtimeHandlers: [], features: undefined };
      },
    });
    const inFlight = cri.runtime.status({ verbose: false });
    await started;
    const stopping = server.stop(5000);
    // The server has stopped accepting: a new call on the same channel is refused as UNAVAILABLE.
    const refused = await failure(cri.runtime.version({ version: '' }));
    expect(refused.code).toBe(status.UNAVAILABLE);
    release();
    expect((await inFlight).status?.conditions).toEqual([]);
    await stopping;
    await expect(stat(socketPath)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses to start on a socket that a live server answers on, naming the path', async () => {
    const { socketPath } = await serve({ version });
    const log = new Logger({ level: 'error', format: 'json', sink: { write: () => undefined } });
    const second = new CriServer({ socketPath, log, runtime: {}, image: {} });
    await expect(second.start()).rejects.toThrow(/another daemon is serving on this socket/);
    await expect(second.start()).rejects.toThrow(socketPath);
  });
});
