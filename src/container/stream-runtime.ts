/**
 * The runtime side of the streaming server (`streaming/types.ts` StreamRuntime): exec, attach and
 * port-forward against skiff's containers and pods. This file looks the container or pod up, checks its
 * state and picks what the drivers need; the drivers in `oci/` do the work:
 *   exec          oci/exec-stream.ts   `runc exec --process` in the foreground; a tty through node-pty
 *   attach        oci/attach.ts        conmon's SOCK_SEQPACKET attach socket (node-unix-socket), resizes
 *                                      through conmon's ctl fifo
 *   port-forward  oci/port-forward.ts  `nsenter --net=<pinned netns> socat` per connection; node:net for
 *                                      a pod on the node's network
 */
import type { Duplex } from 'node:stream';
import { SkiffError } from '../errdefs.js';
import type { Logger } from '../log.js';
import { attachConmon } from '../oci/attach.js';
import { execStream } from '../oci/exec-stream.js';
import { forwardPort } from '../oci/port-forward.js';
import type { SandboxService } from '../sandbox/service.js';
import type { AttachRequest, ExecRequest, StreamIO, StreamRuntime } from '../streaming/types.js';
import type { ContainerRecord } from './record.js';
import type { ContainerService } from './service.js';
import { canExec } from './state.js';

export interface ContainerStreamRuntimeOptions {
  /** What is used of the container service (tests hand in records read from disk). */
  containers: Pick<ContainerService, 'status' | 'targetOf'>;
  sandboxes: Pick<SandboxService, 'status'>;
  log: Logger;
}

export class ContainerStreamRuntime implements StreamRuntime {
  private readonly log: Logger;

  constructor(private readonly o: ContainerStreamRuntimeOptions) {
    this.log = o.log.child({ area: 'stream' });
  }

  async exec(req: ExecRequest, io: StreamIO): Promise<{ exitCode: number }> {
    const r = this.running(req.containerId, 'exec in');
    return execStream(
      this.o.containers.targetOf(r),
      { cmd: req.cmd, tty: req.tty, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr },
      io,
      this.log.child({ containerId: r.metadata.id }),
    );
  }

  async attach(req: AttachRequest, io: StreamIO): Promise<void> {
    const r = this.running(req.containerId, 'attach to');
    const c = r.metadata.config;
    if (req.tty !== c.tty) {
      // kubelet copies the container's tty setting; a mismatch would mis-handle the console's bytes.
      this.log.debug('attach tty differs from the container', { containerId: r.metadata.id, tty: req.tty });
    }
    await attachConmon(
      this.o.containers.targetOf(r),
      { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr },
      { stdin: c.stdin, stdinOnce: c.stdinOnce, tty: c.tty },
      io,
      this.log.child({ containerId: r.metadata.id }),
    );
  }

  async portForward(podSandboxId: string, port: number, conn: Duplex, signal: AbortSignal): Promise<void> {
    const s = this.o.sandboxes.status(podSandboxId);
    const id = s.metadata.id;
    const what = `port-forward to port ${String(port)} of pod sandbox "${id}"`;
    if (s.status.state !== 'ready') {
      throw new SkiffError('failed-precondition', `${what}: the pod sandbox is not ready`);
    }
    const hostNetwork = s.metadata.config.namespaces.network === 'node';
    const netnsPath = s.status.namespaces.net;
    if (!hostNetwork && netnsPath === undefined) {
      throw new SkiffError('failed-precondition', `${what}: the pod sandbox has no network namespace`);
    }
    await forwardPort(
      { netnsPath: hostNetwork ? undefined : netnsPath, port, what },
      conn,
      signal,
      this.log.child({ sandboxId: id }),
    );
  }

  /** The container's record, which must be running (CRI-O and containerd refuse others the same way). */
  private running(idOrPrefix: string, verb: string): ContainerRecord {
    const r = this.o.containers.status(idOrPrefix);
    if (!canExec(r.status.state)) {
      throw new SkiffError(
        'failed-precondition',
        `${verb} container "${r.metadata.id}": it is ${r.status.state}, not running`,
      );
    }
    return r;
  }
}
