/**
 * The OCI runtime driver behind an interface (CRI-O's shape): the container service asks for verbs; the
 * conmon + runc/runsc implementation (`oci/conmon.ts`) builds the command lines in one place and folds
 * the runtime's stderr into its errors. Everything a driver needs about one container is in `RuntimeTarget`.
 */

/** A configured `[runtimes.NAME]`, resolved. */
export interface RuntimeHandler {
  name: string;
  /** Absolute path of runc/runsc. */
  binaryPath: string;
  /** `--root` for the runtime's state (per handler, under skiff's state dir). */
  root: string;
  /** Global flags before the verb (e.g. `--network=host` for runsc). */
  extraArgs: readonly string[];
}

/** One container as the driver sees it. */
export interface RuntimeTarget {
  id: string;
  handler: RuntimeHandler;
  /** Bundle dir: config.json + rootfs/. */
  bundle: string;
  /**
   * Per-container volatile dir owned by the driver: conmon pidfile, container pidfile, exit file, OOM
   * marker. Survives a skiff restart (it is under `state`). conmon puts its attach socket and ctl/winsz
   * fifos in the bundle dir instead (it has no option for them); `conmonPaths` in oci/conmon.ts names all.
   */
  dir: string;
}

export interface CreateOptions {
  /** Absolute CRI log path, or '' for none (conmon then logs to /dev/null). */
  logPath: string;
  stdin: boolean;
  stdinOnce: boolean;
  tty: boolean;
  /** Parent cgroup for conmon itself (cgroupfs path or systemd slice), or '' to stay in skiff's. */
  conmonCgroup: string;
  systemdCgroup: boolean;
}

export interface ExitInfo {
  exitCode: number;
  /** Unix ns as a decimal string. */
  exitedAt: string;
  oomKilled: boolean;
}

export interface RuntimeState {
  status: 'creating' | 'created' | 'running' | 'paused' | 'stopped';
  pid: number;
}

export interface ExecSyncResult {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
  timedOut: boolean;
}

export interface OciRuntime {
  /** Starts conmon, which runs `<runtime> create`; resolves once the container is CREATED (init pid known). */
  create(t: RuntimeTarget, o: CreateOptions): Promise<{ pid: number; conmonPid: number }>;
  start(t: RuntimeTarget): Promise<void>;
  /** `<runtime> kill`; tolerant of a container that has already exited. */
  kill(t: RuntimeTarget, signal: string, all?: boolean): Promise<void>;
  /** `<runtime> delete --force`; tolerant of a container the runtime no longer knows. */
  delete(t: RuntimeTarget): Promise<void>;
  /** `<runtime> state`, or undefined when the runtime does not know the container. */
  state(t: RuntimeTarget): Promise<RuntimeState | undefined>;
  /** The exit conmon recorded, or undefined while the container runs (or never ran). */
  exitInfo(t: RuntimeTarget): Promise<ExitInfo | undefined>;
  /** Resolves with the exit once conmon records it (watching the exit file; no polling of /proc). */
  waitExit(t: RuntimeTarget, signal?: AbortSignal): Promise<ExitInfo>;
  /**
   * Runs a command in the container; stdout/stderr capped at `maxOutputBytes` each (the head is kept);
   * at the timeout the command and its children are killed (`timedOut`, exit code 137). A command that
   * cannot start (not found) is a result with a non-zero exit code and the reason in stderr; a container
   * the runtime does not know is `not-found`, a stopped one `failed-precondition`. `tty` is not supported
   * by the conmon driver (`unimplemented`: CRI's ExecSync has no tty).
   */
  execSync(
    t: RuntimeTarget,
    cmd: string[],
    o: { timeoutMs: number; maxOutputBytes: number; env?: string[]; cwd?: string; tty?: boolean },
  ): Promise<ExecSyncResult>;
  /**
   * Makes conmon reopen the log file (kubelet's rotation) and resolves once a new file is at `logPath`
   * (the container's CRI log path, as given to create; '' does nothing).
   */
  reopenLog(t: RuntimeTarget, logPath: string): Promise<void>;
  /** `<runtime> update --resources -` with an OCI LinuxResources object. */
  update(t: RuntimeTarget, resources: unknown): Promise<void>;
  /** Whether the conmon for this container still runs (for recovery). */
  isMonitorAlive(t: RuntimeTarget): Promise<boolean>;
}
