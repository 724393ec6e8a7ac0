/**
 * CNI configuration loading: the first file in lexical order wins (libcni's ConfFiles), a `.conf` is wrapped
 * into a list, bad files are reported naming the file and what is wrong, and the embedded default network
 * is used when conf_dir has none (CNI SPEC.md 1.0.0, "Section 1: Network configuration format").
 */
import { describe, expect, it } from 'vitest';
import { isSkiffError } from '../../../src/errdefs.js';
import {
  defaultConfList,
  parseConfFile,
  pluginBinaries,
  sortConfFiles,
  type NetworkConfList,
} from '../../../src/network/conf.js';

describe('sortConfFiles', () => {
  it.each([
    { names: ['b.conf', 'a.conflist', 'c.json'], want: ['a.conflist', 'b.conf', 'c.json'] },
    { names: ['README', '99-x.txt', '10-net.conf'], want: ['10-net.conf'] },
    // byte order, as Go's sort.Strings: '1' < '9', upper case before lower case
    { names: ['9-b.conflist', '10-a.conflist'], want: ['10-a.conflist', '9-b.conflist'] },
    { names: ['b.conf', 'B.conf'], want: ['B.conf', 'b.conf'] },
    { names: ['x.conf.bak', 'x.conflist~', '.hidden.conf'], want: ['.hidden.conf'] },
    { names: [], want: [] },
  ])('orders $names as $want', ({ names, want }) => {
    expect(sortConfFiles(names)).toEqual(want);
  });
});

const bridge = {
  type: 'bridge',
  bridge: 'cni0',
  ipam: { type: 'host-local', subnet: '10.1.0.0/16' },
};

describe('parseConfFile', () => {
  it('reads a configuration list, keeping unknown keys of each plugin', () => {
    const text = JSON.stringify({
      cniVersion: '1.0.0',
      name: 'dbnet',
      plugins: [bridge, { type: 'portmap', capabilities: { portMappings: true }, snat: true }],
    });
    expect(parseConfFile('/etc/cni/net.d/10-db.conflist', text)).toEqual<NetworkConfList>({
      name: 'dbnet',
      cniVersion: '1.0.0',
      disableCheck: false,
      source: '/etc/cni/net.d/10-db.conflist',
      plugins: [bridge, { type: 'portmap', capabilities: { portMappings: true }, snat: true }],
    });
  });

  it.each(['/d/10-one.conf', '/d/10-one.json'])('wraps the single plugin of %s into a list', (file) => {
    const conf = { cniVersion: '0.4.0', name: 'one', ...bridge };
    expect(parseConfFile(file, JSON.stringify(conf))).toEqual<NetworkConfList>({
      name: 'one',
      cniVersion: '0.4.0',
      disableCheck: false,
      source: file,
      plugins: [conf],
    });
  });

  it.each([
    { v: true, want: true },
    { v: 'true', want: true },
    { v: false, want: false },
    { v: undefined, want: false },
  ])('reads disableCheck $v as $want', ({ v, want }) => {
    const text = JSON.stringify({ cniVersion: '1.0.0', name: 'n', disableCheck: v, plugins: [bridge] });
    expect(parseConfFile('/d/n.conflist', text).disableCheck).toBe(want);
  });

  const list = (o: Record<string, unknown>): string =>
    JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [bridge], ...o });

  it.each([
    { file: 'a.conflist', text: '{"name": ', error: /^load cni config \/d\/a\.conflist: invalid JSON/ },
    { file: 'a.conflist', text: '[]', error: /expected a JSON object/ },
    { file: 'a.conflist', text: list({ name: undefined }), error: /missing network "name"/ },
    { file: 'a.conflist', text: list({ name: '-bad' }), error: /network name "-bad" must start with/ },
    { file: 'a.conflist', text: list({ cniVersion: undefined }), error: /missing "cniVersion"/ },
    { file: 'a.conflist', text: list({ cniVersion: 'v1' }), error: /"cniVersion" "v1" is not a version/ },
    { file: 'a.conflist', text: list({ plugins: [] }), error: /"plugins" is empty/ },
    { file: 'a.conflist', text: list({ plugins: undefined }), error: /"plugins" must be a list/ },
    { file: 'a.conflist', text: list({ plugins: [{ bridge: 'x' }] }), error: /plugins\[0\] has no "type"/ },
    { file: 'a.conflist', text: list({ plugins: ['bridge'] }), error: /plugins\[0\] must be a JSON object/ },
    {
      file: 'a.conflist',
      text: list({ plugins: [{ type: '../../bin/sh' }] }),
      error: /plugins\[0\] "type" "..\/..\/bin\/sh" must not contain/,
    },
    { file: 'a.conflist', text: list({ disableCheck: 'yes' }), error: /"disableCheck" must be a boolean/ },
    {
      file: 'a.conflist',
      text: list({ plugins: [{ type: 'bridge', ipam: 'host-local' }] }),
      error: /"ipam" must be a JSON object/,
    },
    { file: 'a.conf', text: list({}), error: /holds a "plugins" list: .* must be named \*\.conflist/ },
    { file: 'a.conf', text: JSON.stringify({ cniVersion: '1.0.0', name: 'n' }), error: /has no "type"/ },
  ])('rejects $file with $error', ({ file, text, error }) => {
    let caught: unknown;
    try {
      parseConfFile(`/d/${file}`, text);
    } catch (err) {
      caught = err;
    }
    expect(isSkiffError(caught, 'invalid-argument')).toBe(true);
    expect((caught as Error).message).toMatch(/^load cni config \/d\//);
    expect((caught as Error).message).toMatch(error);
  });
});

describe('pluginBinaries', () => {
  it('names each plugin type and each delegated ipam type once, in order', () => {
    const list = parseConfFile(
      '/d/x.conflist',
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'x',
        plugins: [
          bridge,
          { type: 'ptp', ipam: { type: 'host-local' } },
          { type: 'portmap' },
          { type: 'tuning', ipam: {} },
        ],
      }),
    );
    expect(pluginBinaries(list)).toEqual(['bridge', 'host-local', 'ptp', 'portmap', 'tuning']);
  });
});

describe('defaultConfList', () => {
  it('is a bridge with host-local addresses in the subnet, then portmap', () => {
    expect(
      defaultConfList({
        subnet: '10.88.0.0/16',
        bridgeName: 'skiff0',
        ipamDataDir: '/var/lib/skiff/cni/ipam',
      }),
    ).toEqual<NetworkConfList>({
      name: 'skiff',
      cniVersion: '1.0.0',
      disableCheck: false,
      source: 'embedded default',
      plugins: [
        {
          type: 'bridge',
          bridge: 'skiff0',
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: '10.88.0.0/16' }]],
            routes: [{ dst: '0.0.0.0/0' }],
            dataDir: '/var/lib/skiff/cni/ipam',
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    });
  });
});
