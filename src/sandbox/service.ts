/**
 * Pod sandboxes: RunPodSandbox, Stop, Remove, Status, List, and recovery at start.
 *
 * No pause image by default (CRI-O's drop-infra shape): the pod's namespaces are created and pinned by bind
 * mounts under `<state>/sandboxes/<id>/ns/`, so containers join them by path; a process is started only
 * when one must hold a namespace (a pod-level PID namespace: Debian's `catatonit -P`).
 *
 * Lifecycle and locks: every verb on one sandbox runs under that sandbox's key in one keyed mutex, and a
 * RunPodSandbox under its pod's name key, so different pods proceed in parallel. Each step of a run
 * registers its undo at once; a failed run undoes in reverse and leaves nothing. The record is written
 * last, so a crash mid-run leaves only dirs and a CNI cache entry, which recovery tears down.
 *
 * Kubelet retries RunPodSandbox after its own timeout (4 min by default) with the same name and attempt.
 * A retry while the first call is still running waits for it; a retry after the first finished for a
 * caller that had already given up gets that sandbox's id. Only a pod whose run was delivered to its
 * caller makes a same-name run ALREADY_EXISTS (containerd's "failed to reserve sandbox name", minus the
 * stuck pods it causes).
 */
import { randomBytes } from 'node:crypto';
import { access, mkdir, readFile, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { SkiffError, messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';
import type { NetworkManager } from '../network/manager.js';
import { joinCgroup } from '../oci/cgroups.js';
import { KeyedMutex } from '../store/keyed-mutex.js';
import type { PriorityGate } from '../util/priority-gate.js';
import { Rollback } from '../util/rollback.js';
import {
  hostFiles,
  mountShm,
  renderHostname,
  renderHosts,
  renderResolvConf,
  unmountShm,
  writePodFiles,
} from './files.js';
import {
  isAlive,
  isPinned,
  pinNamespaces,
  pinPidNamespace,
  processStartTime,
  startInfra,
  stopInfra,
  unpinNamespaces,
} from './namespaces.js';
import {
  SANDBOX_RECORD_VERSION,
  type SandboxConfig,
  type SandboxRecord,
  SandboxRecords,
  type SandboxStatus,
} from './record.js';

export interface SandboxServiceOptions {
  root: string;
  state: string;
  log: Logger;
  network: NetworkManager;
  /** Configured runtime handler names; the default is used when a request names none. */
  runtimeHandlers: readonly string[];
  defaultRuntimeHandler: string;
  cgroupDriver: 'systemd' | 'cgroupfs';
  shmSizeBytes: number;
  /**
   * With `[images] sandbox_image`: runs the pause container that holds the pod (containerd's shape)
   * instead of pinning without a process; the container service provides it.
   */
  infraContainer?: InfraContainerHook;
  /**
   * Admission of the start-up steps of pods (util/priority-gate.ts): RunPodSandbox here, and the
   * container service's create and start by the pod's priority (`admissionPriority`). None: no limit.
   */
  admission?: PriorityGate;
  /** Stops and removes the containers of a sandbox (the container service, once it exists). */
  containers?: {
    stopAll(sandboxId: string): Promise<void>;
    removeAll(sandboxId: string): Promise<void>;
  };
}

export interface InfraContainerHook {
  /** Creates and starts the pause container in the pod's pinned namespaces; its init's pid. */
  start(
    sandboxId: string,
    config: SandboxConfig,
    handler: string,
    status: SandboxStatus,
  ): Promise<{ containerId: string; pid: number }>;
  /** Force-removes it; idempotent. */
  remove(containerId: string): Promise<void>;
}

export interface SandboxFilter {
  id?: string;
  state?: 'ready' | 'notready';
  labels?: Record<string, string>;
}

export class SandboxService {
  readonly records: SandboxRecords;
  private readonly lock = new KeyedMutex();
  /** Runs by pod name key (name, namespace, uid, attempt), in flight or finished but not yet delivered. */
  private readonly runs = new Map<string, Promise<string>>();
  /** Admission priority by sandbox id (see admissionPriority); arrivals counts RunPodSandbox calls. */
  private readonly priorities = new Map<string, number>();
  private arrivals = 0;

  constructor(private readonly o: SandboxServiceOptions) {
    this.records = new SandboxRecords(o.root);
  }

  /** Loads the records, reconciles each with the kernel, and tears down what interrupted runs left. */
  async start(): Promise<void> {
    const orphans = await this.records.load();
    for (const id of orphans) {
      this.o.log.info('cleaning up an interrupted RunPodSandbox', { sandboxId: id });
      await this.teardown(id, undefined);
      await this.records.remove(id);
    }
    const known = new Set(this.records.list().map((r) => r.metadata.id));
    for (const id of await this.o.network.listCached()) {
      if (!known.has(id)) {
        this.o.log.info('releasing the network of a sandbox without record', { sandboxId: id });
        await this.o.network
          .detach({ sandboxId: id, netnsPath: join(this.stateDir(id), 'ns', 'net') })
          .catch((err: unknown) => {
            this.o.log.warn('releasing orphan network failed', { sandboxId: id, error: messageOf(err) });
          });
      }
    }
    for (const r of this.records.list()) {
      if (r.status.state !== 'ready') continue;
      const reason = await this.whyNotReady(r.status);
      if (reason) {
        this.o.log.warn('sandbox no longer ready after restart', { sandboxId: r.metadata.id, reason });
        await this.records.writeStatus(r.metadata.id, { ...r.status, state: 'notready', reason });
      }
    }
  }

  private stateDir(id: string): string {
    return join(this.o.state, 'sandboxes', id);
  }

  /** Why a sandbox recorded ready is not (the kernel wins), or undefined. */
  private async whyNotReady(s: SandboxStatus): Promise<string | undefined> {
    for (const [kind, path] of Object.entries(s.namespaces)) {
      if (path && !(await isPinned(path))) return `${kind} namespace ${path} is no longer pinned (reboot?)`;
    }
    if (s.infra && !(await isAlive(s.infra.pid, s.infra.startTime))) {
      return `infra process ${s.infra.pid} holding the pod's PID namespace is gone`;
    }
    return undefined;
  }

  /** RunPodSandbox: returns the sandbox id. */
  async run(config: SandboxConfig, signal?: AbortSignal): Promise<string> {
    this.validate(config);
    const key = nameKey(config);
    let pending = this.runs.get(key);
    if (!pending) {
      const existing = this.records.list().find((r) => nameKey(r.metadata.config) === key);
      if (existing) {
        throw new SkiffError(
          'already-exists',
          `run pod sandbox ${describe(config)}: sandbox "${existing.metadata.id}" already has this name and attempt; remove it first or use a new attempt`,
        );
      }
      const priority = ++this.arrivals;
      const run = this.lock.run(`name:${key}`, () =>
        this.o.admission
          ? this.o.admission.run(priority, () => this.doRun(config, priority))
          : this.doRun(config, priority),
      );
      pending = run;
      this.runs.set(key, run);
      // A failed run is forgotten at once; a finished one stays until a caller takes its result.
      run.catch(() => {
        if (this.runs.get(key) === run) this.runs.delete(key);
      });
    }
    const id = await pending;
    // A caller that gave up (kubelet's own timeout) leaves the result for its retry to claim.
    if (!signal?.aborted && this.runs.get(key) === pending) this.runs.delete(key);
    return id;
  }

  private validate(c: SandboxConfig): void {
    const missing = (['name', 'namespace', 'uid'] as const).filter((k) => !c[k]);
    if (missing.length > 0) {
      throw new SkiffError(
        'invalid-argument',
        `run pod sandbox: metadata.${missing.join(', metadata.')} must be set (kubelet always sets name, namespace and uid)`,
      );
    }
    if (!this.o.runtimeHandlers.includes(c.runtimeHandler || this.o.defaultRuntimeHandler)) {
      throw new SkiffError(
        'invalid-argument',
        `run pod sandbox ${describe(c)}: unknown runtime handler "${c.runtimeHandler}"; configured handlers: ${this.o.runtimeHandlers.join(', ')} (add [runtimes.${c.runtimeHandler}] to the config)`,
      );
    }
    if (c.cgroupParent && this.o.cgroupDriver === 'systemd' && !c.cgroupParent.endsWith('.slice')) {
      throw new SkiffError(
        'invalid-argument',
        `run pod sandbox ${describe(c)}: cgroup_parent "${c.cgroupParent}" is not a systemd slice (name.slice) but the cgroup driver is systemd; set cgroup_driver to match kubelet's`,
      );
    }
    if (c.namespaces.network === 'target' || c.namespaces.ipc === 'target') {
      throw new SkiffError('invalid-argument', `run pod sandbox ${describe(c)}: TARGET applies to pid only`);
    }
  }

  /**
   * The admission priority of a sandbox's start-up steps: its arrival order in this daemon's life (lower
   * goes first); 0, the first, for sandboxes that were there before it started.
   */
  admissionPriority(sandboxId: string): number {
    return this.priorities.get(sandboxId) ?? 0;
  }

  private async doRun(config: SandboxConfig, priority: number): Promise<string> {
    const id = randomBytes(32).toString('hex');
    this.priorities.set(id, priority);
    const log = this.o.log.child({ sandboxId: id, pod: `${config.namespace}/${config.name}` });
    const handler = config.runtimeHandler || this.o.defaultRuntimeHandler;
    const hostNetwork = config.namespaces.network === 'node';
    const rollback = new Rollback(log);
    const stateDir = this.stateDir(id);
    const dir = this.records.dirOf(id);
    // /dev/shm is mounted while the namespaces and the network are made (helpers of their own, and this
    // machine has more than one core); awaited before the record is written, and before any rollback.
    let shmMounted: Promise<string> | undefined;
    try {
      await mkdir(dir, { recursive: true, mode: 0o711 });
      await mkdir(stateDir, { recursive: true, mode: 0o711 });
      rollback.add('remove dirs', async () => {
        await rm(stateDir, { recursive: true, force: true });
        await rm(dir, { recursive: true, force: true });
      });

      if (config.namespaces.ipc !== 'node') {
        const shmPath = join(stateDir, 'shm');
        shmMounted = mountShm(shmPath, this.o.shmSizeBytes).then(() => {
          rollback.add('unmount shm', () => unmountShm(shmPath));
          return shmPath;
        });
        // Settled below (or in the catch); this only keeps a rejection that comes first from going unhandled.
        shmMounted.catch(() => undefined);
      }

      const nsDir = join(stateDir, 'ns');
      await mkdir(nsDir, { recursive: true, mode: 0o711 });
      const pinned = await pinNamespaces(nsDir, {
        net: !hostNetwork,
        ipc: config.namespaces.ipc !== 'node',
        uts: !hostNetwork,
        hostname: hostNetwork ? undefined : podHostname(config),
        sysctls: config.sysctls,
        loopbackUp: true,
      });
      rollback.add('unpin namespaces', () => unpinNamespaces(nsDir));
      const status: SandboxStatus = {
        version: SANDBOX_RECORD_VERSION,
        state: 'ready',
        ips: [],
        namespaces: { ...pinned },
      };

      if (config.namespaces.pid === 'pod' && !this.o.infraContainer) {
        const infra = await startInfra(nsDir, pinned);
        rollback.add('stop infra', () => stopInfra(infra.pid, { startTime: infra.startTime }));
        // The infra process belongs in the pod's cgroup, as containerd's pause container does.
        if (config.cgroupParent) {
          await joinCgroup(infra.pid, config.cgroupParent, this.o.cgroupDriver, {
            v2: await isCgroupV2(),
          });
        }
        status.infra = { pid: infra.pid, startTime: infra.startTime };
        status.namespaces.pid = infra.pidNs;
      }

      if (!hostNetwork && pinned.net) {
        const netnsPath = pinned.net;
        const attached = await this.o.network.attach({
          sandboxId: id,
          netnsPath,
          podName: config.name,
          podNamespace: config.namespace,
          podUid: config.uid,
          portMappings: config.portMappings,
        });
        rollback.add('cni del', () => this.o.network.detach({ sandboxId: id, netnsPath }));
        status.ips = attached.ips;
      }

      if (hostNetwork) {
        const host = await hostFiles();
        await writePodFiles(dir, { hostname: host.hostname, hosts: host.hosts, resolvConf: host.resolvConf });
      } else {
        const hostname = podHostname(config);
        const hostResolv = await readFile('/etc/resolv.conf', 'utf8').catch(() => '');
        await writePodFiles(dir, {
          hostname: renderHostname(hostname),
          hosts: renderHosts(hostname, status.ips),
          resolvConf: renderResolvConf(config.dns, hostResolv),
        });
      }

      if (shmMounted) status.shmPath = await shmMounted;

      const pause = this.o.infraContainer;
      if (pause) {
        // The pause container joins the pinned net/ipc/uts and makes its own PID namespace, which is the
        // pod's when the pod shares one (pinned like catatonit's); its cgroup is under cgroup_parent.
        const infra = await pause.start(id, config, handler, status);
        rollback.add('remove pause container', () => pause.remove(infra.containerId));
        const startTime = await processStartTime(infra.pid);
        if (startTime === undefined) {
          throw new SkiffError('unknown', `pause container ${infra.containerId} exited at once`);
        }
        status.infra = { pid: infra.pid, startTime, containerId: infra.containerId };
        if (config.namespaces.pid === 'pod') {
          status.namespaces.pid = await pinPidNamespace(nsDir, infra.pid);
          rollback.add('unpin pid namespace', () =>
            stopInfra(infra.pid, { startTime, pidNs: status.namespaces.pid }),
          );
        }
      }

      await this.records.create({
        metadata: {
          version: SANDBOX_RECORD_VERSION,
          id,
          config,
          createdAt: nowNs().toString(),
          runtimeHandler: handler,
        },
        status,
      });
      log.info('pod sandbox ready', { ips: status.ips, handler });
      return id;
    } catch (err) {
      log.warn('run pod sandbox failed, rolling back', { error: messageOf(err) });
      this.priorities.delete(id);
      await shmMounted?.catch(() => undefined);
      await rollback.run();
      throw err instanceof SkiffError
        ? new SkiffError(err.kind, `run pod sandbox ${describe(config)}: ${err.message}`, { cause: err })
        : err;
    }
  }

  /** StopPodSandbox: idempotent; NOT_FOUND for an unknown id (as containerd answers). */
  async stop(idOrPrefix: string): Promise<void> {
    const id = this.records.resolve(idOrPrefix).metadata.id;
    await this.lock.run(id, async () => {
      const r = this.records.get(id);
      if (!r) return;
      // A sandbox this method already stopped (its teardown succeeded, then stoppedAt was recorded and
      // its namespaces cleared) holds nothing: a repeated Stop, and the one RemovePodSandbox makes, need
      // not run CNI DEL and the rest again. A recovered NOTREADY sandbox has no stoppedAt and is torn down.
      if (r.status.stoppedAt !== undefined && Object.keys(r.status.namespaces).length === 0) return;
      await this.o.containers?.stopAll(id);
      await this.teardown(id, r.status);
      if (
        r.status.state === 'ready' ||
        r.status.ips.length > 0 ||
        Object.keys(r.status.namespaces).length > 0
      ) {
        await this.records.writeStatus(id, {
          ...r.status,
          state: 'notready',
          namespaces: {},
          infra: undefined,
          shmPath: undefined,
          stoppedAt: r.status.stoppedAt ?? nowNs().toString(),
        });
        this.o.log.info('pod sandbox stopped', { sandboxId: id });
      }
    });
  }

  /** Releases everything a sandbox holds in the kernel and the network; tolerant of what is gone. */
  private async teardown(id: string, s: SandboxStatus | undefined): Promise<void> {
    const stateDir = this.stateDir(id);
    const nsDir = join(stateDir, 'ns');
    const errors: string[] = [];
    const attempt = async (what: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(`${what}: ${messageOf(err)}`);
      }
    };
    await attempt('cni del', () => this.o.network.detach({ sandboxId: id, netnsPath: join(nsDir, 'net') }));
    const infra = s?.infra;
    const pause = this.o.infraContainer;
    if (infra?.containerId && pause) {
      const containerId = infra.containerId;
      await attempt('remove pause container', () => pause.remove(containerId));
    }
    if (infra) {
      await attempt('stop infra', () =>
        stopInfra(infra.pid, { startTime: infra.startTime, pidNs: s.namespaces.pid }),
      );
    }
    await attempt('unmount shm', () => unmountShm(join(stateDir, 'shm')));
    await attempt('unpin namespaces', () => unpinNamespaces(nsDir));
    await attempt('remove state dir', () => rm(stateDir, { recursive: true, force: true }));
    if (errors.length > 0) {
      throw new SkiffError('unknown', `release pod sandbox "${id}": ${errors.join('; ')}`);
    }
  }

  /** RemovePodSandbox: stops first if needed; removing a removed sandbox is not an error. */
  async remove(idOrPrefix: string): Promise<void> {
    let id: string;
    try {
      id = this.records.resolve(idOrPrefix).metadata.id;
    } catch (err) {
      if (err instanceof SkiffError && err.kind === 'not-found') return;
      throw err;
    }
    await this.stop(id);
    await this.lock.run(id, async () => {
      await this.o.containers?.removeAll(id);
      const r = this.records.get(id);
      if (r) this.runs.delete(nameKey(r.metadata.config));
      this.priorities.delete(id);
      await this.records.remove(id);
      this.o.log.info('pod sandbox removed', { sandboxId: id });
    });
  }

  status(idOrPrefix: string): SandboxRecord {
    return this.records.resolve(idOrPrefix);
  }

  list(filter: SandboxFilter = {}): SandboxRecord[] {
    const { state } = filter;
    return this.records.select({
      idPrefix: filter.id,
      labels: filter.labels,
      where: (r) => !state || r.status.state === state,
    });
  }
}

/** The pod's identity for name reservation: kubelet's sandbox name is name_namespace_uid_attempt. */
function nameKey(c: SandboxConfig): string {
  return `${c.name}_${c.namespace}_${c.uid}_${c.attempt}`;
}

function describe(c: SandboxConfig): string {
  return `"${c.namespace}/${c.name}" (uid ${c.uid}, attempt ${c.attempt})`;
}

/**
 * The pod's hostname: the one asked for, else the node's, as containerd does (kubelet always sets one;
 * crictl and critest pods often do not, and their names are no valid hostnames).
 */
export function podHostname(c: SandboxConfig): string {
  return c.hostname || hostname();
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

async function isCgroupV2(): Promise<boolean> {
  return access('/sys/fs/cgroup/cgroup.controllers').then(
    () => true,
    () => false,
  );
}
