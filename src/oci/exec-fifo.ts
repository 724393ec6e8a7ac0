/**
 * Starting a created runc container without running `runc start`.
 *
 * `runc create` leaves the container's init blocked opening `<root>/<id>/exec.fifo` for writing; `runc
 * start` is only the reader: it opens the fifo, reads the "0" that init writes, and removes the fifo, after
 * which init execs the container's process (runc 1.1 libcontainer/container_linux.go `exec` and
 * `handleFifoResult`; standard_init_linux.go on the writer side). runc's state is derived from the fifo:
 * `created` while it exists, `running` once it is gone and init lives. Doing that read here saves starting a
 * Go binary (about 40 ms of CPU on this kind of VM, and a fork from skiff's one thread) on every
 * StartContainer; the outcome for runc is the same as `runc start`'s.
 *
 * The fifo is opened non-blocking (an open for reading would block a libuv pool thread until a writer
 * comes, forever if init died) and read through a libuv pipe; until init opens its end nothing arrives (a
 * fifo that never had a writer does not read as end of file), so init is polled meanwhile, as runc does.
 */
import { closeSync, constants, open } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { Socket } from 'node:net';
import { promisify } from 'node:util';
import { SkiffError, errnoOf } from '../errdefs.js';

/** How often init is checked while its end of the fifo is not open (runc checks every 100 ms). */
const POLL_MS = 50;
/** fs.open's raw descriptor (a FileHandle would close it again when collected; the socket owns it). */
const openFd = promisify(open);

export type ExecFifoOutcome =
  /** The container's process was released (the fifo read "0" and is removed). */
  | 'started'
  /** No fifo: not a created runc container (already started, or not runc); let the runtime answer. */
  | 'no-fifo';

/**
 * Releases a created container's init through its exec fifo. `initAlive` tells whether the container's init
 * (the pid conmon reported) still runs; `deadlineMs` bounds the wait for init to open its end.
 */
export async function startThroughExecFifo(
  fifoPath: string,
  initAlive: () => Promise<boolean>,
  deadlineMs: number,
  what: string,
): Promise<ExecFifoOutcome> {
  let fd: number;
  try {
    fd = await openFd(fifoPath, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return 'no-fifo';
    throw err;
  }
  let sock: Socket;
  try {
    sock = new Socket({ fd, readable: true, writable: false });
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  const data = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const started = Date.now();
    let checking = false;
    // A fifo that no writer has opened yet neither has data nor reads as end of file: init is polled.
    const timer = setInterval(() => {
      if (checking) return;
      checking = true;
      void initAlive()
        .then((alive) => {
          if (!alive)
            fail(new SkiffError('failed-precondition', `${what}: the container's init process is gone`));
          else if (Date.now() - started > deadlineMs) {
            fail(
              new SkiffError(
                'deadline-exceeded',
                `${what}: the container's init did not open ${fifoPath} within ${String(deadlineMs)} ms`,
              ),
            );
          }
        })
        .finally(() => {
          checking = false;
        });
    }, POLL_MS);
    const fail = (e: Error): void => {
      clearInterval(timer);
      sock.destroy();
      reject(e);
    };
    sock.on('data', (b: Buffer) => chunks.push(b));
    sock.once('error', fail);
    sock.once('end', () => {
      clearInterval(timer);
      sock.destroy();
      resolve(Buffer.concat(chunks));
    });
  });
  // Init writes "0" before it execs; end of file without it means init exited instead.
  if (data.length === 0) {
    throw new SkiffError('failed-precondition', `${what}: the container's init exited before starting it`);
  }
  await unlink(fifoPath).catch((err: unknown) => {
    if (errnoOf(err) !== 'ENOENT') throw err;
  });
  return 'started';
}
