import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, DEFAULT_CONFIG_PATH, defaultConfig, loadConfig } from '../../../src/config/index.js';
import { loadConfigFrom } from '../../../src/config/load.js';

let dir = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'skiff-config-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('loadConfig', () => {
  it('defaults to /etc/skiff/config.toml', () => {
    expect(DEFAULT_CONFIG_PATH).toBe('/etc/skiff/config.toml');
  });

  it('uses the built-in defaults when the default file is missing', async () => {
    const result = await loadConfigFrom(undefined, join(dir, 'absent', 'config.toml'));
    expect(result).toEqual({ config: defaultConfig(), source: 'built-in defaults' });
  });

  it('reads the default file when it exists', async () => {
    const path = join(dir, 'default.toml');
    await writeFile(path, '[log]\nlevel = "debug"\n');
    const result = await loadConfigFrom(undefined, path);
    expect(result.source).toBe(path);
    expect(result.config.log.level).toBe('debug');
  });

  it('reads an explicit file in preference to the default one', async () => {
    const path = join(dir, 'explicit.toml');
    await writeFile(path, 'cgroup_driver = "systemd"\n');
    const result = await loadConfigFrom(path, join(dir, 'default.toml'));
    expect(result.source).toBe(path);
    expect(result.config.cgroup_driver).toBe('systemd');
    expect(result.config.log.level).toBe('info');
    const viaPublic = await loadConfig(path);
    expect(viaPublic).toEqual(result);
  });

  it('fails naming an explicit file that is missing', async () => {
    const path = join(dir, 'missing.toml');
    const err = await loadConfig(path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toBe(`${path}: config file not found`);
    expect((err as ConfigError).file).toBe(path);
    expect((err as ConfigError).exitCode).toBe(2);
  });

  it('fails on a default path that cannot be read as a file', async () => {
    const path = join(dir, 'a-directory');
    await mkdir(path);
    const err = await loadConfigFrom(undefined, path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toBe(
      `${path}: cannot read config file: EISDIR: illegal operation on a directory, read`,
    );
    expect((err as ConfigError).file).toBe(path);
  });

  it.skipIf(process.getuid?.() === 0)('fails on an unreadable file', async () => {
    const path = join(dir, 'unreadable.toml');
    await writeFile(path, '');
    await chmod(path, 0o000);
    await expect(loadConfigFrom(path, path)).rejects.toThrow(/cannot read config file: EACCES/);
  });

  it('names the file in validation errors', async () => {
    const path = join(dir, 'bad.toml');
    await writeFile(path, '[log]\nlevel = "verbose"\n');
    await expect(loadConfigFrom(path, path)).rejects.toThrow(
      `${path}: key "log.level": expected one of debug, info, warn, error; found "verbose"`,
    );
  });

  it('names the file, line and column in syntax errors', async () => {
    const path = join(dir, 'syntax.toml');
    await writeFile(path, 'root = "/srv"\n[log\n');
    await expect(loadConfigFrom(path, path)).rejects.toThrow(`${path}:2:`);
  });
});
