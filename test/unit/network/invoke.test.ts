/**
 * How a plugin is run (CNI SPEC.md 1.0.0, "Section 2: Execution Protocol" and "Section 3: Deriving
 * execution configuration"): CNI_ARGS, the environment, runtimeConfig from capabilities, the stdin config,
 * and the port mappings handed to portmap.
 */
import { describe, expect, it } from 'vitest';
import {
  cniArgs,
  deriveRuntimeConfig,
  pluginEnv,
  pluginNotFoundMessage,
  pluginStdin,
  portMappingsArg,
  type CniPortMapping,
  type PortMapping,
} from '../../../src/network/invoke.js';

describe('cniArgs', () => {
  it('carries the Kubernetes pod keys containerd passes, after IgnoreUnknown=1', () => {
    expect(cniArgs({ sandboxId: 'abc123', podName: 'web-0', podNamespace: 'default', podUid: 'u-1' })).toBe(
      'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1',
    );
  });
});

describe('pluginEnv', () => {
  const attachment = {
    containerId: 'abc',
    netns: '/run/skiff/netns/abc',
    ifName: 'eth0',
    cniArgs: 'IgnoreUnknown=1',
  };

  it.each(['ADD', 'DEL', 'CHECK'] as const)(
    'holds exactly the CNI parameters and a PATH for %s',
    (command) => {
      expect(pluginEnv(command, attachment, ['/opt/cni/bin', '/usr/lib/cni'], '/usr/bin:/custom')).toEqual({
        CNI_COMMAND: command,
        CNI_CONTAINERID: 'abc',
        CNI_NETNS: '/run/skiff/netns/abc',
        CNI_IFNAME: 'eth0',
        CNI_ARGS: 'IgnoreUnknown=1',
        CNI_PATH: '/opt/cni/bin:/usr/lib/cni',
        PATH: '/usr/bin:/custom:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/bin',
      });
    },
  );

  it('passes an empty CNI_NETNS through (DEL of a namespace that is gone)', () => {
    expect(pluginEnv('DEL', { ...attachment, netns: '' }, ['/b'], '').CNI_NETNS).toBe('');
  });
});

describe('portMappingsArg', () => {
  it.each<{ name: string; in: PortMapping[]; want: CniPortMapping[] }>([
    {
      name: 'a host port on one address',
      in: [{ protocol: 'tcp', containerPort: 80, hostPort: 8080, hostIp: '127.0.0.1' }],
      want: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp', hostIP: '127.0.0.1' }],
    },
    {
      name: 'every host address leaves hostIP out',
      in: [{ protocol: 'udp', containerPort: 53, hostPort: 5353, hostIp: '' }],
      want: [{ hostPort: 5353, containerPort: 53, protocol: 'udp' }],
    },
    {
      name: 'container ports without a host port are dropped',
      in: [
        { protocol: 'tcp', containerPort: 80, hostPort: 0, hostIp: '' },
        { protocol: 'sctp', containerPort: 9, hostPort: 9000, hostIp: '::1' },
      ],
      want: [{ hostPort: 9000, containerPort: 9, protocol: 'sctp', hostIP: '::1' }],
    },
    { name: 'none', in: [], want: [] },
  ])('$name', ({ in: mappings, want }) => {
    expect(portMappingsArg(mappings)).toEqual(want);
  });
});

describe('deriveRuntimeConfig', () => {
  const args = { portMappings: [{ hostPort: 1, containerPort: 2, protocol: 'tcp' }], bandwidth: undefined };
  it.each([
    { name: 'declared and offered', caps: { portMappings: true }, want: { portMappings: args.portMappings } },
    { name: 'declared false', caps: { portMappings: false }, want: undefined },
    { name: 'not declared', caps: undefined, want: undefined },
    { name: 'declared, not offered', caps: { bandwidth: true, mac: true }, want: undefined },
  ])('$name → $want', ({ caps, want }) => {
    expect(deriveRuntimeConfig(caps, args)).toEqual(want);
  });
});

describe('pluginStdin', () => {
  const list = { name: 'skiff', cniVersion: '1.0.0' };
  const mappings = [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }];

  it('injects name and cniVersion of the list and passes other keys unchanged', () => {
    const plugin = {
      type: 'bridge',
      bridge: 'b0',
      name: 'stale',
      cniVersion: '0.3.1',
      ipam: { type: 'host-local' },
    };
    expect(pluginStdin(plugin, list, { portMappings: mappings })).toEqual({
      type: 'bridge',
      bridge: 'b0',
      name: 'skiff',
      cniVersion: '1.0.0',
      ipam: { type: 'host-local' },
    });
  });

  it('adds runtimeConfig for declared capabilities, removes capabilities, adds prevResult', () => {
    const prev = { cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24' }] };
    expect(
      pluginStdin(
        { type: 'portmap', capabilities: { portMappings: true }, snat: true },
        list,
        { portMappings: mappings },
        prev,
      ),
    ).toEqual({
      type: 'portmap',
      snat: true,
      name: 'skiff',
      cniVersion: '1.0.0',
      runtimeConfig: { portMappings: mappings },
      prevResult: prev,
    });
  });

  it('merges into a runtimeConfig the file already has, and drops a stale prevResult', () => {
    expect(
      pluginStdin(
        {
          type: 'x',
          capabilities: { portMappings: true },
          runtimeConfig: { other: 1 },
          prevResult: { old: true },
        },
        list,
        { portMappings: mappings },
      ),
    ).toEqual({
      type: 'x',
      name: 'skiff',
      cniVersion: '1.0.0',
      runtimeConfig: { other: 1, portMappings: mappings },
    });
  });
});

describe('pluginNotFoundMessage', () => {
  it('names the binary, the dirs searched, and the fix', () => {
    expect(pluginNotFoundMessage('bridge', ['/opt/cni/bin', '/usr/lib/cni'])).toBe(
      'cni plugin "bridge" not found in /opt/cni/bin, /usr/lib/cni; install containernetworking-plugins or set [network] bin_dirs',
    );
  });
});
