/**
 * What an OCI runtime said on stderr, as a message and a kind. runc logs through logrus, one line per
 * entry: text (`time="…" level=error msg="container does not exist"`) or, with `--log-format json`,
 * `{"level":"error","msg":"…","time":"…"}`; runsc prints plain lines (`loading container: file does not
 * exist`). conmon forwards the same bytes on its sync pipe when `<runtime> create` fails (conmon.c: it reads
 * the runtime's stderr pipe and sends it as `message`).
 *
 * Classification follows CRI-O's runtimeCmd (internal/oci/runtime_oci.go), which maps "container not
 * running", "no such process" and "invalid process" to ErrNotFound, plus the not-found phrases of runc
 * (libcontainer ErrNotExist: "container does not exist") and runsc ("loading container: file does not
 * exist", "loading sandbox: …").
 */
import type { ErrorKind } from '../errdefs.js';

/** A logrus text line: `time="…" level=error msg="…"` (msg quoted when it needs it, Go %q style). */
const logrusText = /(?:^|\s)level=(\w+)\s+msg=("(?:[^"\\]|\\.)*"|\S+)/;

/**
 * The runtime's own messages in `stderr`, one per logged entry, at warning level and above; a line that is
 * not a log entry is kept as it is (runsc, or a panic). Empty lines are dropped.
 */
export function runtimeMessages(stderr: string): string[] {
  const out: string[] = [];
  for (const raw of stderr.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const entry = parseLogLine(line);
    if (entry === undefined) out.push(line);
    else if (entry.level !== 'debug' && entry.level !== 'info' && entry.level !== 'trace')
      out.push(entry.msg);
  }
  return out;
}

/** The runtime's messages joined for an error: `a: b; c`, or `fallback` when it said nothing. */
export function runtimeMessage(stderr: string, fallback = 'no error output'): string {
  const msgs = runtimeMessages(stderr);
  return msgs.length === 0 ? fallback : msgs.join('; ');
}

/** One logrus entry (text or JSON format), or undefined when the line is not one. */
export function parseLogLine(line: string): { level: string; msg: string } | undefined {
  if (line.startsWith('{')) {
    try {
      const v = JSON.parse(line) as unknown;
      if (typeof v === 'object' && v !== null && 'msg' in v && typeof v.msg === 'string') {
        const level = 'level' in v && typeof v.level === 'string' ? v.level : 'error';
        return { level, msg: v.msg };
      }
    } catch {
      // not JSON: fall through to the text form
    }
  }
  const m = logrusText.exec(line);
  if (!m) return undefined;
  return { level: m[1] ?? 'error', msg: unquote(m[2] ?? '') };
}

/** Undoes Go's %q quoting (logrus quotes a msg with spaces or quotes); a bare word is returned as is. */
function unquote(s: string): string {
  if (!s.startsWith('"')) return s;
  const body = s.slice(1, -1);
  return body.replace(/\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)/g, (_, e: string) => {
    switch (e[0]) {
      case 'n':
        return '\n';
      case 't':
        return '\t';
      case 'r':
        return '\r';
      case 'x':
      case 'u':
      case 'U':
        return String.fromCodePoint(parseInt(e.slice(1), 16));
      default:
        return e;
    }
  });
}

/** The runtime does not know the container (runc ErrNotExist; runsc cannot load its state). */
export function isNotFoundMessage(msg: string): boolean {
  return /container does not exist|loading (container|sandbox): .*(file does not exist|no such file)/i.test(
    msg,
  );
}

/** The container (or its process) is no longer running: a signal or exec has nothing to reach. */
export function isNotRunningMessage(msg: string): boolean {
  return /container not running|not running|no such process|invalid process|process already finished|container .*is stopped|cannot exec in a stopped|cannot exec a container that has stopped/i.test(
    msg,
  );
}

/** The error kind for a runtime failure with this message (ARCHITECTURE.md's table: `unknown` by default). */
export function runtimeErrorKind(msg: string): ErrorKind {
  if (isNotFoundMessage(msg)) return 'not-found';
  if (isNotRunningMessage(msg)) return 'failed-precondition';
  if (/container with id exists|already exists/i.test(msg)) return 'already-exists';
  if (/cannot start an already running|cannot start a container that has stopped/i.test(msg)) {
    return 'failed-precondition';
  }
  // The container's command is missing or not executable: runc resolves it at create (`exec: "x":
  // executable file not found in $PATH`, `exec: "/x": stat /x: no such file or directory`).
  if (
    /exec: "[^"]*": (executable file not found|stat [^:]*: no such file or directory|permission denied)|exec format error/i.test(
      msg,
    )
  ) {
    return 'failed-precondition';
  }
  if (/no space left on device|cannot allocate memory/i.test(msg)) return 'resource-exhausted';
  if (/operation not permitted|permission denied/i.test(msg)) return 'permission-denied';
  return 'unknown';
}
