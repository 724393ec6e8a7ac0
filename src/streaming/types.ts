/**
 * The contract between the streaming server (protocol only: tokens, SPDY/3.1, WebSocket) and the runtime
 * that actually runs the exec, attaches to a container's console, or dials a port inside a pod.
 *
 * Vocabulary. A *streaming request* is what the CRI `Exec` / `Attach` / `PortForward` RPC asked for; the
 * RPC handler hands it to `StreamServer.getExec / getAttach / getPortForward`, which binds it to a
 * single-use token and answers the URL kubelet or crictl then connects to. A *session* is one upgraded
 * HTTP connection on that URL. The server calls the runtime once per exec/attach session, and once per
 * forwarded *connection* for port forwarding (a port-forward session carries many connections, possibly
 * to several ports, concurrently).
 *
 * Lifecycle and ownership of the streams in `StreamIO`:
 *  - `stdin` is a Readable the runtime consumes; it ends when the client closes its stdin (SPDY FIN on
 *    the stdin stream, the v5 WebSocket close signal) and is destroyed when the client goes away.
 *    Reading it slowly is fine: the server applies back-pressure to the client (SPDY windows, TCP).
 *  - `stdout` / `stderr` are Writables the runtime writes to, honouring `write() === false` / `'drain'`
 *    (or simply `pipeline()` into them). The runtime may `end()` them when the process's pipes close;
 *    the server ends them after the method resolves in any case. A method must not resolve before all
 *    of the output has been written (await the pipes), or output is lost.
 *  - `resize` yields terminal sizes (tty sessions with a protocol that carries them); only the latest
 *    unread size is kept if the runtime reads it slowly. It finishes when the client closes it or the
 *    session ends.
 *  - `signal` is aborted when the session ends before the method has resolved: the client went away, the
 *    connection idled out, or the server is stopping. The runtime must then stop what it started (kill
 *    the exec process, detach) and resolve or reject promptly.
 *
 * Idempotency: none of the methods is idempotent; each call is one use of a single-use token.
 * Errors: throw (preferably a `SkiffError`); the server reports the message to the client on the
 * protocol's error stream (a metav1.Status of reason `InternalError` for exec/attach, the text for a
 * port-forward connection) and logs it.
 */
import type { Duplex, Readable, Writable } from 'node:stream';

/** The streaming part of a CRI ExecRequest (cri-api `ExecRequest`). */
export interface ExecRequest {
  containerId: string;
  /** The command and its arguments, as given; never passed through a shell by the server. */
  cmd: string[];
  tty: boolean;
  stdin: boolean;
  stdout: boolean;
  /** Always false when `tty` is true (a terminal merges stderr into stdout). */
  stderr: boolean;
}

/** The streaming part of a CRI AttachRequest. */
export interface AttachRequest {
  containerId: string;
  tty: boolean;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}

/** A CRI PortForwardRequest. */
export interface PortForwardRequest {
  podSandboxId: string;
  /**
   * Ports the client may forward. Empty means any port (kubelet sends none for SPDY sessions, where each
   * connection names its port); WebSocket sessions need at least one, here or in `?port=` query params.
   */
  ports: number[];
}

/** A terminal size in character cells (client-go `remotecommand.TerminalSize`). */
export interface TerminalSize {
  width: number;
  height: number;
}

/** The client's streams for one exec or attach session; see the module comment for their lifecycle. */
export interface StreamIO {
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
  resize?: AsyncIterable<TerminalSize>;
  signal: AbortSignal;
}

/** What the streaming server needs from the container runtime (implemented with conmon/runc). */
export interface StreamRuntime {
  /**
   * Runs `req.cmd` in the container with the given streams and resolves with its exit code once the
   * process has exited and its output has been written. A non-zero code is not an error: the server
   * reports it to the client as a `NonZeroExitCode` status. Reject when the process could not be run.
   */
  exec(req: ExecRequest, io: StreamIO): Promise<{ exitCode: number }>;

  /**
   * Connects the streams to the running container's console (conmon's attach socket) and resolves when
   * the client detaches (stdin ends, `signal` aborts) or the container exits.
   */
  attach(req: AttachRequest, io: StreamIO): Promise<void>;

  /**
   * Pipes bytes between `conn` and TCP `port` on the pod's loopback inside its network namespace, in both
   * directions, honouring back-pressure. `conn` ends when the client half-closes its side; end `conn`
   * when the pod side has finished sending. Resolve when both directions are done; reject (e.g. connection
   * refused) and the message reaches the client on the connection's error stream. `signal` aborts when
   * the client resets this connection or the session ends.
   *
   * Do not destroy `conn` before both directions are done: `pipeline(conn, socket)` and
   * `pipeline(socket, conn)` side by side are right, but async iteration (`for await`, or an async
   * generator stage in a pipeline) destroys `conn` when its readable side ends, and nothing can be written
   * back after that (use `conn.iterator({ destroyOnReturn: false })` if you must iterate).
   */
  portForward(podSandboxId: string, port: number, conn: Duplex, signal: AbortSignal): Promise<void>;
}
