import { status } from '@grpc/grpc-js';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import {
  type LinuxSandboxSecurityContext,
  NamespaceMode,
  type PodSandboxConfig,
  PodSandboxState,
  Protocol,
  SupplementalGroupsPolicy,
} from '../../src/cri/gen/runtime/v1/api.js';
import { failure, removeAllPods } from '../fixtures/cri-client.js';
import { startChildDaemon, type TestDaemon, type TestDaemonOptions } from '../fixtures/daemon.js';

/** Each daemon gets its own /24 so parallel leftovers cannot collide; traffic stays inside our netns. */
let subnetCounter = Math.floor(Math.random() * 200);
function subnet(): { cidr: string; prefix: string } {
  subnetCounter = (subnetCounter + 1) % 250;
  return { cidr: `10.233.${subnetCounter}.0/24`, prefix: `10.233.${subnetCounter}.` };
}

/** A bridge of its own per subnet: the bridge plugin refuses a bridge that has another subnet's address. */
function bridgeOf(cidr: string): string {
  return `skt${cidr.split('.')[2] ?? '0'}`;
}

async function daemon(options: TestDaemonOptions & { cidr?: string } = {}): Promise<TestDaemon> {
  const cidr = options.cidr ?? subnet().cidr;
  const bridge = bridgeOf(cidr);
  const d = await startChildDaemon({
    ...options,
    extraToml: `${options.extraToml ?? ''}\n[network]\ndefault_subnet = "${cidr}"\nbridge_name = "${bridge}"\nconf_dir = "/nonexistent/skiff-test-cni"\n`,
  });
  onTestFinished(async () => {
    // Remove every pod the test left, then stop, then delete the test's bridge.
    await removeAllPods(d.cri);
    await d.stop();
    spawnSync('ip', ['link', 'del', bridge]);
  });
  return d;
}

function podConfig(name: string, over: Partial<PodSandboxConfig> = {}): PodSandboxConfig {
  return {
    metadata: { name, uid: `uid-${name}`, namespace: 'skiff-test', attempt: 0 },
    hostname: '',
    logDirectory: '',
    dnsConfig: undefined,
    portMappings: [],
    labels: { app: name },
    annotations: { 'skiff.test/owner': 'sandboxes.test' },
    linux: undefined,
    windows: undefined,
    ...over,
  };
}

async function runp(d: TestDaemon, config: PodSandboxConfig, runtimeHandler = ''): Promise<string> {
  return (await d.cri.runtime.runPodSandbox({ config, runtimeHandler }, { deadlineMs: 60_000 })).podSandboxId;
}

function nsenter(netns: string, ...cmd: string[]) {
  return spawnSync('nsenter', [`--net=${netns}`, '--', ...cmd], { encoding: 'utf8', timeout: 10_000 });
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(dir));
}

function leases(d: TestDaemon): string[] {
  const dir = join(d.root, 'cni');
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /^\d+\.\d+\.\d+\.\d+$/.test(e.name))
    .map((e) => e.name);
}

async function verboseInfo(d: TestDaemon, id: string): Promise<{ netnsPath: string; ips: string[] }> {
  const st = await d.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: true });
  return JSON.parse(st.info.info ?? '{}') as { netnsPath: string; ips: string[] };
}

function hostNetworkContext(): LinuxSandboxSecurityContext {
  return {
    namespaceOptions: {
      network: NamespaceMode.NODE,
      pid: NamespaceMode.CONTAINER,
      ipc: NamespaceMode.POD,
      targetId: '',
      usernsOptions: undefined,
    },
    selinuxOptions: undefined,
    runAsUser: undefined,
    runAsGroup: undefined,
    readonlyRootfs: false,
    supplementalGroups: [],
    supplementalGroupsPolicy: SupplementalGroupsPolicy.Merge,
    privileged: false,
    seccomp: undefined,
    apparmor: undefined,
    // eslint-disable-next-line @typescript-eslint/no-deprecated -- a required field of the message type
    seccompProfilePath: '',
  };
}

describe('RunPodSandbox with the built-in network', () => {
  it('pins namespaces, gives the pod an IP, writes its DNS files, and reports it READY', async () => {
    const net = subnet();
    const d = await daemon({ cidr: net.cidr });
    const ready = await d.cri.runtime.status({ verbose: false });
    expect(ready.status?.conditions.find((c) => c.type === 'NetworkReady')).toMatchObject({ status: true });

    const id = await runp(
      d,
      podConfig('web', {
        hostname: 'web-0',
        dnsConfig: {
          servers: ['10.96.0.10'],
          searches: ['skiff-test.svc.cluster.local'],
          options: ['ndots:5'],
        },
        linux: {
          cgroupParent: '',
          securityContext: undefined,
          sysctls: { 'net.ipv4.ip_unprivileged_port_start': '0' },
          overhead: undefined,
          resources: undefined,
        },
      }),
    );
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    const st = await d.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false });
    expect(st.status?.state).toBe(PodSandboxState.SANDBOX_READY);
    expect(st.status?.network?.ip.startsWith(net.prefix)).toBe(true);
    expect(st.status?.metadata).toEqual({ name: 'web', uid: 'uid-web', namespace: 'skiff-test', attempt: 0 });
    expect(st.status?.labels).toEqual({ app: 'web' });
    expect(st.status?.createdAt).toBeGreaterThan(0n);

    const { netnsPath } = await verboseInfo(d, id);
    expect(mountsUnder(d.state).some((m) => m === netnsPath)).toBe(true);
    const addr = nsenter(netnsPath, 'ip', '-4', 'addr', 'show', 'eth0');
    expect(addr.stdout).toContain(st.status!.network!.ip);
    // lo is up (skiff's namespace helper does what the CNI loopback plugin would).
    expect(nsenter(netnsPath, 'ip', '-o', 'addr', 'show', 'dev', 'lo').stdout).toMatch(
      /inet 127\.0\.0\.1\/8 /,
    );
    expect(nsenter(netnsPath, 'cat', '/proc/sys/net/ipv4/ip_unprivileged_port_start').stdout.trim()).toBe(
      '0',
    );
    expect(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8').trim()).not.toBe('0');

    const dir = join(d.root, 'sandboxes', id);
    const resolv = readFileSync(join(dir, 'resolv.conf'), 'utf8');
    expect(resolv).toContain('nameserver 10.96.0.10');
    expect(resolv).toContain('search skiff-test.svc.cluster.local');
    expect(resolv).toContain('options ndots:5');
    expect(readFileSync(join(dir, 'hostname'), 'utf8').trim()).toBe('web-0');
    expect(readFileSync(join(dir, 'hosts'), 'utf8')).toMatch(
      new RegExp(`${st.status!.network!.ip}\\s+web-0`),
    );
  });

  it('lets two pods reach each other by IP', async () => {
    const d = await daemon();
    const a = await runp(d, podConfig('a'));
    const b = await runp(d, podConfig('b'));
    const ia = await verboseInfo(d, a);
    const ib = await verboseInfo(d, b);
    expect(ia.ips[0]).not.toBe(ib.ips[0]);
    const ping = nsenter(ia.netnsPath, '/bin/busybox', 'ping', '-c', '1', '-W', '2', ib.ips[0]!);
    expect(ping.status, ping.stdout + ping.stderr).toBe(0);
  });

  it('stops idempotently: network released, namespaces unpinned; removes idempotently', async () => {
    const d = await daemon();
    const id = await runp(d, podConfig('stopme'));
    const { netnsPath } = await verboseInfo(d, id);
    expect(leases(d)).toHaveLength(1);
    await d.cri.runtime.stopPodSandbox({ podSandboxId: id });
    const st = await d.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false });
    expect(st.status?.state).toBe(PodSandboxState.SANDBOX_NOTREADY);
    expect(st.status?.network?.ip).toBe('');
    expect(leases(d)).toEqual([]);
    expect(mountsUnder(d.state)).toEqual([]);
    expect(existsSync(netnsPath)).toBe(false);
    await d.cri.runtime.stopPodSandbox({ podSandboxId: id }); // again: fine
    await d.cri.runtime.removePodSandbox({ podSandboxId: id });
    await d.cri.runtime.removePodSandbox({ podSandboxId: id }); // again: fine
    expect((await d.cri.runtime.listPodSandbox({ filter: undefined })).items).toEqual([]);
    expect(existsSync(join(d.root, 'sandboxes', id))).toBe(false);
    const unknown = await failure(d.cri.runtime.stopPodSandbox({ podSandboxId: 'f'.repeat(64) }));
    expect(unknown.code).toBe(status.NOT_FOUND);
    const st2 = await failure(d.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false }));
    expect(st2.code).toBe(status.NOT_FOUND);
  });

  it('removes a running sandbox by stopping it first', async () => {
    const d = await daemon();
    const id = await runp(d, podConfig('rm-running'));
    await d.cri.runtime.removePodSandbox({ podSandboxId: id });
    expect(leases(d)).toEqual([]);
    expect(mountsUnder(d.state)).toEqual([]);
  });

  it('maps a host port on 127.0.0.1 with the portmap plugin, and unmaps it on stop', async () => {
    const d = await daemon();
    const hostPort = 20000 + Math.floor(Math.random() * 20000);
    const id = await runp(
      d,
      podConfig('ports', {
        portMappings: [{ protocol: Protocol.TCP, containerPort: 80, hostPort, hostIp: '127.0.0.1' }],
      }),
    );
    const rules = () => spawnSync('iptables', ['-t', 'nat', '-S'], { encoding: 'utf8' }).stdout;
    expect(rules()).toContain(`--dport ${hostPort}`);
    await d.cri.runtime.stopPodSandbox({ podSandboxId: id });
    expect(rules()).not.toContain(`--dport ${hostPort}`);
  });

  it('gives 30 pods started at once 30 distinct IPs', async () => {
    const d = await daemon();
    const ids = await Promise.all(Array.from({ length: 30 }, (_, i) => runp(d, podConfig(`many-${i}`))));
    const ips = await Promise.all(ids.map(async (id) => (await verboseInfo(d, id)).ips[0]));
    expect(new Set(ips).size).toBe(30);
  });
});

describe('RunPodSandbox options and errors', () => {
  it('uses the node network for hostNetwork pods: no netns, no IP, the host files', async () => {
    const d = await daemon();
    const id = await runp(
      d,
      podConfig('hostnet', {
        linux: {
          cgroupParent: '',
          securityContext: hostNetworkContext(),
          sysctls: {},
          overhead: undefined,
          resources: undefined,
        },
      }),
    );
    const st = await d.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false });
    expect(st.status?.network?.ip).toBe('');
    expect(st.status?.linux?.namespaces?.options?.network).toBe(NamespaceMode.NODE);
    expect((await verboseInfo(d, id)).netnsPath).toBe('');
    expect(readFileSync(join(d.root, 'sandboxes', id, 'resolv.conf'), 'utf8')).toBe(
      readFileSync('/etc/resolv.conf', 'utf8'),
    );
    expect(leases(d)).toEqual([]);
  });

  it('holds a pod-level PID namespace with catatonit as its init, and ends it on stop', async () => {
    const d = await daemon();
    const sc = hostNetworkContext();
    sc.namespaceOptions = { ...sc.namespaceOptions!, network: NamespaceMode.POD, pid: NamespaceMode.POD };
    const id = await runp(
      d,
      podConfig('sharedpid', {
        linux: {
          cgroupParent: '',
          securityContext: sc,
          sysctls: {},
          overhead: undefined,
          resources: undefined,
        },
      }),
    );
    const st = await d.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: true });
    const info = JSON.parse(st.info.info ?? '{}') as {
      pid: number;
      namespaces: { pid?: string; net?: string };
    };
    expect(info.pid).toBeGreaterThan(0);
    expect(readFileSync(`/proc/${info.pid}/comm`, 'utf8').trim()).toBe('catatonit');
    expect(readFileSync(`/proc/${info.pid}/status`, 'utf8')).toMatch(/NSpid:\s+\d+\s+1\n/);
    // The infra sits in the pod's network namespace too.
    const inode = (p: string) => spawnSync('stat', ['-L', '-c', '%i', p], { encoding: 'utf8' }).stdout.trim();
    expect(inode(`/proc/${info.pid}/ns/net`)).toBe(inode(info.namespaces.net!));
    await d.cri.runtime.stopPodSandbox({ podSandboxId: id });
    expect(existsSync(`/proc/${info.pid}`)).toBe(false);
    expect(mountsUnder(d.state)).toEqual([]);
  });

  it('refuses an unknown runtime handler, listing the configured ones, and leaves nothing', async () => {
    const d = await daemon();
    const f = await failure(runp(d, podConfig('bad-handler'), 'kata'));
    expect(f.code).toBe(status.INVALID_ARGUMENT);
    expect(f.details).toContain('"kata"');
    expect(f.details).toContain('runc, runsc');
    expect(readdirSync(join(d.root, 'sandboxes'))).toEqual([]);
  });

  it('runs a sandbox for the runsc handler and reports the handler', async () => {
    const d = await daemon();
    const id = await runp(d, podConfig('gvisor'), 'runsc');
    const st = await d.cri.runtime.podSandboxStatus({ podSandboxId: id, verbose: false });
    expect(st.status?.runtimeHandler).toBe('runsc');
    expect(st.status?.state).toBe(PodSandboxState.SANDBOX_READY);
    await d.cri.runtime.stopPodSandbox({ podSandboxId: id });
  });

  it('answers ALREADY_EXISTS naming the sandbox for a second run of the same name and attempt', async () => {
    const d = await daemon();
    const id = await runp(d, podConfig('twice'));
    const f = await failure(runp(d, podConfig('twice')));
    expect(f.code).toBe(status.ALREADY_EXISTS);
    expect(f.details).toContain(id);
    const next = await runp(
      d,
      podConfig('twice', {
        metadata: { name: 'twice', uid: 'uid-twice', namespace: 'skiff-test', attempt: 1 },
      }),
    );
    expect(next).not.toBe(id);
  });

  it('gives a retried RunPodSandbox the result of the call its caller gave up on', async () => {
    const d = await daemon();
    // The first call's deadline passes long before the run completes; kubelet then retries.
    const first = await failure(
      d.cri.runtime.runPodSandbox({ config: podConfig('slow'), runtimeHandler: '' }, { deadlineMs: 30 }),
    );
    expect(first.code).toBe(status.DEADLINE_EXCEEDED);
    const id = await runp(d, podConfig('slow'));
    expect((await d.cri.runtime.listPodSandbox({ filter: undefined })).items.map((p) => p.id)).toEqual([id]);
    // Both calls reached the daemon and finished, but only one sandbox was ever made.
    const lines = d.logs().split('\n');
    expect(lines.filter((l) => l.includes('"rpc":"RunPodSandbox"') && l.includes('"rpc done"'))).toHaveLength(
      2,
    );
    expect(lines.filter((l) => l.includes('"pod sandbox ready"'))).toHaveLength(1);
  });

  it('rejects a missing name with INVALID_ARGUMENT', async () => {
    const d = await daemon();
    const f = await failure(
      runp(d, podConfig('', { metadata: { name: '', uid: 'u', namespace: 'n', attempt: 0 } })),
    );
    expect(f.code).toBe(status.INVALID_ARGUMENT);
    expect(f.details).toContain('metadata.name');
  });
});

describe('ListPodSandbox', () => {
  it('filters by id prefix, state and labels; ambiguous prefixes are errors', async () => {
    const d = await daemon();
    const a = await runp(d, podConfig('la'));
    const b = await runp(d, podConfig('lb'));
    await d.cri.runtime.stopPodSandbox({ podSandboxId: b.slice(0, 12) });
    const list = async (filter: Parameters<TestDaemon['cri']['runtime']['listPodSandbox']>[0]['filter']) =>
      (await d.cri.runtime.listPodSandbox({ filter })).items.map((p) => p.id);
    expect((await list(undefined)).sort()).toEqual([a, b].sort());
    expect(await list({ id: a.slice(0, 10), state: undefined, labelSelector: {} })).toEqual([a]);
    expect(
      await list({ id: '', state: { state: PodSandboxState.SANDBOX_READY }, labelSelector: {} }),
    ).toEqual([a]);
    expect(await list({ id: '', state: undefined, labelSelector: { app: 'lb' } })).toEqual([b]);
    const streamed = await d.cri.runtime.streamPodSandboxes({ filter: undefined });
    expect(streamed.flatMap((c) => c.podSandboxes.map((p) => p.id)).sort()).toEqual([a, b].sort());
    const amb = await failure(d.cri.runtime.podSandboxStatus({ podSandboxId: '', verbose: false }));
    expect([status.NOT_FOUND, status.INVALID_ARGUMENT]).toContain(amb.code);
  });
});

describe('recovery', () => {
  it('after kill -9 during 10 concurrent runs, a restart keeps the finished pods READY and leaks nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skiff-e2e-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    const net = subnet();
    const d = await daemon({ dir, cidr: net.cidr });
    const runs = Array.from({ length: 10 }, (_, i) =>
      runp(d, podConfig(`crash-${i}`)).catch(() => undefined),
    );
    await new Promise((r) => setTimeout(r, 400));
    process.kill(d.pid, 'SIGKILL');
    await d.stop();
    const finished = (await Promise.all(runs)).filter((x): x is string => x !== undefined);

    const again = await daemon({ dir, cidr: net.cidr });
    const items = (await again.cri.runtime.listPodSandbox({ filter: undefined })).items;
    expect(items.map((p) => p.id).sort()).toEqual([...finished].sort());
    for (const p of items) expect(p.state).toBe(PodSandboxState.SANDBOX_READY);
    // Exactly one lease, one pinned netns per listed pod: nothing of the interrupted runs survives.
    expect(leases(again)).toHaveLength(items.length);
    expect(mountsUnder(again.state).filter((m) => m.endsWith('/ns/net'))).toHaveLength(items.length);
    for (const p of items) await again.cri.runtime.removePodSandbox({ podSandboxId: p.id });
    expect(leases(again)).toEqual([]);
    expect(mountsUnder(again.state)).toEqual([]);
  });
});
