import { describe, it, expect } from 'vitest';
import { ConfigError, parseConfig } from '../../../src/config/index.js';

const file = '/tmp/bad.toml';

/** The ConfigError that parsing `text` as `file` throws. */
function errorOf(text: string, name: string | null = file): ConfigError {
  try {
    parseConfig(text, name ?? undefined);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('validation messages', () => {
  it.each([
    // Enums
    ['log.level = "verbose"', 'key "log.level": expected one of debug, info, warn, error; found "verbose"'],
    ['[log]\nformat = 1', 'key "log.format": expected one of auto, json, text; found an integer (1)'],
    ['cgroup_driver = "Systemd"', 'key "cgroup_driver": expected one of cgroupfs, systemd; found "Systemd"'],
    // Unknown keys, with and without a suggestion
    ['[grpc]\nadress = "/x.sock"', 'key "grpc.adress": unknown key; did you mean "grpc.address"?'],
    ['[grcp]\naddress = "/x.sock"', 'key "grcp": unknown key; did you mean "grpc"?'],
    ['[grpc]\nfoo = 1', 'key "grpc.foo": unknown key'],
    ['[grpc]\nport = 1', 'key "grpc.port": unknown key; did you mean "stream.port"?'],
    ['address = "/x.sock"', 'key "address": unknown key'],
    [
      '[registries.registry.k8s.io]\nmirrors = []',
      'key "registries.registry.k8s": unknown key; a name containing "." must be quoted, as in [registries."registry.k8s.io"]',
    ],
    ['[runtimes.runc.options]\nfoo = 1', 'key "runtimes.runc.options": unknown key'],
    ['nonsense = true', 'key "nonsense": unknown key'],
    ['level = "debug"', 'key "level": unknown key; did you mean "log.level"?'],
    [
      '[runtimes.runc]\nbinaryPath = "x"',
      'key "runtimes.runc.binaryPath": unknown key; did you mean "runtimes.runc.binary_path"?',
    ],
    ['[runtimes.kata]\nruntime_type = "x"', 'key "runtimes.kata.runtime_type": unknown key'],
    [
      '[registries.docker.io]\nmirrors = []',
      'key "registries.docker.io": unknown key; a name containing "." must be quoted, as in [registries."docker.io"]',
    ],
    // Integers
    ['[stream]\nport = 70000', 'key "stream.port": expected an integer from 0 to 65535; found 70000'],
    ['[stream]\nport = -1', 'key "stream.port": expected an integer from 0 to 65535; found -1'],
    [
      '[stream]\nport = 8080.0',
      'key "stream.port": expected an integer from 0 to 65535; found a float (8080.0)',
    ],
    [
      '[stream]\nport = "8080"',
      'key "stream.port": expected an integer from 0 to 65535; found a string ("8080")',
    ],
    [
      '[images]\nmax_concurrent_downloads = 0',
      'key "images.max_concurrent_downloads": expected an integer from 1 to 64; found 0',
    ],
    [
      '[images]\nprogress_min_bytes_per_second = -5',
      'key "images.progress_min_bytes_per_second": expected an integer of at least 0; found -5',
    ],
    [
      '[grpc]\nmax_send_message_size = 99999999999999999999',
      'key "grpc.max_send_message_size": expected an integer from 1 to 2147483647; found 99999999999999999999',
    ],
    // Strings and paths
    ['root = 5', 'key "root": expected an absolute path; found an integer (5)'],
    ['root = "var/lib/skiff"', 'key "root": expected an absolute path; found "var/lib/skiff"'],
    ['root = ""', 'key "root": expected an absolute path; found ""'],
    ['[images]\nsandbox_image = 5', 'key "images.sandbox_image": expected a string; found an integer (5)'],
    ['[stream]\naddress = ""', 'key "stream.address": expected a non-empty string; found ""'],
    [
      '[stream]\ntls_cert_file = "cert.pem"\ntls_key_file = "/k"',
      'key "stream.tls_cert_file": expected an absolute path or ""; found "cert.pem"',
    ],
    [
      'state = 1979-05-27T07:32:00Z',
      'key "state": expected an absolute path; found a date-time (1979-05-27T07:32:00.000Z)',
    ],
    // Booleans
    [
      '[network]\nenabled = "yes"',
      'key "network.enabled": expected a boolean (true or false); found a string ("yes")',
    ],
    // Durations
    [
      '[stream]\nidle_timeout = "4 hours"',
      'key "stream.idle_timeout": expected a duration such as "30s", "5m", "4h" or "1m30s" (units h, m, s, ms); found "4 hours"',
    ],
    [
      '[stream]\nidle_timeout = 30',
      'key "stream.idle_timeout": expected a duration such as "30s", "5m", "4h" or "1m30s" (units h, m, s, ms); found an integer (30)',
    ],
    [
      '[stream]\ntoken_ttl = "5d"',
      'key "stream.token_ttl": expected a duration such as "30s", "5m", "4h" or "1m30s" (units h, m, s, ms); found "5d"',
    ],
    ['[stream]\ntoken_ttl = "0s"', 'key "stream.token_ttl": expected a duration of at least 1ms; found "0s"'],
    [
      '[images]\nprogress_timeout = "720h"',
      'key "images.progress_timeout": expected a duration of at most 596h31m23s647ms; found "720h"',
    ],
    // Arrays
    [
      '[network]\nbin_dirs = "/opt/cni/bin"',
      'key "network.bin_dirs": expected an array of absolute paths; found a string ("/opt/cni/bin")',
    ],
    [
      '[network]\nbin_dirs = ["/opt/cni/bin", "cni"]',
      'key "network.bin_dirs[1]": expected an absolute path; found "cni"',
    ],
    [
      '[runtimes.runsc]\nextra_args = ["--network=host", 1]',
      'key "runtimes.runsc.extra_args[1]": expected a non-empty string; found an integer (1)',
    ],
    [
      '[registries."docker.io"]\nmirrors = ["127.0.0.1:5000"]',
      'key "registries."docker.io".mirrors[0]": expected an http:// or https:// URL such as "http://127.0.0.1:5000"; found "127.0.0.1:5000"',
    ],
    // Special strings
    [
      '[grpc]\naddress = "tcp://0.0.0.0:1234"',
      'key "grpc.address": expected a unix socket path such as "/run/skiff/skiff.sock" or "unix:///run/skiff/skiff.sock"; found "tcp://0.0.0.0:1234"',
    ],
    [
      '[grpc]\naddress = "skiff.sock"',
      'key "grpc.address": expected a unix socket path such as "/run/skiff/skiff.sock" or "unix:///run/skiff/skiff.sock"; found "skiff.sock"',
    ],
    [
      `[grpc]\naddress = "/${'x'.repeat(120)}"`,
      `key "grpc.address": expected a unix socket path of at most 107 bytes; found "/${'x'.repeat(120)}"`,
    ],
    [
      '[network]\ndefault_subnet = "10.88.0.0"',
      'key "network.default_subnet": expected a subnet in CIDR notation such as "10.88.0.0/16"; found "10.88.0.0"',
    ],
    [
      '[network]\ndefault_subnet = "10.88.0.0/33"',
      'key "network.default_subnet": expected a subnet in CIDR notation such as "10.88.0.0/16"; found "10.88.0.0/33"',
    ],
    // Tables and map entries
    ['grpc = 5', 'key "grpc": expected a table; found an integer (5)'],
    ['runtimes = []', 'key "runtimes": expected a table; found an array'],
    ['[runtimes]\nrunc = "runc"', 'key "runtimes.runc": expected a table; found a string ("runc")'],
    [
      '[runtimes.Kata_QEMU]\nbinary_path = "kata"',
      'key "runtimes.Kata_QEMU": expected a handler name of lowercase letters, digits and "-" (a DNS label, as RuntimeClass.handler must be); found "Kata_QEMU"',
    ],
    [
      '[registries."https://docker.io"]\ninsecure = true',
      'key "registries."https://docker.io"": expected a registry host such as "docker.io" or "127.0.0.1:5000" (no scheme or path); found "https://docker.io"',
    ],
    // Checks across keys
    [
      '[runtime]\ndefault_runtime_handler = "kata"',
      'key "runtime.default_runtime_handler": expected one of the configured runtime handlers (runc, runsc); found "kata"',
    ],
    [
      '[stream]\ntls_cert_file = "/etc/skiff/tls.crt"',
      'key "stream.tls_key_file": expected a file since stream.tls_cert_file is set; found ""',
    ],
    [
      '[stream]\ntls_key_file = "/etc/skiff/tls.key"',
      'key "stream.tls_cert_file": expected a file since stream.tls_key_file is set; found ""',
    ],
  ])('%j', (text, message) => {
    const err = errorOf(text);
    expect(err.message).toBe(`${file}: ${message}`);
    expect(err.problems).toHaveLength(1);
  });
});

describe('ConfigError', () => {
  it('carries file, key path and exit status', () => {
    const err = errorOf('[log]\nlevel = "verbose"\n');
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('ConfigError');
    expect(err.file).toBe(file);
    expect(err.keyPath).toBe('log.level');
    expect(err.exitCode).toBe(2);
  });

  it('has no file prefix when parsing text without a file', () => {
    const err = errorOf('root = 5', null);
    expect(err.message).toBe('key "root": expected an absolute path; found an integer (5)');
    expect(err.file).toBeUndefined();
  });

  it('reports every problem, one per line, in file order', () => {
    const err = errorOf(`
root = "relative"
[grpc]
adress = "/x.sock"
[stream]
port = 70000
[runtimes.kata]
binaryPath = "kata-runtime"
[runtime]
default_runtime_handler = "crun"
`);
    expect(err.message.split('\n')).toEqual([
      `${file}: key "root": expected an absolute path; found "relative"`,
      `${file}: key "grpc.adress": unknown key; did you mean "grpc.address"?`,
      `${file}: key "stream.port": expected an integer from 0 to 65535; found 70000`,
      `${file}: key "runtimes.kata.binaryPath": unknown key; did you mean "runtimes.kata.binary_path"?`,
      `${file}: key "runtime.default_runtime_handler": expected one of the configured runtime handlers (runc, runsc, kata); found "crun"`,
    ]);
    expect(err.keyPath).toBe('root');
    expect(err.problems.map((p) => p.keyPath)).toEqual([
      'root',
      'grpc.adress',
      'stream.port',
      'runtimes.kata.binaryPath',
      'runtime.default_runtime_handler',
    ]);
  });

  it('reports every bad element of an array', () => {
    const err = errorOf('[network]\nbin_dirs = ["a", "/ok", "b"]\n');
    expect(err.problems.map((p) => p.keyPath)).toEqual(['network.bin_dirs[0]', 'network.bin_dirs[2]']);
  });

  it('does not judge a cross-key check by the default of a key that had a problem', () => {
    const err = errorOf('[stream]\ntls_cert_file = "cert.pem"\ntls_key_file = "/etc/skiff/tls.key"\n');
    expect(err.problems.map((p) => p.keyPath)).toEqual(['stream.tls_cert_file']);
  });

  it('does not add a cross-key problem for a handler whose entry has other problems', () => {
    const err = errorOf('[runtime]\ndefault_runtime_handler = "kata"\n[runtimes.kata]\nroot = "rel"\n');
    expect(err.problems.map((p) => p.keyPath)).toEqual(['runtimes.kata.root']);
  });
});

describe('TOML syntax errors', () => {
  it.each([
    ['[log]\nlevel = \n', 2, 9, 'invalid value'],
    [
      '[log]\nlevel = "info"\nlevel = "debug"\n',
      3,
      1,
      'trying to redefine an already defined table or value',
    ],
    ['[log\nlevel = "info"\n', 1, 5, ''],
    ['[runtimes.__proto__]\nbinary_path = "x"\n', 1, 2, 'document contains an unsafe property'],
  ])('%j names the file, line and column', (text, line, column, what) => {
    const err = errorOf(text);
    const [first = '', ...excerpt] = err.message.split('\n');
    expect(first).toMatch(new RegExp(`^/tmp/bad\\.toml:${line}:${column}: invalid TOML: `));
    expect(first).toContain(what);
    expect(excerpt.join('\n')).toContain('^');
    expect(err.keyPath).toBeUndefined();
    expect(err.exitCode).toBe(2);
  });

  it('names line and column without a file', () => {
    expect(errorOf('a = ', null).message).toMatch(/^line 1, column 5: invalid TOML: /);
  });
});
