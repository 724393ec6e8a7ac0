/**
 * conmon's command line (src/oci/conmon.ts `conmonArgs`) for a few option sets, and the pure parsers
 * around it: the runtime's stderr (src/oci/runc-errors.ts), conmon's sync-pipe message and signal names.
 */
import { describe, expect, it } from 'vitest';
import { isSkiffError } from '../../../src/errdefs.js';
import {
  attachSocketPath,
  conmonArgs,
  conmonPaths,
  parseSyncMessage,
  signalNumber,
} from '../../../src/oci/conmon.js';
import {
  parseLogLine,
  runtimeErrorKind,
  runtimeMessage,
  runtimeMessages,
} from '../../../src/oci/runc-errors.js';
import type { CreateOptions, RuntimeTarget } from '../../../src/oci/runtime.js';

const id = 'c0ffee';

function target(o: Partial<RuntimeTarget> = {}): RuntimeTarget {
  return {
    id,
    handler: { name: 'runc', binaryPath: '/usr/sbin/runc', root: '/run/skiff/runtime/runc', extraArgs: [] },
    bundle: `/run/skiff/containers/${id}/bundle`,
    dir: `/run/skiff/containers/${id}/conmon`,
    ...o,
  };
}

function options(o: Partial<CreateOptions> = {}): CreateOptions {
  return {
    logPath: '',
    stdin: false,
    stdinOnce: false,
    tty: false,
    conmonCgroup: '',
    systemdCgroup: false,
    ...o,
  };
}

/** The values that follow each occurrence of `flag`. */
function valuesOf(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1] ?? '<missing>'] : []));
}

describe('conmonArgs', () => {
  it('builds the full command line of a plain runc container without a log', () => {
    expect(conmonArgs(target(), options(), { logLevel: 'info' })).toEqual([
      '--api-version',
      '1',
      '-c',
      id,
      '-u',
      id,
      '-n',
      id,
      '-r',
      '/usr/sbin/runc',
      '-b',
      `/run/skiff/containers/${id}/bundle`,
      '-p',
      `/run/skiff/containers/${id}/conmon/pidfile`,
      '-P',
      `/run/skiff/containers/${id}/conmon/conmon.pid`,
      '-l',
      'none',
      '--persist-dir',
      `/run/skiff/containers/${id}/conmon`,
      '--log-level',
      'info',
      '--full-attach',
      '--runtime-arg',
      '--root=/run/skiff/runtime/runc',
    ]);
  });

  it('logs to a k8s-file, passes runsc its global flags, and asks for a tty and the systemd driver', () => {
    const t = target({
      handler: {
        name: 'runsc',
        binaryPath: '/usr/bin/runsc',
        root: '/run/skiff/runtime/runsc',
        extraArgs: ['--network=host', '--platform=ptrace'],
      },
    });
    const args = conmonArgs(
      t,
      options({ logPath: '/var/log/pods/ns_pod_uid/c/0.log', tty: true, stdin: true, systemdCgroup: true }),
      {
        logLevel: 'debug',
      },
    );
    expect(valuesOf(args, '-l')).toEqual(['k8s-file:/var/log/pods/ns_pod_uid/c/0.log']);
    expect(valuesOf(args, '-r')).toEqual(['/usr/bin/runsc']);
    expect(valuesOf(args, '--runtime-arg')).toEqual([
      '--root=/run/skiff/runtime/runsc',
      '--network=host',
      '--platform=ptrace',
    ]);
    expect(valuesOf(args, '--log-level')).toEqual(['debug']);
    expect(args).toContain('-t');
    expect(args).toContain('-s');
    // A tty carries stdin itself (CRI-O): no -i, no --leave-stdin-open.
    expect(args).not.toContain('-i');
    expect(args).not.toContain('--leave-stdin-open');
    expect(args).not.toContain('--syslog');
  });

  it('opens a stdin pipe, kept open across attaches unless stdin is once', () => {
    const open = conmonArgs(target(), options({ stdin: true }), { logLevel: 'warning' });
    expect(open).toContain('-i');
    expect(open).toContain('--leave-stdin-open');
    const once = conmonArgs(target(), options({ stdin: true, stdinOnce: true }), { logLevel: 'warning' });
    expect(once).toContain('-i');
    expect(once).not.toContain('--leave-stdin-open');
    expect(once).not.toContain('-t');
    expect(once).not.toContain('-s');
  });

  it('uses a short socket dir only when the attach socket path would not fit in sun_path', () => {
    const long = target({
      bundle: `/var/lib/some/very/long/state/dir/${'x'.repeat(64)}/containers/${id}/bundle`,
    });
    expect(conmonPaths(long).attachSocket.length).toBeGreaterThan(107);
    const withDir = conmonArgs(long, options(), { logLevel: 'info', attachSocketDir: '/run/skiff/a' });
    expect(valuesOf(withDir, '--socket-dir-path')).toEqual(['/run/skiff/a']);
    expect(withDir).not.toContain('--full-attach');
    expect(attachSocketPath(long, '/run/skiff/a')).toBe(`/run/skiff/a/${id}/attach`);

    const withoutDir = conmonArgs(long, options(), { logLevel: 'info' });
    expect(withoutDir).toContain('--full-attach');
    expect(withoutDir).not.toContain('--socket-dir-path');

    const short = conmonArgs(target(), options(), { logLevel: 'info', attachSocketDir: '/run/skiff/a' });
    expect(short).toContain('--full-attach');
    expect(attachSocketPath(target(), '/run/skiff/a')).toBe(`/run/skiff/containers/${id}/bundle/attach`);
  });

  it('refuses a log path with a colon, which conmon would cut short', () => {
    let err: unknown;
    try {
      conmonArgs(target(), options({ logPath: '/var/log/a:b.log' }), { logLevel: 'info' });
    } catch (e) {
      err = e;
    }
    expect(isSkiffError(err, 'invalid-argument')).toBe(true);
    expect((err as Error).message).toMatch(
      /^create container "c0ffee": log path "\/var\/log\/a:b.log" contains ":"/,
    );
  });
});

describe('runtime stderr', () => {
  it('takes the msg of logrus text and JSON lines and keeps other lines as they are', () => {
    expect(parseLogLine('time="2026-01-01T00:00:00Z" level=error msg="container does not exist"')).toEqual({
      level: 'error',
      msg: 'container does not exist',
    });
    expect(parseLogLine('time="x" level=warning msg=bare')).toEqual({ level: 'warning', msg: 'bare' });
    expect(parseLogLine('{"level":"error","msg":"exec failed: \\"x\\"","time":"t"}')).toEqual({
      level: 'error',
      msg: 'exec failed: "x"',
    });
    expect(parseLogLine('loading container: file does not exist')).toBeUndefined();
    const stderr = [
      'time="t" level=debug msg="noise"',
      'time="t" level=error msg="runc create failed: exec: \\"/x\\": stat /x: no such file or directory"',
      '',
      'loading sandbox: oops',
    ].join('\n');
    expect(runtimeMessages(stderr)).toEqual([
      'runc create failed: exec: "/x": stat /x: no such file or directory',
      'loading sandbox: oops',
    ]);
    expect(runtimeMessage('')).toBe('no error output');
  });

  it.each([
    ['container does not exist', 'not-found'],
    ['loading container: file does not exist', 'not-found'],
    ['container not running', 'failed-precondition'],
    ['cannot start an already running container', 'failed-precondition'],
    ['container with id exists: abc', 'already-exists'],
    [
      'runc create failed: unable to start container process: exec: "nope": executable file not found in $PATH',
      'failed-precondition',
    ],
    ['write /sys/fs/cgroup/x: no space left on device', 'resource-exhausted'],
    ['mount proc: operation not permitted', 'permission-denied'],
    ['something else entirely', 'unknown'],
  ] as const)('classifies %j as %s', (msg, kind) => {
    expect(runtimeErrorKind(msg)).toBe(kind);
  });
});

describe('conmon sync messages and signals', () => {
  it('reads api-version 1 and legacy sync messages', () => {
    expect(parseSyncMessage('{"data": 1234}')).toEqual({ data: 1234 });
    expect(parseSyncMessage('{"data": -1, "message": "runc failed"}')).toEqual({
      data: -1,
      message: 'runc failed',
    });
    expect(parseSyncMessage('{"pid": 42}')).toEqual({ data: 42 });
    expect(() => parseSyncMessage('{"nope": 1}')).toThrow(/without data/);
    expect(() => parseSyncMessage('garbage')).toThrow(/unreadable/);
  });

  it('turns signal names and numbers into numbers and refuses unknown ones', () => {
    expect(signalNumber('SIGTERM', 'kill')).toBe(15);
    expect(signalNumber('kill', 'kill')).toBe(9);
    expect(signalNumber('15', 'kill')).toBe(15);
    let err: unknown;
    try {
      signalNumber('SIGNOPE', 'kill container "x"');
    } catch (e) {
      err = e;
    }
    expect(isSkiffError(err, 'invalid-argument')).toBe(true);
    expect((err as Error).message).toBe('kill container "x": unknown signal "SIGNOPE"');
  });
});
