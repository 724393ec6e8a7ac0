/**
 * The conmon + runc/runsc driver (src/oci/conmon.ts) against the real binaries, as root: a busybox bundle
 * with a hand-written config.json, created, started, signalled, exec'd into, OOM-killed and found again by
 * a second driver instance. Every test releases what it made in onTestFinished, pass or fail: the
 * container and conmon are killed by pid, the runtime forgets the container, its cgroups and temp dir go.
 */
import { randomBytes } from 'node:crypto';
import {
  copyFile,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rename,
  rm,
  rmdir,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { isSkiffError } from '../../src/errdefs.js';
import { silentLogger } from '../../src/log.js';
import { ConmonRuntime, conmonPaths } from '../../src/oci/conmon.js';
import type { CreateOptions, RuntimeHandler, RuntimeTarget } from '../../src/oci/runtime.js';
import { findExecutable, run, runChecked } from '../../src/util/exec.js';

const isRoot = process.getuid?.() === 0;
const conmonPath = (await findExecutable('conmon')) ?? '/usr/bin/conmon';
const runcPath = (await findExecutable('runc')) ?? '/usr/sbin/runc';
const runscPath = await findExecutable('runsc');
const haveTools =
  isRoot &&
  (await findExecutable(conmonPath)) !== undefined &&
  (await findExecutable(runcPath)) !== undefined;

const CGROUP_PARENT = 'skiff-test';
const APPLETS = ['sh', 'echo', 'sleep', 'cat', 'yes', 'head', 'true', 'ls'];

async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) expect.fail(`timed out waiting until ${what}`);
    await sleep(20);
  }
}

/** Whether `pid` runs: a zombie (an exited conmon waiting for init to reap it) does not. */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${String(pid)}/stat`, 'utf8').catch(() => '');
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== '' && state !== 'Z' && state !== 'X';
}

async function readPid(path: string): Promise<number | undefined> {
  const n = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** The cgroup dirs of `/skiff-test/<leaf>` (or `/<leaf>`) in every v1 hierarchy (and v2, if unified). */
async function cgroupDirs(path: string): Promise<string[]> {
  const root = '/sys/fs/cgroup';
  const names = await readdir(root);
  return [root, ...names.map((n) => join(root, n))].map((d) => join(d, path));
}

async function removeCgroup(path: string): Promise<void> {
  for (const d of await cgroupDirs(path)) {
    for (let i = 0; i < 50; i++) {
      try {
        await rmdir(d);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') break;
        await sleep(50);
      }
    }
  }
}

/** The oom_score_adj the container may have: not below ours (no CAP_SYS_RESOURCE here, see the brief). */
const oomScoreAdj = Math.max(0, Number.parseInt(await readFile('/proc/self/oom_score_adj', 'utf8'), 10));

interface Fixture {
  target: RuntimeTarget;
  base: string;
  logPath: string;
  runtime: ConmonRuntime;
}

interface BundleOptions {
  args: string[];
  memoryLimit?: number;
  handler?: 'runc' | 'runsc';
}

/**
 * A bundle in a fresh temp dir: rootfs with /bin/busybox and applet links, a minimal config.json
 * (pid/ipc/uts/mount/network namespaces, /proc and a /dev tmpfs, no seccomp, cgroup /skiff-test/<id>).
 * Released when the test finishes.
 */
async function fixture(o: BundleOptions): Promise<Fixture> {
  const id = `skiff-t-${randomBytes(6).toString('hex')}`;
  const base = await mkdtemp(join(tmpdir(), 'skiff-conmon-'));
  const bundle = join(base, 'bundle');
  const rootfs = join(bundle, 'rootfs');
  await mkdir(join(rootfs, 'bin'), { recursive: true });
  for (const d of ['proc', 'dev', 'tmp', 'etc']) await mkdir(join(rootfs, d));
  await copyFile('/bin/busybox', join(rootfs, 'bin', 'busybox'));
  for (const a of APPLETS) await symlink('busybox', join(rootfs, 'bin', a));
  const caps = ['CAP_KILL', 'CAP_NET_BIND_SERVICE', 'CAP_AUDIT_WRITE'];
  const limit = o.memoryLimit;
  const config = {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: o.args,
      env: ['PATH=/bin', 'HOME=/'],
      cwd: '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
      oomScoreAdj,
    },
    root: { path: 'rootfs', readonly: false },
    hostname: 'skiff-test',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
    ],
    linux: {
      namespaces: ['pid', 'ipc', 'uts', 'mount', 'network'].map((type) => ({ type })),
      cgroupsPath: `/${CGROUP_PARENT}/${id}`,
      resources: limit === undefined ? {} : { memory: { limit, swap: limit } },
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware'],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
  await writeFile(join(bundle, 'config.json'), JSON.stringify(config, null, 2));
  await mkdir(join(base, 'logs'));
  const isRunsc = o.handler === 'runsc';
  const handler: RuntimeHandler = {
    name: isRunsc ? 'runsc' : 'runc',
    binaryPath: isRunsc ? (runscPath ?? '/usr/bin/runsc') : runcPath,
    root: join(base, 'runtime-root'),
    extraArgs: isRunsc ? ['--network=host'] : [],
  };
  const target: RuntimeTarget = { id, handler, bundle, dir: join(base, 'ctr') };
  const runtime = new ConmonRuntime({ conmonPath, log: silentLogger() });

  onTestFinished(async () => {
    const p = conmonPaths(target);
    const conmonPid = await readPid(p.conmonPidFile);
    const ctrPid = await readPid(p.containerPidFile);
    if (ctrPid !== undefined) killQuietly(ctrPid);
    if (conmonPid !== undefined) {
      const comm = await readFile(`/proc/${String(conmonPid)}/comm`, 'utf8').catch(() => '');
      if (comm.trim() === 'conmon') killQuietly(conmonPid);
    }
    await run(handler.binaryPath, ['--root', handler.root, ...handler.extraArgs, 'delete', '--force', id]);
    if (conmonPid !== undefined) await until('conmon is gone', async () => !(await alive(conmonPid)));
    await removeCgroup(join(CGROUP_PARENT, id));
    await removeCgroup(CGROUP_PARENT);
    await rm(base, { recursive: true, force: true });
  });
  return { target, base, logPath: join(base, 'logs', 'ctr.log'), runtime };
}

function createOptions(logPath: string, o: Partial<CreateOptions> = {}): CreateOptions {
  return {
    logPath,
    stdin: false,
    stdinOnce: false,
    tty: false,
    conmonCgroup: '',
    systemdCgroup: false,
    ...o,
  };
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/** The CRI log lines of `path` (kubelet's format: `<RFC3339Nano> <stream> <P|F> <text>`). */
async function logLines(path: string): Promise<string[]> {
  return (await readFile(path, 'utf8').catch(() => '')).split('\n').filter((l) => l !== '');
}

const criLine = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) (stdout|stderr) (F|P) (.*)$/;

describe.skipIf(!haveTools)('ConmonRuntime with runc', () => {
  it('creates, starts and records the exit of a container, with its output in the CRI log', async () => {
    const f = await fixture({ args: ['sh', '-c', 'echo hello; echo oops >&2; exit 3'] });
    const { pid, conmonPid } = await f.runtime.create(f.target, createOptions(f.logPath));
    expect(pid).toBeGreaterThan(0);
    expect(await alive(conmonPid)).toBe(true);
    expect(await f.runtime.isMonitorAlive(f.target)).toBe(true);
    expect(await f.runtime.state(f.target)).toEqual({ status: 'created', pid });
    expect(await f.runtime.exitInfo(f.target)).toBeUndefined();

    const before = BigInt(Date.now()) * 1_000_000n;
    await f.runtime.start(f.target);
    const exit = await f.runtime.waitExit(f.target);
    expect(exit.exitCode).toBe(3);
    expect(exit.oomKilled).toBe(false);
    expect(BigInt(exit.exitedAt)).toBeGreaterThanOrEqual(before - 1_000_000_000n);
    expect(BigInt(exit.exitedAt)).toBeLessThanOrEqual(BigInt(Date.now()) * 1_000_000n + 1_000_000_000n);
    expect(await f.runtime.exitInfo(f.target)).toEqual(exit);
    expect((await f.runtime.state(f.target))?.status).toBe('stopped');

    const lines = await logLines(f.logPath);
    for (const l of lines) expect(l).toMatch(criLine);
    expect(lines.map((l) => criLine.exec(l)?.slice(3, 6))).toEqual(
      expect.arrayContaining([
        ['stdout', 'F', 'hello'],
        ['stderr', 'F', 'oops'],
      ]),
    );

    await until('conmon exits after the container', async () => !(await f.runtime.isMonitorAlive(f.target)));
    await f.runtime.delete(f.target);
    expect(await f.runtime.state(f.target)).toBeUndefined();
    await f.runtime.delete(f.target); // idempotent
  });

  it('folds the runtime error into the create error and leaves nothing behind', async () => {
    const f = await fixture({ args: ['/no/such/binary'] });
    const err = await f.runtime.create(f.target, createOptions(f.logPath)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isSkiffError(err, 'failed-precondition')).toBe(true);
    expect((err as Error).message).toMatch(
      new RegExp(`^create container "${f.target.id}": .*no such file or directory`),
    );
    expect((err as Error).message).not.toMatch(/level=error|time="/);
    expect(await f.runtime.state(f.target)).toBeUndefined();

    await expect(
      f.runtime.create(f.target, createOptions(join(f.base, 'no-such-dir', 'c.log'))),
    ).rejects.toSatisfy(
      (e: unknown) =>
        isSkiffError(e, 'failed-precondition') && /log dir ".*no-such-dir" does not exist/.test(String(e)),
    );
  });

  it('stops a sleeping container: SIGTERM is ignored by a handler-less PID 1, SIGKILL is not', async () => {
    const f = await fixture({ args: ['sleep', '1000'] });
    await f.runtime.create(f.target, createOptions(f.logPath));
    await f.runtime.start(f.target);
    expect((await f.runtime.state(f.target))?.status).toBe('running');

    await f.runtime.kill(f.target, 'SIGTERM');
    await sleep(300);
    expect(await f.runtime.exitInfo(f.target)).toBeUndefined();

    const ac = new AbortController();
    const waiting = f.runtime.waitExit(f.target, ac.signal);
    await f.runtime.kill(f.target, 'KILL');
    const exit = await waiting;
    expect(exit.exitCode).toBe(137);
    expect(exit.oomKilled).toBe(false);
    await f.runtime.kill(f.target, '9'); // already exited: fine
    await f.runtime.kill(f.target, 'SIGKILL', true);
    await f.runtime.delete(f.target);
    await f.runtime.kill(f.target, 'SIGKILL'); // unknown to the runtime: fine
  });

  it("starts runc's created container through its exec fifo; a second start is refused by runc", async () => {
    const f = await fixture({ args: ['sleep', '1000'] });
    const { pid } = await f.runtime.create(f.target, createOptions(f.logPath));
    const fifo = join(f.target.handler.root, f.target.id, 'exec.fifo');
    await stat(fifo); // what runc start would read
    await f.runtime.start(f.target);
    await expect(stat(fifo)).rejects.toThrow(/ENOENT/);
    expect(await f.runtime.state(f.target)).toEqual({ status: 'running', pid });
    expect((await readFile(`/proc/${String(pid)}/cmdline`, 'utf8')).split('\0')[0]).toBe('sleep');
    // No fifo any more: runc answers, as it would have.
    await expect(f.runtime.start(f.target)).rejects.toThrow(/already running|not in created state/i);
    await f.runtime.kill(f.target, 'KILL');
    await f.runtime.waitExit(f.target);
    await f.runtime.delete(f.target);
  });

  it('fails to start a created container whose init was killed, and leaves it deletable', async () => {
    const f = await fixture({ args: ['sleep', '1000'] });
    const { pid } = await f.runtime.create(f.target, createOptions(f.logPath));
    process.kill(pid, 'SIGKILL');
    await until('init is gone', async () => !(await alive(pid)));
    await expect(f.runtime.start(f.target)).rejects.toThrow(/init process is gone|stopped/);
    await f.runtime.delete(f.target);
    expect(await f.runtime.state(f.target)).toBeUndefined();
  });

  it('cancels a wait with its AbortSignal', async () => {
    const f = await fixture({ args: ['sleep', '1000'] });
    await f.runtime.create(f.target, createOptions(f.logPath));
    const ac = new AbortController();
    const waiting = f.runtime.waitExit(f.target, ac.signal);
    ac.abort();
    await expect(waiting).rejects.toSatisfy((e: unknown) => isSkiffError(e, 'canceled'));
  });

  it('runs execSync with output, exit codes, missing commands, output caps and timeouts', async () => {
    const f = await fixture({ args: ['sleep', '1000'] });
    const { pid } = await f.runtime.create(f.target, createOptions(f.logPath));
    await f.runtime.start(f.target);
    const opts = { timeoutMs: 10_000, maxOutputBytes: 16 * 1024 * 1024 };

    const r1 = await f.runtime.execSync(f.target, ['sh', '-c', 'echo out; echo err >&2; exit 7'], opts);
    expect(r1).toEqual({
      stdout: Buffer.from('out\n'),
      stderr: Buffer.from('err\n'),
      exitCode: 7,
      timedOut: false,
    });

    const r2 = await f.runtime.execSync(f.target, ['sh', '-c', 'echo "$FOO" "$PWD"'], {
      ...opts,
      env: ['FOO=bar'],
      cwd: '/tmp',
    });
    expect(r2.stdout.toString()).toBe('bar /tmp\n');

    const r3 = await f.runtime.execSync(f.target, ['no-such-command'], opts);
    expect(r3.exitCode).not.toBe(0);
    expect(r3.timedOut).toBe(false);
    expect(Buffer.concat([r3.stdout, r3.stderr]).toString()).toMatch(
      /no-such-command.*executable file not found/,
    );
    expect(r3.stderr.toString()).not.toMatch(/level=error/);

    await expect(f.runtime.execSync(f.target, ['true'], { ...opts, tty: true })).rejects.toSatisfy(
      (e: unknown) => isSkiffError(e, 'unimplemented'),
    );

    const r4 = await f.runtime.execSync(f.target, ['sh', '-c', 'yes | head -c 100000'], {
      ...opts,
      maxOutputBytes: 1000,
    });
    expect(r4.stdout.length).toBe(1000);
    expect(r4.exitCode).toBe(0);

    // A timeout kills the exec'd shell and the children it started, not the container.
    const started = Date.now();
    const r5 = await f.runtime.execSync(f.target, ['sh', '-c', 'sleep 1001 & sleep 1002; echo never'], {
      ...opts,
      timeoutMs: 500,
    });
    expect(r5.timedOut).toBe(true);
    expect(r5.exitCode).not.toBe(0);
    expect(r5.stdout.toString()).not.toContain('never');
    expect(Date.now() - started).toBeLessThan(5000);
    const ps = await runChecked(runcPath, [
      '--root',
      f.target.handler.root,
      'ps',
      '--format',
      'json',
      f.target.id,
    ]);
    await until('only the init process is left', async () => {
      const res = await runChecked(runcPath, [
        '--root',
        f.target.handler.root,
        'ps',
        '--format',
        'json',
        f.target.id,
      ]);
      return JSON.stringify(JSON.parse(res.stdout)) === JSON.stringify([pid]);
    });
    expect(ps.code).toBe(0);
    expect((await f.runtime.state(f.target))?.status).toBe('running');

    await f.runtime.kill(f.target, 'KILL');
    await f.runtime.waitExit(f.target);
    await expect(f.runtime.execSync(f.target, ['true'], opts)).rejects.toSatisfy((e: unknown) =>
      isSkiffError(e, 'failed-precondition'),
    );
    await f.runtime.delete(f.target);
    await expect(f.runtime.execSync(f.target, ['true'], opts)).rejects.toSatisfy((e: unknown) =>
      isSkiffError(e, 'not-found'),
    );
  });

  it('reopens the log: after a rename, new output goes to a fresh file at the log path', async () => {
    const f = await fixture({
      args: ['sh', '-c', 'i=0; while :; do echo line$i; i=$((i+1)); sleep 0.05; done'],
    });
    await f.runtime.create(f.target, createOptions(f.logPath));
    await f.runtime.start(f.target);
    await until('the first lines are logged', async () => (await logLines(f.logPath)).length >= 3);

    const rotated = `${f.logPath}.1`;
    await rename(f.logPath, rotated);
    await f.runtime.reopenLog(f.target, f.logPath);
    await until('the new file has lines', async () => (await logLines(f.logPath)).length >= 3);
    const old = await logLines(rotated);
    const fresh = await logLines(f.logPath);
    await sleep(200);
    expect(await logLines(rotated)).toEqual(old); // conmon no longer writes to the rotated file
    const num = (l: string): number => Number(/line(\d+)$/.exec(l)?.[1]);
    expect(num(fresh[0]!)).toBeGreaterThan(num(old[old.length - 1]!));
    for (const l of fresh) expect(l).toMatch(criLine);

    await f.runtime.kill(f.target, 'KILL');
    await f.runtime.waitExit(f.target);
    await until('conmon exits', async () => !(await f.runtime.isMonitorAlive(f.target)));
    await expect(f.runtime.reopenLog(f.target, f.logPath)).rejects.toSatisfy((e: unknown) =>
      isSkiffError(e, 'failed-precondition'),
    );
  });

  it('lets a new driver instance (a skiff restart) see and stop a container made by the old one', async () => {
    const f = await fixture({ args: ['sleep', '1000'] });
    const { pid } = await f.runtime.create(f.target, createOptions(f.logPath));
    await f.runtime.start(f.target);

    const restarted = new ConmonRuntime({ conmonPath, log: silentLogger() });
    expect(await restarted.state(f.target)).toEqual({ status: 'running', pid });
    expect(await restarted.isMonitorAlive(f.target)).toBe(true);
    expect(await restarted.exitInfo(f.target)).toBeUndefined();
    await restarted.kill(f.target, 'SIGKILL');
    expect((await restarted.waitExit(f.target)).exitCode).toBe(137);
    expect((await new ConmonRuntime({ conmonPath, log: silentLogger() }).exitInfo(f.target))?.exitCode).toBe(
      137,
    );
  });

  it('updates resources and reports an OOM kill from conmon’s oom file', async () => {
    const limit = 16 * 1024 * 1024;
    const f = await fixture({
      args: ['sh', '-c', 'x=0123456789abcdef; while :; do x=$x$x; done'],
      memoryLimit: 64 * 1024 * 1024,
    });
    await f.runtime.create(f.target, createOptions(f.logPath));
    await f.runtime.update(f.target, { memory: { limit, swap: limit } });
    const memoryDir = join('/sys/fs/cgroup/memory', CGROUP_PARENT, f.target.id);
    expect(Number(await readFile(join(memoryDir, 'memory.limit_in_bytes'), 'utf8'))).toBe(limit);
    await f.runtime.start(f.target);
    const exit = await f.runtime.waitExit(f.target);
    expect(exit).toMatchObject({ exitCode: 137, oomKilled: true });
  });

  it('moves conmon into the given cgroupfs cgroup before it forks', async () => {
    // Registered first, so it runs after the fixture's cleanup has stopped conmon (hooks run as a stack).
    const conmonCgroup = `/${CGROUP_PARENT}-conmon-${randomBytes(6).toString('hex')}`;
    onTestFinished(() => removeCgroup(conmonCgroup.slice(1)));
    const f = await fixture({ args: ['sleep', '1000'] });
    const { conmonPid } = await f.runtime.create(f.target, createOptions(f.logPath, { conmonCgroup }));
    const cgroups = await readFile(`/proc/${String(conmonPid)}/cgroup`, 'utf8');
    expect(cgroups).toMatch(new RegExp(`:memory:${conmonCgroup}\\n`));
    expect(cgroups).toMatch(new RegExp(`:pids:${conmonCgroup}\\n`));
  });
});

describe.skipIf(!haveTools || runscPath === undefined)('ConmonRuntime with runsc', () => {
  it('creates, starts and records the exit of a gVisor container, with its output logged', async () => {
    const f = await fixture({ args: ['sh', '-c', 'echo hello from gvisor; exit 4'], handler: 'runsc' });
    const { pid } = await f.runtime.create(f.target, createOptions(f.logPath));
    expect(pid).toBeGreaterThan(0);
    expect((await f.runtime.state(f.target))?.status).toBe('created');
    await f.runtime.start(f.target);
    expect((await f.runtime.waitExit(f.target)).exitCode).toBe(4);
    const lines = await logLines(f.logPath);
    expect(lines.map((l) => criLine.exec(l)?.slice(3, 6))).toContainEqual([
      'stdout',
      'F',
      'hello from gvisor',
    ]);
    await f.runtime.delete(f.target);
    expect(await f.runtime.state(f.target)).toBeUndefined();
  });
});
