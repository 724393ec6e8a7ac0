/**
 * The spec builder's rules one at a time: command and env merging, capabilities, OOM score clamping,
 * cgroup paths, mounts, namespaces, security profiles and their errors (each naming the thing and the
 * fix). The whole-spec shape is in golden.test.ts.
 */
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type ErrorKind, isSkiffError } from '../../../../src/errdefs.js';
import {
  buildSpec,
  capabilities,
  capabilitiesFromStatus,
  cgroupsPath,
  clampOomScoreAdj,
  mergeEnv,
  processArgs,
  toLinuxResources,
} from '../../../../src/oci/spec/build.js';
import type { ContainerMount } from '../../../../src/oci/spec/container-config.js';
import { DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS } from '../../../../src/oci/spec/defaults.js';
import { containerConfig, specInput, tempRootfs } from './fixtures.js';

async function fails(p: Promise<unknown> | (() => unknown), kind: ErrorKind, pattern: RegExp): Promise<void> {
  let err: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  expect(isSkiffError(err, kind), `expected ${kind}, got ${String(err)}`).toBe(true);
  expect((err as Error).message).toMatch(pattern);
}

const image = (entrypoint: string[], cmd: string[]) => ({
  env: [],
  entrypoint,
  cmd,
  workingDir: '',
  user: '',
  volumes: [],
  stopSignal: '',
});

const mount = (over: Partial<ContainerMount>): ContainerMount => ({
  containerPath: '/data',
  hostPath: '/var/lib/skiff-test-missing/data',
  readonly: false,
  recursiveReadOnly: false,
  propagation: 'private',
  selinuxRelabel: false,
  ...over,
});

describe('processArgs', () => {
  it('follows Docker: command replaces Entrypoint and drops Cmd, args replace Cmd', () => {
    const img = image(['/entry.sh'], ['serve', '--port=80']);
    expect(processArgs([], [], img)).toEqual(['/entry.sh', 'serve', '--port=80']);
    expect(processArgs([], ['debug'], img)).toEqual(['/entry.sh', 'debug']);
    expect(processArgs(['/bin/sh'], [], img)).toEqual(['/bin/sh']);
    expect(processArgs(['/bin/sh'], ['-c', 'true'], img)).toEqual(['/bin/sh', '-c', 'true']);
    expect(processArgs([], [], image([''], ['sh']))).toEqual(['sh']);
  });

  it('refuses a container with nothing to run', async () => {
    await fails(
      () => processArgs([], [], image([], [])),
      'invalid-argument',
      /no command specified: set command/,
    );
  });
});

describe('mergeEnv and the process env', () => {
  it('overrides by key in place, appends new keys and removes bare keys', () => {
    expect(mergeEnv(['PATH=/bin', 'A=1', 'B=2'], ['A=x', 'C=3', 'B'], ['C=4'])).toEqual([
      'PATH=/bin',
      'A=x',
      'C=4',
    ]);
    expect(mergeEnv(['A=1'], ['A=2', 'A=3'])).toEqual(['A=3']);
    expect(mergeEnv(['A=1=2'], ['B='])).toEqual(['A=1=2', 'B=']);
  });

  it('puts the default PATH, TERM, HOSTNAME, the image env, then the request env', async () => {
    const config = containerConfig({
      tty: true,
      envs: [
        { key: 'LANG', value: 'C.UTF-8' },
        { key: 'TERM', value: 'dumb' },
      ],
    });
    const input = specInput(await tempRootfs(), { config });
    input.image.env = ['LANG=en_US.UTF-8', 'HOME=/root'];
    const { spec } = await buildSpec(input);
    expect(spec.process?.env).toEqual([
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'TERM=dumb',
      'HOSTNAME=web-0',
      'LANG=C.UTF-8',
      'HOME=/root',
    ]);
  });

  it('refuses variable names that cannot be written as KEY=value', async () => {
    const config = containerConfig({ envs: [{ key: 'A=B', value: '1' }] });
    await fails(buildSpec(specInput(await tempRootfs(), { config })), 'invalid-argument', /"A=B" is invalid/);
  });
});

describe('capabilities', () => {
  const caps = (add: string[], drop: string[], privileged = false, addAmbient: string[] = []) => {
    const config = containerConfig();
    config.security.capabilities = { add, drop, addAmbient };
    config.security.privileged = privileged;
    return capabilities(config);
  };

  it('starts from the 14 defaults, adding and dropping names with or without CAP_, any case', () => {
    expect(caps([], []).bounding).toEqual(DEFAULT_CAPABILITIES);
    const got = caps(['net_admin', 'CAP_SYS_TIME', 'Chown'], ['cap_kill', 'MKNOD']).bounding;
    expect(got).toContain('CAP_NET_ADMIN');
    expect(got).toContain('CAP_SYS_TIME');
    expect(got).not.toContain('CAP_KILL');
    expect(got).not.toContain('CAP_MKNOD');
    expect(got?.filter((c) => c === 'CAP_CHOWN')).toHaveLength(1);
  });

  it('handles ALL before the individual names', () => {
    expect(caps(['ALL'], ['chown']).bounding).toHaveLength(40);
    expect(caps(['NET_BIND_SERVICE'], ['all']).bounding).toEqual(['CAP_NET_BIND_SERVICE']);
    expect(caps(['all'], ['ALL']).bounding).toEqual([]);
  });

  it('gives privileged containers everything, and ambient capabilities in every set', () => {
    expect(caps([], ['ALL'], true).bounding).toHaveLength(41);
    const amb = caps([], ['ALL'], false, ['NET_BIND_SERVICE']);
    expect(amb).toEqual({
      bounding: ['CAP_NET_BIND_SERVICE'],
      effective: ['CAP_NET_BIND_SERVICE'],
      permitted: ['CAP_NET_BIND_SERVICE'],
      inheritable: ['CAP_NET_BIND_SERVICE'],
      ambient: ['CAP_NET_BIND_SERVICE'],
    });
  });

  it('reads the daemon’s effective set for privileged containers (runc cannot grant more)', async () => {
    const status = 'Name:\tskiff\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n';
    const eff = capabilitiesFromStatus(status);
    expect(eff).toHaveLength(40);
    expect(eff).not.toContain('CAP_SYS_RESOURCE');
    const config = containerConfig();
    config.security.privileged = true;
    expect(capabilities(config, eff).bounding).toEqual(eff);
    const input = specInput(await tempRootfs(), { config, allCapabilities: undefined });
    input.sandbox.privileged = true;
    const { spec } = await buildSpec(input);
    const own = capabilitiesFromStatus(await readFile('/proc/self/status', 'utf8'));
    expect(spec.process?.capabilities?.bounding).toEqual(own);
  });

  it('refuses unknown names', async () => {
    await fails(
      () => caps(['NET_ADMN'], []),
      'invalid-argument',
      /unknown capability "NET_ADMN".*capabilities\(7\)/,
    );
  });
});

describe('oomScoreAdj', () => {
  it('raises requests below the daemon’s own score and keeps the kernel range', async () => {
    expect(clampOomScoreAdj(-998, -999)).toBe(-998);
    expect(clampOomScoreAdj(-1000, -999)).toBe(-999);
    expect(clampOomScoreAdj(-1000, -1000)).toBe(-1000);
    expect(clampOomScoreAdj(5000, 0)).toBe(1000);
    const config = containerConfig();
    config.resources.oomScoreAdj = -1000;
    const { spec } = await buildSpec(specInput(await tempRootfs(), { config, minOomScoreAdj: -500 }));
    expect(spec.process?.oomScoreAdj).toBe(-500);
  });
});

describe('cgroupsPath', () => {
  it('joins the cgroupfs parent, or makes a systemd slice:prefix:name', async () => {
    expect(cgroupsPath('cgroupfs', '/kubepods/burstable/pod1', 'abc')).toBe('/kubepods/burstable/pod1/abc');
    expect(cgroupsPath('cgroupfs', '', 'abc')).toBe('/skiff/abc');
    expect(cgroupsPath('systemd', '/kubepods.slice/kubepods-pod1.slice', 'abc')).toBe(
      'kubepods-pod1.slice:skiff:abc',
    );
    expect(cgroupsPath('systemd', '', 'abc')).toBe('system.slice:skiff:abc');
    await fails(
      () => cgroupsPath('systemd', '/kubepods/pod1', 'abc'),
      'invalid-argument',
      /not a systemd slice/,
    );
  });
});

describe('resources', () => {
  const base = containerConfig().resources;

  it('writes only what is set, with swap equal to the limit when swap is accounted', () => {
    const r = { ...base, cpuShares: 0, memoryLimitInBytes: 1 << 20 };
    expect(toLinuxResources(r, { swapControllerAvailable: true })).toEqual({
      memory: { limit: 1 << 20, swap: 1 << 20 },
    });
    expect(
      toLinuxResources({ ...r, memorySwapLimitInBytes: 2 << 20 }, { swapControllerAvailable: true }),
    ).toEqual({
      memory: { limit: 1 << 20, swap: 2 << 20 },
    });
    const warnings: string[] = [];
    expect(toLinuxResources({ ...r, memorySwapLimitInBytes: 2 << 20 }, { warnings })).toEqual({
      memory: { limit: 1 << 20 },
    });
    expect(warnings).toEqual(['swap limit dropped: this node has no swap accounting']);
  });

  it('drops hugepage limits without the hugetlb controller, and refuses unified keys on cgroup v1', async () => {
    const warnings: string[] = [];
    const r = { ...base, hugepageLimits: [{ pageSize: '2MB', limit: 4 << 20 }] };
    expect(toLinuxResources(r, { warnings }).hugepageLimits).toBeUndefined();
    expect(warnings).toEqual(['huge page limits dropped: this node has no hugetlb cgroup controller']);
    expect(toLinuxResources(r, { hugetlbAvailable: true }).hugepageLimits).toEqual([
      { pageSize: '2MB', limit: 4 << 20 },
    ]);
    await fails(
      () => toLinuxResources({ ...base, unified: { 'memory.high': '1' } }),
      'invalid-argument',
      /memory\.high.*need cgroup v2.*drop them/,
    );
  });
});

describe('mounts', () => {
  it('resolves symlinked host paths and reports missing ones for the caller to create', async () => {
    const rootfs = await tempRootfs();
    await mkdir(join(rootfs, 'real'));
    await symlink(join(rootfs, 'real'), join(rootfs, 'link'));
    const config = containerConfig({
      mounts: [
        mount({ containerPath: '/a', hostPath: join(rootfs, 'link') }),
        mount({ containerPath: '/b', hostPath: join(rootfs, 'absent') }),
      ],
    });
    const { spec, missingHostPaths } = await buildSpec(specInput(rootfs, { config }));
    expect(spec.mounts?.find((m) => m.destination === '/a')?.source).toBe(join(rootfs, 'real'));
    expect(missingHostPaths).toEqual([join(rootfs, 'absent')]);
  });

  it('lets a CRI /dev mount replace every default mount under /dev (the pod’s /dev/shm stays)', async () => {
    const config = containerConfig({ mounts: [mount({ containerPath: '/dev', hostPath: '/dev' })] });
    const { spec } = await buildSpec(specInput(await tempRootfs(), { config }));
    expect(
      spec.mounts?.filter((m) => m.destination.startsWith('/dev')).map((m) => [m.destination, m.type]),
    ).toEqual([
      ['/dev', 'bind'],
      ['/dev/shm', 'bind'],
    ]);
  });

  it('refuses rro where it cannot work, naming the mount and the fix', async () => {
    const rootfs = await tempRootfs();
    const build = (m: ContainerMount, rro: boolean) =>
      buildSpec(
        specInput(rootfs, { config: containerConfig({ mounts: [m] }), recursiveReadOnlyMounts: rro }),
      );
    const rroMount = mount({ readonly: true, recursiveReadOnly: true });
    await fails(
      build(rroMount, false),
      'invalid-argument',
      /recursive read-only mount of ".*data" is not supported by this runtime handler/,
    );
    await fails(
      build({ ...rroMount, propagation: 'rslave' }, true),
      'invalid-argument',
      /needs private propagation, not rslave/,
    );
    await fails(build({ ...rroMount, readonly: false }, true), 'invalid-argument', /must also be read-only/);
    expect(
      (await build(rroMount, true)).spec.mounts?.find((m) => m.destination === '/data')?.options,
    ).toEqual(['rbind', 'rprivate', 'rro']);
  });

  it('makes image volumes inside the rootfs when there is no volumes dir, through its symlinks', async () => {
    const rootfs = await tempRootfs();
    await mkdir(join(rootfs, 'var'));
    await symlink('/srv', join(rootfs, 'var/lib'));
    const input = specInput(rootfs);
    input.image.volumes = ['/var/lib/db', '/cache'];
    const { spec, volumes } = await buildSpec(input);
    expect(volumes).toEqual([
      { containerPath: '/var/lib/db', hostPath: join(rootfs, 'srv/db') },
      { containerPath: '/cache', hostPath: join(rootfs, 'cache') },
    ]);
    expect(await readdir(join(rootfs, 'srv'))).toEqual(['db']);
    expect(spec.mounts?.some((m) => m.destination === '/var/lib/db')).toBe(false);
  });

  it('refuses relative container and host paths', async () => {
    const rootfs = await tempRootfs();
    const build = (m: ContainerMount) =>
      buildSpec(specInput(rootfs, { config: containerConfig({ mounts: [m] }) }));
    await fails(
      build(mount({ containerPath: 'data' })),
      'invalid-argument',
      /container path "data" is not absolute/,
    );
    await fails(build(mount({ hostPath: 'data' })), 'invalid-argument', /host path "data" is not absolute/);
  });
});

describe('namespaces', () => {
  it('joins the sandbox PID namespace for pod mode, and fails when the sandbox has none', async () => {
    const rootfs = await tempRootfs();
    const config = containerConfig();
    config.security.namespaces.pid = 'pod';
    const input = specInput(rootfs, { config });
    await fails(buildSpec(input), 'failed-precondition', /pod sandbox "5b1d" has no shared pid namespace/);
    input.sandbox.namespaces.pid = '/run/skiff/sandboxes/5b1d/ns/pid';
    const { spec } = await buildSpec(input);
    expect(spec.linux?.namespaces?.[0]).toEqual({ type: 'pid', path: '/run/skiff/sandboxes/5b1d/ns/pid' });
  });

  it('never falls back to the node network namespace when the pod should have its own', async () => {
    const input = specInput(await tempRootfs());
    input.sandbox.namespaces = { ipc: '/x/ipc', uts: '/x/uts' };
    await fails(buildSpec(input), 'failed-precondition', /no network namespace to join/);
  });

  it('needs the target container’s namespace for target mode', async () => {
    const config = containerConfig();
    config.security.namespaces = { pid: 'target', targetId: 'beef' };
    await fails(
      buildSpec(specInput(await tempRootfs(), { config })),
      'failed-precondition',
      /target container "beef"/,
    );
  });
});

describe('security', () => {
  it('refuses a privileged container in a pod that is not privileged', async () => {
    const config = containerConfig();
    config.security.privileged = true;
    await fails(
      buildSpec(specInput(await tempRootfs(), { config })),
      'invalid-argument',
      /needs a privileged pod/,
    );
  });

  it('masks the defaults unless told otherwise, and nothing for an empty list (procMount Unmasked)', async () => {
    const rootfs = await tempRootfs();
    const config = containerConfig();
    expect((await buildSpec(specInput(rootfs, { config }))).spec.linux?.maskedPaths).toEqual(
      DEFAULT_MASKED_PATHS,
    );
    config.security.maskedPaths = [];
    config.security.readonlyPaths = [];
    const { spec } = await buildSpec(specInput(rootfs, { config }));
    expect([spec.linux?.maskedPaths, spec.linux?.readonlyPaths]).toEqual([[], []]);
  });

  it('names a missing or broken localhost seccomp profile', async () => {
    const rootfs = await tempRootfs();
    const config = containerConfig();
    config.security.seccomp = { kind: 'localhost', path: join(rootfs, 'nope.json') };
    await fails(
      buildSpec(specInput(rootfs, { config })),
      'invalid-argument',
      /seccomp profile ".*nope\.json" not found/,
    );
    await writeFile(join(rootfs, 'bad.json'), '{"syscalls": []');
    config.security.seccomp = { kind: 'localhost', path: join(rootfs, 'bad.json') };
    await fails(buildSpec(specInput(rootfs, { config })), 'invalid-argument', /bad\.json" is not valid JSON/);
    config.security.seccomp = { kind: 'localhost', path: rootfs };
    await fails(
      buildSpec(specInput(rootfs, { config })),
      'invalid-argument',
      /must be a regular file of at most 4 MiB/,
    );
    config.security.seccomp = { kind: 'localhost', path: 'profiles/x.json' };
    await fails(buildSpec(specInput(rootfs, { config })), 'invalid-argument', /not an absolute path/);
  });

  it('warns for RuntimeDefault where seccomp or AppArmor is missing, and fails for a named profile', async () => {
    const rootfs = await tempRootfs();
    const config = containerConfig();
    config.security.seccomp = { kind: 'runtime-default' };
    config.security.apparmor = { kind: 'runtime-default' };
    const { spec, warnings } = await buildSpec(specInput(rootfs, { config, seccompAvailable: false }));
    expect(spec.linux?.seccomp).toBeUndefined();
    expect(warnings).toEqual([
      'AppArmor is not available on this node: running without the RuntimeDefault profile',
      'seccomp is not available on this node: running without the RuntimeDefault profile',
    ]);
    config.security.apparmor = { kind: 'localhost', path: 'k8s-nginx' };
    await fails(
      buildSpec(specInput(rootfs, { config })),
      'failed-precondition',
      /AppArmor profile "k8s-nginx"/,
    );
    config.security.apparmor = undefined;
    config.security.seccomp = { kind: 'localhost', path: '/p.json' };
    await fails(
      buildSpec(specInput(rootfs, { config, seccompAvailable: false })),
      'failed-precondition',
      /seccomp profile "\/p\.json".*not available/,
    );
  });

  it('applies AppArmor where available: the default profile unless unconfined or privileged', async () => {
    const rootfs = await tempRootfs();
    const config = containerConfig();
    const profile = async () =>
      (await buildSpec(specInput(rootfs, { config, apparmorAvailable: true }))).spec.process?.apparmorProfile;
    expect(await profile()).toBe('skiff-default');
    config.security.apparmor = { kind: 'localhost', path: 'k8s-nginx' };
    expect(await profile()).toBe('k8s-nginx');
    config.security.apparmor = { kind: 'unconfined' };
    expect(await profile()).toBeUndefined();
  });

  it('ignores SELinux options with a warning where SELinux is off, and labels where it is on', async () => {
    const rootfs = await tempRootfs();
    const config = containerConfig();
    config.security.selinux = { user: '', role: '', type: 'spc_t', level: 's0:c1,c2' };
    const off = await buildSpec(specInput(rootfs, { config }));
    expect(off.spec.process?.selinuxLabel).toBeUndefined();
    expect(off.warnings).toEqual([
      'SELinux is not enabled on this node: the container SELinux options are ignored',
    ]);
    const on = await buildSpec(specInput(rootfs, { config, selinuxAvailable: true }));
    expect(on.spec.process?.selinuxLabel).toBe('system_u:system_r:spc_t:s0:c1,c2');
    expect(on.spec.linux?.mountLabel).toBe('system_u:object_r:container_file_t:s0:c1,c2');
  });

  it('does not let the request forge the runtime’s own annotations', async () => {
    const config = containerConfig({
      annotations: { 'io.kubernetes.cri.sandbox-id': 'forged', 'example.com/team': 'web' },
    });
    const { spec } = await buildSpec(specInput(await tempRootfs(), { config }));
    expect(spec.annotations?.['io.kubernetes.cri.sandbox-id']).toBe('5b1d');
    expect(spec.annotations?.['example.com/team']).toBe('web');
  });
});

describe('devices', () => {
  it('adds a CRI device node and its cgroup rule', async () => {
    const config = containerConfig({
      devices: [{ hostPath: '/dev/null', containerPath: '/dev/xnull', permissions: 'rw' }],
    });
    const { spec } = await buildSpec(specInput(await tempRootfs(), { config }));
    expect(spec.linux?.devices).toEqual([
      expect.objectContaining({ type: 'c', path: '/dev/xnull', major: 1, minor: 3 }),
    ]);
    expect(spec.linux?.resources?.devices?.at(-1)).toEqual({
      allow: true,
      type: 'c',
      major: 1,
      minor: 3,
      access: 'rw',
    });
  });

  it('refuses bad permissions', async () => {
    const config = containerConfig({
      devices: [{ hostPath: '/dev/null', containerPath: '', permissions: 'rwx' }],
    });
    await fails(
      buildSpec(specInput(await tempRootfs(), { config })),
      'invalid-argument',
      /permissions "rwx" are invalid/,
    );
  });
});
