/**
 * A pod's namespaces pinned without a pause container (src/sandbox/namespaces.ts), its infra process for a
 * shared PID namespace, and its /dev/shm (src/sandbox/files.ts), against the real kernel. Root only, apart
 * from the sysctl naming rules. Every test releases what it made in onTestFinished, pass or fail, and
 * checks that no mount under its temp dir and no process it started is left.
 */
import { spawn } from 'node:child_process';
import { access, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, statfs } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { isSkiffError, type ErrorKind } from '../../src/errdefs.js';
import { mountShm, unmountShm } from '../../src/sandbox/files.js';
import {
  isAlive,
  isPinned,
  pinNamespaces,
  processStartTime,
  startInfra,
  stopInfra,
  sysctlNamespace,
  sysctlPath,
  unpinNamespaces,
  type InfraProcess,
} from '../../src/sandbox/namespaces.js';
import { mountsUnder, unmount } from '../../src/snapshot/mount.js';
import { runChecked } from '../../src/util/exec.js';

const isRoot = process.getuid?.() === 0;

async function rejectsWith(p: Promise<unknown>, kind: ErrorKind, pattern: RegExp): Promise<void> {
  try {
    await p;
  } catch (err) {
    expect(err, String(err)).toSatisfy((e: unknown) => isSkiffError(e, kind));
    expect((err as Error).message).toMatch(pattern);
    return;
  }
  expect.fail(`expected a ${kind} error`);
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) expect.fail(`timed out waiting until ${what}`);
    await sleep(10);
  }
}

/** Mount points and fs types at or below `dir` in the mount namespace of `pid` (proc(5) mountinfo). */
async function mountsOf(pid: number | 'self', dir: string): Promise<{ point: string; fsType: string }[]> {
  const text = await readFile(`/proc/${String(pid)}/mountinfo`, 'utf8');
  return text
    .split('\n')
    .map((line) => line.split(' '))
    .filter((f) => f[4] === dir || f[4]?.startsWith(`${dir}/`))
    .map((f) => ({ point: f[4]!, fsType: f[f.indexOf('-', 6) + 1]! }));
}

async function inode(path: string): Promise<number> {
  return (await stat(path)).ino;
}

/**
 * True while some process is in the network namespace with inode `ino` or some mount namespace has it
 * mounted (an nsfs mount whose root is `net:[ino]`): what keeps a namespace alive (namespaces(7)).
 */
async function netnsHeldAnywhere(ino: number): Promise<boolean> {
  const name = `net:[${String(ino)}]`;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if ((await readlink(`/proc/${entry}/ns/net`)) === name) return true;
      const text = await readFile(`/proc/${entry}/mountinfo`, 'utf8');
      if (text.split('\n').some((line) => line.split(' ')[3] === name)) return true;
    } catch {
      // the process exited meanwhile
    }
  }
  return false;
}

async function inNs(ns: 'net' | 'ipc' | 'uts', file: string, cmd: string[]): Promise<string> {
  return (await runChecked('nsenter', [`--${ns}=${file}`, '--', ...cmd])).stdout.trim();
}

describe('sysctl names', () => {
  it('map to /proc/sys paths as sysctl.d(5) says, whichever separator comes first', () => {
    expect(sysctlPath('net.ipv4.ip_forward')).toBe('net/ipv4/ip_forward');
    expect(sysctlPath('net/ipv4/ip_forward')).toBe('net/ipv4/ip_forward');
    expect(sysctlPath('net.ipv4.conf.eth0/100.rp_filter')).toBe('net/ipv4/conf/eth0.100/rp_filter');
    expect(sysctlPath('net/ipv4/conf/eth0.100/rp_filter')).toBe('net/ipv4/conf/eth0.100/rp_filter');
    expect(sysctlPath('kernel.shmmni')).toBe('kernel/shmmni');
  });

  it('refuse empty, dot-dot and whitespace segments', () => {
    for (const bad of [
      '',
      'net..ipv4',
      'net/../../etc/passwd',
      'net.ipv4.ip forward',
      'net.',
      'net.ipv4\n',
    ]) {
      expect(() => sysctlPath(bad), bad).toThrow(/not a valid sysctl name/);
    }
  });

  it("are namespaced as kubelet's list says and nothing else is", () => {
    expect(sysctlNamespace('net.core.somaxconn')).toBe('net');
    expect(sysctlNamespace('net/ipv4/conf/eth0.100/rp_filter')).toBe('net');
    for (const ipc of [
      'kernel.shmmni',
      'kernel.shmmax',
      'kernel.shm_rmid_forced',
      'kernel.msgmax',
      'kernel.sem',
      'fs.mqueue.msg_max',
    ]) {
      expect(sysctlNamespace(ipc), ipc).toBe('ipc');
    }
    for (const host of ['vm.swappiness', 'kernel.hostname', 'kernel.semx', 'fs.file-max', 'kernel.pid_max']) {
      expect(sysctlNamespace(host), host).toBeUndefined();
    }
  });
});

describe.skipIf(!isRoot)('pinned pod namespaces', () => {
  let base = '';
  let count = 0;

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'skiff-e2e-ns-'));
  });

  afterAll(async () => {
    if (!base) return;
    const left = await mountsUnder(base);
    for (const m of left.reverse()) await unmount(m, { lazy: true });
    await rm(base, { recursive: true, force: true });
    expect(left).toEqual([]);
  });

  /** A fresh `<pod>/ns` path; when the test finishes it is unpinned and nothing may be left under `<pod>`. */
  async function nsDir(): Promise<string> {
    const pod = join(base, `pod-${String(++count)}`);
    await mkdir(pod);
    const dir = join(pod, 'ns');
    onTestFinished(async () => {
      await unpinNamespaces(dir);
      expect(await mountsOf('self', pod)).toEqual([]);
    });
    return dir;
  }

  /** Starts the infra and, when the test finishes, stops it and checks that it is gone. */
  async function infraIn(dir: string, join: Parameters<typeof startInfra>[1]): Promise<InfraProcess> {
    const infra = await startInfra(dir, join);
    onTestFinished(async () => {
      await stopInfra(infra.pid, { startTime: infra.startTime, pidNs: infra.pidNs });
      expect(await isAlive(infra.pid, infra.startTime)).toBe(false);
    });
    return infra;
  }

  it('pins new net, ipc and uts namespaces with the hostname and namespaced sysctls set inside', async () => {
    const dir = await nsDir();
    const hostPortStart = await readFile('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8');
    const hostShmmni = await readFile('/proc/sys/kernel/shmmni', 'utf8');
    expect(hostPortStart.trim()).not.toBe('0');
    expect(hostShmmni.trim()).not.toBe('1000');
    const nodeName = hostname();

    const pinned = await pinNamespaces(dir, {
      net: true,
      ipc: true,
      uts: true,
      hostname: 'pod-a',
      sysctls: { 'net.ipv4.ip_unprivileged_port_start': '0', 'kernel/shmmni': '1000' },
    });

    expect(pinned).toEqual({ net: join(dir, 'net'), ipc: join(dir, 'ipc'), uts: join(dir, 'uts') });
    for (const file of [pinned.net!, pinned.ipc!, pinned.uts!]) expect(await isPinned(file)).toBe(true);
    const nsfs = (await mountsOf('self', dir)).filter((m) => m.fsType === 'nsfs').map((m) => m.point);
    expect(nsfs.sort()).toEqual([pinned.ipc, pinned.net, pinned.uts]);
    // Each is a namespace of its own, not the host's.
    for (const t of ['net', 'ipc', 'uts'] as const) {
      expect(await inode(pinned[t]!)).not.toBe(await inode(`/proc/self/ns/${t}`));
    }

    expect(await inNs('uts', pinned.uts!, ['hostname'])).toBe('pod-a');
    expect(hostname()).toBe(nodeName);

    // A new network namespace holds only lo, down unless asked for (below).
    const links = (await inNs('net', pinned.net!, ['ip', '-o', 'link', 'show'])).split('\n');
    expect(links).toHaveLength(1);
    expect(links[0]).toMatch(/^1: lo: <LOOPBACK> .* state DOWN /);

    expect(await inNs('net', pinned.net!, ['cat', '/proc/sys/net/ipv4/ip_unprivileged_port_start'])).toBe(
      '0',
    );
    expect(await inNs('ipc', pinned.ipc!, ['cat', '/proc/sys/kernel/shmmni'])).toBe('1000');
    expect(await readFile('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8')).toBe(hostPortStart);
    expect(await readFile('/proc/sys/kernel/shmmni', 'utf8')).toBe(hostShmmni);
  });

  it('brings lo up in the new network namespace when asked, as the CNI loopback plugin would', async () => {
    const pinned = await pinNamespaces(await nsDir(), {
      net: true,
      ipc: false,
      uts: false,
      loopbackUp: true,
    });
    const links = (await inNs('net', pinned.net!, ['ip', '-o', 'link', 'show'])).split('\n');
    expect(links).toHaveLength(1);
    expect(links[0]).toMatch(/^1: lo: <LOOPBACK,UP,LOWER_UP> /);
    const addrs = await inNs('net', pinned.net!, ['ip', '-o', 'addr', 'show', 'dev', 'lo']);
    expect(addrs).toMatch(/inet 127\.0\.0\.1\/8 /);
  });

  it('gives every pod a network namespace of its own', async () => {
    const a = await pinNamespaces(await nsDir(), { net: true, ipc: false, uts: false });
    const b = await pinNamespaces(await nsDir(), { net: true, ipc: false, uts: false });
    expect(a.ipc).toBeUndefined();
    expect(a.uts).toBeUndefined();
    expect(await inode(a.net!)).not.toBe(await inode(b.net!));
  });

  it('pins nothing and makes nothing when the pod shares all the node namespaces', async () => {
    const dir = await nsDir();
    expect(await pinNamespaces(dir, { net: false, ipc: false, uts: false, hostname: 'ignored' })).toEqual({});
    expect(await exists(dir)).toBe(false);
  });

  it('unpins: no mount is left, the files and the dir are gone, and unpinning again is fine', async () => {
    const dir = await nsDir();
    const pinned = await pinNamespaces(dir, { net: true, ipc: true, uts: true, hostname: 'pod-b' });
    expect((await mountsOf('self', dir)).length).toBe(3); // the three pins, and no self-bind of the dir

    await unpinNamespaces(dir);
    expect(await mountsOf('self', dir)).toEqual([]);
    for (const file of [pinned.net!, pinned.ipc!, pinned.uts!]) {
      expect(await isPinned(file)).toBe(false);
      expect(await exists(file)).toBe(false);
    }
    expect(await exists(dir)).toBe(false);
    await unpinNamespaces(dir);
    await unpinNamespaces(join(base, 'never-made'));
  });

  it('unpins a file that is not mounted by just removing it', async () => {
    const dir = await nsDir();
    await pinNamespaces(dir, { net: true, ipc: false, uts: false });
    await unmount(join(dir, 'net'), { lazy: true });
    expect(await exists(join(dir, 'net'))).toBe(true);
    await unpinNamespaces(dir);
    expect(await exists(dir)).toBe(false);
  });

  it('refuses a sysctl that is not namespaced before making anything', async () => {
    const dir = await nsDir();
    await rejectsWith(
      pinNamespaces(dir, { net: true, ipc: true, uts: true, sysctls: { 'vm.swappiness': '10' } }),
      'invalid-argument',
      /^set sysctl "vm\.swappiness": not a namespaced sysctl, so a pod may not set it/,
    );
    expect(await exists(dir)).toBe(false);
  });

  it('refuses a sysctl of a namespace the pod shares with the node', async () => {
    const dir = await nsDir();
    await rejectsWith(
      pinNamespaces(dir, {
        net: false,
        ipc: true,
        uts: true,
        sysctls: { 'net.ipv4.ip_unprivileged_port_start': '0' },
      }),
      'invalid-argument',
      /the pod shares the node's network namespace, so it would change the node/,
    );
    expect(await exists(dir)).toBe(false);
  });

  it('refuses a hostname that is not one', async () => {
    const dir = await nsDir();
    for (const bad of ['-n', 'a b', 'x'.repeat(65), '']) {
      await rejectsWith(
        pinNamespaces(dir, { net: false, ipc: false, uts: true, hostname: bad }),
        'invalid-argument',
        /not a hostname/,
      );
    }
    expect(await exists(dir)).toBe(false);
  });

  it('undoes everything when a sysctl fails after the namespaces were pinned', async () => {
    const dir = await nsDir();
    await rejectsWith(
      pinNamespaces(dir, {
        net: true,
        ipc: true,
        uts: true,
        hostname: 'pod-c',
        sysctls: { 'kernel.shmmni': '1000', 'net.ipv4.no_such_knob': '1' },
      }),
      'invalid-argument',
      /set sysctl "net\.ipv4\.no_such_knob" to "1": no such sysctl in the pod's net namespace/,
    );
    expect(await mountsOf('self', dir)).toEqual([]);
    expect(await exists(dir)).toBe(false);

    await rejectsWith(
      pinNamespaces(dir, {
        net: true,
        ipc: false,
        uts: false,
        sysctls: { 'net.ipv4.ip_unprivileged_port_start': 'many' },
      }),
      'invalid-argument',
      /the kernel refused the value/,
    );
    expect(await mountsOf('self', dir)).toEqual([]);
    expect(await exists(dir)).toBe(false);
  });

  it('refuses to pin over a pinned namespace and leaves it alone', async () => {
    const dir = await nsDir();
    const first = await pinNamespaces(dir, { net: true, ipc: false, uts: false });
    const ino = await inode(first.net!);
    await rejectsWith(
      pinNamespaces(dir, { net: true, ipc: true, uts: false }),
      'already-exists',
      /is already a pinned namespace/,
    );
    expect(await isPinned(first.net!)).toBe(true);
    expect(await inode(first.net!)).toBe(ino);
  });

  it('does not leave the namespaces alive in a mount namespace made while the pod was pinned', async () => {
    const dir = await nsDir();
    const pinned = await pinNamespaces(dir, { net: true, ipc: true, uts: false });
    // What a systemd service with PrivateTmp= gets: a copy of every mount, a slave of the host's.
    const child = spawn('unshare', ['--mount', '--propagation', 'slave', '--', 'catatonit', '-P'], {
      stdio: 'ignore',
    });
    const pid = child.pid!;
    onTestFinished(async () => {
      process.kill(pid, 'SIGKILL');
      await until('the mount namespace holder exits', async () => !(await isAlive(pid)));
    });
    await until(
      'catatonit runs',
      async () => (await readFile(`/proc/${pid}/comm`, 'utf8')).trim() === 'catatonit',
    );
    expect(await mountsOf(pid, dir)).toContainEqual({ point: pinned.net!, fsType: 'nsfs' });
    expect(await mountsOf(pid, dir)).toContainEqual({ point: pinned.ipc!, fsType: 'nsfs' });

    // Our unmount alone does not reach the copy (the dir is not a shared mount); removing the pin file
    // does: since Linux 3.18 unlinking a mount point detaches the mounts on it in every namespace.
    const netnsIno = await inode(pinned.net!);
    await unpinNamespaces(dir);
    expect((await mountsOf(pid, dir)).filter((m) => m.fsType === 'nsfs')).toEqual([]);
    // And the namespace is gone: no process and no mount in any namespace holds it any more.
    expect(await netnsHeldAnywhere(netnsIno)).toBe(false);
  });

  describe('the infra process of a shared PID namespace', () => {
    it("runs catatonit as PID 1 of a new PID namespace inside the pod's namespaces, pinned by path", async () => {
      const dir = await nsDir();
      const pinned = await pinNamespaces(dir, { net: true, ipc: true, uts: true, hostname: 'pod-d' });
      const infra = await infraIn(dir, pinned);

      expect(infra.pidNs).toBe(join(dir, 'pid'));
      expect(await isAlive(infra.pid, infra.startTime)).toBe(true);
      expect(await processStartTime(infra.pid)).toBe(infra.startTime);
      const status = await readFile(`/proc/${infra.pid}/status`, 'utf8');
      expect(status).toMatch(/^Name:\tcatatonit$/m);
      expect(status).toMatch(new RegExp(`^NSpid:\\t${infra.pid}\\t1$`, 'm'));
      for (const t of ['net', 'ipc', 'uts'] as const) {
        expect(await inode(`/proc/${infra.pid}/ns/${t}`), t).toBe(await inode(pinned[t]!));
      }
      expect(await isPinned(infra.pidNs)).toBe(true);
      expect(await inode(infra.pidNs)).toBe(await inode(`/proc/${infra.pid}/ns/pid`));
      expect(await inode(infra.pidNs)).not.toBe(await inode('/proc/self/ns/pid'));

      // A process joins the pinned PID namespace by path: it has a PID there, after catatonit's 1.
      const ps = await runChecked('nsenter', [`--pid=${infra.pidNs}`, '--', 'cat', '/proc/self/status']);
      const inner = /^NSpid:\t\d+\t(\d+)$/m.exec(ps.stdout)?.[1];
      expect(Number(inner)).toBeGreaterThan(1);

      const launcher = Number(status.match(/^PPid:\t(\d+)$/m)?.[1]);
      expect((await readFile(`/proc/${launcher}/comm`, 'utf8')).trim()).toBe('unshare');

      await stopInfra(infra.pid, { startTime: infra.startTime, pidNs: infra.pidNs });
      expect(await isAlive(infra.pid)).toBe(false);
      expect(await isPinned(infra.pidNs)).toBe(false);
      expect(await exists(infra.pidNs)).toBe(false);
      await until('the unshare launcher exits', async () => !(await isAlive(launcher)));
      // The pod's other namespaces stay pinned; stopping twice is fine.
      expect(await isPinned(pinned.net!)).toBe(true);
      await stopInfra(infra.pid, { startTime: infra.startTime, pidNs: infra.pidNs });
    });

    it('finds and removes the pin from the PID alone', async () => {
      const dir = await nsDir();
      const infra = await infraIn(dir, {});
      await stopInfra(infra.pid);
      expect(await isAlive(infra.pid)).toBe(false);
      expect(await isPinned(infra.pidNs)).toBe(false);
      expect(await exists(infra.pidNs)).toBe(false);
    });

    it('leaves alone a process whose start time is not the recorded one (a reused PID)', async () => {
      const dir = await nsDir();
      const infra = await infraIn(dir, {});
      await stopInfra(infra.pid, { startTime: `${infra.startTime}0` });
      expect(await isAlive(infra.pid, infra.startTime)).toBe(true);
      expect(await isAlive(infra.pid, `${infra.startTime}0`)).toBe(false);
      expect(await isPinned(infra.pidNs)).toBe(true);
    });

    it('refuses to join a namespace that is not pinned and starts nothing', async () => {
      const dir = await nsDir();
      await rejectsWith(
        startInfra(dir, { net: join(dir, 'net') }),
        'failed-precondition',
        /is not a pinned namespace/,
      );
      expect(await exists(join(dir, 'pid'))).toBe(false);
    });
  });

  describe('the pod /dev/shm', () => {
    it('is a tmpfs of the given size, mode 1777, nosuid nodev noexec, gone after unmounting', async () => {
      const path = join(base, `shm-${String(++count)}`);
      onTestFinished(() => unmountShm(path));
      const size = 4 * 1024 * 1024;
      await mountShm(path, size);

      const line = (await readFile('/proc/self/mountinfo', 'utf8'))
        .split('\n')
        .find((l) => l.split(' ')[4] === path);
      expect(line).toBeDefined();
      const fields = line!.split(' ');
      expect(fields[fields.indexOf('-', 6) + 1]).toBe('tmpfs');
      expect(fields[5]!.split(',')).toEqual(expect.arrayContaining(['rw', 'nosuid', 'nodev', 'noexec']));
      const fs = await statfs(path);
      expect(fs.blocks * fs.bsize).toBe(size);
      expect((await stat(path)).mode & 0o7777).toBe(0o1777);

      await rejectsWith(mountShm(path, size), 'already-exists', /already mounted/);
      await rejectsWith(mountShm(join(base, 'shm-bad'), 0), 'invalid-argument', /not a positive number/);

      await unmountShm(path);
      expect(await mountsOf('self', path)).toEqual([]);
      expect(await exists(path)).toBe(false);
      await unmountShm(path);
    });
  });
});
