/**
 * Client of skiff-helper (src/helper/skiff-helper.c): one resident process, started on first use, that
 * starts programs with posix_spawn and calls mount(2)/umount2(2) for skiff.
 *
 * Why: Node.js starts a child with fork(2) and its only thread waits until the child has exec'd; with the
 * daemon's page tables to copy that is 7-16 ms per process on a small VM, during which no RPC makes
 * progress. Through the helper a start costs the daemon one pipe write, and a mount no process at all.
 *
 * Without the helper binary (not built: no C compiler), `Helper.shared()` is undefined and callers fall
 * back to child_process and mount(8); the daemon says so at startup.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { SkiffError } from '../errdefs.js';

const REQ_SPAWN = 1;
const REQ_WRITE = 2;
const REQ_CLOSE = 3;
const REQ_RELEASE = 4;
const REQ_MOUNT = 5;
const REQ_UMOUNT = 6;
const REP_STARTED = 1;
const REP_DATA = 2;
const REP_EOF = 3;
const REP_EXIT = 4;
const REP_RESULT = 5;

/** What each of the child's fds is: /dev/null, a pipe we write (child reads), a pipe we read. */
export type FdKind = 'ignore' | 'write' | 'read';

export interface HelperSpawnOptions {
  env: NodeJS.ProcessEnv;
  cwd?: string;
  /** A new session (setsid), as child_process's `detached`. */
  detached?: boolean;
  /** One entry per child fd from 0; at least three. */
  stdio: readonly FdKind[];
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * A child started through the helper. `stdio[i]` is a Writable for a 'write' fd, a Readable for a 'read'
 * fd, null otherwise. `exited` settles when the child exits; `closed` when it has exited and every Readable
 * has ended (child_process's 'exit' and 'close'). Promises, not events: the exit can arrive in the same
 * read as the start, before the caller could listen.
 */
export class HelperChild {
  readonly stdio: (Readable | Writable | null)[];
  readonly exited: Promise<Exit>;
  readonly closed: Promise<Exit>;
  exit: Exit | undefined;
  private readonly reads: (PassThrough | undefined)[] = [];
  private openReads = 0;
  private released = false;
  private isClosed = false;
  private resolveExited: (e: Exit) => void = () => undefined;
  private resolveClosed: (e: Exit) => void = () => undefined;
  private rejectExited: (e: Error) => void = () => undefined;
  private rejectClosed: (e: Error) => void = () => undefined;

  constructor(
    private readonly helper: Helper,
    readonly id: number,
    readonly pid: number,
    kinds: readonly FdKind[],
  ) {
    this.exited = new Promise<Exit>((resolve, reject) => {
      this.resolveExited = resolve;
      this.rejectExited = reject;
    });
    this.closed = new Promise<Exit>((resolve, reject) => {
      this.resolveClosed = resolve;
      this.rejectClosed = reject;
    });
    // A caller may await only one of them; the other's rejection (onLost) is not a crash.
    this.exited.catch(() => undefined);
    this.closed.catch(() => undefined);
    this.stdio = kinds.map((k, fd) => {
      if (k === 'read') {
        this.openReads++;
        const r = new PassThrough();
        this.reads[fd] = r;
        return r;
      }
      if (k === 'write') {
        return new Writable({
          write: (chunk: Buffer, _enc, cb) => {
            // Frames of at most 1 MiB (the helper refuses huge frames); done once the last is flushed
            // to the helper's pipe, which is the back-pressure a caller gets.
            for (let off = 0; off < chunk.length || off === 0; off += WRITE_FRAME_MAX) {
              const part = chunk.subarray(off, off + WRITE_FRAME_MAX);
              const last = off + WRITE_FRAME_MAX >= chunk.length;
              const frame = Buffer.concat([Buffer.from([fd]), part]);
              if (last)
                this.helper.send(REQ_WRITE, id, frame, () => {
                  cb();
                });
              else this.helper.send(REQ_WRITE, id, frame);
            }
          },
          final: (cb) => {
            this.helper.send(REQ_CLOSE, id, Buffer.from([fd]));
            cb();
          },
          destroy: (_err, cb) => {
            this.helper.send(REQ_CLOSE, id, Buffer.from([fd]));
            cb(null);
          },
        });
      }
      return null;
    });
  }

  /** Stops relaying the child's pipes (closes the helper's ends); the child itself is left alone. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.helper.send(REQ_RELEASE, this.id, Buffer.alloc(0));
    for (const r of this.reads) if (r) this.endRead(r);
  }

  /** Sends `signal` to the child unless it has exited (as ChildProcess.kill). */
  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    if (this.exit !== undefined) return false;
    try {
      process.kill(this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /** @internal */
  onData(fd: number, data: Buffer): void {
    const r = this.reads[fd];
    if (r && !r.writableEnded) r.write(data);
  }

  /** @internal */
  onEof(fd: number): void {
    const r = this.reads[fd];
    if (r) this.endRead(r);
  }

  /** @internal */
  onExit(status: number): void {
    if (this.exit !== undefined) return;
    const sig = status & 0x7f;
    this.exit =
      sig === 0 ? { code: (status >> 8) & 0xff, signal: null } : { code: null, signal: signalName(sig) };
    this.resolveExited(this.exit);
    this.maybeClose();
  }

  /** @internal The helper went away: the child may still run, and its exit will never be known here. */
  onLost(why: string): void {
    this.isClosed = true;
    for (const r of this.reads) if (r && !r.writableEnded) r.end();
    const err = new SkiffError(
      'unavailable',
      `lost track of process ${String(this.pid)} (it may still run): ${why}`,
    );
    if (this.exit === undefined) this.rejectExited(err);
    this.rejectClosed(err);
  }

  private endRead(s: PassThrough): void {
    if (s.writableEnded) return;
    s.end();
    this.openReads--;
    this.maybeClose();
  }

  private maybeClose(): void {
    if (this.exit !== undefined && this.openReads === 0 && !this.isClosed) {
      this.isClosed = true;
      this.helper.forget(this.id);
      this.resolveClosed(this.exit);
    }
  }
}

interface Pending {
  resolve: (v: number[]) => void;
  reject: (e: Error) => void;
}

export class Helper {
  private static instance: Helper | undefined;
  private static missingPath: string | undefined;
  private static deaths = 0;

  /**
   * The daemon-wide helper, started on first use (and again after it died); undefined when its binary is
   * not there (see `helperPath`), or when it died MAX_DEATHS times (then callers fall back for good).
   */
  static shared(): Helper | undefined {
    if (Helper.instance && !Helper.instance.dead) return Helper.instance;
    if (Helper.instance?.dead) {
      Helper.instance = undefined;
      if (++Helper.deaths >= MAX_DEATHS) Helper.missingPath ??= `${helperPath()} (died ${MAX_DEATHS} times)`;
    }
    if (Helper.deaths >= MAX_DEATHS) return undefined;
    const path = helperPath();
    if (!existsSync(path)) {
      Helper.missingPath = path;
      return undefined;
    }
    Helper.instance = new Helper(path);
    return Helper.instance;
  }

  /** Where the helper binary was looked for, when `shared()` found none. */
  static missing(): string | undefined {
    return Helper.missingPath;
  }

  private readonly proc;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly children = new Map<number, HelperChild>();
  /** Children whose STARTED was read, until spawn() hands them out (they may have closed already). */
  private readonly started = new Map<number, HelperChild>();
  private inbuf: Buffer = Buffer.alloc(0);
  private dead = false;
  private stderrTail = '';

  private constructor(path: string) {
    // argv[1]: our pid, so the helper can tell it started after we died (its parent is then another).
    this.proc = spawn(path, [String(process.pid)], { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
    this.proc.stdout.on('data', (b: Buffer) => {
      this.onData(b);
    });
    // The end of its output is the end of the helper for us: every frame before it has been read, and
    // 'exit' may never come while nothing else holds the event loop (the process handle is unref'd).
    this.proc.stdout.on('close', () => {
      this.lose(`skiff-helper closed its output${this.stderrTail ? `: ${this.stderrTail.trim()}` : ''}`);
    });
    this.proc.stderr.on('data', (b: Buffer) => {
      this.stderrTail = (this.stderrTail + b.toString('utf8')).slice(-2000);
    });
    this.proc.stdin.on('error', () => undefined);
    this.proc.on('error', (e) => {
      this.lose(`skiff-helper: ${e.message}`);
    });
    this.proc.on('exit', (code, signal) => {
      const how = signal ? `was killed by ${signal}` : `exited with status ${String(code)}`;
      this.lose(`skiff-helper ${how}${this.stderrTail ? `: ${this.stderrTail.trim()}` : ''}`);
    });
    // An idle helper must not keep the daemon (or a test worker) alive; a request in flight or a child
    // still relayed must (see `busy`).
    this.proc.unref();
    for (const s of [this.proc.stdout, this.proc.stderr, this.proc.stdin]) unrefStream(s);
  }

  /** Holds the event loop open while anything is outstanding, as a child_process would. */
  private busy(): void {
    const outstanding = this.pending.size + this.children.size > 0;
    if (outstanding === this.reffed) return;
    this.reffed = outstanding;
    const h = (this.proc.stdout as unknown as { _handle?: { ref(): void; unref(): void } })._handle;
    if (outstanding) h?.ref();
    else h?.unref();
  }

  private reffed = false;

  /** The helper's own pid (tests and leak checks). */
  get pid(): number | undefined {
    return this.proc.pid;
  }

  /**
   * Starts `file` (a path, or a name looked up on `options.env.PATH`). Rejects as child_process's 'error'
   * would: an Error with `code` (ENOENT, EACCES, …) and `errno`.
   */
  async spawn(file: string, args: readonly string[], options: HelperSpawnOptions): Promise<HelperChild> {
    if (options.stdio.length < 3 || options.stdio.length > 8) {
      throw new SkiffError('internal', `helper spawn: ${options.stdio.length} fds (3 to 8)`);
    }
    // As child_process: a relative path is relative to our working directory (the helper's is /).
    if (file.includes('/')) file = resolvePath(file);
    const cwd = options.cwd === undefined || options.cwd === '' ? '' : resolvePath(options.cwd);
    const env = Object.entries(options.env)
      .filter((e): e is [string, string] => e[1] !== undefined)
      .map(([k, v]) => `${k}=${v}`);
    noNul(`spawn ${file}`, file, cwd, ...args, ...env);
    const parts: Buffer[] = [];
    const u32 = (n: number): Buffer => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(n);
      return b;
    };
    const str = (s: string): Buffer => Buffer.from(`${s}\0`, 'utf8');
    parts.push(u32(options.detached ? 1 : 0));
    parts.push(
      Buffer.from([
        options.stdio.length,
        ...options.stdio.map((k) => (k === 'ignore' ? 0 : k === 'write' ? 1 : 2)),
      ]),
    );
    parts.push(str(cwd), str(file), u32(args.length + 1), str(file));
    for (const a of args) parts.push(str(a));
    parts.push(u32(env.length));
    for (const e of env) parts.push(str(e));
    const id = this.id();
    // The child object is made when STARTED is read (onFrame), before the DATA frames that may follow it.
    this.kinds.set(id, options.stdio);
    const [pid = 0, errno = 0] = await this.request(REQ_SPAWN, id, Buffer.concat(parts));
    if (errno !== 0 || pid === 0) throw errnoError(errno, `spawn ${file}`);
    const child = this.started.get(id);
    this.started.delete(id);
    if (!child) throw new SkiffError('internal', `helper spawn ${file}: child ${id} was not registered`);
    return child;
  }

  /** mount(2): `flags` are MS_* bits; rejects with an errno Error (`code` set). */
  async mount(
    source: string,
    target: string,
    fstype: string,
    flags: number,
    data: string,
    cwd = '',
  ): Promise<void> {
    noNul(`mount ${target}`, source, target, fstype, data, cwd);
    const head = Buffer.alloc(8);
    head.writeUInt32LE(flags % 2 ** 32, 0);
    head.writeUInt32LE(Math.floor(flags / 2 ** 32), 4);
    const body = Buffer.concat([head, Buffer.from([source, target, fstype, data, cwd].join('\0') + '\0')]);
    const [errno] = await this.request(REQ_MOUNT, this.id(), body);
    if (errno) throw errnoError(errno, `mount ${target}`);
  }

  /** umount2(2) with `flags` (MNT_DETACH = 2); rejects with an errno Error (`code` set). */
  async umount(target: string, flags = 0): Promise<void> {
    noNul(`umount ${target}`, target);
    const head = Buffer.alloc(4);
    head.writeUInt32LE(flags);
    const [errno] = await this.request(
      REQ_UMOUNT,
      this.id(),
      Buffer.concat([head, Buffer.from(`${target}\0`)]),
    );
    if (errno) throw errnoError(errno, `umount ${target}`);
  }

  /** @internal */
  send(type: number, id: number, body: Buffer, flushed?: () => void): void {
    if (this.dead) {
      flushed?.();
      return;
    }
    const head = Buffer.alloc(9);
    head.writeUInt32LE(5 + body.length, 0);
    head.writeUInt8(type, 4);
    head.writeUInt32LE(id, 5);
    this.proc.stdin.write(Buffer.concat([head, body]), flushed);
  }

  /** @internal */
  forget(id: number): void {
    this.children.delete(id);
    this.busy();
  }

  private id(): number {
    const id = this.nextId;
    this.nextId = this.nextId >= 0xfffffff0 ? 1 : this.nextId + 1;
    return id;
  }

  /** What each fd of a child being started is, until its STARTED arrives. */
  private readonly kinds = new Map<number, readonly FdKind[]>();

  private request(type: number, id: number, body: Buffer): Promise<number[]> {
    if (this.dead) {
      this.kinds.delete(id);
      return Promise.reject(new SkiffError('unavailable', 'skiff-helper is not running'));
    }
    return new Promise<number[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.send(type, id, body);
      this.busy();
    });
  }

  private onData(chunk: Buffer): void {
    this.inbuf = this.inbuf.length === 0 ? chunk : Buffer.concat([this.inbuf, chunk]);
    let off = 0;
    while (this.inbuf.length - off >= 4) {
      const len = this.inbuf.readUInt32LE(off);
      if (this.inbuf.length - off - 4 < len) break;
      this.onFrame(this.inbuf.subarray(off + 4, off + 4 + len));
      off += 4 + len;
    }
    this.inbuf = off === this.inbuf.length ? Buffer.alloc(0) : this.inbuf.subarray(off);
  }

  private onFrame(f: Buffer): void {
    const type = f.readUInt8(0);
    const id = f.readUInt32LE(1);
    switch (type) {
      case REP_STARTED: {
        const pid = f.readInt32LE(5);
        const errno = f.readInt32LE(9);
        const kinds = this.kinds.get(id) ?? [];
        this.kinds.delete(id);
        if (errno === 0 && pid > 0) {
          const child = new HelperChild(this, id, pid, kinds);
          this.children.set(id, child);
          this.started.set(id, child);
        }
        this.settle(id, [pid, errno]);
        return;
      }
      case REP_RESULT:
        this.settle(id, [f.readInt32LE(5)]);
        return;
      case REP_DATA:
        this.children.get(id)?.onData(f.readUInt8(5), Buffer.from(f.subarray(6)));
        return;
      case REP_EOF:
        this.children.get(id)?.onEof(f.readUInt8(5));
        return;
      case REP_EXIT:
        this.children.get(id)?.onExit(f.readInt32LE(5));
        return;
      default:
        return;
    }
  }

  private settle(id: number, values: number[]): void {
    const p = this.pending.get(id);
    this.pending.delete(id);
    this.busy();
    p?.resolve(values);
  }

  private lose(why: string): void {
    if (this.dead) return;
    this.dead = true;
    for (const p of this.pending.values()) p.reject(new SkiffError('unavailable', why));
    this.pending.clear();
    this.kinds.clear();
    for (const c of this.children.values()) c.onLost(why);
    this.children.clear();
    this.started.clear();
    this.busy();
  }
}

/** Helper deaths after which skiff stops restarting it and starts processes itself. */
const MAX_DEATHS = 3;
/** The largest WRITE frame sent (the helper refuses frames over 64 MiB). */
const WRITE_FRAME_MAX = 1024 * 1024;

function resolvePath(p: string): string {
  return isAbsolute(p) ? p : resolve(p);
}

/** Strings travel NUL-terminated; one with a NUL in it would be cut short (child_process refuses it too). */
function noNul(what: string, ...values: string[]): void {
  if (values.some((v) => v.includes('\0'))) {
    throw new SkiffError(
      'invalid-argument',
      `${what}: an argument, path or environment entry contains a NUL byte`,
    );
  }
}

function unrefStream(s: unknown): void {
  (s as { _handle?: { unref?: () => void } } | null)?._handle?.unref?.();
}

// The first name per number (SIGABRT, not its alias SIGIOT), as Node reports signals.
const SIGNAL_NAMES = new Map<number, NodeJS.Signals>();
for (const [name, n] of Object.entries(osConstants.signals)) {
  if (!SIGNAL_NAMES.has(n)) SIGNAL_NAMES.set(n, name as NodeJS.Signals);
}

function signalName(n: number): NodeJS.Signals {
  return SIGNAL_NAMES.get(n) ?? 'SIGKILL';
}

const ERRNO_NAMES = new Map<number, string>(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

/** An Error shaped like Node's system errors: `code` (ENOENT), `errno` (negative, as libuv's). */
function errnoError(errno: number, what: string): NodeJS.ErrnoException {
  const code = ERRNO_NAMES.get(errno) ?? `E${errno}`;
  const e: NodeJS.ErrnoException = new Error(`${what}: ${code}`);
  e.code = code;
  e.errno = -errno;
  return e;
}

/** `<package root>/dist/helper/skiff-helper`, found from this module (under src/ or dist/src/). */
export function helperPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'dist', 'helper', 'skiff-helper');
    dir = dirname(dir);
  }
  return join(dirname(fileURLToPath(import.meta.url)), 'skiff-helper');
}
