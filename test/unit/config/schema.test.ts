import { describe, it, expect } from 'vitest';
import { parse } from 'smol-toml';
import {
  type Config,
  configToJSON,
  defaultConfig,
  parseConfig,
  renderDefaultConfig,
} from '../../../src/config/index.js';
import { configRows } from '../../../src/config/keys.js';
import { renderConfigReference } from '../../../src/config/render.js';
import { compileSchema, key, mapOf, section } from '../../../src/config/schema.js';
import { int, str } from '../../../src/config/value-types.js';

/**
 * The defaults written out by hand against the Config type: the type checker rejects a missing or
 * extra field, and the deep-equal rejects a schema default that differs, so type and schema agree.
 */
const expectedDefaults: Config = {
  root: '/var/lib/skiff',
  state: '/run/skiff',
  cgroup_driver: 'cgroupfs',
  grpc: {
    address: '/run/skiff/skiff.sock',
    max_recv_message_size: 16777216,
    max_send_message_size: 16777216,
  },
  log: { level: 'info', format: 'auto' },
  runtime: { default_runtime_handler: 'runc' },
  runtimes: {
    runc: {
      binary_path: 'runc',
      extra_args: [],
      root: '',
      monitor_path: 'conmon',
      privileged_without_host_devices: false,
    },
    runsc: {
      binary_path: 'runsc',
      extra_args: ['--network=host'],
      root: '',
      monitor_path: 'conmon',
      privileged_without_host_devices: false,
    },
  },
  network: {
    conf_dir: '/etc/cni/net.d',
    bin_dirs: ['/opt/cni/bin', '/usr/lib/cni'],
    default_subnet: '10.88.0.0/16',
    bridge_name: 'skiff0',
    enabled: true,
  },
  stream: {
    address: '127.0.0.1',
    port: 0,
    tls_cert_file: '',
    tls_key_file: '',
    idle_timeout: 14_400_000,
    token_ttl: 60_000,
  },
  sandbox: { shm_size: 67108864, start_concurrency: 0 },
  images: {
    sandbox_image: '',
    max_concurrent_downloads: 3,
    progress_timeout: 300_000,
    progress_min_bytes_per_second: 1024,
    pinned_images: [],
  },
  registries: {},
};

describe('defaults', () => {
  it('agree with the Config type', () => {
    expect(defaultConfig()).toStrictEqual(expectedDefaults);
  });

  it('are a fresh deep copy each time', () => {
    const a = defaultConfig();
    a.network.bin_dirs.push('/elsewhere');
    a.runtimes['runsc']!.extra_args.push('--debug');
    a.log.level = 'debug';
    expect(defaultConfig()).toStrictEqual(expectedDefaults);
  });

  it('are what an empty file gives', () => {
    expect(parseConfig('')).toStrictEqual(expectedDefaults);
    expect(parseConfig('# nothing but a comment\n')).toStrictEqual(expectedDefaults);
  });
});

describe('renderDefaultConfig', () => {
  const text = renderDefaultConfig();

  it('parses back to the defaults', () => {
    expect(parseConfig(text)).toStrictEqual(defaultConfig());
  });

  it('is plain valid TOML with the file shape', () => {
    const raw = parse(text);
    expect(Object.keys(raw)).toEqual([
      'root',
      'state',
      'cgroup_driver',
      'grpc',
      'log',
      'runtime',
      'runtimes',
      'network',
      'stream',
      'sandbox',
      'images',
    ]);
    expect(raw['stream']).toMatchObject({ idle_timeout: '4h', token_ttl: '1m' });
  });

  it('documents every key right above it', () => {
    const lines = text.split('\n');
    for (const [i, line] of lines.entries()) {
      if (/^[a-z_]+ = /.test(line)) expect(lines[i - 1], `doc above ${line}`).toMatch(/^# \S/);
    }
    expect(text).toContain('# Persistent data: image blobs and layers');
    expect(text).toMatch(/# .*netstack.*\n(#.*\n)*extra_args = \[\]/);
  });

  it('renders sections in schema order with map entries as tables', () => {
    const headers = text.split('\n').filter((line) => line.startsWith('['));
    expect(headers).toEqual([
      '[grpc]',
      '[log]',
      '[runtime]',
      '[runtimes.runc]',
      '[runtimes.runsc]',
      '[network]',
      '[stream]',
      '[sandbox]',
      '[images]',
    ]);
    expect(text).toContain('extra_args = ["--network=host"]');
  });

  it('shows an empty map as a commented-out example', () => {
    expect(text).toContain('# [registries."docker.io"]\n');
    expect(text).toContain('# fallback_to_upstream = true\n');
    expect(text.endsWith('fallback_to_upstream = true\n')).toBe(true);
  });

  it('wraps comments to 100 columns', () => {
    for (const line of text.split('\n')) {
      if (line.startsWith('# ') && !line.startsWith('# #')) expect(line.length).toBeLessThanOrEqual(100);
    }
  });
});

describe('parseConfig merging', () => {
  it('keeps defaults for keys a partial file leaves out', () => {
    const config = parseConfig('[log]\nlevel = "debug"\n');
    expect(config).toStrictEqual({ ...expectedDefaults, log: { level: 'debug', format: 'auto' } });
  });

  it('sets every kind of value', () => {
    const config = parseConfig(`
root = "/srv/skiff"
cgroup_driver = "systemd"
[grpc]
max_recv_message_size = 1024
[network]
bin_dirs = ["/usr/libexec/cni"]
enabled = false
[stream]
port = 10010
idle_timeout = "1m30s"
token_ttl = "250ms"
`);
    expect(config.root).toBe('/srv/skiff');
    expect(config.state).toBe('/run/skiff');
    expect(config.cgroup_driver).toBe('systemd');
    expect(config.grpc).toEqual({ ...expectedDefaults.grpc, max_recv_message_size: 1024 });
    expect(config.network).toEqual({
      ...expectedDefaults.network,
      bin_dirs: ['/usr/libexec/cni'],
      enabled: false,
    });
    expect(config.stream).toMatchObject({ port: 10010, idle_timeout: 90_000, token_ttl: 250 });
  });

  it('adds map entries to the built-in ones, missing keys taking sub-schema defaults', () => {
    const config = parseConfig(`
[runtime]
default_runtime_handler = "kata"
[runtimes.kata]
binary_path = "/usr/bin/kata-runtime"
privileged_without_host_devices = true
`);
    expect(Object.keys(config.runtimes)).toEqual(['runc', 'runsc', 'kata']);
    expect(config.runtimes['runc']).toEqual(expectedDefaults.runtimes['runc']);
    expect(config.runtimes['kata']).toEqual({
      binary_path: '/usr/bin/kata-runtime',
      extra_args: [],
      root: '',
      monitor_path: 'conmon',
      privileged_without_host_devices: true,
    });
    expect(config.runtime.default_runtime_handler).toBe('kata');
  });

  it('merges an entry named like a built-in one over it key by key', () => {
    const config = parseConfig('[runtimes.runsc]\nbinary_path = "/opt/gvisor/runsc"\n');
    expect(config.runtimes['runsc']).toEqual({
      ...expectedDefaults.runtimes['runsc'],
      binary_path: '/opt/gvisor/runsc',
    });
    expect(parseConfig('[runtimes.runsc]\nextra_args = []\n').runtimes['runsc']!.extra_args).toEqual([]);
  });

  it('accepts dotted keys and inline tables', () => {
    const config = parseConfig('runtimes.crun = { binary_path = "crun" }\nlog.level = "warn"\n');
    expect(config.runtimes['crun']!.binary_path).toBe('crun');
    expect(config.log.level).toBe('warn');
  });

  it('reads registry tables keyed by quoted host', () => {
    const config = parseConfig(`
[registries."docker.io"]
mirrors = ["http://127.0.0.1:5000", "https://mirror.example.com/v2"]
[registries."127.0.0.1:5000"]
insecure = true
fallback_to_upstream = false
[registries.localhost]
skip_verify = true
`);
    expect(Object.keys(config.registries)).toEqual(['docker.io', '127.0.0.1:5000', 'localhost']);
    expect(config.registries['docker.io']).toEqual({
      mirrors: ['http://127.0.0.1:5000', 'https://mirror.example.com/v2'],
      insecure: false,
      ca_file: '',
      skip_verify: false,
      username: '',
      password: '',
      auth: '',
      identity_token: '',
      fallback_to_upstream: true,
    });
    expect(config.registries['127.0.0.1:5000']).toMatchObject({
      insecure: true,
      fallback_to_upstream: false,
    });
    expect(config.registries['localhost']!.skip_verify).toBe(true);
  });

  it('ignores a byte-order mark', () => {
    expect(parseConfig('\uFEFF[log]\nlevel = "warn"\n').log.level).toBe('warn');
  });
});

describe('grpc.address', () => {
  it.each([
    ['/run/skiff/skiff.sock', '/run/skiff/skiff.sock'],
    ['unix:///run/skiff/other.sock', '/run/skiff/other.sock'],
    ['unix:/run/skiff/other.sock', '/run/skiff/other.sock'],
    ['/tmp/a:b.sock', '/tmp/a:b.sock'],
  ])('%s listens on %s', (address, path) => {
    expect(parseConfig(`[grpc]\naddress = "${address}"\n`).grpc.address).toBe(path);
  });
});

describe('configToJSON', () => {
  it('has the TOML shape, durations as strings', () => {
    const json = configToJSON(defaultConfig());
    expect(json).toEqual({
      ...expectedDefaults,
      stream: { ...expectedDefaults.stream, idle_timeout: '4h', token_ttl: '1m' },
      images: { ...expectedDefaults.images, progress_timeout: '5m' },
    });
    expect(JSON.parse(JSON.stringify(json))).toEqual(json);
  });

  it('redacts registry secrets that are set, and only those', () => {
    const config = parseConfig(`
[registries."registry.example.com"]
username = "robot"
password = "hunter2"
auth = "cm9ib3Q6aHVudGVyMg=="
[registries."ghcr.io"]
identity_token = "eyJhbGciOi"
`);
    const json = configToJSON(config) as { registries: Record<string, Record<string, unknown>> };
    expect(json.registries['registry.example.com']).toMatchObject({
      username: 'robot',
      password: '<redacted>',
      auth: '<redacted>',
      identity_token: '',
    });
    expect(json.registries['ghcr.io']).toMatchObject({
      password: '',
      auth: '',
      identity_token: '<redacted>',
    });
    expect(JSON.stringify(json)).not.toMatch(/hunter2|cm9ib3Q|eyJhbGciOi/);
    // The config itself keeps the secrets: only the JSON view redacts.
    expect(config.registries['registry.example.com']!.password).toBe('hunter2');
  });

  it('renders durations the config was given in canonical form', () => {
    const json = configToJSON(parseConfig('[stream]\nidle_timeout = "90s"\n')) as {
      stream: Record<string, unknown>;
    };
    expect(json.stream['idle_timeout']).toBe('1m30s');
  });
});

describe('renderConfigReference', () => {
  it('lists every key with type and default', () => {
    const reference = renderConfigReference();
    expect(reference).toContain('| `stream.port` | an integer from 0 to 65535 | `0` |');
    expect(reference).toContain('| `runtimes.<name>` | table | `runc`, `runsc` |');
    expect(reference).toContain(
      '| `registries.<name>.fallback_to_upstream` | a boolean (true or false) | `true` |',
    );
    expect(reference).toContain('&lt;state&gt;/runtime/&lt;name&gt;');
  });
});

describe('compileSchema', () => {
  it('accepts the real schema', () => {
    expect(() => compileSchema(configRows)).not.toThrow();
  });

  it.each([
    ['a duplicate key', [key('a', str(), '', 'x'), key('a', str(), '', 'y')]],
    ['a key under a key', [key('a', str(), '', 'x'), key('a.b', str(), '', 'y')]],
    ['an empty segment', [key('a..b', str(), '', 'x')]],
    ['a section documented twice', [section('a', 'x'), section('a', 'y')]],
    [
      'a map default with an unknown key',
      [mapOf('m', [key('n', int(), 0, 'x')], { e: { nope: 1 } }, 'm', { entryName: str(), example: 'e' })],
    ],
  ])('rejects %s', (_, rows) => {
    expect(() => compileSchema(rows)).toThrow(/^config schema: /);
  });
});
