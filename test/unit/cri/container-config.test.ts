/**
 * CRI ContainerConfig → domain ContainerConfig: every field mapped, wrappers and int64s unwrapped, enums
 * named, the deprecated profile strings read when the structured ones are absent, and what skiff cannot
 * do refused by name.
 */
import { describe, expect, it } from 'vitest';
import {
  toContainerConfig,
  toContainerResources,
  signalName,
} from '../../../src/cri/convert/container-config.js';
import {
  ContainerConfig,
  MountPropagation,
  NamespaceMode,
  SecurityProfile_ProfileType,
  Signal,
  SupplementalGroupsPolicy,
} from '../../../src/cri/gen/runtime/v1/api.js';
import { isSkiffError } from '../../../src/errdefs.js';

/* eslint-disable @typescript-eslint/no-deprecated -- the deprecated profile strings are under test */

function invalid(fn: () => unknown, pattern: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(isSkiffError(err, 'invalid-argument'), String(err)).toBe(true);
    expect((err as Error).message).toMatch(pattern);
    return;
  }
  expect.fail('expected an invalid-argument error');
}

describe('toContainerConfig', () => {
  it('maps a full request', () => {
    const req = ContainerConfig.fromPartial({
      metadata: { name: 'app', attempt: 2 },
      image: { image: 'docker.io/library/nginx:1.25', userSpecifiedImage: 'nginx:1.25' },
      command: ['nginx'],
      args: ['-g', 'daemon off;'],
      workingDir: '/srv',
      envs: [{ key: 'LANG', value: Buffer.from('C.UTF-8') }],
      mounts: [
        {
          containerPath: '/data',
          hostPath: '/var/lib/data',
          readonly: true,
          recursiveReadOnly: true,
          selinuxRelabel: true,
          propagation: MountPropagation.PROPAGATION_PRIVATE,
        },
        { containerPath: '/a', hostPath: '/a', propagation: MountPropagation.PROPAGATION_HOST_TO_CONTAINER },
        { containerPath: '/b', hostPath: '/b', propagation: MountPropagation.PROPAGATION_BIDIRECTIONAL },
      ],
      devices: [{ containerPath: '/dev/fuse', hostPath: '/dev/fuse', permissions: 'rwm' }],
      labels: { l: '1' },
      annotations: { a: '2' },
      logPath: 'app/2.log',
      stdin: true,
      stdinOnce: true,
      tty: true,
      stopSignal: Signal.SIGQUIT,
      linux: {
        resources: {
          cpuPeriod: 100000n,
          cpuQuota: 50000n,
          cpuShares: 512n,
          memoryLimitInBytes: 268435456n,
          memorySwapLimitInBytes: 536870912n,
          oomScoreAdj: -997n,
          cpusetCpus: '0-1',
          cpusetMems: '0',
          hugepageLimits: [{ pageSize: '2MB', limit: 2097152n }],
          unified: { 'memory.high': '1' },
        },
        securityContext: {
          capabilities: {
            addCapabilities: ['NET_ADMIN'],
            dropCapabilities: ['ALL'],
            addAmbientCapabilities: ['CHOWN'],
          },
          privileged: false,
          namespaceOptions: { pid: NamespaceMode.TARGET, targetId: 'beef', network: NamespaceMode.POD },
          selinuxOptions: { user: 'u', role: 'r', type: 't', level: 's0' },
          runAsUser: { value: 1000n },
          runAsGroup: { value: 3000n },
          runAsUsername: '',
          readonlyRootfs: true,
          supplementalGroups: [4000n],
          supplementalGroupsPolicy: SupplementalGroupsPolicy.Strict,
          noNewPrivs: true,
          maskedPaths: ['/proc/kcore'],
          readonlyPaths: ['/proc/sys'],
          seccomp: {
            profileType: SecurityProfile_ProfileType.Localhost,
            localhostRef: '/var/lib/kubelet/seccomp/p.json',
          },
          apparmor: { profileType: SecurityProfile_ProfileType.RuntimeDefault },
        },
      },
    });
    expect(toContainerConfig(req)).toEqual({
      name: 'app',
      attempt: 2,
      image: 'docker.io/library/nginx:1.25',
      userSpecifiedImage: 'nginx:1.25',
      command: ['nginx'],
      args: ['-g', 'daemon off;'],
      workingDir: '/srv',
      envs: [{ key: 'LANG', value: 'C.UTF-8' }],
      mounts: [
        {
          containerPath: '/data',
          hostPath: '/var/lib/data',
          readonly: true,
          recursiveReadOnly: true,
          propagation: 'private',
          selinuxRelabel: true,
        },
        {
          containerPath: '/a',
          hostPath: '/a',
          readonly: false,
          recursiveReadOnly: false,
          propagation: 'rslave',
          selinuxRelabel: false,
        },
        {
          containerPath: '/b',
          hostPath: '/b',
          readonly: false,
          recursiveReadOnly: false,
          propagation: 'rshared',
          selinuxRelabel: false,
        },
      ],
      devices: [{ containerPath: '/dev/fuse', hostPath: '/dev/fuse', permissions: 'rwm' }],
      labels: { l: '1' },
      annotations: { a: '2' },
      logPath: 'app/2.log',
      stdin: true,
      stdinOnce: true,
      tty: true,
      stopSignal: 'SIGQUIT',
      resources: {
        cpuPeriod: 100000,
        cpuQuota: 50000,
        cpuShares: 512,
        memoryLimitInBytes: 268435456,
        memorySwapLimitInBytes: 536870912,
        oomScoreAdj: -997,
        cpusetCpus: '0-1',
        cpusetMems: '0',
        hugepageLimits: [{ pageSize: '2MB', limit: 2097152 }],
        unified: { 'memory.high': '1' },
      },
      security: {
        privileged: false,
        capabilities: { add: ['NET_ADMIN'], drop: ['ALL'], addAmbient: ['CHOWN'] },
        namespaces: { pid: 'target', targetId: 'beef' },
        runAsUser: 1000,
        runAsGroup: 3000,
        runAsUsername: '',
        runAsNonRoot: false,
        readonlyRootfs: true,
        supplementalGroups: [4000],
        supplementalGroupsPolicy: 'strict',
        noNewPrivs: true,
        maskedPaths: ['/proc/kcore'],
        readonlyPaths: ['/proc/sys'],
        seccomp: { kind: 'localhost', path: '/var/lib/kubelet/seccomp/p.json' },
        apparmor: { kind: 'runtime-default' },
        selinux: { user: 'u', role: 'r', type: 't', level: 's0' },
      },
    });
  });

  it('fills defaults for a minimal request (crictl with only metadata and image)', () => {
    const c = toContainerConfig(
      ContainerConfig.fromPartial({ metadata: { name: 'x' }, image: { image: 'busybox' } }),
    );
    expect(c.stopSignal).toBe('');
    expect('userSpecifiedImage' in c).toBe(false);
    expect(c.resources).toEqual(toContainerResources(undefined));
    expect(c.security).toMatchObject({
      namespaces: { pid: 'container', targetId: '' },
      runAsUser: undefined,
      runAsGroup: undefined,
      supplementalGroupsPolicy: 'merge',
      maskedPaths: [],
      readonlyPaths: [],
      seccomp: undefined,
      apparmor: undefined,
      selinux: undefined,
    });
    // A zero run_as_user is root, not unset.
    const root = ContainerConfig.fromPartial({ linux: { securityContext: { runAsUser: { value: 0n } } } });
    expect(toContainerConfig(root).security.runAsUser).toBe(0);
  });

  it('reads the deprecated profile strings when the structured fields are absent', () => {
    const cases: [string, unknown][] = [
      ['', undefined],
      ['runtime/default', { kind: 'runtime-default' }],
      ['docker/default', { kind: 'runtime-default' }],
      ['unconfined', { kind: 'unconfined' }],
      ['localhost/profiles/audit.json', { kind: 'localhost', path: 'profiles/audit.json' }],
    ];
    for (const [legacy, want] of cases) {
      const c = toContainerConfig(
        ContainerConfig.fromPartial({
          linux: { securityContext: { seccompProfilePath: legacy, apparmorProfile: legacy } },
        }),
      );
      expect(c.security.seccomp, legacy).toEqual(want);
      expect(c.security.apparmor, legacy).toEqual(want);
    }
    invalid(
      () =>
        toContainerConfig(
          ContainerConfig.fromPartial({ linux: { securityContext: { seccompProfilePath: 'foo' } } }),
        ),
      /seccomp profile "foo" is invalid: use runtime\/default, unconfined or localhost\/<profile>/,
    );
    // The structured field wins, and a localhost/ prefix in its ref is trimmed.
    const both = ContainerConfig.fromPartial({
      linux: {
        securityContext: {
          seccompProfilePath: 'unconfined',
          seccomp: { profileType: SecurityProfile_ProfileType.Localhost, localhostRef: 'localhost//p.json' },
        },
      },
    });
    expect(toContainerConfig(both).security.seccomp).toEqual({ kind: 'localhost', path: '/p.json' });
  });

  it('names stop signals as the enum does', () => {
    expect(signalName(Signal.RUNTIME_DEFAULT)).toBe('');
    expect(signalName(Signal.SIGTERM)).toBe('SIGTERM');
    expect(signalName(Signal.SIGRTMAX)).toBe('SIGRTMAX');
    invalid(() => signalName(999 as unknown as Signal), /unknown stop signal 999/);
  });

  it('refuses what skiff cannot do, and numbers past 2^53', () => {
    invalid(
      () => toContainerConfig(ContainerConfig.fromPartial({ CDIDevices: [{ name: 'vendor.com/gpu=0' }] })),
      /CDI devices \(vendor\.com\/gpu=0\) are not supported/,
    );
    invalid(
      () =>
        toContainerConfig(
          ContainerConfig.fromPartial({ mounts: [{ containerPath: '/m', image: { image: 'x' } }] }),
        ),
      /image volume mounts \(at "\/m"\)/,
    );
    invalid(
      () =>
        toContainerConfig(
          ContainerConfig.fromPartial({
            linux: { securityContext: { namespaceOptions: { usernsOptions: { mode: NamespaceMode.POD } } } },
          }),
        ),
      /user namespaces are not supported/,
    );
    invalid(
      () =>
        toContainerConfig(
          ContainerConfig.fromPartial({
            mounts: [{ containerPath: '/m', propagation: 7 as unknown as MountPropagation }],
          }),
        ),
      /unknown mount propagation 7/,
    );
    invalid(
      () =>
        toContainerResources(
          ContainerConfig.fromPartial({ linux: { resources: { memoryLimitInBytes: 1n << 60n } } }).linux
            ?.resources,
        ),
      /memory_limit_in_bytes 1152921504606846976 is out of range/,
    );
  });
});
