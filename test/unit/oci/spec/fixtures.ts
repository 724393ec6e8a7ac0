/**
 * Shared inputs for the spec builder tests: a kubelet-like container config and pod sandbox, in a temp
 * rootfs (released when the test finishes).
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';
import type { SpecInput } from '../../../../src/oci/spec/build.js';
import type { ContainerConfig } from '../../../../src/oci/spec/container-config.js';
import { ALL_CAPABILITIES } from '../../../../src/oci/spec/defaults.js';

export async function tempRootfs(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-spec-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'etc'));
  return dir;
}

export function containerConfig(over: Partial<ContainerConfig> = {}): ContainerConfig {
  return {
    name: 'app',
    attempt: 0,
    image: 'docker.io/library/busybox:1.36',
    command: [],
    args: [],
    workingDir: '',
    envs: [],
    mounts: [],
    devices: [],
    labels: { 'io.kubernetes.container.name': 'app' },
    annotations: { 'io.kubernetes.container.restartCount': '0' },
    logPath: 'app/0.log',
    stdin: false,
    stdinOnce: false,
    tty: false,
    stopSignal: '',
    resources: {
      cpuPeriod: 0,
      cpuQuota: 0,
      cpuShares: 2,
      memoryLimitInBytes: 0,
      memorySwapLimitInBytes: 0,
      oomScoreAdj: 1000,
      cpusetCpus: '',
      cpusetMems: '',
      hugepageLimits: [],
      unified: {},
    },
    security: {
      privileged: false,
      capabilities: { add: [], drop: [], addAmbient: [] },
      namespaces: { pid: 'container', targetId: '' },
      runAsUser: undefined,
      runAsGroup: undefined,
      runAsUsername: '',
      runAsNonRoot: false,
      readonlyRootfs: false,
      supplementalGroups: [],
      noNewPrivs: false,
      maskedPaths: undefined,
      readonlyPaths: undefined,
      seccomp: undefined,
      apparmor: undefined,
      selinux: undefined,
    },
    ...over,
  };
}

export function specInput(rootfs: string, over: Partial<SpecInput> = {}): SpecInput {
  const pod = '/var/lib/skiff/sandboxes/5b1d';
  return {
    id: 'c0ffee',
    config: containerConfig(),
    imageName: 'docker.io/library/busybox:1.36',
    image: {
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      entrypoint: [],
      cmd: ['sh'],
      workingDir: '',
      user: '',
      volumes: [],
      stopSignal: '',
    },
    rootfs,
    sandbox: {
      id: '5b1d',
      hostname: 'web-0',
      namespaces: {
        net: '/run/skiff/sandboxes/5b1d/ns/net',
        ipc: '/run/skiff/sandboxes/5b1d/ns/ipc',
        uts: '/run/skiff/sandboxes/5b1d/ns/uts',
      },
      hostNetwork: false,
      hostIpc: false,
      hostPid: false,
      shmPath: '/run/skiff/sandboxes/5b1d/shm',
      hostsPath: `${pod}/hosts`,
      resolvConfPath: `${pod}/resolv.conf`,
      hostnamePath: `${pod}/hostname`,
      cgroupParent: '/kubepods/besteffort/pod6f1e',
      sysctls: {},
      privileged: false,
      name: 'web-0',
      namespace: 'default',
      uid: '6f1e',
    },
    cgroupDriver: 'cgroupfs',
    cgroupV2: false,
    minOomScoreAdj: -999,
    recursiveReadOnlyMounts: false,
    seccompAvailable: true,
    apparmorAvailable: false,
    selinuxAvailable: false,
    listHostDevices: () => Promise.resolve([]),
    arch: 'x64',
    allCapabilities: ALL_CAPABILITIES,
    ...over,
  };
}
