/**
 * skiff's configuration keys: the one table everything else is derived from (validation, defaults,
 * rendered default file, JSON effective config, reference docs), plus the hand-written Config type.
 * To add a key: add a row below and the field to the matching interface; the config unit tests fail
 * until the two agree. Key names follow containerd's where it has one, so operators can carry over
 * what they know.
 */
import type { ConfigProblem } from './errors.js';
import { compileSchema, key, mapOf, section, type Row } from './schema.js';
import {
  bool,
  cidr,
  duration,
  httpUrl,
  int,
  list,
  matching,
  oneOf,
  path,
  str,
  unixSocket,
} from './value-types.js';

/** One `[runtimes.<name>]` table: an OCI runtime kubelet selects through RuntimeClass.handler. */
export interface RuntimeHandlerConfig {
  /** The runtime binary: an absolute path or a name looked up in $PATH; "" means the handler name. */
  binary_path: string;
  /** Global runtime flags, placed before the runtime's command (`runsc --network=host create …`). */
  extra_args: string[];
  /** The runtime's --root directory; "" means `<state>/runtime/<name>`. */
  root: string;
  /** conmon: an absolute path or a name looked up in $PATH. */
  monitor_path: string;
  privileged_without_host_devices: boolean;
}

/** One `[registries."<host>"]` table. */
export interface RegistryConfig {
  mirrors: string[];
  insecure: boolean;
  ca_file: string;
  skip_verify: boolean;
  username: string;
  password: string;
  auth: string;
  identity_token: string;
  fallback_to_upstream: boolean;
}

/**
 * The effective configuration. Keys are snake_case exactly as in TOML, so `JSON.stringify` of the
 * effective config has the file's shape (as containerd's config does in `crictl info`). Durations are
 * whole milliseconds.
 */
export interface Config {
  root: string;
  state: string;
  cgroup_driver: 'cgroupfs' | 'systemd';
  grpc: {
    address: string;
    max_recv_message_size: number;
    max_send_message_size: number;
  };
  log: {
    level: 'debug' | 'info' | 'warn' | 'error';
    format: 'auto' | 'json' | 'text';
  };
  runtime: {
    default_runtime_handler: string;
  };
  runtimes: Record<string, RuntimeHandlerConfig>;
  network: {
    conf_dir: string;
    bin_dirs: string[];
    default_subnet: string;
    bridge_name: string;
    enabled: boolean;
  };
  stream: {
    address: string;
    port: number;
    tls_cert_file: string;
    tls_key_file: string;
    /** Milliseconds. */
    idle_timeout: number;
    /** Milliseconds. */
    token_ttl: number;
  };
  sandbox: {
    shm_size: number;
    start_concurrency: number;
  };
  images: {
    sandbox_image: string;
    max_concurrent_downloads: number;
    /** Milliseconds. */
    progress_timeout: number;
    progress_min_bytes_per_second: number;
    pinned_images: string[];
  };
  registries: Record<string, RegistryConfig>;
}

/** grpc-js takes message limits as signed 32-bit integers. */
const maxMessageSize = 2 ** 31 - 1;

const runtimeHandlerRows: readonly Row[] = [
  key(
    'binary_path',
    str(),
    '',
    'The runtime binary: an absolute path, or a name looked up in $PATH. Empty means the handler name.',
  ),
  key(
    'extra_args',
    list(str({ nonEmpty: true })),
    [],
    "Global flags passed to the runtime before its command (runtime <extra_args> create …). They exist because Debian's gVisor build fails in its default netstack network mode on some kernels, while runsc works with --network=host inside the pod's network namespace.",
  ),
  key(
    'root',
    path({ allowEmpty: true }),
    '',
    "The runtime's --root state directory. Empty means <state>/runtime/<name>.",
  ),
  key(
    'monitor_path',
    str({ nonEmpty: true }),
    'conmon',
    'The conmon binary: an absolute path, or a name looked up in $PATH.',
  ),
  key(
    'privileged_without_host_devices',
    bool(),
    false,
    "When true, privileged containers of this handler do not get the host's devices, as in containerd; meant for VM-based runtimes, where host device nodes mean nothing.",
  ),
];

const registryRows: readonly Row[] = [
  key(
    'mirrors',
    list(httpUrl()),
    [],
    'Mirrors tried in order before the host itself, each an http:// or https:// URL such as "http://127.0.0.1:5000".',
  ),
  key('insecure', bool(), false, 'Talk plain HTTP to the host instead of HTTPS.'),
  key(
    'ca_file',
    path({ allowEmpty: true }),
    '',
    'PEM CA bundle trusted for this host in addition to the system CAs; empty for none.',
  ),
  key(
    'skip_verify',
    bool(),
    false,
    "Skip verification of the host's TLS certificate. Unsafe: for test registries only.",
  ),
  key(
    'username',
    str(),
    '',
    'User name for the registry, used when the pull request carries no credentials.',
  ),
  key('password', str(), '', 'Password for username.', { secret: true }),
  key(
    'auth',
    str(),
    '',
    'base64 of "username:password", as in a Docker config.json: an alternative to username and password.',
    {
      secret: true,
    },
  ),
  key(
    'identity_token',
    str(),
    '',
    "OAuth2 refresh token for the registry's token endpoint, as in a Docker config.json.",
    {
      secret: true,
    },
  ),
  key(
    'fallback_to_upstream',
    bool(),
    true,
    'Pull from the host itself when every mirror fails. false makes the node air-gapped for this host: skiff never contacts it.',
  ),
];

export const configRows: readonly Row[] = [
  key(
    'root',
    path(),
    '/var/lib/skiff',
    'Persistent data: image blobs and layers, snapshots, pod and container records.',
  ),
  key(
    'state',
    path(),
    '/run/skiff',
    'Volatile state: pinned namespaces, sockets, runtime state. Keep it on tmpfs, so that a reboot clears it just as it ends every container.',
  ),
  key(
    'cgroup_driver',
    oneOf(['cgroupfs', 'systemd']),
    'cgroupfs',
    'How container cgroups are managed: "cgroupfs" writes /sys/fs/cgroup directly, "systemd" creates transient units. Must match the kubelet; kubelet 1.36 reads it from the RuntimeConfig RPC.',
  ),

  section('grpc', 'The CRI gRPC endpoint that kubelet and crictl connect to.'),
  key(
    'grpc.address',
    unixSocket(),
    '/run/skiff/skiff.sock',
    "Unix socket to listen on: a path or a unix:// URL. kubelet's --container-runtime-endpoint is unix://<this path>.",
  ),
  key(
    'grpc.max_recv_message_size',
    int({ min: 1, max: maxMessageSize }),
    16 * 1024 * 1024,
    'Largest request accepted, in bytes.',
  ),
  key(
    'grpc.max_send_message_size',
    int({ min: 1, max: maxMessageSize }),
    16 * 1024 * 1024,
    'Largest response sent, in bytes.',
  ),

  section('log', 'Daemon logs, written to stderr.'),
  key('log.level', oneOf(['debug', 'info', 'warn', 'error']), 'info', 'Least severe level logged.'),
  key(
    'log.format',
    oneOf(['auto', 'json', 'text']),
    'auto',
    '"auto" writes text lines when stderr is a terminal and JSON lines otherwise (journald, log shippers).',
  ),

  section('runtime', 'OCI runtime selection.'),
  key(
    'runtime.default_runtime_handler',
    str(),
    'runc',
    'Handler for pods that name none (no RuntimeClass). Must be one of the [runtimes.<name>] tables.',
  ),

  mapOf<RuntimeHandlerConfig>(
    'runtimes',
    runtimeHandlerRows,
    {
      runc: { binary_path: 'runc' },
      runsc: { binary_path: 'runsc', extra_args: ['--network=host'] },
    },
    "OCI runtime handlers by name, the name being the RuntimeClass handler. Tables in a config file add to the built-in runc and runsc handlers; a table named like a built-in one is merged over it key by key, and a new handler's missing keys take the defaults (binary_path = its name, no extra_args).",
    {
      entryName: matching(
        /^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$/,
        'a handler name of lowercase letters, digits and "-" (a DNS label, as RuntimeClass.handler must be)',
        'handler names',
      ),
      example: 'kata',
    },
  ),

  section('network', 'Pod networking through CNI plugins.'),
  key(
    'network.conf_dir',
    path(),
    '/etc/cni/net.d',
    'CNI network configurations (*.conflist, *.conf); the first in lexical order is the pod network.',
  ),
  key(
    'network.bin_dirs',
    list(path()),
    ['/opt/cni/bin', '/usr/lib/cni'],
    "Directories searched in order for CNI plugin binaries; /usr/lib/cni is where Debian's containernetworking-plugins installs them.",
  ),
  key(
    'network.default_subnet',
    cidr(),
    '10.88.0.0/16',
    'Subnet of the built-in bridge network, used when conf_dir has no configuration, so a node works without any CNI setup.',
  ),
  key(
    'network.bridge_name',
    matching(
      /^[a-zA-Z0-9_.-]{1,15}$/,
      'a Linux interface name (1 to 15 letters, digits, "_", "." or "-")',
      'interface names',
    ),
    'skiff0',
    'Bridge of the built-in default network (used when conf_dir has no config).',
  ),
  key(
    'network.enabled',
    bool(),
    true,
    "When false, no pod network is set up: each pod's network namespace has only loopback.",
  ),

  section(
    'stream',
    'The streaming server for exec, attach and port-forward: the Exec, Attach and PortForward RPCs return a URL on it, which kubelet proxies to.',
  ),
  key(
    'stream.address',
    str({ nonEmpty: true }),
    '127.0.0.1',
    'Address to listen on. Loopback suffices because kubelet proxies streams itself.',
  ),
  key('stream.port', int({ min: 0, max: 65535 }), 0, 'TCP port; 0 picks a free port at startup.'),
  key(
    'stream.tls_cert_file',
    path({ allowEmpty: true }),
    '',
    'PEM certificate to serve TLS with; empty serves plain HTTP (fine on loopback). Set together with tls_key_file.',
  ),
  key('stream.tls_key_file', path({ allowEmpty: true }), '', 'PEM private key for tls_cert_file.'),
  key(
    'stream.idle_timeout',
    duration({ min: 1 }),
    4 * 60 * 60 * 1000,
    "A stream with no traffic for this long is closed, like kubelet's streaming-connection-idle-timeout (also 4h).",
  ),
  key(
    'stream.token_ttl',
    duration({ min: 1 }),
    60 * 1000,
    'How long a URL returned by Exec, Attach or PortForward stays valid unused; kubelet uses it at once.',
  ),

  section('sandbox', 'Pod sandboxes.'),
  key(
    'sandbox.shm_size',
    int({ min: 4096 }),
    64 * 1024 * 1024,
    "Size in bytes of each pod's /dev/shm (a tmpfs shared by the pod's containers), as Docker's and containerd's 64 MiB default.",
  ),
  key(
    'sandbox.start_concurrency',
    int({ min: 0, max: 1024 }),
    0,
    'Pod start-up steps (RunPodSandbox, CreateContainer, StartContainer) in progress at once; the rest wait, the pods that arrived first going first. Their helper processes (CNI plugins, conmon, runc) are CPU-bound, so a limit near the CPU count gets the first pods ready early without slowing the batch. 0 means the number of CPUs (at least 2).',
  ),

  section('images', 'Image pulls and storage.'),
  key(
    'images.sandbox_image',
    str(),
    '',
    "Image run as each pod's \"pause\" container, as containerd does: pulled on first use, joined to the pod's network, IPC and UTS namespaces, its PID namespace the pod's when the pod shares one, in the pod's cgroup, hidden from ListContainers. Empty means none: namespaces are pinned with bind mounts, without a process (catatonit only for a shared PID namespace), and nothing is pulled.",
  ),
  key(
    'images.max_concurrent_downloads',
    int({ min: 1, max: 64 }),
    3,
    'Layers downloaded in parallel per pull.',
  ),
  key(
    'images.progress_timeout',
    duration({ min: 1 }),
    5 * 60 * 1000,
    'A pull that makes too little progress (see progress_min_bytes_per_second) for this long is cancelled, so a stalled registry connection cannot hang PullImage.',
  ),
  key(
    'images.progress_min_bytes_per_second',
    int({ min: 0 }),
    1024,
    'Download rate, in bytes per second, below which a pull counts as making no progress.',
  ),
  key(
    'images.pinned_images',
    list(str({ nonEmpty: true })),
    [],
    "Image references reported as pinned (ImageStatus/ListImages pinned = true), so kubelet's image garbage collection never removes them. The sandbox image, when set, is always pinned.",
  ),

  mapOf<RegistryConfig>(
    'registries',
    registryRows,
    {},
    'Per-registry settings, keyed by host as written in image references ("docker.io", "127.0.0.1:5000"; quoted because of the dots). Without an entry a registry is reached over HTTPS with the system CAs and the credentials kubelet passes.',
    {
      entryName: matching(
        /^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/,
        'a registry host such as "docker.io" or "127.0.0.1:5000" (no scheme or path)',
        'registry hosts',
      ),
      example: 'docker.io',
    },
  ),
];

export const configSchema = compileSchema(configRows);

/**
 * A check that involves more than one key. It runs on the merged config after per-key validation,
 * and is skipped when a key it `reads` already has a problem: that key then holds its default, and
 * judging the default would add a second, misleading message.
 */
export interface CrossCheck {
  readonly reads: readonly string[];
  readonly check: (config: Config) => ConfigProblem[];
}

export const crossChecks: readonly CrossCheck[] = [
  {
    reads: ['runtime.default_runtime_handler'],
    check: (config) => {
      const handler = config.runtime.default_runtime_handler;
      const names = Object.keys(config.runtimes);
      if (names.includes(handler)) return [];
      return [
        {
          keyPath: 'runtime.default_runtime_handler',
          message: `expected one of the configured runtime handlers (${names.join(', ')}); found ${JSON.stringify(handler)}`,
        },
      ];
    },
  },
  {
    reads: ['stream.tls_cert_file', 'stream.tls_key_file'],
    check: (config) => {
      const { tls_cert_file: cert, tls_key_file: keyFile } = config.stream;
      if ((cert === '') === (keyFile === '')) return [];
      const [missing, set] =
        cert === '' ? ['stream.tls_cert_file', 'tls_key_file'] : ['stream.tls_key_file', 'tls_cert_file'];
      return [{ keyPath: missing, message: `expected a file since stream.${set} is set; found ""` }];
    },
  },
];
