/**
 * Containers: CreateContainer, Start, Stop, Remove, Status, List, ExecSync, ReopenContainerLog, and
 * recovery at start. The OCI runtime is driven through `OciRuntime` (conmon + runc/runsc), which keeps
 * every container's stdio, log and exit code in conmon, a process that outlives skiff.
 *
 * Layout of one container:
 *   <root>/containers/<id>/{metadata,status}.json, upper/, work/   the record and the writable layer
 *   <state>/containers/<id>/bundle/{config.json,rootfs/}           rootfs = overlay(image chain, upper)
 *   <state>/containers/<id>/runtime/                               conmon's pidfiles, exit file, sockets
 *
 * Locks: every verb on one container runs under its id in one keyed mutex; a create runs under its name
 * key (name, sandbox, attempt) so that two creates of one name cannot both win. The record is written
 * last; a crash mid-create leaves dirs (and maybe a mount and a created runtime container) that recovery
 * tears down.
 *
 * Exits: a watcher per started container waits for conmon's exit file and records the exit (code, time,
 * reason: Completed / Error / OOMKilled from conmon's OOM report), then emits a `stopped` event.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdir, open, readdir, rm } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { SkiffError, isSkiffError, messageOf } from '../errdefs.js';
import type { ImageRecord } from '../image/image-store.js';
import type { ImageService } from '../image/service.js';
import type { Logger } from '../log.js';
import type { OciRuntime, RuntimeHandler, RuntimeTarget } from '../oci/runtime.js';
import { buildSpec, toLinuxResources } from '../oci/spec/build.js';
import type { ContainerConfig, ContainerResources } from '../oci/spec/container-config.js';
import type { SandboxConfig, SandboxRecord, SandboxStatus } from '../sandbox/record.js';
import { podHostname, type SandboxService } from '../sandbox/service.js';
import { mount, overlayMount, unmount } from '../snapshot/mount.js';
import type { SnapshotStore } from '../snapshot/snapshots.js';
import { KeyedMutex } from '../store/keyed-mutex.js';
import { writeFileAtomic } from '../util/atomic.js';
import type { PriorityGate } from '../util/priority-gate.js';
import { eachLimited } from '../util/each-limited.js';
import { Rollback } from '../util/rollback.js';
import {
  CONTAINER_RECORD_VERSION,
  type ContainerRecord,
  ContainerRecords,
  type ContainerState,
  type ContainerStatus,
} from './record.js';
import { canExec, canReopenLog, canStart, needsStop } from './state.js';

export interface HandlerInfo extends RuntimeHandler {
  recursiveReadOnlyMounts: boolean;
}

export interface ContainerServiceOptions {
  root: string;
  state: string;
  log: Logger;
  runtime: OciRuntime;
  /** Configured runtime handlers by name, with their binaries resolved. */
  handlers: ReadonlyMap<string, HandlerInfo>;
  images: ImageService;
  snapshots: SnapshotStore;
  sandboxes: SandboxService;
  /** The daemon's admission gate for start-up steps (shared with the sandbox service); none: no limit. */
  admission?: PriorityGate;
  cgroupDriver: 'systemd' | 'cgroupfs';
  cgroupV2: boolean;
  /** Swap accounting (v1 memory.memsw.*) and the hugetlb controller exist on this node. */
  swapAccounting: boolean;
  hugetlb: boolean;
  /** The daemon's own oom_score_adj: without CAP_SYS_RESOURCE nothing can go lower. */
  minOomScoreAdj: number;
  seccompAvailable: boolean;
  /** `[images] sandbox_image`, or '' for no pause container. */
  sandboxImage?: string;
  /** How long a SIGKILLed container may take to be reported dead before Stop gives up. */
  killTimeoutMs?: number;
}

export interface ContainerFilter {
  id?: string;
  state?: ContainerState;
  sandboxId?: string;
  labels?: Record<string, string>;
}

export type ContainerEventType = 'created' | 'started' | 'stopped' | 'deleted';

export interface ContainerEvent {
  type: ContainerEventType;
  containerId: string;
  sandboxId: string;
  /** Unix ns. */
  createdAt: bigint;
}

/** Termination messages are capped as kubelet caps them (4 KiB). */
const MAX_MESSAGE = 4096;
/** Containers reconciled at once at start-up. */
const RECONCILE_CONCURRENCY = 4;
/** ExecSync output cap per stream (16 MiB, as containerd's). */
const MAX_EXEC_OUTPUT = 16 * 1024 * 1024;
const TERMINATION_PATH_ANNOTATION = 'io.kubernetes.container.terminationMessagePath';

export class ContainerService {
  readonly records: ContainerRecords;
  readonly events = new EventEmitter<{ event: [ContainerEvent] }>();
  private readonly lock = new KeyedMutex();
  private readonly watchers = new Map<string, AbortController>();
  /** Creates in flight: id → chain ID, held against image GC before the record exists. */
  private readonly creating = new Map<string, string>();

  constructor(private readonly o: ContainerServiceOptions) {
    this.records = new ContainerRecords(o.root);
    // Many GetContainerEvents streams may listen; none is a leak.
    this.events.setMaxListeners(0);
  }

  // ---------------------------------------------------------------------------------------------- recovery

  /** Loads records, tears down interrupted creates, and reconciles each container with conmon and runc. */
  async start(): Promise<void> {
    const orphans = await this.records.load();
    const known = new Set(this.records.list().map((r) => r.metadata.id));
    const volatile = await readdir(join(this.o.state, 'containers')).catch(() => [] as string[]);
    for (const id of new Set([...orphans, ...volatile.filter((v) => !known.has(v))])) {
      this.o.log.info('cleaning up an interrupted CreateContainer', { containerId: id });
      for (const handler of this.o.handlers.values()) {
        await this.o.runtime.delete(this.target(id, handler)).catch(() => undefined);
      }
      await this.releaseFiles(id).catch((err: unknown) => {
        this.o.log.warn('cleanup of interrupted container failed', {
          containerId: id,
          error: messageOf(err),
        });
      });
      await this.records.remove(id);
    }
    const live: ContainerRecord[] = [];
    for (const r of this.records.list()) {
      if (!this.o.sandboxes.records.get(r.metadata.sandboxId)) {
        // Its sandbox was never completed (a RunPodSandbox interrupted after its pause container
        // started) or is gone: nothing can reach this container any more.
        this.o.log.info('removing a container whose pod sandbox is gone', { containerId: r.metadata.id });
        await this.remove(r.metadata.id).catch((err: unknown) => {
          this.o.log.warn('removing orphan container failed', {
            containerId: r.metadata.id,
            error: messageOf(err),
          });
        });
        continue;
      }
      if (r.status.state !== 'exited') live.push(r);
    }
    // Each reconcile is a file read and maybe a `runc state`; a few at a time keeps a restart with
    // hundreds of containers short without flooding a small node.
    await eachLimited(live, RECONCILE_CONCURRENCY, (r) => this.reconcile(r));
  }

  private async reconcile(r: ContainerRecord): Promise<void> {
    const id = r.metadata.id;
    const handler = this.o.handlers.get(r.metadata.runtimeHandler);
    if (!handler) {
      await this.writeStatus(r, {
        state: 'unknown',
        reason: 'Unknown',
        message: `runtime handler "${r.metadata.runtimeHandler}" is no longer configured`,
      });
      return;
    }
    const target = this.target(id, handler);
    const exit = await this.o.runtime.exitInfo(target).catch(() => undefined);
    if (exit) {
      await this.markExited(id, exit);
      return;
    }
    const state = await this.o.runtime.state(target).catch(() => undefined);
    if (!state || state.status === 'stopped') {
      // No exit file and no runtime container: the node rebooted, or conmon died with it.
      this.o.log.warn('container lost while skiff was down', {
        containerId: id,
        runtimeState: state?.status,
      });
      await this.writeStatus(r, {
        state: 'exited',
        exitCode: 255,
        finishedAt: r.status.finishedAt !== '0' ? r.status.finishedAt : nowNs().toString(),
        reason: 'Error',
        message: 'the container was gone when skiff restarted (node reboot or its conmon was killed)',
      });
      return;
    }
    if (state.status === 'running' && r.status.state === 'created') {
      // Started, but skiff died before recording it.
      await this.writeStatus(r, { state: 'running', startedAt: nowNs().toString(), pid: state.pid });
    }
    if (state.status === 'running' || state.status === 'paused') this.watch(id, handler);
  }

  // ----------------------------------------------------------------------------------------------- create

  /** CreateContainer: returns the container id. */
  async create(sandboxIdOrPrefix: string, config: ContainerConfig): Promise<string> {
    const sandbox = this.o.sandboxes.status(sandboxIdOrPrefix);
    const sandboxId = sandbox.metadata.id;
    const what = `create container "${config.name}" in pod sandbox "${sandboxId.slice(0, 13)}"`;
    if (!config.name) {
      throw new SkiffError('invalid-argument', `create container: metadata.name must be set`);
    }
    if (sandbox.status.state !== 'ready') {
      throw new SkiffError(
        'failed-precondition',
        `${what}: the pod sandbox is not ready (${sandbox.status.reason ?? 'stopped'}); run a new sandbox`,
      );
    }
    const key = `${config.name}_${sandboxId}_${config.attempt}`;
    return this.lock.run(`name:${key}`, async () => {
      const existing = this.records
        .list()
        .find(
          (r) =>
            r.metadata.sandboxId === sandboxId &&
            r.metadata.config.name === config.name &&
            r.metadata.config.attempt === config.attempt,
        );
      if (existing) {
        throw new SkiffError(
          'already-exists',
          `${what}: container "${existing.metadata.id}" already has this name and attempt; remove it first or use a new attempt`,
        );
      }
      try {
        return await this.admit(sandboxId, () => this.doCreate(sandbox, config));
      } catch (err) {
        throw isSkiffError(err) ? new SkiffError(err.kind, `${what}: ${err.message}`, { cause: err }) : err;
      }
    });
  }

  private async doCreate(sandbox: SandboxRecord, config: ContainerConfig, infra = false): Promise<string> {
    const sandboxId = sandbox.metadata.id;
    const image = this.o.images.status(config.image);
    if (!config.image) throw new SkiffError('invalid-argument', 'image.image must be set');
    if (!image) {
      throw new SkiffError(
        'not-found',
        `image "${config.image}" is not present on this node; pull it first (crictl pull ${config.image})`,
      );
    }
    const handlerName = sandbox.metadata.runtimeHandler;
    const handler = this.o.handlers.get(handlerName);
    if (!handler) {
      throw new SkiffError(
        'failed-precondition',
        `runtime handler "${handlerName}" of the pod sandbox is not configured or its binary is missing`,
      );
    }
    const id = randomBytes(32).toString('hex');
    const log = this.o.log.child({ containerId: id, sandboxId, container: config.name });
    const rollback = new Rollback(log);
    const dir = this.records.dirOf(id);
    const stateDir = this.stateDir(id);
    const bundle = join(stateDir, 'bundle');
    const rootfs = join(bundle, 'rootfs');
    this.creating.set(id, image.chainId);
    try {
      rollback.add('remove dirs', () => this.releaseFiles(id));
      await mkdir(join(dir, 'upper'), { recursive: true, mode: 0o755 });
      await mkdir(join(dir, 'work'), { recursive: true, mode: 0o700 });
      await mkdir(rootfs, { recursive: true, mode: 0o755 });
      await mkdir(join(stateDir, 'runtime'), { recursive: true, mode: 0o700 });

      const lowerDirs = await this.o.snapshots.lowerDirs(image.chainId);
      await mount(rootfs, overlayMount(lowerDirs, join(dir, 'upper'), join(dir, 'work')));

      const imageConfig = image.config.config ?? {};
      const targetPidNsPath =
        config.security.namespaces.pid === 'target'
          ? this.targetPidNs(config.security.namespaces.targetId)
          : undefined;
      const podDir = this.o.sandboxes.records.dirOf(sandboxId);
      const sc = sandbox.metadata.config;
      const { spec, warnings, volumes, missingHostPaths } = await buildSpec({
        id,
        config,
        imageName: image.repoTags[0] ?? config.image,
        image: {
          env: imageConfig.Env ?? [],
          entrypoint: imageConfig.Entrypoint ?? [],
          cmd: imageConfig.Cmd ?? [],
          workingDir: imageConfig.WorkingDir ?? '',
          user: imageConfig.User ?? '',
          volumes: Object.keys(imageConfig.Volumes ?? {}),
          stopSignal: imageConfig.StopSignal ?? '',
        },
        rootfs,
        sandbox: {
          id: sandboxId,
          hostname: podHostname(sc),
          namespaces: sandbox.status.namespaces,
          hostNetwork: sc.namespaces.network === 'node',
          hostIpc: sc.namespaces.ipc === 'node',
          hostPid: sc.namespaces.pid === 'node',
          shmPath: sandbox.status.shmPath,
          hostsPath: join(podDir, 'hosts'),
          resolvConfPath: join(podDir, 'resolv.conf'),
          hostnamePath: join(podDir, 'hostname'),
          cgroupParent: sc.cgroupParent,
          sysctls: sc.sysctls,
          privileged: sc.privileged,
          name: sc.name,
          namespace: sc.namespace,
          uid: sc.uid,
        },
        targetPidNsPath,
        cgroupDriver: this.o.cgroupDriver,
        cgroupV2: this.o.cgroupV2,
        minOomScoreAdj: this.o.minOomScoreAdj,
        recursiveReadOnlyMounts: handler.recursiveReadOnlyMounts,
        seccompAvailable: this.o.seccompAvailable,
        apparmorAvailable: false,
        selinuxAvailable: false,
        swapControllerAvailable: this.o.swapAccounting,
        hugetlbAvailable: this.o.hugetlb,
        volumesDir: join(dir, 'volumes'),
      });
      for (const w of warnings) log.warn('container spec', { warning: w });
      if (basename(handler.binaryPath) === 'runsc') {
        // runsc reads these to run the container inside an existing gVisor sandbox (a pause container's);
        // skiff has none, so each container is its own gVisor sandbox in the pod's namespaces.
        delete spec.annotations?.['io.kubernetes.cri.container-type'];
        delete spec.annotations?.['io.kubernetes.cri.sandbox-id'];
      }
      // As containerd: image volumes get fresh host dirs; missing CRI host paths are created (0755).
      for (const v of volumes) await mkdir(v.hostPath, { recursive: true, mode: 0o755 });
      for (const p of missingHostPaths) await mkdir(p, { recursive: true, mode: 0o755 });
      await writeFileAtomic(join(bundle, 'config.json'), JSON.stringify(spec, null, 2), 0o600);

      const logPath = this.logPathOf(sandbox, config);
      if (logPath) await mkdir(dirname(logPath), { recursive: true });
      const target = this.target(id, handler);
      const created = await this.o.runtime.create(target, {
        logPath,
        stdin: config.stdin,
        stdinOnce: config.stdinOnce,
        tty: config.tty,
        conmonCgroup: '',
        systemdCgroup: this.o.cgroupDriver === 'systemd',
      });
      rollback.add('delete runtime container', () => this.o.runtime.delete(target));

      const createdAt = nowNs();
      await this.records.create({
        metadata: {
          version: CONTAINER_RECORD_VERSION,
          id,
          sandboxId,
          config,
          imageId: image.id,
          chainId: image.chainId,
          imageName: image.repoTags[0] ?? config.image,
          imageRef: imageRefOf(image),
          logPath,
          runtimeHandler: handlerName,
          stopSignal: config.stopSignal || imageConfig.StopSignal || 'SIGTERM',
          cgroupsPath: spec.linux?.cgroupsPath ?? '',
          user: {
            uid: spec.process?.user.uid ?? 0,
            gid: spec.process?.user.gid ?? 0,
            additionalGids: spec.process?.user.additionalGids ?? [],
          },
          createdAt: createdAt.toString(),
          ...(infra ? { infra } : {}),
        },
        status: {
          version: CONTAINER_RECORD_VERSION,
          state: 'created',
          pid: created.pid,
          startedAt: '0',
          finishedAt: '0',
          exitCode: 0,
          reason: '',
          message: '',
        },
      });
      log.info('container created', { image: config.image, handler: handlerName });
      this.emit('created', id, sandboxId);
      return id;
    } catch (err) {
      log.warn('create container failed, rolling back', { error: messageOf(err) });
      await rollback.run();
      throw err;
    } finally {
      this.creating.delete(id);
    }
  }

  private logPathOf(sandbox: SandboxRecord, config: ContainerConfig): string {
    if (!config.logPath) return '';
    if (isAbsolute(config.logPath)) return config.logPath;
    const dir = sandbox.metadata.config.logDirectory;
    return dir ? join(dir, config.logPath) : '';
  }

  private targetPidNs(targetId: string): string {
    const t = this.records.resolve(targetId);
    if (t.status.state !== 'running' || t.status.pid <= 0) {
      throw new SkiffError(
        'failed-precondition',
        `target container "${targetId}" for the PID namespace is not running`,
      );
    }
    return `/proc/${t.status.pid}/ns/pid`;
  }

  // ------------------------------------------------------------------------------------------------ start

  async startContainer(idOrPrefix: string): Promise<void> {
    const found = this.records.resolve(idOrPrefix).metadata;
    const id = found.id;
    await this.lock.run(id, () => this.admit(found.sandboxId, () => this.doStart(id)));
  }

  /** Runs a start-up step under the daemon's admission gate, by its pod's priority (util/priority-gate.ts). */
  private admit<T>(sandboxId: string, step: () => Promise<T>): Promise<T> {
    const gate = this.o.admission;
    return gate ? gate.run(this.o.sandboxes.admissionPriority(sandboxId), step) : step();
  }

  private async doStart(id: string): Promise<void> {
    const r = this.mustGet(id);
    if (!canStart(r.status.state)) {
      throw new SkiffError(
        'failed-precondition',
        `start container "${id}": it is ${r.status.state}, and only a created container can start; create a new one`,
      );
    }
    const handler = this.handlerOf(r);
    const target = this.target(id, handler);
    // Taken before `runc start`: a process that exits at once must not look as if it ended first.
    const startedAt = nowNs().toString();
    try {
      await this.o.runtime.start(target);
    } catch (err) {
      await this.writeStatus(r, {
        state: 'exited',
        exitCode: 128,
        finishedAt: nowNs().toString(),
        reason: 'StartError',
        message: messageOf(err).slice(0, MAX_MESSAGE),
      });
      throw isSkiffError(err)
        ? new SkiffError(err.kind, `start container "${id}": ${err.message}`, { cause: err })
        : err;
    }
    await this.writeStatus(r, { state: 'running', startedAt });
    this.o.log.info('container started', { containerId: id });
    this.emit('started', id, r.metadata.sandboxId);
    this.watch(id, handler);
  }

  /** Waits (in the background) for conmon to record the exit, then records it. */
  private watch(id: string, handler: HandlerInfo): void {
    if (this.watchers.has(id)) return;
    const ac = new AbortController();
    this.watchers.set(id, ac);
    this.o.runtime
      .waitExit(this.target(id, handler), ac.signal)
      .then((exit) => this.lock.run(id, () => this.markExited(id, exit)))
      .catch((err: unknown) => {
        if (!ac.signal.aborted)
          this.o.log.warn('waiting for container exit failed', { containerId: id, error: messageOf(err) });
      })
      .finally(() => {
        if (this.watchers.get(id) === ac) this.watchers.delete(id);
      });
  }

  /** Records an exit once (later calls for the same container are no-ops). Caller holds the id lock. */
  private async markExited(
    id: string,
    exit: { exitCode: number; exitedAt: string; oomKilled: boolean },
  ): Promise<void> {
    const r = this.records.get(id);
    if (!r || r.status.state === 'exited') return;
    const reason = exit.oomKilled ? 'OOMKilled' : exit.exitCode === 0 ? 'Completed' : 'Error';
    // The exit file's mtime has the filesystem's granularity; never report an end before the start.
    const finishedAt =
      BigInt(exit.exitedAt) < BigInt(r.status.startedAt) ? r.status.startedAt : exit.exitedAt;
    await this.writeStatus(r, {
      state: 'exited',
      exitCode: exit.exitCode,
      finishedAt,
      reason,
      message: await this.terminationMessage(r),
    });
    this.o.log.info('container exited', { containerId: id, exitCode: exit.exitCode, reason });
    this.emit('stopped', id, r.metadata.sandboxId);
  }

  /** The file kubelet mounted at the container's terminationMessagePath, capped at 4 KiB. */
  private async terminationMessage(r: ContainerRecord): Promise<string> {
    const path = r.metadata.config.annotations[TERMINATION_PATH_ANNOTATION];
    const m = path ? r.metadata.config.mounts.find((x) => x.containerPath === path) : undefined;
    if (!m) return '';
    try {
      const fh = await open(m.hostPath, 'r');
      try {
        const buf = Buffer.alloc(MAX_MESSAGE);
        const { bytesRead } = await fh.read(buf, 0, MAX_MESSAGE, 0);
        return buf.subarray(0, bytesRead).toString('utf8');
      } finally {
        await fh.close();
      }
    } catch {
      return '';
    }
  }

  // ------------------------------------------------------------------------------------------------- stop

  /** StopContainer: stop signal, then SIGKILL after `timeoutSec`; stopping a stopped container is fine. */
  async stop(idOrPrefix: string, timeoutSec: number): Promise<void> {
    const id = this.records.resolve(idOrPrefix).metadata.id;
    await this.lock.run(id, () => this.stopLocked(id, timeoutSec));
  }

  private async stopLocked(id: string, timeoutSec: number): Promise<void> {
    const r = this.records.get(id);
    if (!r || !needsStop(r.status.state)) return;
    const handler = this.o.handlers.get(r.metadata.runtimeHandler);
    if (!handler) {
      await this.writeStatus(r, {
        state: 'exited',
        exitCode: 255,
        finishedAt: nowNs().toString(),
        reason: 'Error',
      });
      return;
    }
    const target = this.target(id, handler);
    const state = await this.o.runtime.state(target).catch(() => undefined);
    if (!state || state.status === 'stopped') {
      const exit = await this.o.runtime.exitInfo(target).catch(() => undefined);
      await this.markExited(id, exit ?? { exitCode: 255, exitedAt: nowNs().toString(), oomKilled: false });
      return;
    }
    const waitFor = async (ms: number) => {
      const ac = new AbortController();
      const timer = setTimeout(() => {
        ac.abort();
      }, ms);
      try {
        return await this.o.runtime.waitExit(target, ac.signal);
      } catch {
        return undefined;
      } finally {
        clearTimeout(timer);
      }
    };
    let exit;
    if (timeoutSec > 0 && r.status.state === 'running') {
      await this.o.runtime.kill(target, r.metadata.stopSignal);
      exit = await waitFor(timeoutSec * 1000);
    }
    if (!exit) {
      await this.o.runtime.kill(target, 'SIGKILL', true);
      exit = await waitFor(this.o.killTimeoutMs ?? 30_000);
    }
    if (!exit) {
      throw new SkiffError(
        'deadline-exceeded',
        `stop container "${id}": it did not die within ${(this.o.killTimeoutMs ?? 30_000) / 1000}s of SIGKILL (a process in uninterruptible sleep?); retry the stop`,
      );
    }
    await this.markExited(id, exit);
    this.o.log.info('container stopped', { containerId: id, exitCode: exit.exitCode });
  }

  // ----------------------------------------------------------------------------------------------- remove

  /** RemoveContainer: force-stops a running container first; removing a removed one is not an error. */
  async remove(idOrPrefix: string): Promise<void> {
    let id: string;
    try {
      id = this.records.resolve(idOrPrefix).metadata.id;
    } catch (err) {
      if (isSkiffError(err, 'not-found')) return;
      throw err;
    }
    await this.lock.run(id, async () => {
      const r = this.records.get(id);
      if (!r) return;
      await this.stopLocked(id, 0);
      this.watchers.get(id)?.abort();
      const handler = this.o.handlers.get(r.metadata.runtimeHandler);
      if (handler) await this.o.runtime.delete(this.target(id, handler));
      await this.records.remove(id);
      await this.releaseFiles(id);
      this.o.log.info('container removed', { containerId: id });
      this.emit('deleted', id, r.metadata.sandboxId);
    });
  }

  /** Unmounts the rootfs and deletes the bundle, conmon's files and the writable layer. Idempotent. */
  private async releaseFiles(id: string): Promise<void> {
    const stateDir = this.stateDir(id);
    const rootfs = join(stateDir, 'bundle', 'rootfs');
    await unmount(rootfs).catch(() => unmount(rootfs, { lazy: true }));
    await rm(stateDir, { recursive: true, force: true });
    await rm(this.records.dirOf(id), { recursive: true, force: true });
  }

  /** For StopPodSandbox: kills every container of the pod (kubelet has already stopped them with grace). */
  async stopAll(sandboxId: string): Promise<void> {
    const ids = this.list({ sandboxId }).map((r) => r.metadata.id);
    await Promise.all(ids.map((id) => this.stop(id, 0)));
  }

  /** For RemovePodSandbox. */
  async removeAll(sandboxId: string): Promise<void> {
    const ids = this.list({ sandboxId }).map((r) => r.metadata.id);
    await Promise.all(ids.map((id) => this.remove(id)));
  }

  /**
   * Runs the pod's pause container (`[images] sandbox_image`) while RunPodSandbox is still in progress:
   * the sandbox has no record yet, so it is described by what the run has made so far. Pulls the image
   * first if the node lacks it (kubelet never pulls the sandbox image; the runtime does, as containerd).
   */
  async startInfra(
    sandboxId: string,
    sc: SandboxConfig,
    handler: string,
    status: SandboxStatus,
  ): Promise<{ containerId: string; pid: number }> {
    const image = this.o.sandboxImage;
    if (!image) throw new SkiffError('failed-precondition', 'no [images] sandbox_image is configured');
    if (!this.o.images.status(image)) await this.o.images.pull(image);
    const sandbox: SandboxRecord = {
      metadata: {
        version: 1,
        id: sandboxId,
        config: sc,
        createdAt: nowNs().toString(),
        runtimeHandler: handler,
      },
      status,
    };
    const id = await this.lock.run(`name:POD_${sandboxId}`, () =>
      this.doCreate(sandbox, infraConfig(image, sc.namespaces.pid === 'node'), true),
    );
    try {
      await this.startContainer(id);
    } catch (err) {
      await this.remove(id);
      throw err;
    }
    return { containerId: id, pid: this.mustGet(id).status.pid };
  }

  /** Force-removes a pause container (StopPodSandbox); idempotent. */
  async removeInfra(containerId: string): Promise<void> {
    await this.remove(containerId);
  }

  // ------------------------------------------------------------------------------------------------- read

  status(idOrPrefix: string): ContainerRecord {
    return this.records.resolve(idOrPrefix);
  }

  list(filter: ContainerFilter = {}): ContainerRecord[] {
    const { sandboxId, state } = filter;
    return this.records.select({
      idPrefix: filter.id,
      labels: filter.labels,
      where: (r) =>
        !r.metadata.infra &&
        (!sandboxId || r.metadata.sandboxId.startsWith(sandboxId)) &&
        (!state || r.status.state === state),
    });
  }

  /** Top snapshot chain IDs that containers are built on: image GC must keep them. */
  chainsInUse(): string[] {
    return [...this.records.list().map((r) => r.metadata.chainId), ...this.creating.values()];
  }

  // ------------------------------------------------------------------------------------------------- exec

  /** ExecSync: runs `cmd` in a running container; a timeout kills it and fails the call. */
  async execSync(
    idOrPrefix: string,
    cmd: string[],
    timeoutSec: number,
  ): Promise<{ stdout: Buffer; stderr: Buffer; exitCode: number }> {
    const r = this.records.resolve(idOrPrefix);
    const id = r.metadata.id;
    if (cmd.length === 0)
      throw new SkiffError('invalid-argument', `exec in container "${id}": cmd must not be empty`);
    if (!canExec(r.status.state)) {
      throw new SkiffError(
        'failed-precondition',
        `exec in container "${id}": it is ${r.status.state}, not running`,
      );
    }
    const result = await this.o.runtime.execSync(this.target(id, this.handlerOf(r)), cmd, {
      timeoutMs: timeoutSec > 0 ? timeoutSec * 1000 : 0,
      maxOutputBytes: MAX_EXEC_OUTPUT,
    });
    if (result.timedOut) {
      throw new SkiffError(
        'deadline-exceeded',
        `exec in container "${id}": command ${JSON.stringify(cmd)} timed out after ${timeoutSec}s and was killed`,
      );
    }
    return result;
  }

  /** ReopenContainerLog: conmon reopens the log file (after kubelet rotated it). */
  async reopenLog(idOrPrefix: string): Promise<void> {
    const r = this.records.resolve(idOrPrefix);
    const id = r.metadata.id;
    if (!canReopenLog(r.status.state)) {
      throw new SkiffError(
        'failed-precondition',
        `reopen log of container "${id}": it is ${r.status.state}, not running`,
      );
    }
    await this.o.runtime.reopenLog(this.target(id, this.handlerOf(r)), r.metadata.logPath);
  }

  /** UpdateContainerResources: `<runtime> update` with the OCI resources. */
  async updateResources(idOrPrefix: string, resources: ContainerResources): Promise<void> {
    const r = this.records.resolve(idOrPrefix);
    if (r.status.state !== 'running' && r.status.state !== 'created') {
      throw new SkiffError(
        'failed-precondition',
        `update container "${r.metadata.id}": it is ${r.status.state}; only created or running containers can be updated`,
      );
    }
    await this.o.runtime.update(
      this.target(r.metadata.id, this.handlerOf(r)),
      toLinuxResources(resources, {
        cgroupV2: this.o.cgroupV2,
        swapControllerAvailable: this.o.swapAccounting,
        hugetlbAvailable: this.o.hugetlb,
      }),
    );
  }

  /** Stops watching exits (at daemon shutdown); containers keep running under conmon. */
  close(): void {
    for (const ac of this.watchers.values()) ac.abort();
  }

  // ---------------------------------------------------------------------------------------------- helpers

  stateDir(id: string): string {
    return join(this.o.state, 'containers', id);
  }

  target(id: string, handler: RuntimeHandler): RuntimeTarget {
    return {
      id,
      handler,
      bundle: join(this.stateDir(id), 'bundle'),
      dir: join(this.stateDir(id), 'runtime'),
    };
  }

  targetOf(r: ContainerRecord): RuntimeTarget {
    return this.target(r.metadata.id, this.handlerOf(r));
  }

  private handlerOf(r: ContainerRecord): HandlerInfo {
    const h = this.o.handlers.get(r.metadata.runtimeHandler);
    if (!h) {
      throw new SkiffError(
        'failed-precondition',
        `container "${r.metadata.id}": runtime handler "${r.metadata.runtimeHandler}" is no longer configured`,
      );
    }
    return h;
  }

  private mustGet(id: string): ContainerRecord {
    const r = this.records.get(id);
    if (!r) throw new SkiffError('not-found', `container "${id}" not found`);
    return r;
  }

  private async writeStatus(r: ContainerRecord, change: Partial<ContainerStatus>): Promise<void> {
    await this.records.writeStatus(r.metadata.id, { ...r.status, ...change });
  }

  private emit(type: ContainerEventType, containerId: string, sandboxId: string): void {
    if (this.records.get(containerId)?.metadata.infra) return; // kubelet does not know pause containers
    this.events.emit('event', { type, containerId, sandboxId, createdAt: nowNs() });
  }
}

/** containerd's image_ref: the first repo digest, else the image id. */
function imageRefOf(image: ImageRecord): string {
  return image.repoDigests[0] ?? image.id;
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

/** The pause container's request: the image's own command, defaults everywhere, its own PID namespace. */
function infraConfig(image: string, hostPid: boolean): ContainerConfig {
  return {
    name: 'POD',
    attempt: 0,
    image,
    command: [],
    args: [],
    workingDir: '',
    envs: [],
    mounts: [],
    devices: [],
    labels: {},
    annotations: {},
    logPath: '',
    stdin: false,
    stdinOnce: false,
    tty: false,
    stopSignal: '',
    resources: {
      cpuPeriod: 0,
      cpuQuota: 0,
      cpuShares: 2, // containerd's pause: the minimum weight, it never competes for CPU
      memoryLimitInBytes: 0,
      memorySwapLimitInBytes: 0,
      oomScoreAdj: -998,
      cpusetCpus: '',
      cpusetMems: '',
      hugepageLimits: [],
      unified: {},
    },
    security: {
      privileged: false,
      capabilities: { add: [], drop: [], addAmbient: [] },
      namespaces: { pid: hostPid ? 'node' : 'container', targetId: '' },
      runAsUser: undefined,
      runAsGroup: undefined,
      runAsUsername: '',
      runAsNonRoot: false,
      readonlyRootfs: true,
      supplementalGroups: [],
      noNewPrivs: true,
      maskedPaths: undefined,
      readonlyPaths: undefined,
      seccomp: { kind: 'runtime-default' },
      apparmor: undefined,
      selinux: undefined,
    },
  };
}
