/**
 * The streaming runtime (exec, attach, port-forward) against real containers: pods and containers are
 * made over CRI by a child daemon, and `ContainerStreamRuntime` runs in the test process over the
 * daemon's records on disk (the protocol server in front of it is tested in streaming-protocol.test.ts).
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { ContainerRecords } from '../../src/container/record.js';
import { ContainerStreamRuntime } from '../../src/container/stream-runtime.js';
import {
  ContainerConfig as ContainerConfigMsg,
  ContainerState,
  NamespaceMode,
  PodSandboxConfig as PodSandboxConfigMsg,
  type PodSandboxConfig,
} from '../../src/cri/gen/runtime/v1/api.js';
import { isSkiffError } from '../../src/errdefs.js';
import { silentLogger } from '../../src/log.js';
import type { RuntimeTarget } from '../../src/oci/runtime.js';
import { SandboxRecords } from '../../src/sandbox/record.js';
import type { TerminalSize } from '../../src/streaming/types.js';
import { findExecutable } from '../../src/util/exec.js';
import { pullImage, removeAllPods } from '../fixtures/cri-client.js';
import { startChildDaemon, type TestDaemon } from '../fixtures/daemon.js';
import { fixtureRefs, pushAll } from '../fixtures/images.js';
import { type Registry, startRegistry } from '../fixtures/registry.js';

/** As containers.test.ts: Debian's gVisor needs host networking (inside the pod's netns) on this kernel. */
const RUNSC_ARGS = ['--network=host'];
const net = 200 + Math.floor(Math.random() * 50);
const bridge = `skc${String(net)}`;
let registry: Registry | undefined;
let d: TestDaemon | undefined;
let logDir: string | undefined;
let busybox: string;
let runtime: ContainerStreamRuntime;
let view: DiskView;

/** The daemon's records, read from disk: what ContainerStreamRuntime needs of the services. */
class DiskView {
  containers: ContainerRecords;
  sandboxes: SandboxRecords;
  constructor(
    private readonly root: string,
    private readonly state: string,
    private readonly binaries: { runc: string; runsc: string | undefined },
  ) {
    this.containers = new ContainerRecords(root);
    this.sandboxes = new SandboxRecords(root);
  }
  async refresh(): Promise<void> {
    const c = new ContainerRecords(this.root);
    const s = new SandboxRecords(this.root);
    await c.load();
    await s.load();
    this.containers = c;
    this.sandboxes = s;
  }
  /** As the daemon's ContainerService.targetOf, for the handlers this file configures. */
  target(id: string): RuntimeTarget {
    const dir = join(this.state, 'containers', id);
    const name = this.containers.resolve(id).metadata.runtimeHandler;
    const binaryPath = name === 'runsc' ? this.binaries.runsc : this.binaries.runc;
    if (binaryPath === undefined) throw new Error(`no binary for handler ${name}`);
    return {
      id,
      handler: {
        name,
        binaryPath,
        root: join(this.state, 'runtime', name),
        extraArgs: name === 'runsc' ? RUNSC_ARGS : [],
      },
      bundle: join(dir, 'bundle'),
      dir: join(dir, 'runtime'),
    };
  }
}

function daemon(): TestDaemon {
  if (!d) throw new Error('no daemon');
  return d;
}

beforeAll(async () => {
  registry = await startRegistry();
  await pushAll(registry.host);
  logDir = await mkdtemp(join(tmpdir(), 'skiff-stream-logs-'));
  d = await startChildDaemon({
    extraToml: [
      '[network]',
      `default_subnet = "10.234.${String(net)}.0/24"`,
      `bridge_name = "${bridge}"`,
      'conf_dir = "/nonexistent/skiff-test-cni"',
      '[runtimes.runsc]',
      'binary_path = "runsc"',
      `extra_args = ${JSON.stringify(RUNSC_ARGS)}`,
      '',
    ].join('\n'),
  });
  busybox = `${registry.host}/${fixtureRefs.busybox}`;
  await pullImage(d.cri, busybox);
  const runc = await findExecutable('runc');
  if (runc === undefined) throw new Error('runc is not installed');
  view = new DiskView(d.root, d.state, { runc, runsc: await findExecutable('runsc') });
  const log = silentLogger();
  runtime = new ContainerStreamRuntime({
    containers: {
      status: (id) => view.containers.resolve(id),
      targetOf: (r) => view.target(r.metadata.id),
    },
    sandboxes: { status: (id) => view.sandboxes.resolve(id) },
    log,
  });
}, 120_000);

afterAll(async () => {
  if (d) {
    await removeAllPods(d.cri);
    await d.stop();
  }
  spawnSync('ip', ['link', 'del', bridge]);
  await registry?.stop();
  if (logDir) await rm(logDir, { recursive: true, force: true });
});

// ------------------------------------------------------------------------------------------- fixtures

let podCounter = 0;

async function runPod(
  hostNetwork = false,
  runtimeHandler = '',
): Promise<{ id: string; config: PodSandboxConfig }> {
  const name = `stream-${String(process.pid)}-${String(podCounter++)}`;
  const config = PodSandboxConfigMsg.fromPartial({
    metadata: { name, uid: `uid-${name}`, namespace: 'skiff-test', attempt: 0 },
    logDirectory: join(logDir ?? tmpdir(), name),
    ...(hostNetwork
      ? {
          linux: {
            securityContext: {
              namespaceOptions: {
                network: NamespaceMode.NODE,
                pid: NamespaceMode.CONTAINER,
                ipc: NamespaceMode.POD,
              },
            },
          },
        }
      : {}),
  });
  const { podSandboxId } = await daemon().cri.runtime.runPodSandbox({ config, runtimeHandler });
  onTestFinished(async () => {
    await daemon()
      .cri.runtime.removePodSandbox({ podSandboxId })
      .catch(() => undefined);
  });
  return { id: podSandboxId, config };
}

async function runContainer(
  pod: { id: string; config: PodSandboxConfig },
  name: string,
  over: Parameters<typeof ContainerConfigMsg.fromPartial>[0] = {},
): Promise<string> {
  const config = ContainerConfigMsg.fromPartial({
    metadata: { name, attempt: 0 },
    image: { image: busybox },
    logPath: `${name}.log`,
    ...over,
  });
  const cri = daemon().cri.runtime;
  const { containerId } = await cri.createContainer(
    { podSandboxId: pod.id, config, sandboxConfig: pod.config },
    { deadlineMs: 60_000 },
  );
  await cri.startContainer({ containerId });
  await view.refresh();
  return containerId;
}

async function containerState(id: string): Promise<ContainerState | undefined> {
  const res = await daemon().cri.runtime.containerStatus({ containerId: id, verbose: false });
  return res.status?.state;
}

/** Collects what is written; `until` waits for a match. */
class Sink extends Writable {
  private chunks: Buffer[] = [];
  private waiters: (() => void)[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(chunk);
    for (const w of this.waiters.splice(0)) w();
    cb();
  }
  get buffer(): Buffer {
    return Buffer.concat(this.chunks);
  }
  get text(): string {
    return this.buffer.toString('utf8');
  }
  async until(pattern: RegExp, timeoutMs = 15_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(this.text)) {
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${String(pattern)}; got ${JSON.stringify(this.text)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.text;
  }
}

/** An async iterable of terminal sizes fed by `push`. */
function resizeQueue(): {
  iterable: AsyncIterable<TerminalSize>;
  push: (s: TerminalSize) => void;
  end: () => void;
} {
  const queue: TerminalSize[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  async function* gen(): AsyncGenerator<TerminalSize> {
    for (;;) {
      const next = queue.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (ended) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  }
  return {
    iterable: gen(),
    push: (s) => {
      queue.push(s);
      wake?.();
    },
    end: () => {
      ended = true;
      wake?.();
    },
  };
}

/** Host pids whose command line is exactly `argv` (the exec'd processes, seen from the host). */
function pidsWithArgs(argv: string[]): number[] {
  const want = `${argv.join('\0')}\0`;
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8') === want) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

/** Host pids whose NUL-separated command line matches `re`. */
function pidsMatching(re: RegExp): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (re.test(readFileSync(`/proc/${e}/cmdline`, 'utf8'))) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

async function waitFor(
  cond: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** This process's open pty masters (node-pty's), to see that a tty session frees its pty. */
function ptyMasters(): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === '/dev/ptmx') n += 1;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function execOut(
  id: string,
  cmd: string[],
): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const stdout = new Sink();
  const stderr = new Sink();
  const { exitCode } = await runtime.exec(
    { containerId: id, cmd, tty: false, stdin: false, stdout: true, stderr: true },
    { stdout, stderr, signal: new AbortController().signal },
  );
  return { exitCode, stdout: stdout.text, stderr: stderr.text };
}

// ------------------------------------------------------------------------------------------------ exec

describe('exec', () => {
  it('pipes stdin through cat, keeps stdout and stderr apart, and returns the exit code', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'exec', { command: ['sleep', '1000'] });

    const stdin = new PassThrough();
    const stdout = new Sink();
    const done = runtime.exec(
      { containerId: id, cmd: ['cat'], tty: false, stdin: true, stdout: true, stderr: true },
      { stdin, stdout, stderr: new Sink(), signal: new AbortController().signal },
    );
    stdin.write('hello ');
    await stdout.until(/hello /);
    // cat only ends when the client closes stdin.
    stdin.end('world\n');
    expect(await done).toEqual({ exitCode: 0 });
    expect(stdout.text).toBe('hello world\n');

    const r = await execOut(id, ['sh', '-c', 'echo out; echo err >&2; exit 3']);
    expect(r).toEqual({ exitCode: 3, stdout: 'out\n', stderr: 'err\n' });
    // 255 is the command's own status here, not a runtime failure.
    expect(await execOut(id, ['sh', '-c', 'exit 255'])).toEqual({ exitCode: 255, stdout: '', stderr: '' });

    // A command that exits without reading stdin ends the exec although the client keeps stdin open.
    const open = new PassThrough();
    const quick = await runtime.exec(
      { containerId: id, cmd: ['true'], tty: false, stdin: true, stdout: true, stderr: true },
      { stdin: open, stdout: new Sink(), stderr: new Sink(), signal: new AbortController().signal },
    );
    expect(quick).toEqual({ exitCode: 0 });
    expect(open.destroyed).toBe(false);
  });

  it('moves 20 MB through cat to a slow reader without loss', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'bulk', { command: ['sleep', '1000'] });
    const data = randomBytes(20 * 1024 * 1024);
    const stdin = new PassThrough();
    const hash = createHash('sha256');
    let size = 0;
    // A reader that takes 1 MiB and then pauses, so runc (and cat) must wait for it.
    const stdout = new Writable({
      highWaterMark: 64 * 1024,
      write(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        size += chunk.length;
        if (size % (1024 * 1024) < chunk.length) setTimeout(cb, 5);
        else cb();
      },
    });
    const done = runtime.exec(
      { containerId: id, cmd: ['cat'], tty: false, stdin: true, stdout: true, stderr: false },
      { stdin, stdout, signal: new AbortController().signal },
    );
    stdin.end(data);
    expect(await done).toEqual({ exitCode: 0 });
    expect(size).toBe(data.length);
    expect(hash.digest('hex')).toBe(sha256(data));
  });

  it('runs on a tty whose size follows the client', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'tty', { command: ['sleep', '1000'] });
    const ptysBefore = ptyMasters();
    const resize = resizeQueue();
    resize.push({ width: 123, height: 45 });
    const stdin = new PassThrough();
    const stdout = new Sink();
    const done = runtime.exec(
      {
        containerId: id,
        cmd: ['sh', '-c', 'tty; stty size; read line; stty size; echo "got $line"; exit 7'],
        tty: true,
        stdin: true,
        stdout: true,
        stderr: false,
      },
      { stdin, stdout, resize: resize.iterable, signal: new AbortController().signal },
    );
    await stdout.until(/45 123/);
    expect(stdout.text).toMatch(/^\/dev\/pts\/\d+\r\n/);
    resize.push({ width: 100, height: 30 });
    // Give the resize a moment to reach the container's pty before the shell reads it.
    await new Promise((r) => setTimeout(r, 300));
    stdin.write('abc\r');
    expect(await done).toEqual({ exitCode: 7 });
    resize.end();
    expect(stdout.text).toMatch(/30 100\r\n/);
    expect(stdout.text).toMatch(/got abc\r\n/);
    await waitFor(() => ptyMasters() === ptysBefore, 'the pty to be closed');
  });

  it('fails with a runtime error for a missing command, and on a stopped container', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'missing', { command: ['sleep', '1000'] });
    const err = await execOut(id, ['no-such-command']).catch((e: unknown) => e);
    expect(isSkiffError(err, 'failed-precondition')).toBe(true);
    expect(String(err)).toMatch(/no-such-command.*not found/);

    await daemon().cri.runtime.stopContainer({ containerId: id, timeout: 0n });
    await view.refresh();
    const stopped = await execOut(id, ['true']).catch((e: unknown) => e);
    expect(isSkiffError(stopped, 'failed-precondition')).toBe(true);
    expect(String(stopped)).toMatch(/not running/);
  });

  for (const tty of [false, true]) {
    it(`kills the command when the client goes away (tty ${String(tty)})`, async () => {
      const pod = await runPod();
      const id = await runContainer(pod, `abort-${String(tty)}`, { command: ['sleep', '1000'] });
      const marker = tty ? '4243' : '4242';
      const ptysBefore = ptyMasters();
      const ac = new AbortController();
      const stdout = new Sink();
      // The shell starts a child in its group, then waits: both must go.
      const done = runtime.exec(
        {
          containerId: id,
          cmd: ['sh', '-c', `sleep ${marker} & echo started; wait`],
          tty,
          stdin: false,
          stdout: true,
          stderr: false,
        },
        { stdout, signal: ac.signal },
      );
      await stdout.until(/started/);
      await waitFor(() => pidsWithArgs(['sleep', marker]).length === 1, 'the sleep to start');
      ac.abort();
      const err = await done.catch((e: unknown) => e);
      expect(isSkiffError(err, 'canceled')).toBe(true);
      await waitFor(() => pidsWithArgs(['sleep', marker]).length === 0, 'the sleep to be gone');
      // Nothing left over in the container: no zombie, no sleep.
      const ps = await execOut(id, ['ps', '-o', 'stat,args']);
      expect(ps.stdout).not.toMatch(new RegExp(`sleep ${marker}`));
      expect(ps.stdout.split('\n').filter((l) => /^\s*Z/.test(l))).toEqual([]);
      expect(await containerState(id)).toBe(ContainerState.CONTAINER_RUNNING);
      await waitFor(() => ptyMasters() === ptysBefore, 'the pty to be closed');
    });
  }

  it('works the same under runsc (gVisor)', async ({ skip }) => {
    if ((await findExecutable('runsc')) === undefined) skip('runsc is not installed');
    const pod = await runPod(false, 'runsc');
    const id = await runContainer(pod, 'gvisor', { command: ['sleep', '1000'] });
    const stdin = new PassThrough();
    const stdout = new Sink();
    const done = runtime.exec(
      { containerId: id, cmd: ['cat'], tty: false, stdin: true, stdout: true, stderr: true },
      { stdin, stdout, stderr: new Sink(), signal: new AbortController().signal },
    );
    stdin.end('through gvisor\n');
    expect(await done).toEqual({ exitCode: 0 });
    expect(stdout.text).toBe('through gvisor\n');

    const resize = resizeQueue();
    resize.push({ width: 99, height: 22 });
    const tty = new Sink();
    const ran = await runtime.exec(
      {
        containerId: id,
        cmd: ['sh', '-c', 'stty size; exit 4'],
        tty: true,
        stdin: false,
        stdout: true,
        stderr: false,
      },
      { stdout: tty, resize: resize.iterable, signal: new AbortController().signal },
    );
    resize.end();
    expect(ran).toEqual({ exitCode: 4 });
    expect(tty.text).toMatch(/22 99/);
  });
});

// ---------------------------------------------------------------------------------------------- attach

describe('attach', () => {
  it('carries stdin, stdout and stderr; closing stdin detaches and leaves the container running', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'attach', { command: ['sh'], stdin: true });
    const stdin = new PassThrough();
    const stdout = new Sink();
    const stderr = new Sink();
    const done = runtime.attach(
      { containerId: id, tty: false, stdin: true, stdout: true, stderr: true },
      { stdin, stdout, stderr, signal: new AbortController().signal },
    );
    stdin.write('echo hi\n');
    await stdout.until(/hi\n/);
    stdin.write('echo oops >&2\n');
    await stderr.until(/oops\n/);
    stdin.end();
    await done;
    expect(await containerState(id)).toBe(ContainerState.CONTAINER_RUNNING);

    // A second session (stdin stayed open: the container was not started with stdin once), ended by
    // the client going away.
    const ac = new AbortController();
    const stdin2 = new PassThrough();
    const stdout2 = new Sink();
    const again = runtime.attach(
      { containerId: id, tty: false, stdin: true, stdout: true, stderr: false },
      { stdin: stdin2, stdout: stdout2, signal: ac.signal },
    );
    stdin2.write('echo again\n');
    await stdout2.until(/again\n/);
    ac.abort();
    await again;
    await new Promise((r) => setTimeout(r, 300));
    expect(await containerState(id)).toBe(ContainerState.CONTAINER_RUNNING);
  });

  it('closes a stdin-once container’s stdin when the client closes its stdin', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'once', { command: ['cat'], stdin: true, stdinOnce: true });
    const stdin = new PassThrough();
    const stdout = new Sink();
    const done = runtime.attach(
      { containerId: id, tty: false, stdin: true, stdout: true, stderr: true },
      { stdin, stdout, stderr: new Sink(), signal: new AbortController().signal },
    );
    stdin.end('only once\n');
    // cat sees EOF and exits; conmon closes the socket, which ends the attach.
    await done;
    expect(stdout.text).toBe('only once\n');
    await waitFor(async () => (await containerState(id)) === ContainerState.CONTAINER_EXITED, 'cat to exit');
  });

  it('attaches to a tty container and resizes it', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'tty', { command: ['sh'], stdin: true, tty: true });
    const resize = resizeQueue();
    resize.push({ width: 111, height: 33 });
    const ac = new AbortController();
    const stdin = new PassThrough();
    const stdout = new Sink();
    const done = runtime.attach(
      { containerId: id, tty: true, stdin: true, stdout: true, stderr: false },
      { stdin, stdout, resize: resize.iterable, signal: ac.signal },
    );
    await new Promise((r) => setTimeout(r, 300));
    stdin.write('stty size\n');
    await stdout.until(/33 111/);
    ac.abort();
    await done;
    resize.end();
    expect(await containerState(id)).toBe(ContainerState.CONTAINER_RUNNING);
  });

  it('refuses a container that is not running', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'done', { command: ['true'] });
    await waitFor(async () => (await containerState(id)) === ContainerState.CONTAINER_EXITED, 'exit');
    await view.refresh();
    const err = await runtime
      .attach(
        { containerId: id, tty: false, stdin: false, stdout: true, stderr: true },
        { stdout: new Sink(), signal: new AbortController().signal },
      )
      .catch((e: unknown) => e);
    expect(isSkiffError(err, 'failed-precondition')).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------- port-forward

/** A connected TCP pair on loopback: `conn` goes to the runtime (as the server's stream would), `client` is ours. */
async function connPair(): Promise<{ conn: Socket; client: Socket; close: () => void }> {
  const server: Server = createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no address');
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const client = connect({ host: '127.0.0.1', port: addr.port, allowHalfOpen: true });
  const conn = await accepted;
  server.close();
  return {
    conn,
    client,
    close: () => {
      conn.destroy();
      client.destroy();
    },
  };
}

/** Sends `request`, half-closes, and reads until the other side ends. */
async function exchange(
  podId: string,
  port: number,
  request: Buffer,
): Promise<{ response: Buffer; forwarded: Promise<void> }> {
  const { conn, client, close } = await connPair();
  onTestFinished(close);
  const forwarded = runtime.portForward(podId, port, conn, new AbortController().signal);
  forwarded.catch(() => undefined);
  const chunks: Buffer[] = [];
  client.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise<void>((resolve, reject) => {
    client.once('end', resolve);
    client.once('error', reject);
    forwarded.catch(reject);
  });
  client.end(request);
  await ended;
  return { response: Buffer.concat(chunks), forwarded };
}

describe('port-forward', () => {
  it('reaches a server on the pod’s loopback, with half-close and 50 MB each way', async () => {
    const pod = await runPod();
    await runContainer(pod, 'servers', {
      command: [
        'sh',
        '-c',
        'mkdir -p /www && echo hello-from-pod > /www/index.html && httpd -p 127.0.0.1:80 -h /www && exec nc -ll -p 9000 -e cat',
      ],
    });
    await view.refresh();
    // Wait for the servers to listen.
    await waitFor(async () => {
      const r = await exchange(pod.id, 80, Buffer.from('GET / HTTP/1.0\r\n\r\n')).catch(() => undefined);
      return r !== undefined && r.response.length > 0;
    }, 'httpd');

    const get = await exchange(pod.id, 80, Buffer.from('GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n'));
    await get.forwarded;
    const text = get.response.toString('utf8');
    expect(text).toMatch(/^HTTP\/1\.[01] 200/);
    expect(text).toMatch(/\r\n\r\nhello-from-pod\n$/);

    // An echo server (nc -e cat): the whole request comes back after our half-close.
    const data = randomBytes(50 * 1024 * 1024);
    await waitFor(async () => {
      const r = await exchange(pod.id, 9000, Buffer.from('ping')).catch(() => undefined);
      return r?.response.toString() === 'ping';
    }, 'nc');
    const echo = await exchange(pod.id, 9000, data);
    await echo.forwarded;
    expect(echo.response.length).toBe(data.length);
    expect(sha256(echo.response)).toBe(sha256(data));
  });

  it('rejects naming the port and the pod when nothing listens', async () => {
    const pod = await runPod();
    await runContainer(pod, 'idle', { command: ['sleep', '1000'] });
    const { conn, close } = await connPair();
    onTestFinished(close);
    const err = await runtime
      .portForward(pod.id, 81, conn, new AbortController().signal)
      .catch((e: unknown) => e);
    expect(isSkiffError(err, 'unavailable')).toBe(true);
    expect(String(err)).toContain('port 81');
    expect(String(err)).toContain(pod.id);
    expect(String(err)).toMatch(/Connection refused/);
  });

  it('stops forwarding when the client goes away', async () => {
    const pod = await runPod();
    await runContainer(pod, 'hold', { command: ['nc', '-ll', '-p', '9001', '-e', 'cat'] });
    const { conn, client, close } = await connPair();
    onTestFinished(close);
    const ac = new AbortController();
    const forwarded = runtime.portForward(pod.id, 9001, conn, ac.signal);
    const got = new Sink();
    client.pipe(got);
    await waitFor(async () => {
      client.write('x');
      await new Promise((r) => setTimeout(r, 200));
      return got.text.length > 0;
    }, 'echo');
    const socat = /socat\0.*TCP4:127\.0\.0\.1:9001\0/;
    expect(pidsMatching(socat)).toHaveLength(1);
    ac.abort();
    await forwarded;
    await waitFor(() => pidsMatching(socat).length === 0, 'socat to exit');
  });

  it('reaches a server on the node’s loopback for a pod on the node’s network', async () => {
    const pod = await runPod(true);
    const port = 20000 + Math.floor(Math.random() * 20000);
    await runContainer(pod, 'hostnet', {
      command: [
        'sh',
        '-c',
        `mkdir -p /www && echo hello-from-host-pod > /www/index.html && exec httpd -f -p 127.0.0.1:${String(port)} -h /www`,
      ],
    });
    await view.refresh();
    await waitFor(async () => {
      const r = await exchange(pod.id, port, Buffer.from('GET / HTTP/1.0\r\n\r\n')).catch(() => undefined);
      return r !== undefined && r.response.length > 0;
    }, 'httpd');
    const get = await exchange(pod.id, port, Buffer.from('GET /index.html HTTP/1.0\r\n\r\n'));
    await get.forwarded;
    expect(get.response.toString()).toMatch(/^HTTP\/1\.[01] 200[\s\S]*hello-from-host-pod\n$/);
  });
});
