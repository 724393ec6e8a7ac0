/**
 * Running one CNI plugin (CNI SPEC.md 1.0.0, "Section 2: Execution Protocol"): the environment
 * (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`), the request
 * configuration derived from the plugin's configuration ("Section 3: Deriving execution configuration"),
 * and the result or error it prints. The derivations are pure and tested as tables; `execPlugin` spawns
 * through util/exec (argument arrays, explicit env, a timeout).
 */
import { SkiffError, type ErrorKind } from '../errdefs.js';
import type { Logger } from '../log.js';
import { findExecutable, run, stderrTail } from '../util/exec.js';
import type { PluginConf } from './conf.js';
import { cniErrorKind, formatCniError, parseCniError, parseSuccessResult } from './result.js';

export type CniCommand = 'ADD' | 'DEL' | 'CHECK';

/** A CRI port mapping, in skiff's domain shape. */
export interface PortMapping {
  protocol: 'tcp' | 'udp' | 'sctp';
  containerPort: number;
  hostPort: number;
  /** Empty for every host address. */
  hostIp: string;
}

/** One entry of the `portMappings` capability (CONVENTIONS.md "Well-known Capabilities"), as portmap reads it. */
export interface CniPortMapping {
  hostPort: number;
  containerPort: number;
  protocol: string;
  hostIP?: string;
}

/**
 * The `portMappings` capability argument: only mappings that publish a host port (kubelet also sends
 * container ports with hostPort 0, which are documentation only), `hostIP` left out when empty.
 */
export function portMappingsArg(mappings: readonly PortMapping[]): CniPortMapping[] {
  return mappings
    .filter((m) => m.hostPort > 0)
    .map((m) => ({
      hostPort: m.hostPort,
      containerPort: m.containerPort,
      protocol: m.protocol.toLowerCase(),
      ...(m.hostIp ? { hostIP: m.hostIp } : {}),
    }));
}

/** The pod an attachment belongs to, for `CNI_ARGS`. */
export interface PodArgs {
  sandboxId: string;
  podName: string;
  podNamespace: string;
  podUid: string;
}

/**
 * `CNI_ARGS` (SPEC §2 "Parameters": "Alphanumeric key-value pairs separated by semicolons"), with the
 * Kubernetes keys containerd and CRI-O pass; `IgnoreUnknown=1` tells plugins not to reject keys they do not
 * know.
 */
export function cniArgs(pod: PodArgs): string {
  return [
    'IgnoreUnknown=1',
    `K8S_POD_NAMESPACE=${pod.podNamespace}`,
    `K8S_POD_NAME=${pod.podName}`,
    `K8S_POD_INFRA_CONTAINER_ID=${pod.sandboxId}`,
    `K8S_POD_UID=${pod.podUid}`,
  ].join(';');
}

/** The per-attachment parameters (SPEC §3 "Attachment Parameters"). */
export interface Attachment {
  containerId: string;
  /** The netns path; empty on a DEL whose namespace is gone (SPEC §2 `DEL`: `CNI_NETNS` is optional). */
  netns: string;
  ifName: string;
  cniArgs: string;
}

const BASE_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/**
 * The plugin's whole environment: the CNI parameters (SPEC §2 "Parameters") and a PATH, which plugins need
 * for their own helpers (portmap runs `iptables`), with the system dirs appended so a daemon started with a
 * thin PATH still works. Nothing else leaks from the daemon's environment.
 */
export function pluginEnv(
  command: CniCommand,
  a: Attachment,
  binDirs: readonly string[],
  path = process.env.PATH ?? '',
): Record<string, string> {
  const dirs = [...new Set([...path.split(':'), ...BASE_PATH].filter(Boolean))];
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: a.containerId,
    CNI_NETNS: a.netns,
    CNI_IFNAME: a.ifName,
    CNI_ARGS: a.cniArgs,
    CNI_PATH: binDirs.join(':'),
    PATH: dirs.join(':'),
  };
}

/**
 * SPEC §3 "Deriving runtimeConfig": "any capability supported by the plugin configuration and provided by
 * the runtime should be inserted in the runtimeConfig". Undefined when there is none.
 */
export function deriveRuntimeConfig(
  capabilities: Record<string, unknown> | undefined,
  capabilityArgs: Readonly<Record<string, unknown>>,
): Record<string, unknown> | undefined {
  if (!capabilities) return undefined;
  const rc: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(capabilityArgs)) {
    if (capabilities[key] === true && value !== undefined) rc[key] = value;
  }
  return Object.keys(rc).length > 0 ? rc : undefined;
}

/**
 * The configuration a plugin gets on stdin (SPEC §3 "Deriving execution configuration from plugin
 * configuration"): the plugin's configuration with `cniVersion` and `name` from the list, `runtimeConfig`
 * from its capabilities, `prevResult` when there is one, and `capabilities` removed; every other key passes
 * through unchanged.
 */
export function pluginStdin(
  plugin: PluginConf,
  list: { name: string; cniVersion: string },
  capabilityArgs: Readonly<Record<string, unknown>>,
  prevResult?: unknown,
): Record<string, unknown> {
  const { capabilities, ...rest } = plugin;
  const out: Record<string, unknown> = { ...rest, cniVersion: list.cniVersion, name: list.name };
  const rc = deriveRuntimeConfig(capabilities, capabilityArgs);
  if (rc) {
    const existing = plugin.runtimeConfig;
    out.runtimeConfig =
      typeof existing === 'object' && existing !== null
        ? { ...(existing as Record<string, unknown>), ...rc }
        : rc;
  }
  if (prevResult !== undefined) out.prevResult = prevResult;
  else delete out.prevResult;
  return out;
}

/** The message naming a missing plugin binary, where it was looked for, and the fix. */
export function pluginNotFoundMessage(type: string, binDirs: readonly string[]): string {
  return `cni plugin "${type}" not found in ${binDirs.join(', ')}; install containernetworking-plugins or set [network] bin_dirs`;
}

/** A plugin's failure, with the CNI error code when it printed one (SPEC §5 "Error"). */
export class CniPluginError extends SkiffError {
  readonly cniCode: number | undefined;

  constructor(kind: ErrorKind, message: string, cniCode: number | undefined) {
    super(kind, message);
    this.cniCode = cniCode;
  }
}

export interface ExecPluginOptions {
  command: CniCommand;
  plugin: PluginConf;
  list: { name: string; cniVersion: string };
  attachment: Attachment;
  capabilityArgs: Readonly<Record<string, unknown>>;
  prevResult?: unknown;
  binDirs: readonly string[];
  timeoutMs: number;
  /** The sandbox the call is for, for messages (often the same as the container ID). */
  sandboxId: string;
  log: Logger;
}

/**
 * Runs one plugin. ADD resolves to its result object; DEL and CHECK to undefined. A missing binary is
 * `failed-precondition`; a timeout `deadline-exceeded`; a failure is a `CniPluginError` whose message is
 * `cni plugin <type> <COMMAND> for sandbox "<id>": <msg> (<details>)`.
 */
export async function execPlugin(o: ExecPluginOptions): Promise<Record<string, unknown> | undefined> {
  const type = o.plugin.type;
  const binary = await findExecutable(type, o.binDirs);
  if (!binary) throw new SkiffError('failed-precondition', pluginNotFoundMessage(type, o.binDirs));
  const context = `cni plugin ${type} ${o.command} for sandbox "${o.sandboxId}"`;
  const stdin = JSON.stringify(pluginStdin(o.plugin, o.list, o.capabilityArgs, o.prevResult));
  const started = Date.now();
  const res = await run(binary, [], {
    env: pluginEnv(o.command, o.attachment, o.binDirs),
    input: stdin,
    timeoutMs: o.timeoutMs,
  });
  const durationMs = Date.now() - started;
  o.log.debug('cni plugin ran', {
    plugin: type,
    command: o.command,
    sandboxId: o.sandboxId,
    code: res.code,
    durationMs,
  });
  if (res.code !== 0) {
    if (res.signal && durationMs >= o.timeoutMs) {
      throw new CniPluginError(
        'deadline-exceeded',
        `${context}: timed out after ${Math.round(o.timeoutMs / 1000)}s`,
        undefined,
      );
    }
    const cniErr = parseCniError(res.stdout);
    if (cniErr) {
      throw new CniPluginError(cniErrorKind(cniErr), `${context}: ${formatCniError(cniErr)}`, cniErr.code);
    }
    const how = res.signal ? `was killed by ${res.signal}` : `exited with status ${String(res.code)}`;
    const tail = stderrTail(res.stderr) || stderrTail(res.stdout);
    throw new CniPluginError('unknown', `${context}: ${how}${tail ? `: ${tail}` : ''}`, undefined);
  }
  if (o.command !== 'ADD') return undefined;
  const result = parseSuccessResult(res.stdout);
  if (!result) {
    throw new CniPluginError(
      'unknown',
      `${context}: printed no result object (SPEC §5 "Success")${res.stdout.trim() ? `: ${stderrTail(res.stdout, 500)}` : ''}`,
      undefined,
    );
  }
  return result;
}
