import { status } from '@grpc/grpc-js';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { CgroupDriver } from '../../src/cri/gen/runtime/v1/api.js';
import { isServiceError } from '../fixtures/cri-client.js';
import { repoRoot, skiffBin, startChildDaemon, type TestDaemon } from '../fixtures/daemon.js';

const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };

async function daemon(options: Parameters<typeof startChildDaemon>[0] = {}): Promise<TestDaemon> {
  const d = await startChildDaemon(options);
  onTestFinished(async () => {
    await d.stop();
  });
  return d;
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-e2e-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('skiff serve', () => {
  it('answers Version with skiff, the package version and CRI v1', async () => {
    const d = await daemon();
    expect(await d.cri.runtime.version({ version: '' })).toEqual({
      version: '0.1.0',
      runtimeName: 'skiff',
      runtimeVersion: pkg.version,
      runtimeApiVersion: 'v1',
    });
  });

  it('reports conditions, handlers, features and (verbose) the effective config in Status', async () => {
    const d = await daemon();
    const res = await d.cri.runtime.status({ verbose: true });
    const conditions = Object.fromEntries((res.status?.conditions ?? []).map((c) => [c.type, c]));
    // runc and the CNI plugins are installed by host-setup; with no CNI config, the embedded default serves.
    expect(conditions.RuntimeReady).toMatchObject({ status: true });
    expect(conditions.NetworkReady).toMatchObject({ status: true });
    expect(res.runtimeHandlers.map((h) => h.name).sort()).toEqual(['', 'runc', 'runsc']);
    for (const h of res.runtimeHandlers) expect(h.features?.userNamespaces).toBe(false);
    expect(res.features).toEqual({ supplementalGroupsPolicy: false, userNamespacesHostNetwork: false });
    const config = JSON.parse(res.info.config ?? 'null') as Record<string, unknown>;
    expect(config.root).toBe(d.root);
    expect(config.state).toBe(d.state);
    expect((config.grpc as { address: string }).address).toBe(d.socketPath);

    const quiet = await d.cri.runtime.status({ verbose: false });
    expect(quiet.info).toEqual({});
  });

  it('reports RuntimeReady false naming the binary when the default handler is not installed', async () => {
    const d = await daemon({
      extraToml:
        '[runtime]\ndefault_runtime_handler = "ghost"\n[runtimes.ghost]\nbinary_path = "/nonexistent/ghost-runtime"\n',
    });
    const res = await d.cri.runtime.status({ verbose: false });
    const ready = res.status?.conditions.find((c) => c.type === 'RuntimeReady');
    expect(ready).toMatchObject({ status: false, reason: 'RuntimeBinaryNotFound' });
    expect(ready?.message).toContain('/nonexistent/ghost-runtime');
  });

  it('reports NetworkReady false naming the missing CNI plugin and the dirs searched', async () => {
    const empty = await tempDir();
    const d = await daemon({ extraToml: `[network]\nbin_dirs = ["${empty}"]\n` });
    const res = await d.cri.runtime.status({ verbose: false });
    const net = res.status?.conditions.find((c) => c.type === 'NetworkReady');
    expect(net).toMatchObject({ status: false, reason: 'NetworkPluginNotReady' });
    expect(net?.message).toContain('"bridge"');
    expect(net?.message).toContain(empty);
  });

  it('reports the configured cgroup driver in RuntimeConfig', async () => {
    const fs = await daemon();
    expect((await fs.cri.runtime.runtimeConfig({})).linux?.cgroupDriver).toBe(CgroupDriver.CGROUPFS);
    const sd = await daemon({ extraToml: 'cgroup_driver = "systemd"\n' });
    expect((await sd.cri.runtime.runtimeConfig({})).linux?.cgroupDriver).toBe(CgroupDriver.SYSTEMD);
  });

  it('answers UNIMPLEMENTED naming the RPC for calls not built (CheckpointContainer), and keeps serving', async () => {
    const d = await daemon();
    for (const call of [
      () => d.cri.runtime.checkpointContainer({ containerId: 'x', location: '/tmp/x', timeout: 1n }),
    ]) {
      const err: unknown = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isServiceError(err) && err.code).toBe(status.UNIMPLEMENTED);
    }
    const err = await d.cri.runtime
      .checkpointContainer({ containerId: 'x', location: '/tmp/x', timeout: 1n })
      .catch((e: unknown) => e);
    expect(isServiceError(err) && err.details).toMatch(/CheckpointContainer is not implemented/);
    expect((await d.cri.runtime.version({ version: '' })).runtimeName).toBe('skiff');
  });

  it('creates the socket dir, makes the socket 0660, and removes it on SIGTERM with exit 0', async () => {
    const dir = await tempDir();
    const socketPath = join(dir, 'deep', 'er', 'skiff.sock');
    const d = await daemon({ socketPath });
    expect(((await stat(socketPath)).mode & 0o777).toString(8)).toBe('660');
    expect(await d.stop()).toBe(0);
    expect(existsSync(socketPath)).toBe(false);
    expect(alive(d.pid)).toBe(false);
    expect(d.logs()).toContain('skiff stopped');
  });

  it('replaces a stale socket left by a killed daemon, and refuses a live one', async () => {
    const dir = await tempDir();
    const first = await daemon({ dir });
    process.kill(first.pid, 'SIGKILL');
    await first.stop();
    expect(existsSync(first.socketPath)).toBe(true);

    const second = await daemon({ dir });
    expect((await second.cri.runtime.version({ version: '' })).runtimeName).toBe('skiff');

    const third = spawnSync(process.execPath, [skiffBin, 'serve', '--config', second.configPath], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(third.status).toBe(1);
    expect(third.stderr).toContain(`another daemon is serving on this socket`);
    expect(third.stderr).toContain(second.socketPath);
    // The refused daemon did not take the socket away from the live one.
    expect((await second.cri.runtime.version({ version: '' })).runtimeName).toBe('skiff');
  });

  it('logs JSON lines with the RPC, its duration and code at debug level', async () => {
    const d = await daemon();
    await d.cri.runtime.version({ version: '' });
    await d.cri.runtime.stopPodSandbox({ podSandboxId: 'x' }).catch(() => undefined);
    await d.stop();
    const lines = d
      .logs()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.find((l) => l.rpc === 'Version')).toMatchObject({
      msg: 'rpc done',
      level: 'debug',
      code: 'OK',
    });
    expect(lines.find((l) => l.rpc === 'StopPodSandbox')).toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('skiff config', () => {
  function skiff(...args: string[]) {
    return spawnSync(process.execPath, [skiffBin, ...args], { encoding: 'utf8', timeout: 20_000 });
  }

  it('prints a default config that `config check` accepts and that equals config.toml.example', async () => {
    const out = skiff('config', 'default');
    expect(out.status).toBe(0);
    expect(out.stdout).toBe(readFileSync(join(repoRoot, 'config.toml.example'), 'utf8'));
    const file = join(await tempDir(), 'default.toml');
    await writeFile(file, out.stdout);
    const check = skiff('config', 'check', file);
    expect(check.status).toBe(0);
  });

  it.each([
    ['an unknown key', '[grpc]\nadress = "/tmp/x.sock"\n', /grpc\.adress.*did you mean "grpc\.address"/],
    ['a wrong type', 'root = 5\n', /"root": expected/],
    ['a bad enum value', '[log]\nlevel = "verbose"\n', /"log\.level".*"verbose"/],
  ])('exits 2 naming the key for %s, in check and in serve', async (_what, toml, pattern) => {
    const file = join(await tempDir(), 'bad.toml');
    await writeFile(file, toml);
    for (const args of [
      ['config', 'check', file],
      ['serve', '--config', file],
    ]) {
      const res = skiff(...args);
      expect(res.status).toBe(2);
      expect(res.stderr).toContain(file);
      expect(res.stderr).toMatch(pattern);
    }
  });

  it('exits 2 when an explicitly named config file does not exist', () => {
    const res = skiff('serve', '--config', '/nonexistent/skiff.toml');
    expect(res.status).toBe(2);
    expect(res.stderr).toContain('/nonexistent/skiff.toml');
  });

  it('prints its version', () => {
    expect(skiff('--version').stdout.trim()).toBe(`skiff ${pkg.version}`);
  });
});
