/**
 * skiff-helper and its client: real processes started through the compiled helper (npm run build makes
 * dist/helper/skiff-helper; these tests fail, not skip, when it is missing).
 */
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run } from '../../../src/util/exec.js';
import { Helper, helperPath } from '../../../src/util/helper.js';

const PATH = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };

function helper(): Helper {
  const h = Helper.shared();
  if (!h) throw new Error(`skiff-helper is not built at ${helperPath()} (npm run build)`);
  return h;
}

function collect(s: unknown): () => string {
  let text = '';
  (s as NodeJS.ReadableStream).on('data', (b: Buffer) => (text += b.toString('utf8')));
  return () => text;
}

describe('skiff-helper', () => {
  it('is built where the client looks for it', () => {
    expect(existsSync(helperPath())).toBe(true);
  });

  it('runs a program with stdin, stdout, stderr, cwd and env, and reports its exit code', async () => {
    const c = await helper().spawn('sh', ['-c', 'cat; pwd; echo "$GREETING" >&2; exit 3'], {
      env: { ...PATH, GREETING: 'hi there' },
      cwd: '/tmp',
      stdio: ['write', 'read', 'read'],
    });
    expect(c.pid).toBeGreaterThan(0);
    const out = collect(c.stdio[1]);
    const err = collect(c.stdio[2]);
    (c.stdio[0] as NodeJS.WritableStream).end('input line\n');
    await expect(c.closed).resolves.toEqual({ code: 3, signal: null });
    expect(out()).toBe('input line\n/tmp\n');
    expect(err()).toBe('hi there\n');
  });

  it('looks a bare name up on the child’s PATH, and fails a missing program with ENOENT', async () => {
    await expect(
      helper().spawn('true', [], { env: { PATH: '/nonexistent' }, stdio: ['ignore', 'ignore', 'ignore'] }),
    ).rejects.toMatchObject({ code: 'ENOENT' });
    const c = await helper().spawn('true', [], { env: PATH, stdio: ['ignore', 'ignore', 'ignore'] });
    await expect(c.exited).resolves.toEqual({ code: 0, signal: null });
  });

  it('reports death by signal, and the child gets default signal dispositions and an empty mask', async () => {
    // The helper blocks SIGCHLD and ignores SIGPIPE; a child must not inherit either.
    const c = await helper().spawn(
      'sh',
      ['-c', 'grep -E "^(SigBlk|SigIgn)" /proc/self/status; exec sleep 30'],
      { env: PATH, stdio: ['ignore', 'read', 'ignore'] },
    );
    const out = collect(c.stdio[1]);
    await new Promise((r) => setTimeout(r, 200));
    expect(c.kill('SIGTERM')).toBe(true);
    await expect(c.closed).resolves.toEqual({ code: null, signal: 'SIGTERM' });
    expect(out()).toMatch(/SigBlk:\s+0+\n/);
    expect(out()).toMatch(/SigIgn:\s+0+\n/);
  });

  it('relays megabytes both ways without deadlock', async () => {
    const c = await helper().spawn('sh', ['-c', 'wc -c; head -c 3000000 /dev/zero'], {
      env: PATH,
      stdio: ['write', 'read', 'ignore'],
    });
    let n = 0;
    let text = '';
    c.stdio[1]?.on('data', (b: Buffer) => {
      n += b.length;
      if (text.length < 20) text += b.subarray(0, 20).toString('latin1');
    });
    (c.stdio[0] as NodeJS.WritableStream).end(Buffer.alloc(5_000_000, 65));
    await expect(c.closed).resolves.toEqual({ code: 0, signal: null });
    expect(text.startsWith('5000000\n')).toBe(true);
    expect(n).toBe('5000000\n'.length + 3_000_000);
  });

  it('gives a child extra fds and a new session when asked', async () => {
    const c = await helper().spawn(
      'sh',
      ['-c', 'read -r line <&4; echo "got $line" >&3; ps -o sid= -p $$ | tr -d " "; echo $$'],
      { env: PATH, detached: true, stdio: ['ignore', 'read', 'ignore', 'read', 'write'] },
    );
    const out = collect(c.stdio[1]);
    const fd3 = collect(c.stdio[3]);
    (c.stdio[4] as NodeJS.WritableStream).end('ping\n');
    await expect(c.closed).resolves.toEqual({ code: 0, signal: null });
    expect(fd3()).toBe('got ping\n');
    const [sid, pid] = out().trim().split('\n');
    expect(sid).toBe(pid);
  });

  it('mounts and unmounts by system call, with errno codes on failure', async () => {
    const h = helper();
    await expect(h.mount('none', '/nonexistent/skiff-helper-test', 'tmpfs', 0, '')).rejects.toMatchObject({
      code: 'ENOENT',
    });
    await expect(h.umount('/tmp')).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('backs util/exec run(): output, exit code, timeout with kill, and a missing program', async () => {
    const ok = await run('sh', ['-c', 'cat; echo oops >&2; exit 4'], { input: 'abc' });
    expect(ok).toEqual({ code: 4, signal: null, stdout: 'abc', stderr: 'oops\n' });
    const t0 = Date.now();
    const slow = await run('sleep', ['30'], { timeoutMs: 200 });
    expect(slow.signal).toBe('SIGKILL');
    expect(Date.now() - t0).toBeLessThan(10_000);
    await expect(run('no-such-program-skiff', [])).rejects.toMatchObject({ kind: 'failed-precondition' });
    const ac = new AbortController();
    const p = run('sleep', ['30'], { signal: ac.signal });
    setTimeout(() => {
      ac.abort();
    }, 100);
    await expect(p).rejects.toMatchObject({ kind: 'canceled' });
  });

  it('runs a script without #! with /bin/sh, as execvp does', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skiff-helper-'));
    try {
      const script = join(dir, 'noshebang');
      await writeFile(script, 'echo "ran with $# args: $1"\n');
      await chmod(script, 0o755);
      const res = await run(script, ['one']);
      expect(res).toMatchObject({ code: 0, stdout: 'ran with 1 args: one\n' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses NUL bytes, which would cut an argument short', async () => {
    await expect(run('printf', ['a\0b'])).rejects.toMatchObject({ kind: 'invalid-argument' });
    await expect(helper().mount('x', '/tmp/a\0b', 'tmpfs', 0, '')).rejects.toMatchObject({
      kind: 'invalid-argument',
    });
  });

  it('passes a write far larger than one frame (the helper refuses frames over 64 MiB)', async () => {
    const res = await run('wc', ['-c'], { input: Buffer.alloc(70 * 1024 * 1024, 66) });
    expect(res.stdout.trim()).toBe(String(70 * 1024 * 1024));
  });

  it('names signals as Node does (SIGABRT, not its alias SIGIOT)', async () => {
    const c = await helper().spawn('sh', ['-c', 'kill -ABRT $$'], {
      env: PATH,
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    await expect(c.closed).resolves.toEqual({ code: null, signal: 'SIGABRT' });
  });

  it('fails calls in flight when the helper dies, leaves their children alone, and starts a new one', async () => {
    const h = helper();
    const c = await h.spawn('sleep', ['30'], { env: PATH, stdio: ['ignore', 'ignore', 'ignore'] });
    const d = await h.spawn('sleep', ['30'], { env: PATH, stdio: ['ignore', 'read', 'read'] });
    await new Promise((r) => setTimeout(r, 100));
    process.kill(h.pid as number, 'SIGKILL');
    try {
      await expect(c.exited).rejects.toMatchObject({ kind: 'unavailable' });
      await expect(d.closed).rejects.toMatchObject({ kind: 'unavailable' });
      // The children were not the helper's to kill: they still run.
      expect(() => process.kill(c.pid, 0)).not.toThrow();
      expect(() => process.kill(d.pid, 0)).not.toThrow();
    } finally {
      process.kill(c.pid, 'SIGKILL');
      process.kill(d.pid, 'SIGKILL');
    }
    const next = helper();
    expect(next.pid).not.toBe(h.pid);
    await expect(run('true', [])).resolves.toMatchObject({ code: 0 });
  });
});
