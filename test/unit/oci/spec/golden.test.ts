/**
 * Golden config.json files for representative CreateContainer requests. A change in what the builder
 * writes shows up as a diff of test/unit/oci/spec/golden/*.json; after checking it is intended, rewrite
 * them with `UPDATE_GOLDEN=1 npx vitest run --project unit test/unit/oci/spec/golden`.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { format, resolveConfig } from 'prettier';
import { describe, expect, it } from 'vitest';
import { buildSpec, type BuildResult, type SpecInput } from '../../../../src/oci/spec/build.js';
import { containerConfig, specInput, tempRootfs } from './fixtures.js';

const goldenDir = join(import.meta.dirname, 'golden');

/**
 * The result as JSON, with the temp dirs replaced by stable names, formatted as the repository's
 * prettier config formats JSON (so `npm run format:check` accepts the golden files).
 */
async function render(result: BuildResult, dirs: Record<string, string>, file: string): Promise<string> {
  let text = JSON.stringify(result, null, 2);
  for (const [name, dir] of Object.entries(dirs)) text = text.split(dir).join(`<${name}>`);
  return format(text, { ...(await resolveConfig(file)), filepath: file });
}

async function golden(name: string, input: SpecInput, dirs: Record<string, string> = {}): Promise<void> {
  const file = join(goldenDir, `${name}.json`);
  const text = await render(await buildSpec(input), { rootfs: input.rootfs, ...dirs }, file);
  if (process.env.UPDATE_GOLDEN === '1') {
    await writeFile(file, text);
    return;
  }
  const want = await readFile(file, 'utf8').catch(() => {
    throw new Error(`golden file ${file} is missing: run with UPDATE_GOLDEN=1 to create it`);
  });
  expect(text).toBe(want);
}

const KUBELET_MASKED = [
  '/proc/asound',
  '/proc/acpi',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];
const KUBELET_READONLY = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

describe('golden specs', () => {
  it('busybox: a plain best-effort container as kubelet creates it', async () => {
    const rootfs = await tempRootfs();
    const config = containerConfig({
      command: ['sleep'],
      args: ['3600'],
      envs: [
        { key: 'KUBERNETES_SERVICE_HOST', value: '10.96.0.1' },
        { key: 'PATH', value: '/opt/bin:/usr/bin:/bin' },
      ],
    });
    config.security.maskedPaths = KUBELET_MASKED;
    config.security.readonlyPaths = KUBELET_READONLY;
    config.security.seccomp = { kind: 'unconfined' };
    await golden('busybox', specInput(rootfs, { config }));
  });

  it('privileged: every capability and host device, nothing masked, writable sysfs, systemd cgroup', async () => {
    const rootfs = await tempRootfs();
    const config = containerConfig({ command: ['/bin/sh'], tty: true, stdin: true });
    config.security.privileged = true;
    config.security.seccomp = { kind: 'runtime-default' };
    config.security.capabilities.drop = ['NET_RAW'];
    const input = specInput(rootfs, {
      config,
      cgroupDriver: 'systemd',
      apparmorAvailable: true,
      listHostDevices: () =>
        Promise.resolve([
          { type: 'c', path: '/dev/null', major: 1, minor: 3, fileMode: 0o666, uid: 0, gid: 0 },
          { type: 'b', path: '/dev/sda', major: 8, minor: 0, fileMode: 0o660, uid: 0, gid: 6 },
        ]),
    });
    input.sandbox.privileged = true;
    input.sandbox.cgroupParent = '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1e.slice';
    await golden('privileged', input);
  });

  it('readonly-mounts: read-only rootfs, CRI mounts with propagation and rro, image volumes', async () => {
    const rootfs = await tempRootfs();
    const kubelet = '/var/lib/kubelet/pods/6f1e/volumes';
    const config = containerConfig({
      command: ['nginx', '-g', 'daemon off;'],
      mounts: [
        // Children listed before parents: the spec must mount parents first.
        {
          containerPath: '/data/cache',
          hostPath: `${kubelet}/kubernetes.io~empty-dir/cache`,
          readonly: false,
          recursiveReadOnly: false,
          propagation: 'private',
          selinuxRelabel: false,
        },
        {
          containerPath: '/data',
          hostPath: `${kubelet}/kubernetes.io~empty-dir/data`,
          readonly: true,
          recursiveReadOnly: true,
          propagation: 'private',
          selinuxRelabel: false,
        },
        {
          containerPath: '/mnt/host',
          hostPath: '/var/lib/skiff-test-missing/host',
          readonly: true,
          recursiveReadOnly: false,
          propagation: 'rslave',
          selinuxRelabel: false,
        },
        {
          containerPath: '/mnt/shared',
          hostPath: '/var/lib/skiff-test-missing/shared',
          readonly: false,
          recursiveReadOnly: false,
          propagation: 'rshared',
          selinuxRelabel: false,
        },
        {
          containerPath: '/etc/hosts',
          hostPath: '/var/lib/kubelet/pods/6f1e/etc-hosts',
          readonly: false,
          recursiveReadOnly: false,
          propagation: 'private',
          selinuxRelabel: false,
        },
      ],
    });
    config.security.readonlyRootfs = true;
    const input = specInput(rootfs, {
      config,
      recursiveReadOnlyMounts: true,
      volumesDir: '/var/lib/skiff/containers/c0ffee/volumes',
    });
    input.image.volumes = ['/var/cache/nginx', 'data', '/var/cache/nginx/'];
    await golden('readonly-mounts', input);
  });

  it('user-passwd: image user by name, its groups from the image, supplemental groups', async () => {
    const rootfs = await tempRootfs();
    await writeFile(
      join(rootfs, 'etc/passwd'),
      'root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\n',
    );
    await writeFile(
      join(rootfs, 'etc/group'),
      'root:x:0:\nnginx:x:101:\nwww-data:x:33:nginx\nadm:x:4:nginx\n',
    );
    const config = containerConfig({ workingDir: '/srv' });
    config.security.supplementalGroups = [2000];
    config.security.noNewPrivs = true;
    const input = specInput(rootfs, { config });
    input.image.user = 'nginx';
    input.image.entrypoint = ['/docker-entrypoint.sh'];
    input.image.cmd = ['nginx', '-g', 'daemon off;'];
    input.image.workingDir = '/usr/share/nginx';
    input.image.env = [
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'NGINX_VERSION=1.25.3',
    ];
    await golden('user-passwd', input);
  });

  it('caps: add and drop in every spelling, RuntimeDefault seccomp following the capabilities', async () => {
    const rootfs = await tempRootfs();
    const config = containerConfig();
    config.security.capabilities = {
      add: ['NET_ADMIN', 'sys_admin', 'CAP_SYS_PTRACE'],
      drop: ['MKNOD', 'net_raw'],
      addAmbient: [],
    };
    config.security.seccomp = { kind: 'runtime-default' };
    await golden('caps', specInput(rootfs, { config }));
  });

  it('seccomp-localhost: a profile file from the node', async () => {
    const rootfs = await tempRootfs();
    const profile = join(rootfs, 'profile.json');
    await writeFile(
      profile,
      JSON.stringify({
        defaultAction: 'SCMP_ACT_LOG',
        architectures: ['SCMP_ARCH_X86_64'],
        archMap: [{ architecture: 'SCMP_ARCH_X86_64', subArchitectures: [] }],
        syscalls: [{ names: ['reboot'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
      }),
    );
    const config = containerConfig();
    config.security.seccomp = { kind: 'localhost', path: profile };
    await golden('seccomp-localhost', specInput(rootfs, { config }));
  });

  it('pid-target: an ephemeral debug container in another container’s PID namespace', async () => {
    const rootfs = await tempRootfs();
    const config = containerConfig({ name: 'debugger-x7k2', stdin: true, tty: true });
    config.security.namespaces = { pid: 'target', targetId: 'beef' };
    await golden('pid-target', specInput(rootfs, { config, targetPidNsPath: '/proc/4242/ns/pid' }));
  });

  it('host-network: node network, IPC and PID; namespaced sysctls dropped; cgroup v2 resources', async () => {
    const rootfs = await tempRootfs();
    const config = containerConfig({
      resources: {
        cpuPeriod: 100000,
        cpuQuota: 50000,
        cpuShares: 512,
        memoryLimitInBytes: 268435456,
        memorySwapLimitInBytes: 0,
        oomScoreAdj: -998,
        cpusetCpus: '0-1',
        cpusetMems: '',
        hugepageLimits: [{ pageSize: '2MB', limit: 0 }],
        unified: { 'memory.high': '200000000' },
      },
    });
    config.security.namespaces = { pid: 'node', targetId: '' };
    const input = specInput(rootfs, {
      config,
      cgroupV2: true,
      swapControllerAvailable: true,
      hugetlbAvailable: true,
    });
    input.sandbox = {
      ...input.sandbox,
      hostname: 'node-1',
      namespaces: {},
      hostNetwork: true,
      hostIpc: true,
      hostPid: true,
      shmPath: undefined,
      sysctls: { 'net.ipv4.ip_forward': '1', 'kernel.shmmax': '1000000', 'vm.overcommit_memory': '1' },
    };
    await golden('host-network', input);
  });
});
