/**
 * CNI plugin output (CNI SPEC.md 1.0.0, "Section 5: Result Types"): the pod's addresses from success
 * results of every result version plugins print, and error results.
 */
import { describe, expect, it } from 'vitest';
import {
  cniErrorKind,
  formatCniError,
  parseCniError,
  parseSuccessResult,
  resultIps,
  type CniError,
} from '../../../src/network/result.js';

/** What Debian's bridge plugin (1.1.1) printed for cniVersion 1.0.0. */
const bridge100 = {
  cniVersion: '1.0.0',
  interfaces: [
    { name: 'skiff0', mac: '7e:67:7a:cf:fc:a9' },
    { name: 'vethb78130ac', mac: '0a:53:10:4f:ed:94' },
    { name: 'eth0', mac: '32:bb:1b:11:bc:4a', sandbox: '/var/run/netns/x' },
  ],
  ips: [{ interface: 2, address: '10.231.250.2/24', gateway: '10.231.250.1' }],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: {},
};

describe('resultIps', () => {
  it.each([
    { name: '1.0.0 bridge result', result: bridge100, want: ['10.231.250.2'] },
    {
      name: '0.4.0 dual stack, v6 listed first',
      result: {
        cniVersion: '0.4.0',
        ips: [
          { version: '6', address: 'fd00:10::5/64', interface: 2 },
          { version: '4', address: '10.1.0.5/16', interface: 2 },
        ],
      },
      want: ['10.1.0.5', 'fd00:10::5'],
    },
    {
      name: '0.3.1 with ips[].version',
      result: { cniVersion: '0.3.1', ips: [{ version: '4', address: '192.168.1.3/24' }] },
      want: ['192.168.1.3'],
    },
    {
      name: '0.2.0 ip4 / ip6',
      result: { cniVersion: '0.2.0', ip4: { ip: '10.2.0.3/24' }, ip6: { ip: '2001:db8::3/64' } },
      want: ['10.2.0.3', '2001:db8::3'],
    },
    {
      name: 'two v4 addresses keep their order',
      result: { ips: [{ address: '10.0.0.9/8' }, { address: '10.0.0.2/8' }, { address: '10.0.0.9/8' }] },
      want: ['10.0.0.9', '10.0.0.2'],
    },
    { name: 'an address without prefix', result: { ips: [{ address: '10.0.0.7' }] }, want: ['10.0.0.7'] },
    {
      name: 'garbage entries are skipped',
      result: { ips: [null, 7, { address: 12 }, { address: 'nope/24' }, { address: '10.9.9.9/32' }] },
      want: ['10.9.9.9'],
    },
    { name: 'a loopback-only result', result: { interfaces: [{ name: 'lo' }] }, want: [] },
    { name: 'not an object', result: 'x', want: [] },
    { name: 'null', result: null, want: [] },
  ])('$name → $want', ({ result, want }) => {
    expect(resultIps(result)).toEqual(want);
  });
});

describe('parseCniError', () => {
  it.each<{ stdout: string; want: CniError | undefined }>([
    {
      stdout: '{"cniVersion":"1.0.0","code":7,"msg":"Invalid Configuration","details":"Network too small"}',
      want: { code: 7, msg: 'Invalid Configuration', details: 'Network too small' },
    },
    {
      stdout: '{\n    "code": 999,\n    "msg": "unknown FS magic on \\"/tmp/x\\": ef53"\n}',
      want: { code: 999, msg: 'unknown FS magic on "/tmp/x": ef53', details: '' },
    },
    { stdout: '', want: undefined },
    { stdout: 'panic: runtime error', want: undefined },
    { stdout: '{"msg":"no code"}', want: undefined },
    { stdout: '{"code": 3', want: undefined },
  ])('parses $stdout', ({ stdout, want }) => {
    expect(parseCniError(stdout)).toEqual(want);
  });
});

describe('cniErrorKind and formatCniError', () => {
  it.each([
    { err: { code: 11, msg: 'busy', details: '' }, kind: 'unavailable', text: 'busy' },
    {
      err: {
        code: 999,
        msg: 'failed to allocate for range 0: no IP addresses available in range set: 10.0.0.1-10.0.0.2',
        details: '',
      },
      kind: 'resource-exhausted',
      text: 'failed to allocate for range 0: no IP addresses available in range set: 10.0.0.1-10.0.0.2',
    },
    {
      err: { code: 7, msg: 'Invalid Configuration', details: 'bad subnet' },
      kind: 'unknown',
      text: 'Invalid Configuration (bad subnet)',
    },
    { err: { code: 5, msg: '', details: 'read stdin' }, kind: 'unknown', text: 'read stdin' },
    { err: { code: 5, msg: 'same', details: 'same' }, kind: 'unknown', text: 'same' },
    { err: { code: 101, msg: '', details: '' }, kind: 'unknown', text: 'error code 101' },
  ])('code $err.code → $kind, "$text"', ({ err, kind, text }) => {
    expect(cniErrorKind(err)).toBe(kind);
    expect(formatCniError(err)).toBe(text);
  });
});

describe('parseSuccessResult', () => {
  it('accepts an object and refuses anything else', () => {
    expect(parseSuccessResult(JSON.stringify(bridge100))).toEqual(bridge100);
    expect(parseSuccessResult('')).toBeUndefined();
    expect(parseSuccessResult('[1]')).toBeUndefined();
    expect(parseSuccessResult('{"a":')).toBeUndefined();
  });
});
