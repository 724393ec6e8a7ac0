/**
 * The two runtimes under test, each on its own socket, root and state directory under the bench's dirs:
 * skiff (`node dist/src/main.js serve`, the real binary) and Debian's containerd with its CRI plugin,
 * configured as ../shared/conformance/containerd-up.sh does (config version 2, overlayfs snapshotter,
 * `restrict_oom_score_adj`, a certs.d hosts dir), with the loopback registry as its only host, over HTTP.
 */
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type CriClient, connectCri } from '../test/fixtures/cri-client.js';
import { type Child, startChild } from './proc.js';

export interface Runtime {
  name: 'skiff' | 'containerd';
  /** The process that pulls (skiff's node process; containerd itself, which pulls in-process in 1.6). */
  pid: number;
  cri: CriClient;
  root: string;
  state: string;
  logPath: string;
  /** The last lines of the daemon's log, for error reports. */
  logTail(lines?: number): Promise<string>;
  /** Stops the daemon by PID (SIGTERM, then SIGKILL) and closes the client; leaves its dirs. Idempotent. */
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 30_000;

async function tail(path: string, lines = 30): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Waits until the CRI runtime service answers Version on the socket. */
async function waitCri(name: string, cri: CriClient, child: Child, logPath: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    try {
      await cri.runtime.version({ version: '' }, { deadlineMs: 1000 });
      return;
    } catch (err) {
      if (!child.alive() || Date.now() > deadline) {
        const why = child.alive() ? `no CRI answer after ${START_TIMEOUT_MS} ms` : 'it exited';
        throw new Error(
          `${name} did not come up (${why}): ${String(err)}\n--- ${logPath} ---\n${await tail(logPath)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function started(
  name: Runtime['name'],
  child: Child,
  socket: string,
  dirs: { root: string; state: string; logPath: string; pidFile: string },
): Promise<Runtime> {
  await writeFile(dirs.pidFile, `${child.pid}\n`);
  const cri = connectCri(socket);
  try {
    await waitCri(name, cri, child, dirs.logPath);
  } catch (err) {
    cri.close();
    await child.stop(5000);
    throw err;
  }
  let stopping: Promise<void> | undefined;
  return {
    name,
    pid: child.pid,
    cri,
    root: dirs.root,
    state: dirs.state,
    logPath: dirs.logPath,
    logTail: (lines) => tail(dirs.logPath, lines),
    stop() {
      stopping ??= (async () => {
        cri.close();
        await child.stop();
        await rm(dirs.pidFile, { force: true });
      })();
      return stopping;
    },
  };
}

export interface RuntimeDirs {
  /** Parent of the runtime's root (persistent data). */
  rootBase: string;
  /** Parent of the runtime's state (socket, pid file, config). */
  stateBase: string;
}

/**
 * The node flags skiff's own shebang line carries (`#!/usr/bin/env -S node --max-semi-space-size=2`), so
 * the bench runs skiff exactly as `/usr/local/bin/skiff` and the systemd unit do.
 */
function shebangNodeFlags(script: string): string[] {
  const first = readFileSync(script, 'utf8').split('\n', 1)[0] ?? '';
  const m = /^#!\/usr\/bin\/env -S node(.*)$/.exec(first);
  return m ? (m[1] ?? '').trim().split(/\s+/).filter(Boolean) : [];
}

/** skiff's built-in default pod network, on its own bridge and subnet (`[network]`). */
export interface SkiffNetwork {
  bridge: string;
  subnet: string;
  /** An empty dir, so the built-in network is used rather than /etc/cni/net.d. */
  confDir: string;
}

/**
 * skiff with built-in defaults except its paths and `info` logging (as a node would run it). `nodeArgs`
 * go to node before the script, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` (not allowed in NODE_OPTIONS).
 * Without `network` the `[network]` defaults apply (the benchmarks that run no pods never use it).
 */
export async function startSkiff(
  skiffBin: string,
  base: RuntimeDirs,
  nodeArgs: string[] = [],
  network?: SkiffNetwork,
): Promise<Runtime> {
  const root = join(base.rootBase, 'skiff');
  const state = join(base.stateBase, 'skiff');
  const socket = join(base.stateBase, 'skiff.sock');
  const configPath = join(base.stateBase, 'skiff.toml');
  const logPath = join(base.rootBase, 'skiff.log');
  await mkdir(root, { recursive: true });
  await writeFile(
    configPath,
    [
      `root = ${JSON.stringify(root)}`,
      `state = ${JSON.stringify(state)}`,
      '[grpc]',
      `address = ${JSON.stringify(socket)}`,
      '[log]',
      'level = "info"',
      'format = "json"',
      ...(network
        ? [
            '[network]',
            `conf_dir = ${JSON.stringify(network.confDir)}`,
            `default_subnet = ${JSON.stringify(network.subnet)}`,
            `bridge_name = ${JSON.stringify(network.bridge)}`,
          ]
        : []),
      '',
    ].join('\n'),
  );
  const child = startChild(
    process.execPath,
    [...shebangNodeFlags(skiffBin), ...nodeArgs, skiffBin, 'serve', '--config', configPath],
    logPath,
  );
  return started('skiff', child, socket, {
    root,
    state,
    logPath,
    pidFile: join(base.stateBase, 'skiff.pid'),
  });
}

/** A CNI bridge network for containerd's pods, in its own conf dir. */
export interface ContainerdNetwork {
  /** The network's name (host-local keys its leases and libcni its cache by it). */
  name: string;
  bridge: string;
  subnet: string;
}

export interface ContainerdOptions {
  /** `sandbox_image`, the pause image, in the loopback registry. Default: a name never pulled. */
  sandboxImage?: string;
  /**
   * Pod network: written as `10-<name>.conflist` to its conf dir (bridge + host-local, then portmap, as
   * ../shared/conformance/containerd-up.sh does; the CRI plugin runs the loopback plugin itself). Without
   * it the conf dir is empty: the CRI plugin then reports NetworkReady=false, which does not stop pulls.
   */
  network?: ContainerdNetwork;
}

/** containerd (CRI plugin) pulling from `registryHost` ('127.0.0.1:PORT') over plain HTTP. */
export async function startContainerd(
  registryHost: string,
  base: RuntimeDirs,
  opts: ContainerdOptions = {},
): Promise<Runtime> {
  const root = join(base.rootBase, 'containerd');
  const state = join(base.stateBase, 'containerd');
  const socket = join(state, 'containerd.sock');
  const configPath = join(base.stateBase, 'containerd.toml');
  const logPath = join(base.rootBase, 'containerd.log');
  const hostsDir = join(base.stateBase, 'containerd-certs.d');
  const netDir = join(base.stateBase, 'containerd-net.d');
  await mkdir(root, { recursive: true });
  await mkdir(state, { recursive: true });
  await mkdir(join(hostsDir, registryHost), { recursive: true });
  await mkdir(netDir, { recursive: true });
  // `server` replaces the host, so nothing falls back to HTTPS or another host; containerd 1.6 also wants
  // at least one [host] entry.
  await writeFile(
    join(hostsDir, registryHost, 'hosts.toml'),
    [
      `server = "http://${registryHost}"`,
      `[host."http://${registryHost}"]`,
      '  capabilities = ["pull", "resolve"]',
      '',
    ].join('\n'),
  );
  const q = JSON.stringify;
  if (opts.network) {
    const n = opts.network;
    const conflist = {
      cniVersion: '1.0.0',
      name: n.name,
      plugins: [
        {
          type: 'bridge',
          bridge: n.bridge,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            dataDir: join(root, 'cni-ipam'),
            ranges: [[{ subnet: n.subnet }]],
            routes: [{ dst: '0.0.0.0/0' }],
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    };
    await writeFile(join(netDir, `10-${n.name}.conflist`), `${JSON.stringify(conflist, null, 2)}\n`);
  }
  await writeFile(
    configPath,
    [
      'version = 2',
      `root = ${q(root)}`,
      `state = ${q(state)}`,
      '[debug]',
      '  level = "info"',
      '[grpc]',
      `  address = ${q(socket)}`,
      '[ttrpc]',
      `  address = ${q(`${socket}.ttrpc`)}`,
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = ${q(join(root, 'opt'))}`,
      '[plugins."io.containerd.grpc.v1.cri"]',
      `  sandbox_image = ${q(opts.sandboxImage ?? `${registryHost}/skiff-bench/pause:none`)}`,
      '  stream_server_address = "127.0.0.1"',
      '  stream_server_port = "0"',
      '  restrict_oom_score_adj = true',
      '  [plugins."io.containerd.grpc.v1.cri".containerd]',
      '    snapshotter = "overlayfs"',
      '    default_runtime_name = "runc"',
      '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
      '      runtime_type = "io.containerd.runc.v2"',
      '      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
      `        Root = ${q(join(state, 'runc'))}`,
      '  [plugins."io.containerd.grpc.v1.cri".cni]',
      '    bin_dir = "/usr/lib/cni"',
      `    conf_dir = ${q(netDir)}`,
      '  [plugins."io.containerd.grpc.v1.cri".registry]',
      `    config_path = ${q(hostsDir)}`,
      '',
    ].join('\n'),
  );
  const child = startChild('/usr/bin/containerd', ['--config', configPath], logPath);
  return started('containerd', child, socket, {
    root,
    state,
    logPath,
    pidFile: join(base.stateBase, 'containerd.pid'),
  });
}
