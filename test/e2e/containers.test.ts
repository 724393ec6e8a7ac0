/**
 * Containers over the CRI socket, in kubelet's call order (RunPodSandbox → CreateContainer →
 * StartContainer → …), with real conmon, runc (and runsc) and images from the loopback registry.
 */
import { status as grpcStatus } from '@grpc/grpc-js';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ContainerConfig,
  ContainerConfig as ContainerConfigMsg,
  ContainerEventType,
  ContainerState,
  type ContainerStatus,
  NamespaceMode,
  type PodSandboxConfig,
  PodSandboxConfig as PodSandboxConfigMsg,
  SecurityProfile_ProfileType,
} from '../../src/cri/gen/runtime/v1/api.js';
import { failure, pullImage, removeAllPods } from '../fixtures/cri-client.js';
import { startChildDaemon, type TestDaemon } from '../fixtures/daemon.js';
import { fixtureRefs, pushAll } from '../fixtures/images.js';
import { type Registry, startRegistry } from '../fixtures/registry.js';

/** Each daemon its own /24 and bridge (host-local leases are per network name, shared by daemons). */
let netCounter = Math.floor(Math.random() * 200);
const bridges: string[] = [];

let registry: Registry | undefined;
let d: TestDaemon;
let logDir: string | undefined;
let busybox: string;
let withUser: string;

function toml(net: number, extra = ''): string {
  return [
    extra,
    `[network]`,
    `default_subnet = "10.234.${net}.0/24"`,
    `bridge_name = "skc${net}"`,
    `conf_dir = "/nonexistent/skiff-test-cni"`,
    `[runtimes.runsc]`,
    `binary_path = "runsc"`,
    // Debian's gVisor cannot use its netstack on this kernel; inside the pod's netns host mode works.
    `extra_args = ["--network=host"]`,
    '',
  ].join('\n');
}

async function startDaemon(
  reuse?: { dir: string; net: number },
  extraToml = '',
): Promise<TestDaemon & { net: number }> {
  const net = reuse?.net ?? (netCounter = (netCounter + 1) % 250);
  bridges.push(`skc${net}`);
  const t = await startChildDaemon({ extraToml: toml(net, extraToml), ...(reuse ? { dir: reuse.dir } : {}) });
  return Object.assign(t, { net });
}

async function cleanupDaemon(t: TestDaemon): Promise<void> {
  await removeAllPods(t.cri);
}

beforeAll(async () => {
  const reg = await startRegistry();
  registry = reg;
  await pushAll(reg.host);
  logDir = await mkdtemp(join(tmpdir(), 'skiff-logs-'));
  d = await startDaemon();
  busybox = `${reg.host}/${fixtureRefs.busybox}`;
  withUser = `${reg.host}/${fixtureRefs.withUser}`;
  await pull(d, busybox);
  await pull(d, withUser);
}, 120_000);

afterAll(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- beforeAll may have failed early
  if (d) {
    await cleanupDaemon(d);
    await d.stop();
  }
  for (const b of new Set(bridges)) spawnSync('ip', ['link', 'del', b]);
  await registry?.stop();
  if (logDir) await rm(logDir, { recursive: true, force: true });
});

async function pull(t: TestDaemon, image: string): Promise<void> {
  await pullImage(t.cri, image);
}

let podCounter = 0;

function podConfig(over: Partial<PodSandboxConfig> = {}): PodSandboxConfig {
  const name = `pod-${process.pid}-${podCounter++}`;
  return {
    metadata: { name, uid: `uid-${name}`, namespace: 'skiff-test', attempt: 0 },
    hostname: '',
    logDirectory: join(logDir ?? tmpdir(), name),
    dnsConfig: undefined,
    portMappings: [],
    labels: { app: name },
    annotations: {},
    linux: undefined,
    windows: undefined,
    ...over,
  };
}

async function runPod(t: TestDaemon = d, handler = '', over: Partial<PodSandboxConfig> = {}) {
  const config = podConfig(over);
  const { podSandboxId } = await t.cri.runtime.runPodSandbox({ config, runtimeHandler: handler });
  return { id: podSandboxId, config };
}

type Pod = Awaited<ReturnType<typeof runPod>>;

function containerConfig(name: string, over: Parameters<typeof ContainerConfigMsg.fromPartial>[0] = {}) {
  return ContainerConfigMsg.fromPartial({
    metadata: { name, attempt: 0 },
    image: { image: busybox },
    logPath: `${name}.log`,
    labels: { c: name },
    ...over,
  });
}

async function create(pod: Pod, config: ContainerConfig, t: TestDaemon = d): Promise<string> {
  const res = await t.cri.runtime.createContainer(
    { podSandboxId: pod.id, config, sandboxConfig: pod.config },
    { deadlineMs: 60_000 },
  );
  return res.containerId;
}

async function run(pod: Pod, config: ContainerConfig, t: TestDaemon = d): Promise<string> {
  const id = await create(pod, config, t);
  await t.cri.runtime.startContainer({ containerId: id });
  return id;
}

async function status(id: string, t: TestDaemon = d): Promise<ContainerStatus> {
  const s = (await t.cri.runtime.containerStatus({ containerId: id, verbose: false })).status;
  if (!s) throw new Error(`no status for ${id}`);
  return s;
}

async function waitExited(id: string, t: TestDaemon = d, timeoutMs = 30_000): Promise<ContainerStatus> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await status(id, t);
    if (s.state === ContainerState.CONTAINER_EXITED) return s;
    if (Date.now() > deadline) throw new Error(`container ${id} still ${ContainerState[s.state]}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function pidOf(id: string, t: TestDaemon = d): Promise<number> {
  const res = await t.cri.runtime.containerStatus({ containerId: id, verbose: true });
  return (JSON.parse(res.info.info ?? '{}') as { pid: number }).pid;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Log lines in the CRI format: `<RFC3339Nano> <stream> <P|F> <text>`. */
function parseLog(text: string): { stream: string; tag: string; line: string }[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const m = /^(\S+) (stdout|stderr) ([PF]) (.*)$/.exec(l);
      if (!m) throw new Error(`not a CRI log line: ${JSON.stringify(l)}`);
      expect(Number.isNaN(Date.parse(m[1] ?? ''))).toBe(false);
      return { stream: m[2] ?? '', tag: m[3] ?? '', line: m[4] ?? '' };
    });
}

function sh(script: string) {
  return { command: ['sh', '-c', script] };
}

describe('container lifecycle', () => {
  it('runs a container that prints and exits: exit code, reason and CRI log byte for byte', async () => {
    const pod = await runPod();
    const id = await run(pod, containerConfig('printer', sh('echo hello; echo oops >&2; exit 3')));
    const s = await waitExited(id);
    expect(s.exitCode).toBe(3);
    expect(s.reason).toBe('Error');
    expect(s.finishedAt).toBeGreaterThanOrEqual(s.startedAt);
    expect(s.startedAt).toBeGreaterThan(0n);
    expect(s.logPath).toBe(join(pod.config.logDirectory, 'printer.log'));
    const lines = parseLog(await readFile(s.logPath, 'utf8'));
    expect(lines).toEqual(
      expect.arrayContaining([
        { stream: 'stdout', tag: 'F', line: 'hello' },
        { stream: 'stderr', tag: 'F', line: 'oops' },
      ]),
    );
    expect(lines).toHaveLength(2);

    const ok = await run(pod, containerConfig('ok', sh('true')));
    expect((await waitExited(ok)).reason).toBe('Completed');

    const listed = await d.cri.runtime.listContainers({
      filter: { id: '', podSandboxId: pod.id, labelSelector: {}, state: undefined },
    });
    expect(listed.containers.map((c) => c.id).sort()).toEqual([id, ok].sort());
    // As containerd: the list's image_ref is the image id (kubelet's image GC matches it against
    // ListImages) and image_id is unset; ContainerStatus's image_ref is the repo digest.
    const imageId = (
      await d.cri.image.imageStatus({
        image: { image: busybox, annotations: {}, userSpecifiedImage: '', runtimeHandler: '', imageRef: '' },
        verbose: false,
      })
    ).image?.id;
    expect(imageId).toMatch(/^sha256:[0-9a-f]{64}$/);
    for (const c of listed.containers) expect([c.imageRef, c.imageId]).toEqual([imageId, '']);
    expect(s.imageRef).toMatch(/@sha256:[0-9a-f]{64}$/);
    const exitedOnly = await d.cri.runtime.listContainers({
      filter: { id: '', podSandboxId: '', labelSelector: { c: 'ok' }, state: undefined },
    });
    expect(exitedOnly.containers.map((c) => c.id)).toEqual([ok]);
  });

  it('lists containers as crictl 1.26 decodes them, states as they change', async () => {
    const pod = await runPod();
    const a = await create(pod, containerConfig('listed-a'));
    const b = await create(
      pod,
      containerConfig('listed-b', {
        image: { image: busybox, userSpecifiedImage: 'busybox' },
        command: ['sleep', '1000'],
      }),
    );
    const crictlPs = () => {
      const res = spawnSync(
        'crictl',
        ['--runtime-endpoint', `unix://${d.socketPath}`, 'ps', '-a', '-p', pod.id, '-o', 'json'],
        { encoding: 'utf8', timeout: 20_000 },
      );
      expect(res.status, res.stderr).toBe(0);
      const out = JSON.parse(res.stdout) as {
        containers: {
          id: string;
          metadata: { name: string };
          image: { image: string };
          state: string;
          labels: Record<string, string>;
        }[];
      };
      return Object.fromEntries(out.containers.map((c) => [c.metadata.name, c]));
    };
    let listed = crictlPs();
    expect(Object.keys(listed).sort()).toEqual(['listed-a', 'listed-b']);
    expect(listed['listed-a']).toMatchObject({
      id: a,
      image: { image: busybox },
      state: 'CONTAINER_CREATED',
      labels: { c: 'listed-a' },
    });
    await d.cri.runtime.startContainer({ containerId: b });
    listed = crictlPs();
    expect(listed['listed-b']?.state).toBe('CONTAINER_RUNNING');
    expect(listed['listed-a']?.state).toBe('CONTAINER_CREATED');
    await d.cri.runtime.stopContainer({ containerId: b, timeout: 0n });
    expect(crictlPs()['listed-b']?.state).toBe('CONTAINER_EXITED');
    // The generated decoder reads the same list, and user_specified_image (newer than crictl 1.26's CRI).
    const viaGrpc = await d.cri.runtime.listContainers({
      filter: { id: '', podSandboxId: pod.id, labelSelector: {}, state: undefined },
    });
    expect(viaGrpc.containers.map((c) => [c.id, c.state, c.image?.userSpecifiedImage]).sort()).toEqual(
      [
        [a, ContainerState.CONTAINER_CREATED, ''],
        [b, ContainerState.CONTAINER_EXITED, 'busybox'],
      ].sort(),
    );
  });

  it('stops a running container with grace, and with SIGKILL when the process ignores SIGTERM', async () => {
    const pod = await runPod();
    const graceful = await run(
      pod,
      containerConfig('graceful', sh('trap "exit 0" TERM; while :; do sleep 0.1; done')),
    );
    // As pid 1 of its PID namespace, `sleep` has no SIGTERM handler, so only SIGKILL ends it.
    const stubborn = await run(pod, containerConfig('stubborn', { command: ['sleep', '1000'] }));
    expect((await status(graceful)).state).toBe(ContainerState.CONTAINER_RUNNING);
    const pid = await pidOf(stubborn);
    expect(alive(pid)).toBe(true);

    await d.cri.runtime.stopContainer({ containerId: graceful, timeout: 10n });
    const g = await status(graceful);
    expect(g.state).toBe(ContainerState.CONTAINER_EXITED);
    expect(g.exitCode).toBe(0);

    const t0 = Date.now();
    await d.cri.runtime.stopContainer({ containerId: stubborn, timeout: 1n });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    const s = await status(stubborn);
    expect(s.exitCode).toBe(137);
    expect(alive(pid)).toBe(false);

    // Stopping a stopped container is not an error; an unknown one is NOT_FOUND.
    await d.cri.runtime.stopContainer({ containerId: stubborn, timeout: 1n });
    expect(
      (await failure(d.cri.runtime.stopContainer({ containerId: 'f'.repeat(64), timeout: 0n }))).code,
    ).toBe(grpcStatus.NOT_FOUND);
  });

  it('removes a running container by force, leaving no process, mount or bundle; twice is fine', async () => {
    const pod = await runPod();
    const id = await run(pod, containerConfig('victim', { command: ['sleep', '1000'] }));
    const pid = await pidOf(id);
    await d.cri.runtime.removeContainer({ containerId: id });
    expect(alive(pid)).toBe(false);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(id);
    expect(existsSync(join(d.state, 'containers', id))).toBe(false);
    expect(existsSync(join(d.root, 'containers', id))).toBe(false);
    await d.cri.runtime.removeContainer({ containerId: id });
    expect((await failure(status(id))).code).toBe(grpcStatus.NOT_FOUND);
  });

  it('refuses bad requests with clear codes and leaves nothing behind', async () => {
    const pod = await runPod();
    const before = readdirSync(join(d.root, 'containers')).length;
    const missing = await failure(
      create(pod, containerConfig('noimage', { image: { image: 'skiff-test/absent:1' } })),
    );
    expect(missing.code).toBe(grpcStatus.NOT_FOUND);
    expect(missing.details).toMatch(/absent.*pull it first/);
    const noPod = await failure(
      d.cri.runtime.createContainer({
        podSandboxId: 'e'.repeat(64),
        config: containerConfig('x'),
        sandboxConfig: undefined,
      }),
    );
    expect(noPod.code).toBe(grpcStatus.NOT_FOUND);
    const first = await create(pod, containerConfig('twin'));
    const dup = await failure(create(pod, containerConfig('twin')));
    expect(dup.code).toBe(grpcStatus.ALREADY_EXISTS);
    expect(dup.details).toContain(first);
    await d.cri.runtime.removeContainer({ containerId: first });
    expect(readdirSync(join(d.root, 'containers')).length).toBe(before);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(first);
  });
});

describe('container spec', () => {
  it("runs as the image's user from its own /etc/passwd, with its groups, env and workdir", async () => {
    const pod = await runPod();
    const id = await run(
      pod,
      containerConfig('user', {
        image: { image: withUser },
        args: ['id; pwd; echo $GREETING'],
        envs: [{ key: 'GREETING', value: Buffer.from('override') }],
      }),
    );
    const s = await waitExited(id);
    expect(s.exitCode).toBe(0);
    const out = parseLog(await readFile(s.logPath, 'utf8')).map((l) => l.line);
    expect(out[0]).toMatch(/^uid=1000\(app\) gid=1000\(app\) groups=1000\(app\),2000\(extra\)$/);
    expect(out.slice(1)).toEqual(['/tmp', 'override']);
    expect(s.user?.linux).toMatchObject({ uid: 1000n, gid: 1000n });
  });

  it('honours readonly_rootfs and host-path mounts (rw and ro)', async () => {
    const pod = await runPod();
    const host = await mkdtemp(join(tmpdir(), 'skiff-mnt-'));
    try {
      await writeFile(join(host, 'in.txt'), 'from the host\n');
      await chmod(host, 0o777);
      const id = await run(
        pod,
        containerConfig('ro', {
          ...sh(
            'cat /data/in.txt; echo written > /data/out.txt; touch /rootfs-write 2>/dev/null && echo rootfs-writable; touch /ro/x 2>/dev/null && echo ro-writable; echo done',
          ),
          mounts: [
            { containerPath: '/data', hostPath: host },
            { containerPath: '/ro', hostPath: host, readonly: true },
          ],
          linux: { securityContext: { readonlyRootfs: true } },
        }),
      );
      const s = await waitExited(id);
      expect(parseLog(await readFile(s.logPath, 'utf8')).map((l) => l.line)).toEqual([
        'from the host',
        'done',
      ]);
      expect(await readFile(join(host, 'out.txt'), 'utf8')).toBe('written\n');
      expect(s.mounts.map((m) => m.containerPath)).toEqual(['/data', '/ro']);
    } finally {
      await rm(host, { recursive: true, force: true });
    }
  });

  it('drops capabilities: chown fails without CAP_CHOWN and works with the defaults', async () => {
    const pod = await runPod();
    const script = 'touch /tmp/f && chown 1 /tmp/f && echo chowned';
    const dropped = await run(
      pod,
      containerConfig('nochown', {
        ...sh(script),
        linux: { securityContext: { capabilities: { dropCapabilities: ['CHOWN'] } } },
      }),
    );
    const normal = await run(pod, containerConfig('chown', sh(script)));
    expect((await waitExited(dropped)).exitCode).not.toBe(0);
    expect((await waitExited(normal)).exitCode).toBe(0);
  });

  it('applies the RuntimeDefault seccomp profile: unshare(CLONE_NEWUSER) is refused, allowed when unconfined', async () => {
    const pod = await runPod();
    const script = 'grep Seccomp: /proc/self/status; unshare -U true && echo unshared';
    const confined = await run(
      pod,
      containerConfig('seccomp', {
        ...sh(script),
        linux: { securityContext: { seccomp: { profileType: SecurityProfile_ProfileType.RuntimeDefault } } },
      }),
    );
    const unconfined = await run(
      pod,
      containerConfig('unconfined', {
        ...sh(script),
        linux: { securityContext: { seccomp: { profileType: SecurityProfile_ProfileType.Unconfined } } },
      }),
    );
    const c = await waitExited(confined);
    const u = await waitExited(unconfined);
    const cl = parseLog(await readFile(c.logPath, 'utf8')).map((l) => l.line);
    const ul = parseLog(await readFile(u.logPath, 'utf8')).map((l) => l.line);
    expect(cl[0]).toMatch(/Seccomp:\s+2/);
    expect(cl).not.toContain('unshared');
    expect(ul[0]).toMatch(/Seccomp:\s+0/);
    expect(ul).toContain('unshared');
  });

  it('enforces a memory limit and reports OOMKilled', async () => {
    const pod = await runPod();
    const id = await run(
      pod,
      containerConfig('oom', {
        ...sh('x=0123456789abcdef; while :; do x=$x$x; done'),
        linux: { resources: { memoryLimitInBytes: BigInt(32 * 1024 * 1024) } },
      }),
    );
    const s = await waitExited(id, d, 60_000);
    expect(s.reason).toBe('OOMKilled');
    expect(s.exitCode).toBe(137);
  });

  it('lets two containers of one pod talk over localhost', async () => {
    const pod = await runPod();
    await run(
      pod,
      containerConfig('server', sh('echo shared-localhost > /tmp/index.html; exec httpd -f -p 8080 -h /tmp')),
    );
    const client = await run(pod, containerConfig('client', { command: ['sleep', '1000'] }));
    let out = '';
    for (let i = 0; i < 50 && !out.includes('shared-localhost'); i++) {
      const res = await d.cri.runtime.execSync({
        containerId: client,
        cmd: ['wget', '-qO-', 'http://127.0.0.1:8080/index.html'],
        timeout: 5n,
      });
      out = res.stdout.toString();
      if (!out) await new Promise((r) => setTimeout(r, 100));
    }
    expect(out).toBe('shared-localhost\n');
  });
});

describe('ExecSync and logs', () => {
  it('returns output and exit code; a missing command is a non-zero exit, not an error; a timeout kills', async () => {
    const pod = await runPod();
    const id = await run(pod, containerConfig('exec', { command: ['sleep', '1000'] }));
    const res = await d.cri.runtime.execSync({
      containerId: id,
      cmd: ['sh', '-c', 'echo out; echo err >&2; exit 7'],
      timeout: 10n,
    });
    expect(res.stdout.toString()).toBe('out\n');
    expect(res.stderr.toString()).toBe('err\n');
    expect(res.exitCode).toBe(7);

    // Timeout 0 means no timeout (crictl exec -s sends 0 by default).
    const untimed = await d.cri.runtime.execSync({
      containerId: id,
      cmd: ['sh', '-c', 'sleep 0.2; echo late'],
      timeout: 0n,
    });
    expect(untimed.stdout.toString()).toBe('late\n');

    const missing = await d.cri.runtime.execSync({ containerId: id, cmd: ['/no/such/binary'], timeout: 10n });
    expect(missing.exitCode).not.toBe(0);
    expect(`${missing.stdout.toString()}${missing.stderr.toString()}`).toMatch(/no such file|not found/i);

    const timedOut = await failure(
      d.cri.runtime.execSync({ containerId: id, cmd: ['sleep', '77'], timeout: 1n }),
    );
    expect(timedOut.code).toBe(grpcStatus.DEADLINE_EXCEEDED);
    const ps = await d.cri.runtime.execSync({ containerId: id, cmd: ['ps', '-o', 'args'], timeout: 10n });
    expect(ps.stdout.toString()).not.toContain('sleep 77');

    await d.cri.runtime.stopContainer({ containerId: id, timeout: 0n });
    const stopped = await failure(d.cri.runtime.execSync({ containerId: id, cmd: ['true'], timeout: 5n }));
    expect(stopped.code).toBe(grpcStatus.FAILED_PRECONDITION);
  });

  it('reopens the log after kubelet rotates it (ReopenContainerLog)', async () => {
    const pod = await runPod();
    const id = await run(
      pod,
      containerConfig('rotate', sh('i=0; while :; do echo line$i; i=$((i+1)); sleep 0.05; done')),
    );
    const s = await status(id);
    await new Promise((r) => setTimeout(r, 300));
    await rename(s.logPath, `${s.logPath}.1`);
    await d.cri.runtime.reopenContainerLog({ containerId: id });
    await new Promise((r) => setTimeout(r, 400));
    const fresh = parseLog(await readFile(s.logPath, 'utf8'));
    const old = parseLog(await readFile(`${s.logPath}.1`, 'utf8'));
    expect(fresh.length).toBeGreaterThan(0);
    expect(old.length).toBeGreaterThan(0);
    const n = (l: { line: string }) => Number(l.line.slice(4));
    expect(n(fresh[0] as { line: string })).toBeGreaterThan(n(old[old.length - 1] as { line: string }));
    await d.cri.runtime.stopContainer({ containerId: id, timeout: 0n });
  });

  it('splits long lines into P partials ending with an F', async () => {
    const pod = await runPod();
    const id = await run(pod, containerConfig('long', sh('head -c 20000 /dev/zero | tr "\\0" x; echo')));
    const s = await waitExited(id);
    const lines = parseLog(await readFile(s.logPath, 'utf8'));
    expect(lines.length).toBeGreaterThan(1);
    expect(lines.slice(0, -1).every((l) => l.tag === 'P')).toBe(true);
    expect(lines.at(-1)?.tag).toBe('F');
    expect(lines.map((l) => l.line).join('')).toBe('x'.repeat(20000));
  });
});

describe('pods and containers together', () => {
  it('StopPodSandbox kills its containers; RemovePodSandbox removes them', async () => {
    const pod = await runPod();
    const id = await run(pod, containerConfig('inpod', { command: ['sleep', '1000'] }));
    const pid = await pidOf(id);
    await d.cri.runtime.stopPodSandbox({ podSandboxId: pod.id });
    expect(alive(pid)).toBe(false);
    expect((await status(id)).state).toBe(ContainerState.CONTAINER_EXITED);
    await d.cri.runtime.removePodSandbox({ podSandboxId: pod.id });
    expect((await failure(status(id))).code).toBe(grpcStatus.NOT_FOUND);
  });

  it('shares the pod PID namespace when asked', async () => {
    const pod = await runPod(d, '', {
      linux: PodSandboxConfigMsg.fromPartial({
        linux: { securityContext: { namespaceOptions: { pid: NamespaceMode.POD } } },
      }).linux,
    });
    // kubelet sets the container's PID mode to POD too when the pod shares its PID namespace.
    const shared = { securityContext: { namespaceOptions: { pid: NamespaceMode.POD } } };
    const a = await run(pod, containerConfig('a', { command: ['sleep', '1001'], linux: shared }));
    const res = await d.cri.runtime.execSync({ containerId: a, cmd: ['ps', '-o', 'args'], timeout: 10n });
    expect(res.stdout.toString()).toContain('sleep 1001');
    await run(pod, containerConfig('b', { command: ['sleep', '1002'], linux: shared }));
    const both = await d.cri.runtime.execSync({ containerId: a, cmd: ['ps', '-o', 'args'], timeout: 10n });
    expect(both.stdout.toString()).toContain('sleep 1002');
  });
});

describe('cgroup_parent', () => {
  it('puts the infra process and the containers under the pod cgroup (cgroupfs)', async () => {
    const parent = `/skiff-test-${process.pid}-${Date.now()}`;
    const hierarchies = readdirSync('/sys/fs/cgroup', { withFileTypes: true })
      .filter((e) => e.isDirectory() && e.name !== 'unified')
      .map((e) => join('/sys/fs/cgroup', e.name));
    try {
      const pod = await runPod(d, '', {
        linux: PodSandboxConfigMsg.fromPartial({
          linux: { cgroupParent: parent, securityContext: { namespaceOptions: { pid: NamespaceMode.POD } } },
        }).linux,
      });
      const infraPid = (
        JSON.parse(
          (await d.cri.runtime.podSandboxStatus({ podSandboxId: pod.id, verbose: true })).info.info ?? '{}',
        ) as { pid: number }
      ).pid;
      expect(infraPid).toBeGreaterThan(0);
      expect(readFileSync(join('/sys/fs/cgroup/memory', parent, 'cgroup.procs'), 'utf8')).toContain(
        String(infraPid),
      );
      const id = await run(pod, containerConfig('child', { command: ['sleep', '1000'] }));
      const pid = await pidOf(id);
      const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
        .split('\n')
        .find((l) => /:memory:/.test(l));
      expect(line).toContain(`:memory:${parent}/`);
      await d.cri.runtime.removePodSandbox({ podSandboxId: pod.id });
    } finally {
      // Kubelet owns pod cgroups; the test removes the one it asked for (children first).
      for (const h of hierarchies) {
        const dir = join(h, parent);
        if (!existsSync(dir)) continue;
        for (const c of readdirSync(dir, { withFileTypes: true }))
          if (c.isDirectory()) spawnSync('rmdir', [join(dir, c.name)]);
        spawnSync('rmdir', [dir]);
      }
    }
  });
});

describe('sandbox_image', () => {
  it('runs a pause container that holds the pod, pulled on demand and hidden from ListContainers', async () => {
    const pauseRef = `${registry?.host ?? ''}/${fixtureRefs.pause}`;
    const t = await startDaemon(undefined, `[images]\nsandbox_image = "${pauseRef}"\n`);
    try {
      await pull(t, busybox);
      const pod = await runPod(t, '', {
        linux: PodSandboxConfigMsg.fromPartial({
          linux: { securityContext: { namespaceOptions: { pid: NamespaceMode.POD } } },
        }).linux,
      });
      const info = JSON.parse(
        (await t.cri.runtime.podSandboxStatus({ podSandboxId: pod.id, verbose: true })).info.info ?? '{}',
      ) as { pid: number };
      expect(readFileSync(`/proc/${info.pid}/cmdline`, 'utf8').split('\0')).toContain('2147483647');
      const images = await t.cri.image.listImages({ filter: undefined });
      expect(images.images.flatMap((i) => i.repoTags)).toContain(pauseRef);
      const shared = { securityContext: { namespaceOptions: { pid: NamespaceMode.POD } } };
      const id = await run(pod, containerConfig('app', { command: ['sleep', '1000'], linux: shared }), t);
      const ps = await t.cri.runtime.execSync({
        containerId: id,
        cmd: ['ps', '-o', 'pid,args'],
        timeout: 10n,
      });
      expect(ps.stdout.toString()).toMatch(/^\s*1 \/bin\/sleep 2147483647$/m);
      const listed = await t.cri.runtime.listContainers({ filter: undefined });
      expect(listed.containers.map((c) => c.id)).toEqual([id]);
      await t.cri.runtime.stopPodSandbox({ podSandboxId: pod.id });
      expect(alive(info.pid)).toBe(false);
      await t.cri.runtime.removePodSandbox({ podSandboxId: pod.id });
      expect(readdirSync(join(t.root, 'containers'))).toEqual([]);
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(`${t.state}/`);
    } finally {
      await cleanupDaemon(t);
      await t.stop();
    }
  });
});

describe('runsc (gVisor)', () => {
  it('starts, logs, execs and stops a container under runsc', async () => {
    const pod = await runPod(d, 'runsc');
    const id = await run(
      pod,
      containerConfig('gvisor', sh('echo from-gvisor; dmesg 2>/dev/null | head -1; exec sleep 1000')),
    );
    const res = await d.cri.runtime.execSync({
      containerId: id,
      cmd: ['echo', 'exec-in-gvisor'],
      timeout: 30n,
    });
    expect(res.stdout.toString()).toBe('exec-in-gvisor\n');
    await d.cri.runtime.stopContainer({ containerId: id, timeout: 2n });
    const s = await status(id);
    expect(s.state).toBe(ContainerState.CONTAINER_EXITED);
    const lines = parseLog(await readFile(s.logPath, 'utf8')).map((l) => l.line);
    expect(lines[0]).toBe('from-gvisor');
  });
});

describe('stats, updates and events', () => {
  it('reports non-zero cpu, memory and writable-layer usage for a busy container, and pod stats', async () => {
    const pod = await runPod();
    const id = await run(
      pod,
      containerConfig('busy', sh('head -c 3000000 /dev/zero > /tmp/fill; while :; do :; done')),
    );
    await new Promise((r) => setTimeout(r, 1200));
    const first = (await d.cri.runtime.containerStats({ containerId: id })).stats;
    await new Promise((r) => setTimeout(r, 1200));
    const [second] = (
      await d.cri.runtime.listContainerStats({
        filter: { id, podSandboxId: '', labelSelector: {} },
      })
    ).stats;
    expect(first?.attributes?.id).toBe(id);
    expect(first?.cpu?.usageCoreNanoSeconds?.value ?? 0n).toBeGreaterThan(0n);
    expect(second?.cpu?.usageNanoCores?.value ?? 0n).toBeGreaterThan(100_000_000n); // > 0.1 core
    expect(second?.memory?.workingSetBytes?.value ?? 0n).toBeGreaterThan(0n);
    expect(second?.writableLayer?.usedBytes?.value ?? 0n).toBeGreaterThanOrEqual(3_000_000n);
    const podStats = (await d.cri.runtime.podSandboxStats({ podSandboxId: pod.id })).stats;
    expect(podStats?.attributes?.id).toBe(pod.id);
    expect(podStats?.linux?.containers.map((c) => c.attributes?.id)).toEqual([id]);
    expect(podStats?.linux?.network?.defaultInterface?.name).toBe('eth0');
    await d.cri.runtime.stopContainer({ containerId: id, timeout: 0n });
  });

  it("updates a running container's memory limit in its cgroup (UpdateContainerResources)", async () => {
    const pod = await runPod();
    const id = await run(pod, containerConfig('update', { command: ['sleep', '1000'] }));
    const info = JSON.parse(
      (await d.cri.runtime.containerStatus({ containerId: id, verbose: true })).info.info ?? '{}',
    ) as { cgroupsPath: string };
    const limitFile = join('/sys/fs/cgroup/memory', info.cgroupsPath, 'memory.limit_in_bytes');
    await d.cri.runtime.updateContainerResources({
      containerId: id,
      linux: ContainerConfigMsg.fromPartial({
        linux: { resources: { memoryLimitInBytes: BigInt(64 * 1024 * 1024) } },
      }).linux?.resources,
      windows: undefined,
      annotations: {},
    });
    expect(readFileSync(limitFile, 'utf8').trim()).toBe(String(64 * 1024 * 1024));
    await d.cri.runtime.stopContainer({ containerId: id, timeout: 0n });
  });

  it('streams created, started, stopped and deleted events in order (GetContainerEvents)', async () => {
    const watch = d.cri.watchContainerEvents();
    try {
      await new Promise((r) => setTimeout(r, 200));
      const pod = await runPod();
      const id = await run(pod, containerConfig('events', sh('exit 0')));
      await waitExited(id);
      await d.cri.runtime.removeContainer({ containerId: id });
      const deadline = Date.now() + 10_000;
      const mine = () => watch.events.filter((e) => e.containerId === id);
      while (mine().length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(mine().map((e) => e.containerEventType)).toEqual([
        ContainerEventType.CONTAINER_CREATED_EVENT,
        ContainerEventType.CONTAINER_STARTED_EVENT,
        ContainerEventType.CONTAINER_STOPPED_EVENT,
        ContainerEventType.CONTAINER_DELETED_EVENT,
      ]);
      expect(mine()[2]?.containersStatuses[0]?.state).toBe(ContainerState.CONTAINER_EXITED);
      expect(mine()[0]?.podSandboxStatus?.id).toBe(pod.id);
    } finally {
      watch.cancel();
    }
  });
});

describe('recovery', () => {
  it('after kill -9 of skiff, running containers still run, exits during downtime are reported, logs go on', async () => {
    const t = await startDaemon();
    try {
      await pull(t, busybox);
      const pod = await runPod(t);
      const runner = await run(
        pod,
        containerConfig('runner', sh('i=0; while :; do echo tick$i; i=$((i+1)); sleep 0.1; done')),
        t,
      );
      const quitter = await run(
        pod,
        containerConfig('quitter', sh('read x < /dev/null; sleep 1; exit 5')),
        t,
      );
      const pid = await pidOf(runner, t);
      process.kill(t.pid, 'SIGKILL');
      await new Promise((r) => setTimeout(r, 2000));
      expect(alive(pid)).toBe(true);
      const t2 = await startDaemon({ dir: t.dir, net: t.net });
      try {
        expect((await status(runner, t2)).state).toBe(ContainerState.CONTAINER_RUNNING);
        const q = await status(quitter, t2);
        expect(q.state).toBe(ContainerState.CONTAINER_EXITED);
        expect(q.exitCode).toBe(5);
        const before = (await readFile((await status(runner, t2)).logPath, 'utf8')).length;
        await new Promise((r) => setTimeout(r, 500));
        expect((await readFile((await status(runner, t2)).logPath, 'utf8')).length).toBeGreaterThan(before);
        // The restarted daemon still watches exits.
        await t2.cri.runtime.stopContainer({ containerId: runner, timeout: 0n });
        expect(alive(pid)).toBe(false);
        expect((await status(runner, t2)).exitCode).toBe(137);
      } finally {
        await cleanupDaemon(t2);
        await t2.stop();
      }
    } finally {
      if (alive(t.pid)) await cleanupDaemon(t);
      await rm(t.dir, { recursive: true, force: true });
    }
  });

  it('after kill -9 during concurrent CreateContainers, a restart leaves only complete containers and no leftovers', async () => {
    const t = await startDaemon();
    try {
      await pull(t, busybox);
      const pod = await runPod(t);
      const creates = Array.from({ length: 6 }, (_, i) =>
        create(pod, containerConfig(`racer${i}`, { command: ['sleep', '1000'] }), t).catch(() => undefined),
      );
      await new Promise((r) => setTimeout(r, 150));
      process.kill(t.pid, 'SIGKILL');
      await Promise.all(creates);
      const t2 = await startDaemon({ dir: t.dir, net: t.net });
      try {
        const listed = (await t2.cri.runtime.listContainers({ filter: undefined })).containers.map(
          (c) => c.id,
        );
        // Every dir left is a listed container's; every listed container is whole (CREATED, its runtime
        // container known) and removable; no mount of a container that is not listed.
        expect(readdirSync(join(t.root, 'containers')).sort()).toEqual([...listed].sort());
        expect(readdirSync(join(t.state, 'containers')).sort()).toEqual([...listed].sort());
        for (const id of listed) {
          expect((await status(id, t2)).state).toBe(ContainerState.CONTAINER_CREATED);
        }
        const mounted = readFileSync('/proc/self/mountinfo', 'utf8')
          .split('\n')
          .map((l) => l.split(' ')[4] ?? '')
          .filter((m) => m.startsWith(`${t.state}/containers/`))
          .map((m) => m.split('/').at(-3));
        for (const id of mounted) expect(listed).toContain(id);
        for (const id of listed) await t2.cri.runtime.removeContainer({ containerId: id });
        expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(`${t.state}/containers/`);
      } finally {
        await cleanupDaemon(t2);
        await t2.stop();
      }
    } finally {
      await rm(t.dir, { recursive: true, force: true });
    }
  });
});
