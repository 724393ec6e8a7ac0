/**
 * Pods on the network through CNI (CNI SPEC.md 1.0.0 and 0.4.0): the NetworkReady condition, and attaching
 * a pod's network namespace to the pod network (ADD), checking it (CHECK) and detaching it (DEL).
 *
 * Vocabulary. The *network* is one configuration list: the first file in conf_dir, or the embedded default
 * (a bridge with host-local addresses, then portmap). An *attachment* is one sandbox on that network,
 * identified by its sandbox ID (CNI_CONTAINERID) and interface name (SPEC §3). `lo` is brought up apart
 * from the network, so it works also with pod networking disabled: by the `loopback` plugin, as containerd
 * does, or, with `loopback: 'caller'` (the daemon's choice), by whoever made the namespace.
 *
 * Lifecycle. `attach` writes a cache record first, then runs loopback (unless the caller did) and the
 * list's ADDs; on failure it
 * runs DEL for the whole list (SPEC §3 "A delete must still be executed even if the add fails") and drops
 * the record, so no lease or veth is left. `detach` runs DEL with what the record says ADD ran and returned
 * (libcni's cache), falling back to the current configuration, and drops the record only when every DEL
 * succeeded, so a failed detach can be retried and recovery finds leftovers with `listCached`.
 *
 * Idempotency. `detach` of a detached (or never attached) sandbox succeeds; a namespace that is gone is not
 * an error (the plugins release leases by container ID). `attach` of an attached sandbox is
 * `already-exists`. Callers serialise calls per sandbox (SPEC §3: "The container runtime must not invoke
 * parallel operations for the same container"); different sandboxes run in parallel.
 */
import { mkdir, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { SkiffError, isSkiffError, messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';
import { findExecutable } from '../util/exec.js';
import { ResultCache, type CacheRecord, CACHE_VERSION } from './cache.js';
import {
  DEFAULT_BRIDGE_NAME,
  EMBEDDED_SOURCE,
  defaultConfList,
  findConfFile,
  loadConfFile,
  pluginBinaries,
  type NetworkConfList,
} from './conf.js';
import {
  CniPluginError,
  cniArgs,
  execPlugin,
  pluginNotFoundMessage,
  portMappingsArg,
  type Attachment,
  type CniCommand,
  type PortMapping,
} from './invoke.js';
import { CNI_ERR_CONTAINER_UNKNOWN, resultIps } from './result.js';

export interface NetworkManagerOptions {
  /** `[network] conf_dir`, default /etc/cni/net.d. Never written to. */
  confDir: string;
  /** `[network] bin_dirs`, searched in order; also CNI_PATH. */
  binDirs: string[];
  /** `<root>/cni`: `results/` (the attachment cache) and `ipam/` (the default network's host-local leases). */
  cacheDir: string;
  /** `[network] default_subnet`, the embedded default network's subnet, e.g. 10.88.0.0/16. */
  defaultSubnet: string;
  /** `[network] enabled`; false gives pods loopback only. */
  enabled: boolean;
  log: Logger;
  /** The embedded default network's host bridge (default `skiff0`). */
  bridgeName?: string;
  /** Limit for one plugin run (default 60 s). */
  pluginTimeoutMs?: number;
  /**
   * Who brings `lo` up: `plugin` (default) runs the CNI `loopback` plugin (ADD in attach, DEL in detach);
   * `caller` means the namespace arrives with `lo` up (skiff's sandbox service does it in the same helper
   * run that creates the namespaces, sandbox/namespaces.ts), so no loopback run and no loopback binary is
   * needed.
   */
  loopback?: 'plugin' | 'caller';
}

/** The CRI NetworkReady condition. */
export interface NetworkStatus {
  status: boolean;
  reason: string;
  message: string;
}

export interface AttachRequest {
  sandboxId: string;
  /** The pinned network namespace, e.g. /run/skiff/netns/<sandboxId>. */
  netnsPath: string;
  podName: string;
  podNamespace: string;
  podUid: string;
  /** Default `eth0`. */
  ifName?: string;
  portMappings: PortMapping[];
}

export interface AttachResult {
  /** The network's name; empty when pod networking is disabled. */
  networkName: string;
  /** The pod's interface (`eth0`); empty when pod networking is disabled. */
  interfaceName: string;
  /** Addresses without prefix length, IPv4 first, then IPv6. */
  ips: string[];
  /** The final plugin's CNI result. */
  result: unknown;
}

export interface DetachRequest {
  sandboxId: string;
  /** The namespace path; it may no longer exist. Empty means "use the cached one". */
  netnsPath: string;
}

export type CheckRequest = DetachRequest;

export const READY_REASON_NOT_READY = 'NetworkPluginNotReady';
export const DISABLED_MESSAGE =
  'pod networking disabled by [network] enabled = false: pods get loopback only';
const DEFAULT_IFNAME = 'eth0';
const DEFAULT_PLUGIN_TIMEOUT_MS = 60_000;

/**
 * Loopback, set up apart from the pod network. cniVersion 0.3.1, as containerd uses, so that older
 * loopback binaries (which lack 1.0.0) work too.
 */
const LOOPBACK_LIST = { name: 'cni-loopback', cniVersion: '0.3.1' } as const;

/** NSFS_MAGIC from linux/magic.h: statfs(2) type of a network namespace file (bind mount or /proc link). */
const NSFS_MAGIC = 0x6e736673;

/** SPEC §2 "Parameters", CNI_CONTAINERID: alphanumeric first, then alphanumerics, `_`, `.`, `-`. */
const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

type LoadedConfig = { list: NetworkConfList; error?: undefined } | { list?: undefined; error: string };

export class NetworkManager {
  private readonly cache: ResultCache;
  private readonly bridgeName: string;
  private readonly timeoutMs: number;
  private readonly log: Logger;
  private fingerprint: string | undefined;
  private loaded: LoadedConfig | undefined;
  private syncing: Promise<LoadedConfig> | undefined;

  constructor(private readonly options: NetworkManagerOptions) {
    this.cache = new ResultCache(join(options.cacheDir, 'results'));
    this.bridgeName = options.bridgeName ?? DEFAULT_BRIDGE_NAME;
    this.timeoutMs = options.pluginTimeoutMs ?? DEFAULT_PLUGIN_TIMEOUT_MS;
    this.log = options.log;
  }

  /**
   * Creates the cache dirs, removes temp files of a crash mid-write and loads the configuration. A bad user
   * configuration does not throw: status() reports it.
   */
  async init(): Promise<void> {
    await mkdir(this.cache.dir, { recursive: true, mode: 0o700 });
    await mkdir(this.ipamDataDir(), { recursive: true, mode: 0o700 });
    for (const name of await this.cache.removeTemps()) {
      this.log.info('removed temp file of an interrupted cni cache write', { file: name });
    }
    if (this.options.enabled) await this.currentConfig();
  }

  /**
   * The NetworkReady condition: ready when the configuration loaded and every binary it names (plus
   * `loopback`) is in bin_dirs. Re-reads conf_dir when it changed, so a configuration dropped in later is
   * picked up (like containerd's conf syncer); cheap: one readdir and a few stats.
   */
  async status(): Promise<NetworkStatus> {
    const { binDirs } = this.options;
    if (!this.options.enabled) {
      const lo = !this.loopbackPlugin || (await findExecutable('loopback', binDirs));
      const message = lo
        ? DISABLED_MESSAGE
        : `${DISABLED_MESSAGE}; ${pluginNotFoundMessage('loopback', binDirs)}, or pods without host network fail to start`;
      return { status: true, reason: '', message };
    }
    const cfg = await this.currentConfig();
    if (cfg.error !== undefined) return notReady(cfg.error);
    const missing = await this.missingBinary(cfg.list);
    if (missing) return notReady(pluginNotFoundMessage(missing, binDirs));
    return { status: true, reason: '', message: `cni network "${cfg.list.name}" from ${cfg.list.source}` };
  }

  /** Brings up `lo`, then runs the network's ADDs (SPEC §3 "Adding an attachment"). */
  async attach(req: AttachRequest): Promise<AttachResult> {
    const id = req.sandboxId;
    validateContainerId(id);
    const ifName = req.ifName ?? DEFAULT_IFNAME;
    validateIfName(ifName);
    validatePortMappings(req.portMappings);
    const context = `attach network of sandbox "${id}"`;
    const args = cniArgs(req);
    const started = Date.now();

    if (!this.options.enabled) {
      const lo = this.loopbackPlugin ? await this.runLoopback('ADD', id, req.netnsPath, args) : undefined;
      return { networkName: '', interfaceName: '', ips: [], result: lo };
    }

    const cfg = await this.currentConfig();
    if (cfg.error !== undefined) throw new SkiffError('failed-precondition', `${context}: ${cfg.error}`);
    const list = cfg.list;
    // Every binary is checked before anything runs: failing here leaves nothing to undo.
    const missing = await this.missingBinary(list);
    if (missing) {
      throw new SkiffError(
        'failed-precondition',
        `${context}: ${pluginNotFoundMessage(missing, this.options.binDirs)}`,
      );
    }

    const previous = await this.cache.read(id);
    if (previous?.result)
      throw new SkiffError('already-exists', `${context}: already attached; detach it first`);
    if (previous) {
      this.log.warn('deleting an attachment whose add never finished', { sandboxId: id });
      await this.detach({ sandboxId: id, netnsPath: previous.netnsPath });
    }

    const portMappings = portMappingsArg(req.portMappings);
    const record: CacheRecord = {
      version: CACHE_VERSION,
      sandboxId: id,
      network: list,
      runtimeConfig: portMappings.length > 0 ? { portMappings } : {},
      ifName,
      netnsPath: req.netnsPath,
      cniArgs: args,
      createdAt: new Date().toISOString(),
    };
    const attachment: Attachment = { containerId: id, netns: req.netnsPath, ifName, cniArgs: args };
    await this.cache.write(record);

    let prev: Record<string, unknown> | undefined;
    try {
      if (this.loopbackPlugin) await this.runLoopback('ADD', id, req.netnsPath, args);
      // SPEC §3 "Adding an attachment": each plugin in order, the previous plugin's result as prevResult.
      for (const plugin of list.plugins) {
        prev = await execPlugin({
          command: 'ADD',
          plugin,
          list,
          attachment,
          capabilityArgs: record.runtimeConfig,
          prevResult: prev,
          ...this.execCommon(id),
        });
      }
      if (!prev) throw new SkiffError('internal', `${context}: the network has no plugins`);
      record.result = prev;
      // SPEC §3: "The runtime must store the result returned by the final plugin persistently".
      await this.cache.write(record);
    } catch (err) {
      await this.undoAdd(record, prev);
      throw err;
    }
    const out = toAttachResult(record, prev);
    this.log.info('pod network attached', {
      sandboxId: id,
      network: list.name,
      ips: out.ips,
      durationMs: Date.now() - started,
    });
    return out;
  }

  /**
   * Runs DEL for the sandbox with the cached configuration and result (SPEC §3 "Deleting an attachment"),
   * or the current configuration when there is no record, then loopback's DEL, then drops the record.
   */
  async detach(req: DetachRequest): Promise<void> {
    const id = req.sandboxId;
    validateContainerId(id);
    const context = `detach network of sandbox "${id}"`;
    let record: CacheRecord | undefined;
    let hadBadRecord = false;
    try {
      record = await this.cache.read(id);
    } catch (err) {
      if (!isSkiffError(err, 'data-loss')) throw wrapWith(err, context);
      // A torn or foreign file must not block removing the pod forever: delete with the current config.
      this.log.warn('unreadable cni cache record; deleting with the current configuration', {
        sandboxId: id,
        error: err,
      });
      hadBadRecord = true;
    }
    const netns = await liveNetns(req.netnsPath || record?.netnsPath || '');

    if (record) {
      await this.deleteList(
        record.network,
        record.result,
        { containerId: id, netns, ifName: record.ifName, cniArgs: record.cniArgs },
        record.runtimeConfig,
        context,
      );
    } else if (this.options.enabled) {
      const cfg = await this.currentConfig();
      if (cfg.list) {
        const attachment = {
          containerId: id,
          netns,
          ifName: DEFAULT_IFNAME,
          cniArgs: `IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID=${id}`,
        };
        try {
          await this.deleteList(cfg.list, undefined, attachment, {}, context);
        } catch (err) {
          // Nothing cached means skiff never ran ADD for this sandbox: a missing binary cannot leak anything.
          if (!isSkiffError(err, 'failed-precondition')) throw err;
          this.log.warn('skipped cni delete without a cache record', { sandboxId: id, error: err });
        }
      } else {
        this.log.warn('skipped cni delete: no cache record and no valid configuration', {
          sandboxId: id,
          error: cfg.error,
        });
      }
    }

    // Loopback holds nothing outside the namespace, which is about to go: its DEL is a courtesy.
    if (this.loopbackPlugin) {
      try {
        await this.runLoopback('DEL', id, netns, record?.cniArgs ?? '');
      } catch (err) {
        this.log.warn('loopback delete failed', { sandboxId: id, error: err });
      }
    }
    if (record || hadBadRecord) await this.cache.remove(id);
    this.log.info('pod network detached', { sandboxId: id, cached: record !== undefined });
  }

  /**
   * Runs CHECK for the sandbox with the cached result (SPEC §3 "Checking an attachment"). Succeeds without
   * running anything when the list sets `disableCheck` or predates CHECK (cniVersion < 0.4.0).
   */
  async check(req: CheckRequest): Promise<void> {
    const id = req.sandboxId;
    validateContainerId(id);
    const context = `check network of sandbox "${id}"`;
    const record = await this.cache.read(id).catch((err: unknown) => {
      throw wrapWith(err, context);
    });
    if (!record?.result) {
      throw new SkiffError(
        'not-found',
        `${context}: no cached cni result (not attached, or its attach did not finish)`,
      );
    }
    const list = record.network;
    if (list.disableCheck || compareVersions(list.cniVersion, '0.4.0') < 0) return;
    const attachment: Attachment = {
      containerId: id,
      netns: req.netnsPath || record.netnsPath,
      ifName: record.ifName,
      cniArgs: record.cniArgs,
    };
    for (const plugin of list.plugins) {
      await execPlugin({
        command: 'CHECK',
        plugin,
        list,
        attachment,
        capabilityArgs: record.runtimeConfig,
        prevResult: record.result,
        ...this.execCommon(id),
      });
    }
  }

  /** What ADD returned for the sandbox, or undefined when it is not attached (or its attach never finished). */
  async cachedResult(sandboxId: string): Promise<AttachResult | undefined> {
    validateContainerId(sandboxId);
    const record = await this.cache.read(sandboxId);
    return record?.result ? toAttachResult(record, record.result) : undefined;
  }

  /**
   * Sandbox ids with a cache record, including attaches that never finished: recovery detaches those whose
   * sandbox is gone.
   */
  async listCached(): Promise<string[]> {
    return this.cache.list();
  }

  /** The configuration in force, re-read when conf_dir changed; concurrent callers share one reload. */
  private currentConfig(): Promise<LoadedConfig> {
    this.syncing ??= this.syncConfig().finally(() => {
      this.syncing = undefined;
    });
    return this.syncing;
  }

  private async syncConfig(): Promise<LoadedConfig> {
    const { confDir } = this.options;
    let fingerprint: string;
    let next: () => Promise<LoadedConfig>;
    try {
      const found = await findConfFile(confDir);
      if (found) {
        fingerprint = found.fingerprint;
        next = async () => {
          try {
            return { list: await loadConfFile(found.path) };
          } catch (err) {
            return { error: messageOf(err) };
          }
        };
      } else {
        fingerprint = EMBEDDED_SOURCE;
        next = async () => ({ list: this.defaultList() });
      }
    } catch (err) {
      const error = messageOf(err);
      fingerprint = `error\0${error}`;
      next = async () => ({ error });
    }
    if (this.loaded && fingerprint === this.fingerprint) return this.loaded;
    const loaded = await next();
    this.loaded = loaded;
    this.fingerprint = fingerprint;
    if (loaded.list) {
      this.log.info('cni config loaded', { network: loaded.list.name, source: loaded.list.source });
    } else {
      this.log.warn('cni config invalid', { error: loaded.error });
    }
    return loaded;
  }

  private defaultList(): NetworkConfList {
    return defaultConfList({
      subnet: this.options.defaultSubnet,
      bridgeName: this.bridgeName,
      ipamDataDir: this.ipamDataDir(),
    });
  }

  private get loopbackPlugin(): boolean {
    return this.options.loopback !== 'caller';
  }

  private ipamDataDir(): string {
    return join(this.options.cacheDir, 'ipam');
  }

  /** The first binary of the list (then `loopback`, when we run it) that is not in bin_dirs. */
  private async missingBinary(list: NetworkConfList): Promise<string | undefined> {
    for (const name of [...pluginBinaries(list), ...(this.loopbackPlugin ? ['loopback'] : [])]) {
      if (!(await findExecutable(name, this.options.binDirs))) return name;
    }
    return undefined;
  }

  private execCommon(sandboxId: string): {
    binDirs: readonly string[];
    timeoutMs: number;
    sandboxId: string;
    log: Logger;
  } {
    return { binDirs: this.options.binDirs, timeoutMs: this.timeoutMs, sandboxId, log: this.log };
  }

  private async runLoopback(
    command: CniCommand,
    sandboxId: string,
    netns: string,
    args: string,
  ): Promise<Record<string, unknown> | undefined> {
    return execPlugin({
      command,
      plugin: { type: 'loopback' },
      list: LOOPBACK_LIST,
      attachment: { containerId: sandboxId, netns, ifName: 'lo', cniArgs: args },
      capabilityArgs: {},
      ...this.execCommon(sandboxId),
    });
  }

  /**
   * SPEC §3 "Deleting an attachment": every plugin in reverse order, each with the ADD's final result as
   * prevResult, halting at the first error (so an IP is not released while portmap's rules still point at
   * it). Error code 3, "Container unknown or does not exist", means there is nothing to clean up.
   */
  private async deleteList(
    list: NetworkConfList,
    prevResult: Record<string, unknown> | undefined,
    attachment: Attachment,
    capabilityArgs: Record<string, unknown>,
    context: string,
  ): Promise<void> {
    for (const plugin of [...list.plugins].reverse()) {
      try {
        await execPlugin({
          command: 'DEL',
          plugin,
          list,
          attachment,
          capabilityArgs,
          prevResult,
          ...this.execCommon(attachment.containerId),
        });
      } catch (err) {
        if (err instanceof CniPluginError && err.cniCode === CNI_ERR_CONTAINER_UNKNOWN) continue;
        throw err instanceof CniPluginError ? err : wrapWith(err, context);
      }
    }
  }

  /** Undoes a failed ADD: DEL for the whole list, then the record goes; if DEL fails the record stays. */
  private async undoAdd(record: CacheRecord, prev: Record<string, unknown> | undefined): Promise<void> {
    const id = record.sandboxId;
    try {
      await this.deleteList(
        record.network,
        prev,
        {
          containerId: id,
          netns: await liveNetns(record.netnsPath),
          ifName: record.ifName,
          cniArgs: record.cniArgs,
        },
        record.runtimeConfig,
        `undo attach network of sandbox "${id}"`,
      );
      await this.cache.remove(id);
    } catch (err) {
      this.log.error('undo of a failed cni add failed; the cache record stays for detach or recovery', {
        sandboxId: id,
        error: err,
      });
    }
  }
}

function notReady(message: string): NetworkStatus {
  return { status: false, reason: READY_REASON_NOT_READY, message };
}

function toAttachResult(record: CacheRecord, result: Record<string, unknown>): AttachResult {
  return { networkName: record.network.name, interfaceName: record.ifName, ips: resultIps(result), result };
}

/**
 * The namespace path to pass as CNI_NETNS on DEL: the path when it is a live network namespace, else empty.
 * SPEC §2 `DEL` lists CNI_NETNS as optional and says plugins then "clean up as many resources as possible";
 * a stale path that is not a namespace (an unmounted pin leaves a plain file) makes `bridge` fail instead.
 */
export async function liveNetns(path: string): Promise<string> {
  if (!path) return '';
  try {
    return (await statfs(path)).type === NSFS_MAGIC ? path : '';
  } catch {
    return '';
  }
}

/** Compares dotted versions numerically: negative when a < b. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function validateContainerId(id: string): void {
  if (!CONTAINER_ID.test(id)) {
    throw new SkiffError(
      'invalid-argument',
      `sandbox id ${JSON.stringify(id)} is not a valid CNI container ID (letters, digits, _ . -, alphanumeric first)`,
    );
  }
}

/**
 * SPEC 0.4.0 "Parameters", interface name: "must not be empty, must not be "." or "..", must be less than
 * 16 characters and must not contain / or : or any whitespace characters".
 */
function validateIfName(name: string): void {
  if (name === '' || name === '.' || name === '..' || name.length >= 16 || /[/:\s]/.test(name)) {
    throw new SkiffError(
      'invalid-argument',
      `interface name ${JSON.stringify(name)} is not a valid Linux interface name`,
    );
  }
}

function validatePortMappings(mappings: readonly PortMapping[]): void {
  for (const m of mappings) {
    const bad = (p: number): boolean => !Number.isInteger(p) || p < 0 || p > 65535;
    if (bad(m.hostPort) || bad(m.containerPort) || (m.hostPort > 0 && m.containerPort === 0)) {
      throw new SkiffError(
        'invalid-argument',
        `port mapping ${m.protocol} ${m.hostIp || '*'}:${m.hostPort} -> ${m.containerPort} is out of range 1-65535`,
      );
    }
  }
}

function wrapWith(err: unknown, context: string): SkiffError {
  return isSkiffError(err)
    ? new SkiffError(err.kind, `${context}: ${err.message}`, { cause: err })
    : new SkiffError('internal', `${context}: ${messageOf(err)}`, { cause: err });
}
