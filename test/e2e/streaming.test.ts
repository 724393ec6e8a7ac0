/**
 * Exec, Attach and PortForward as kubelet and crictl use them: the CRI RPC hands out a URL on skiff's
 * streaming server, and an in-test client speaks SPDY/3.1 or WebSocket to it, against real containers.
 */
import { status as grpcStatus } from '@grpc/grpc-js';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ContainerConfig as ContainerConfigMsg,
  NamespaceMode,
  type PodSandboxConfig,
  PodSandboxConfig as PodSandboxConfigMsg,
} from '../../src/cri/gen/runtime/v1/api.js';
import { failure, pullImage, removeAllPods } from '../fixtures/cri-client.js';
import { startChildDaemon, type TestDaemon } from '../fixtures/daemon.js';
import { fixtureRefs, pushAll } from '../fixtures/images.js';
import { type Registry, startRegistry } from '../fixtures/registry.js';
import {
  UpgradeFailed,
  openRemoteCommandStreams,
  readAll,
  sendPattern,
  spdyDial,
  spdyExec,
  spdyForward,
  streamWriter,
  wsExec,
} from '../fixtures/stream-client.js';

const NET = 150 + Math.floor(Math.random() * 90);
const BRIDGE = `sks${NET}`;

let registry: Registry | undefined;
let d: TestDaemon;
let logDir: string | undefined;
let busybox = '';

beforeAll(async () => {
  const reg = await startRegistry();
  registry = reg;
  await pushAll(reg.host);
  logDir = await mkdtemp(join(tmpdir(), 'skiff-stream-logs-'));
  d = await startChildDaemon({
    extraToml: `[network]\ndefault_subnet = "10.235.${NET}.0/24"\nbridge_name = "${BRIDGE}"\nconf_dir = "/nonexistent/skiff-test-cni"\n`,
  });
  busybox = `${reg.host}/${fixtureRefs.busybox}`;
  await pullImage(d.cri, busybox);
}, 120_000);

afterAll(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- beforeAll may have failed early
  if (d) {
    await removeAllPods(d.cri);
    await d.stop();
  }
  spawnSync('ip', ['link', 'del', BRIDGE]);
  await registry?.stop();
  if (logDir) await rm(logDir, { recursive: true, force: true });
});

let counter = 0;

async function runPod(
  over: Partial<PodSandboxConfig> = {},
): Promise<{ id: string; config: PodSandboxConfig }> {
  const name = `spod-${process.pid}-${counter++}`;
  const config = PodSandboxConfigMsg.fromPartial({
    metadata: { name, uid: `uid-${name}`, namespace: 'skiff-test', attempt: 0 },
    logDirectory: join(logDir ?? tmpdir(), name),
    ...over,
  });
  const { podSandboxId } = await d.cri.runtime.runPodSandbox({ config, runtimeHandler: '' });
  return { id: podSandboxId, config };
}

async function runContainer(
  pod: { id: string; config: PodSandboxConfig },
  name: string,
  over: Parameters<typeof ContainerConfigMsg.fromPartial>[0],
): Promise<string> {
  const config = ContainerConfigMsg.fromPartial({
    metadata: { name, attempt: 0 },
    image: { image: busybox },
    logPath: `${name}.log`,
    ...over,
  });
  const { containerId } = await d.cri.runtime.createContainer({
    podSandboxId: pod.id,
    config,
    sandboxConfig: pod.config,
  });
  await d.cri.runtime.startContainer({ containerId });
  return containerId;
}

async function execUrl(containerId: string, cmd: string[], o: { tty?: boolean; stdin?: boolean } = {}) {
  return (
    await d.cri.runtime.exec({
      containerId,
      cmd,
      tty: o.tty ?? false,
      stdin: o.stdin ?? false,
      stdout: true,
      stderr: !(o.tty ?? false),
    })
  ).url;
}

async function psArgs(containerId: string): Promise<string> {
  return (
    await d.cri.runtime.execSync({ containerId, cmd: ['ps', '-o', 'stat,args'], timeout: 10n })
  ).stdout.toString();
}

describe('Exec', () => {
  it('pipes stdin through cat and reports exit codes as the v4 status (SPDY)', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'sleeper', { command: ['sleep', '100000'] });
    const cat = await spdyExec(await execUrl(id, ['cat'], { stdin: true }), {
      input: 'through cat\n',
      stderr: true,
    });
    expect(cat.protocol).toBe('v4.channel.k8s.io');
    expect(cat.stdout).toBe('through cat\n');
    expect(JSON.parse(cat.error)).toMatchObject({ status: 'Success' });

    const failed = await spdyExec(await execUrl(id, ['sh', '-c', 'echo oops >&2; exit 3']), { stderr: true });
    expect(failed.stderr).toBe('oops\n');
    expect(JSON.parse(failed.error)).toMatchObject({
      status: 'Failure',
      reason: 'NonZeroExitCode',
      details: { causes: [{ reason: 'ExitCode', message: '3' }] },
    });
  });

  it('speaks v5 WebSocket too', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'ws', { command: ['sleep', '100000'] });
    const res = await wsExec(await execUrl(id, ['cat'], { stdin: true }), {
      input: 'over websocket',
      stderr: true,
    });
    expect(res.protocol).toBe('v5.channel.k8s.io');
    expect(res.stdout).toBe('over websocket');
  });

  it('gives a tty the size the client sends (stty size)', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'tty', { command: ['sleep', '100000'] });
    const res = await spdyExec(await execUrl(id, ['sh', '-c', 'sleep 0.5; stty size'], { tty: true }), {
      tty: true,
      resizes: [{ width: 123, height: 45 }],
    });
    expect(res.stdout.trim()).toBe('45 123');
  });

  it('kills the exec process when the client disappears, and refuses a reused URL', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'victim', { command: ['sleep', '100000'] });
    const url = await execUrl(id, ['sleep', '4242']);
    const conn = await spdyDial(url, ['v4.channel.k8s.io']);
    await openRemoteCommandStreams(conn.session, conn.protocol, { stdout: true, stderr: true });
    for (let i = 0; i < 50 && !(await psArgs(id)).includes('sleep 4242'); i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(await psArgs(id)).toContain('sleep 4242');
    conn.socket.destroy();
    let ps = '';
    for (let i = 0; i < 50; i++) {
      ps = await psArgs(id);
      if (!ps.includes('sleep 4242')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(ps).not.toContain('sleep 4242');
    const reused = await spdyDial(url, ['v4.channel.k8s.io']).then(
      () => 0,
      (e: unknown) => (e instanceof UpgradeFailed ? e.status : -1),
    );
    expect(reused).toBe(404);
  });

  it('validates the request: running container, a stream, no tty with stderr', async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'v', { command: ['sleep', '100000'] });
    const bad = await failure(
      d.cri.runtime.exec({
        containerId: id,
        cmd: ['sh'],
        tty: true,
        stdin: true,
        stdout: true,
        stderr: true,
      }),
    );
    expect(bad.code).toBe(grpcStatus.INVALID_ARGUMENT);
    const none = await failure(
      d.cri.runtime.exec({
        containerId: id,
        cmd: ['sh'],
        tty: false,
        stdin: false,
        stdout: false,
        stderr: false,
      }),
    );
    expect(none.code).toBe(grpcStatus.INVALID_ARGUMENT);
    await d.cri.runtime.stopContainer({ containerId: id, timeout: 0n });
    const stopped = await failure(
      d.cri.runtime.exec({
        containerId: id,
        cmd: ['true'],
        tty: false,
        stdin: false,
        stdout: true,
        stderr: false,
      }),
    );
    expect(stopped.code).toBe(grpcStatus.FAILED_PRECONDITION);
  });
});

describe('Attach', () => {
  it("connects to a running sh's stdio; detaching leaves it running; re-attach works", async () => {
    const pod = await runPod();
    const id = await runContainer(pod, 'shell', { command: ['sh'], stdin: true, stdinOnce: false });
    const attach = async (input: string) => {
      const { url } = await d.cri.runtime.attach({
        containerId: id,
        stdin: true,
        tty: false,
        stdout: true,
        stderr: true,
      });
      const conn = await spdyDial(url, ['v4.channel.k8s.io']);
      const s = await openRemoteCommandStreams(conn.session, conn.protocol, {
        stdin: true,
        stdout: true,
        stderr: true,
      });
      let out = '';
      s.stdout?.on('data', (c: Buffer) => (out += c.toString()));
      s.stdin?.write(input);
      for (let i = 0; i < 50 && !out.includes('\n'); i++) await new Promise((r) => setTimeout(r, 100));
      s.stdin?.end();
      conn.session.destroy();
      return out;
    };
    expect(await attach('echo first-attach\n')).toContain('first-attach');
    const st = await d.cri.runtime.containerStatus({ containerId: id, verbose: false });
    expect(st.status?.state).toBe(1); // CONTAINER_RUNNING
    expect(await attach('echo second-attach\n')).toContain('second-attach');
  });
});

describe('PortForward', () => {
  async function forward(podId: string, port: number, payload: Buffer): Promise<Buffer> {
    const { url } = await d.cri.runtime.portForward({ podSandboxId: podId, port: [port] });
    const conn = await spdyDial(url, ['portforward.k8s.io']);
    const { data } = await spdyForward(conn.session, port, 0);
    data.end(payload);
    const reply = await readAll(data);
    conn.session.destroy();
    return reply;
  }

  it("reaches busybox httpd on the pod's loopback", async () => {
    const pod = await runPod();
    await runContainer(pod, 'httpd', {
      command: [
        'sh',
        '-c',
        'mkdir -p /www && echo served-in-pod > /www/index.html && exec httpd -f -p 80 -h /www',
      ],
    });
    let reply = '';
    for (let i = 0; i < 30 && !reply.includes('served-in-pod'); i++) {
      reply = (await forward(pod.id, 80, Buffer.from('GET /index.html HTTP/1.0\r\n\r\n'))).toString();
      if (!reply.includes('served-in-pod')) await new Promise((r) => setTimeout(r, 100));
    }
    expect(reply).toMatch(/^HTTP\/1\.[01] 200/);
    expect(reply).toContain('served-in-pod');
  });

  it('carries 50 MB each way without loss (sha256 both ways)', async () => {
    const pod = await runPod();
    // busybox nc: listen once and echo every byte back.
    await runContainer(pod, 'echo', { command: ['nc', '-l', '-p', '9000', '-e', 'cat'] });
    await new Promise((r) => setTimeout(r, 300));
    const { url } = await d.cri.runtime.portForward({ podSandboxId: pod.id, port: [9000] });
    const conn = await spdyDial(url, ['portforward.k8s.io']);
    const { data } = await spdyForward(conn.session, 9000, 1);
    const size = 50 * 1024 * 1024;
    const received = createHash('sha256');
    let receivedBytes = 0;
    const done = new Promise<void>((resolve) => {
      data.on('data', (c: Buffer) => {
        received.update(c);
        receivedBytes += c.length;
        if (receivedBytes >= size) resolve();
      });
      data.on('end', () => {
        resolve();
      });
    });
    const sent = await sendPattern(streamWriter(data), size, 7);
    await done;
    conn.session.destroy();
    expect(receivedBytes).toBe(size);
    expect(received.digest('hex')).toBe(sent);
  }, 120_000);

  it('forwards into a hostNetwork pod too', async () => {
    const pod = await runPod({
      linux: PodSandboxConfigMsg.fromPartial({
        linux: { securityContext: { namespaceOptions: { network: NamespaceMode.NODE } } },
      }).linux,
    });
    const port = 20000 + Math.floor(Math.random() * 20000);
    await runContainer(pod, 'hosthttpd', {
      command: [
        'sh',
        '-c',
        `mkdir -p /www && echo on-host-net > /www/index.html && exec httpd -f -p 127.0.0.1:${port} -h /www`,
      ],
    });
    let reply = '';
    for (let i = 0; i < 30 && !reply.includes('on-host-net'); i++) {
      reply = (await forward(pod.id, port, Buffer.from('GET /index.html HTTP/1.0\r\n\r\n'))).toString();
      if (!reply.includes('on-host-net')) await new Promise((r) => setTimeout(r, 100));
    }
    expect(reply).toContain('on-host-net');
  });
});
