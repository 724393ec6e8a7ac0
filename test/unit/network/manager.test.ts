/**
 * NetworkManager against fake plugins (a small Node script installed under each plugin's name that logs its
 * call and prints a result or a scripted error), so the plugin-list semantics of CNI SPEC.md 1.0.0
 * "Section 3: Execution of Network Configurations" are checked without root: order, prevResult, runtimeConfig,
 * DEL in reverse with the cached ADD result, undo of a failed ADD, the cache, and NetworkReady.
 * Real plugins in real namespaces: test/e2e/network.test.ts.
 */
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { isSkiffError, type ErrorKind } from '../../../src/errdefs.js';
import { silentLogger } from '../../../src/log.js';
import {
  DISABLED_MESSAGE,
  NetworkManager,
  type AttachRequest,
  type NetworkManagerOptions,
} from '../../../src/network/manager.js';

interface Call {
  type: string;
  command: string;
  containerId: string;
  netns: string;
  ifName: string;
  args: string;
  path: string;
  conf: Record<string, unknown>;
}

const FAKE_PLUGIN = `#!${process.execPath}
const fs = require('fs');
const path = require('path');
const dir = __dirname;
const type = path.basename(__filename);
const env = process.env;
const input = fs.readFileSync(0, 'utf8');
const conf = input ? JSON.parse(input) : {};
fs.appendFileSync(path.join(dir, 'calls.log'), JSON.stringify({
  type, command: env.CNI_COMMAND, containerId: env.CNI_CONTAINERID, netns: env.CNI_NETNS,
  ifName: env.CNI_IFNAME, args: env.CNI_ARGS, path: env.CNI_PATH, conf,
}) + '\\n');
let behavior = {};
try { behavior = JSON.parse(fs.readFileSync(path.join(dir, 'behavior.json'), 'utf8')); } catch {}
const scripted = behavior[type + ':' + env.CNI_COMMAND];
if (scripted && scripted.sleepMs) {
  setTimeout(() => {}, scripted.sleepMs);
} else if (scripted) {
  process.stdout.write(JSON.stringify(scripted));
  process.stderr.write('some log line\\n');
  process.exitCode = 1;
} else if (env.CNI_COMMAND === 'ADD') {
  let out;
  if (type === 'loopback') {
    out = { cniVersion: conf.cniVersion, interfaces: [{ name: 'lo', sandbox: env.CNI_NETNS }], ips: [{ address: '127.0.0.1/8', interface: 0 }] };
  } else if (conf.prevResult) {
    out = { ...conf.prevResult, touchedBy: [...(conf.prevResult.touchedBy || []), type] };
  } else {
    out = { cniVersion: conf.cniVersion, interfaces: [{ name: env.CNI_IFNAME, sandbox: env.CNI_NETNS }],
      ips: [{ address: 'fd00::5/64', interface: 0 }, { address: '10.22.0.5/16', interface: 0, gateway: '10.22.0.1' }],
      touchedBy: [type] };
  }
  process.stdout.write(JSON.stringify(out));
}
`;

const PLUGINS = ['bridge', 'host-local', 'portmap', 'loopback'];

interface Env {
  base: string;
  bin: string;
  emptyBin: string;
  confDir: string;
  cacheDir: string;
  calls: () => Promise<Call[]>;
  clearCalls: () => Promise<void>;
  behave: (b: Record<string, unknown>) => Promise<void>;
  manager: (o?: Partial<NetworkManagerOptions>) => Promise<NetworkManager>;
}

async function setup(plugins: readonly string[] = PLUGINS): Promise<Env> {
  const base = await mkdtemp(join(tmpdir(), 'skiff-network-'));
  onTestFinished(() => rm(base, { recursive: true, force: true }));
  const bin = join(base, 'bin');
  const emptyBin = join(base, 'no-bin');
  await mkdir(bin);
  for (const p of plugins) {
    await writeFile(join(bin, p), FAKE_PLUGIN);
    await chmod(join(bin, p), 0o755);
  }
  const log = join(bin, 'calls.log');
  const confDir = join(base, 'net.d');
  const cacheDir = join(base, 'cni');
  return {
    base,
    bin,
    emptyBin,
    confDir,
    cacheDir,
    calls: async () =>
      (await readFile(log, 'utf8').catch(() => ''))
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Call),
    clearCalls: () => rm(log, { force: true }),
    behave: (b) => writeFile(join(bin, 'behavior.json'), JSON.stringify(b)),
    manager: async (o = {}) => {
      const m = new NetworkManager({
        confDir,
        binDirs: [emptyBin, bin],
        cacheDir,
        defaultSubnet: '10.22.0.0/16',
        enabled: true,
        log: silentLogger(),
        bridgeName: 'sktest0',
        ...o,
      });
      await m.init();
      return m;
    },
  };
}

const request = (sandboxId = 'sb1', o: Partial<AttachRequest> = {}): AttachRequest => ({
  sandboxId,
  netnsPath: `/nonexistent/netns/${sandboxId}`,
  podName: 'web-0',
  podNamespace: 'default',
  podUid: 'uid-1',
  portMappings: [
    { protocol: 'tcp', containerPort: 80, hostPort: 8080, hostIp: '127.0.0.1' },
    { protocol: 'tcp', containerPort: 81, hostPort: 0, hostIp: '' },
  ],
  ...o,
});

async function expectError(p: Promise<unknown>, kind: ErrorKind, message: RegExp | string): Promise<void> {
  const err: unknown = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a rejection').toBeDefined();
  expect(isSkiffError(err, kind), `${String(err)} should be ${kind}`).toBe(true);
  if (typeof message === 'string') expect((err as Error).message).toBe(message);
  else expect((err as Error).message).toMatch(message);
}

const summary = (calls: Call[]): string[] => calls.map((c) => `${c.type} ${c.command}`);

async function writeConflist(dir: string, file: string, o: Record<string, unknown>): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, file), JSON.stringify({ cniVersion: '1.0.0', name: 'custom', ...o }));
}

describe('NetworkReady', () => {
  it('is ready with the embedded default when conf_dir does not exist', async () => {
    const env = await setup();
    const m = await env.manager();
    expect(await m.status()).toEqual({
      status: true,
      reason: '',
      message: 'cni network "skiff" from embedded default',
    });
  });

  it('names the missing plugin and every dir searched', async () => {
    const env = await setup(['bridge', 'host-local', 'loopback']);
    const m = await env.manager();
    expect(await m.status()).toEqual({
      status: false,
      reason: 'NetworkPluginNotReady',
      message: `cni plugin "portmap" not found in ${env.emptyBin}, ${env.bin}; install containernetworking-plugins or set [network] bin_dirs`,
    });
  });

  it('requires loopback and the delegated ipam plugin too', async () => {
    for (const missing of ['loopback', 'host-local']) {
      const env = await setup(PLUGINS.filter((p) => p !== missing));
      const st = await (await env.manager()).status();
      expect(st.status).toBe(false);
      expect(st.message).toMatch(new RegExp(`^cni plugin "${missing}" not found in `));
    }
  });

  it('uses the first file in lexical order, wrapping a .conf into a list', async () => {
    const env = await setup();
    await writeConflist(env.confDir, '20-b.conflist', { name: 'second', plugins: [{ type: 'bridge' }] });
    await writeFile(
      join(env.confDir, '10-a.conf'),
      JSON.stringify({ cniVersion: '0.4.0', name: 'first', type: 'bridge' }),
    );
    await writeFile(join(env.confDir, '05-notes.txt'), 'not a config');
    const m = await env.manager();
    expect((await m.status()).message).toBe(`cni network "first" from ${join(env.confDir, '10-a.conf')}`);
  });

  it('reports a parse error naming the file instead of throwing from init', async () => {
    const env = await setup();
    await mkdir(env.confDir);
    await writeFile(join(env.confDir, '00-broken.conflist'), '{"cniVersion": "1.0.0", "name": ');
    await writeConflist(env.confDir, '10-ok.conflist', { plugins: [{ type: 'bridge' }] });
    const m = await env.manager();
    const st = await m.status();
    expect(st.status).toBe(false);
    expect(st.reason).toBe('NetworkPluginNotReady');
    expect(st.message).toMatch(
      new RegExp(
        `^load cni config ${join(env.confDir, '00-broken.conflist').replace(/[.]/g, '\\.')}: invalid JSON`,
      ),
    );
    await expectError(
      m.attach(request()),
      'failed-precondition',
      /^attach network of sandbox "sb1": load cni config .*00-broken/,
    );
    expect(await env.calls()).toEqual([]);
  });

  it('picks up a configuration dropped in later, and an edit in place', async () => {
    const env = await setup();
    const m = await env.manager();
    expect((await m.status()).status).toBe(true);
    await writeConflist(env.confDir, '10-later.conflist', { plugins: [{ type: 'macvlan' }] });
    expect(await m.status()).toMatchObject({
      status: false,
      message: expect.stringMatching(/^cni plugin "macvlan" not found/) as unknown,
    });
    const file = join(env.confDir, '10-later.conflist');
    await writeConflist(env.confDir, '10-later.conflist', { plugins: [{ type: 'portmap' }] });
    await utimes(file, new Date(), new Date(Date.now() + 5000));
    expect(await m.status()).toEqual({
      status: true,
      reason: '',
      message: `cni network "custom" from ${file}`,
    });
    await rm(file);
    expect((await m.status()).message).toBe('cni network "skiff" from embedded default');
  });

  it('is ready with pods on loopback only when networking is disabled', async () => {
    const env = await setup(['loopback']);
    const m = await env.manager({ enabled: false });
    expect(await m.status()).toEqual({ status: true, reason: '', message: DISABLED_MESSAGE });
    const res = await m.attach(request());
    expect(res).toMatchObject({ networkName: '', interfaceName: '', ips: [] });
    expect(summary(await env.calls())).toEqual(['loopback ADD']);
    expect(await m.listCached()).toEqual([]);
    await m.detach({ sandboxId: 'sb1', netnsPath: '' });
    expect(summary(await env.calls())).toEqual(['loopback ADD', 'loopback DEL']);
  });
});

describe("loopback: 'caller' (the namespace arrives with lo up)", () => {
  it('runs no loopback plugin and does not need its binary', async () => {
    const env = await setup(['bridge', 'host-local', 'portmap']);
    const m = await env.manager({ loopback: 'caller' });
    expect((await m.status()).status).toBe(true);
    await m.attach(request());
    expect(summary(await env.calls())).toEqual(['bridge ADD', 'portmap ADD']);
    await m.detach({ sandboxId: 'sb1', netnsPath: '' });
    expect(summary(await env.calls())).toEqual(['bridge ADD', 'portmap ADD', 'portmap DEL', 'bridge DEL']);
    expect(await m.listCached()).toEqual([]);
  });

  it('runs nothing with networking disabled', async () => {
    const env = await setup([]);
    const m = await env.manager({ enabled: false, loopback: 'caller' });
    expect(await m.status()).toEqual({ status: true, reason: '', message: DISABLED_MESSAGE });
    expect(await m.attach(request())).toMatchObject({ networkName: '', ips: [] });
    await m.detach({ sandboxId: 'sb1', netnsPath: '' });
    expect(await env.calls()).toEqual([]);
  });
});

describe('attach', () => {
  it('runs loopback, then each plugin in order with the previous result, and caches the final one', async () => {
    const env = await setup();
    const m = await env.manager();
    const res = await m.attach(request());
    const calls = await env.calls();
    expect(summary(calls)).toEqual(['loopback ADD', 'bridge ADD', 'portmap ADD']);
    const [lo, bridge, portmap] = calls;
    expect(lo).toMatchObject({
      ifName: 'lo',
      netns: '/nonexistent/netns/sb1',
      conf: { cniVersion: '0.3.1', name: 'cni-loopback', type: 'loopback' },
    });
    const args =
      'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=uid-1';
    expect(bridge).toMatchObject({
      containerId: 'sb1',
      ifName: 'eth0',
      args,
      path: `${env.emptyBin}:${env.bin}`,
    });
    expect(bridge?.conf).toMatchObject({
      type: 'bridge',
      name: 'skiff',
      cniVersion: '1.0.0',
      bridge: 'sktest0',
    });
    expect(bridge?.conf).not.toHaveProperty('prevResult');
    expect(bridge?.conf).not.toHaveProperty('runtimeConfig');
    expect(portmap?.conf).toEqual({
      type: 'portmap',
      name: 'skiff',
      cniVersion: '1.0.0',
      runtimeConfig: {
        portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp', hostIP: '127.0.0.1' }],
      },
      prevResult: expect.objectContaining({ touchedBy: ['bridge'] }) as unknown,
    });
    expect(res).toEqual({
      networkName: 'skiff',
      interfaceName: 'eth0',
      ips: ['10.22.0.5', 'fd00::5'],
      result: expect.objectContaining({ touchedBy: ['bridge', 'portmap'] }) as unknown,
    });
    expect(await m.cachedResult('sb1')).toEqual(res);
    expect(await m.listCached()).toEqual(['sb1']);
    const record = JSON.parse(await readFile(join(env.cacheDir, 'results', 'sb1.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    expect(record).toMatchObject({
      version: 1,
      sandboxId: 'sb1',
      ifName: 'eth0',
      cniArgs: args,
      network: { name: 'skiff' },
    });
  });

  it('leaves out runtimeConfig when no mapping publishes a host port', async () => {
    const env = await setup();
    const m = await env.manager();
    await m.attach(
      request('sb1', { portMappings: [{ protocol: 'tcp', containerPort: 80, hostPort: 0, hostIp: '' }] }),
    );
    const portmap = (await env.calls()).find((c) => c.type === 'portmap');
    expect(portmap?.conf).not.toHaveProperty('runtimeConfig');
  });

  it('deletes the whole list in reverse when a later plugin fails, leaving no cache record', async () => {
    const env = await setup();
    await env.behave({
      'portmap:ADD': { cniVersion: '1.0.0', code: 999, msg: 'iptables failed', details: 'exit status 4' },
    });
    const m = await env.manager();
    await expectError(
      m.attach(request()),
      'unknown',
      'cni plugin portmap ADD for sandbox "sb1": iptables failed (exit status 4)',
    );
    const calls = await env.calls();
    expect(summary(calls)).toEqual([
      'loopback ADD',
      'bridge ADD',
      'portmap ADD',
      'portmap DEL',
      'bridge DEL',
    ]);
    const bridgeResult = calls.find((c) => c.type === 'portmap' && c.command === 'ADD')?.conf.prevResult;
    expect(calls[3]?.conf.prevResult).toEqual(bridgeResult);
    expect(calls[3]?.netns).toBe(''); // not a namespace: DEL gets no CNI_NETNS
    expect(await m.listCached()).toEqual([]);
  });

  it('keeps the cache record for recovery when the undo fails too', async () => {
    const env = await setup();
    await env.behave({
      'portmap:ADD': { code: 999, msg: 'add failed' },
      'bridge:DEL': { code: 999, msg: 'del failed' },
    });
    const m = await env.manager();
    await expectError(m.attach(request()), 'unknown', /portmap ADD .*add failed/);
    expect(await m.listCached()).toEqual(['sb1']);
    expect(await m.cachedResult('sb1')).toBeUndefined();
  });

  it('classifies an exhausted pool, a transient error and a timeout', async () => {
    const env = await setup();
    const m = await env.manager({ pluginTimeoutMs: 1500 });
    await env.behave({
      'bridge:ADD': {
        code: 999,
        msg: 'failed to allocate for range 0: no IP addresses available in range set: 10.22.0.1-10.22.0.3',
      },
    });
    await expectError(
      m.attach(request()),
      'resource-exhausted',
      /bridge ADD for sandbox "sb1": failed to allocate/,
    );
    await env.behave({ 'bridge:ADD': { code: 11, msg: 'try again' } });
    await expectError(m.attach(request()), 'unavailable', /try again/);
    await env.behave({ 'bridge:ADD': { sleepMs: 30_000 } });
    await expectError(
      m.attach(request()),
      'deadline-exceeded',
      'cni plugin bridge ADD for sandbox "sb1": timed out after 2s',
    );
    expect(await m.listCached()).toEqual([]);
  });

  it('reports stderr when a plugin prints no error result', async () => {
    const env = await setup();
    await writeFile(join(env.bin, 'bridge'), '#!/bin/sh\necho "panic: boom" >&2\nexit 2\n');
    const m = await env.manager();
    await expectError(
      m.attach(request()),
      'unknown',
      'cni plugin bridge ADD for sandbox "sb1": exited with status 2: panic: boom',
    );
  });

  it('refuses before running anything when a binary is missing', async () => {
    const env = await setup(['bridge', 'host-local', 'loopback']);
    const m = await env.manager();
    await expectError(
      m.attach(request()),
      'failed-precondition',
      `attach network of sandbox "sb1": cni plugin "portmap" not found in ${env.emptyBin}, ${env.bin}; install containernetworking-plugins or set [network] bin_dirs`,
    );
    expect(await env.calls()).toEqual([]);
    expect(await m.listCached()).toEqual([]);
  });

  it('refuses a second attach, and invalid ids and interface names', async () => {
    const env = await setup();
    const m = await env.manager();
    await m.attach(request());
    await expectError(
      m.attach(request()),
      'already-exists',
      'attach network of sandbox "sb1": already attached; detach it first',
    );
    await expectError(
      m.attach(request('../etc')),
      'invalid-argument',
      /sandbox id "..\/etc" is not a valid CNI container ID/,
    );
    await expectError(
      m.attach(request('sb2', { ifName: 'a-very-long-ifname' })),
      'invalid-argument',
      /interface name/,
    );
    await expectError(
      m.attach(
        request('sb2', {
          portMappings: [{ protocol: 'tcp', containerPort: 80, hostPort: 70000, hostIp: '' }],
        }),
      ),
      'invalid-argument',
      /port mapping tcp \*:70000 -> 80 is out of range/,
    );
  });

  it('deletes the leftovers of an attach that never finished before attaching again', async () => {
    const env = await setup();
    const m = await env.manager();
    await m.attach(request());
    const file = join(env.cacheDir, 'results', 'sb1.json');
    const record = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    delete record.result;
    await writeFile(file, JSON.stringify(record));
    expect(await m.listCached()).toEqual(['sb1']);
    expect(await m.cachedResult('sb1')).toBeUndefined();
    await env.clearCalls();
    await m.attach(request());
    expect(summary(await env.calls())).toEqual([
      'portmap DEL',
      'bridge DEL',
      'loopback DEL',
      'loopback ADD',
      'bridge ADD',
      'portmap ADD',
    ]);
  });
});

describe('detach', () => {
  it('deletes with the cached configuration and result even after the configuration changed', async () => {
    const env = await setup();
    const m = await env.manager();
    const attached = await m.attach(request());
    await writeConflist(env.confDir, '10-new.conflist', {
      name: 'newnet',
      plugins: [{ type: 'bridge', bridge: 'other' }],
    });
    expect((await m.status()).message).toMatch(/"newnet"/);
    await env.clearCalls();
    await m.detach({ sandboxId: 'sb1', netnsPath: '/nonexistent/netns/sb1' });
    const calls = await env.calls();
    expect(summary(calls)).toEqual(['portmap DEL', 'bridge DEL', 'loopback DEL']);
    for (const c of calls.slice(0, 2)) {
      expect(c.conf.name).toBe('skiff');
      expect(c.conf.prevResult).toEqual(attached.result);
      expect(c.netns).toBe('');
      expect(c.ifName).toBe('eth0');
    }
    expect(calls[0]?.conf.runtimeConfig).toEqual({
      portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp', hostIP: '127.0.0.1' }],
    });
    expect(calls[1]?.conf.bridge).toBe('sktest0');
    expect(await m.listCached()).toEqual([]);
    expect(await readdir(join(env.cacheDir, 'results'))).toEqual([]);
  });

  it('is idempotent: without a record it deletes with the current configuration', async () => {
    const env = await setup();
    const m = await env.manager();
    await m.detach({ sandboxId: 'never', netnsPath: '' });
    await m.detach({ sandboxId: 'never', netnsPath: '' });
    const calls = await env.calls();
    expect(summary(calls)).toEqual([
      'portmap DEL',
      'bridge DEL',
      'loopback DEL',
      'portmap DEL',
      'bridge DEL',
      'loopback DEL',
    ]);
    expect(calls[0]?.conf).not.toHaveProperty('prevResult');
    expect(calls[0]?.args).toBe('IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID=never');
  });

  it('throws a plugin error and keeps the record so detach can be retried; "container unknown" is success', async () => {
    const env = await setup();
    const m = await env.manager();
    await m.attach(request());
    await env.behave({ 'portmap:DEL': { code: 999, msg: 'iptables is locked' } });
    await env.clearCalls();
    await expectError(
      m.detach({ sandboxId: 'sb1', netnsPath: '' }),
      'unknown',
      'cni plugin portmap DEL for sandbox "sb1": iptables is locked',
    );
    // halts at the first error (SPEC §3): the lease is not released while the port rules may remain
    expect(summary(await env.calls())).toEqual(['portmap DEL']);
    expect(await m.listCached()).toEqual(['sb1']);
    await env.behave({ 'portmap:DEL': { code: 3, msg: 'container unknown' } });
    await m.detach({ sandboxId: 'sb1', netnsPath: '' });
    expect(await m.listCached()).toEqual([]);
  });

  it('refuses a record of an unknown version, naming the file', async () => {
    const env = await setup();
    const m = await env.manager();
    await mkdir(join(env.cacheDir, 'results'), { recursive: true });
    const file = join(env.cacheDir, 'results', 'sb9.json');
    await writeFile(file, JSON.stringify({ version: 2 }));
    await expectError(
      m.detach({ sandboxId: 'sb9', netnsPath: '' }),
      'failed-precondition',
      `detach network of sandbox "sb9": load cni cache ${file}: unknown version 2 (this skiff reads version 1)`,
    );
  });

  it('deletes with the current configuration when the record is torn', async () => {
    const env = await setup();
    const m = await env.manager();
    await mkdir(join(env.cacheDir, 'results'), { recursive: true });
    await writeFile(join(env.cacheDir, 'results', 'sb9.json'), '{"version": 1, "sandb');
    await m.detach({ sandboxId: 'sb9', netnsPath: '' });
    expect(summary(await env.calls())).toEqual(['portmap DEL', 'bridge DEL', 'loopback DEL']);
    expect(await m.listCached()).toEqual([]);
  });
});

describe('check', () => {
  it('runs CHECK in order with the cached result', async () => {
    const env = await setup();
    const m = await env.manager();
    const attached = await m.attach(request());
    await env.clearCalls();
    await m.check({ sandboxId: 'sb1', netnsPath: '' });
    const calls = await env.calls();
    expect(summary(calls)).toEqual(['bridge CHECK', 'portmap CHECK']);
    expect(calls.every((c) => JSON.stringify(c.conf.prevResult) === JSON.stringify(attached.result))).toBe(
      true,
    );
    expect(calls[0]?.netns).toBe('/nonexistent/netns/sb1');
  });

  it('fails with the plugin error', async () => {
    const env = await setup();
    const m = await env.manager();
    await m.attach(request());
    await env.behave({ 'bridge:CHECK': { code: 999, msg: 'eth0 is missing' } });
    await expectError(
      m.check({ sandboxId: 'sb1', netnsPath: '' }),
      'unknown',
      'cni plugin bridge CHECK for sandbox "sb1": eth0 is missing',
    );
  });

  it('runs nothing when the list disables CHECK or predates it', async () => {
    for (const o of [{ disableCheck: true }, { cniVersion: '0.3.1' }]) {
      const env = await setup();
      await writeConflist(env.confDir, 'x.conflist', { plugins: [{ type: 'bridge' }], ...o });
      const m = await env.manager();
      await m.attach(request());
      await env.clearCalls();
      await m.check({ sandboxId: 'sb1', netnsPath: '' });
      expect(await env.calls()).toEqual([]);
    }
  });

  it('is not-found for a sandbox that is not attached', async () => {
    const env = await setup();
    const m = await env.manager();
    await expectError(
      m.check({ sandboxId: 'nope', netnsPath: '' }),
      'not-found',
      /^check network of sandbox "nope": no cached cni result/,
    );
  });
});

describe('init', () => {
  it('removes temp files of an interrupted cache write', async () => {
    const env = await setup();
    await mkdir(join(env.cacheDir, 'results'), { recursive: true });
    await writeFile(join(env.cacheDir, 'results', '.sb1.json.tmp-abcdef'), '{');
    const m = await env.manager();
    expect(await readdir(join(env.cacheDir, 'results'))).toEqual([]);
    expect(await m.listCached()).toEqual([]);
  });
});
