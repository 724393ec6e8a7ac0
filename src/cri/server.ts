/**
 * The CRI gRPC server on a unix socket: RuntimeService and ImageService, both through the one wrapper.
 *
 * Socket rules (issue 2): parent dirs are created; the socket is mode 0660; a socket file left by a crashed
 * daemon is replaced, but one that still answers belongs to a live daemon and starting fails saying so.
 */
import { type ConnectionInjector, Server, ServerCredentials } from '@grpc/grpc-js';
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { type Server as NetServer, type Socket, connect, createServer } from 'node:net';
import { dirname } from 'node:path';
import { SkiffError, messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';
import { ImageServiceService, RuntimeServiceService } from './gen/runtime/v1/api.js';
import { acceptConnection } from './authority.js';
import { serializeContainers } from './container-wire.js';
import { CallTracker, type HandlersFor, wrapService } from './wrap.js';

/** The generated RuntimeService, with the container lists sent from cached bytes (container-wire.ts). */
const runtimeDefinition: typeof RuntimeServiceService = {
  ...RuntimeServiceService,
  listContainers: { ...RuntimeServiceService.listContainers, responseSerialize: serializeContainers },
  streamContainers: { ...RuntimeServiceService.streamContainers, responseSerialize: serializeContainers },
};

export type RuntimeHandlers = HandlersFor<typeof RuntimeServiceService>;
export type ImageHandlers = HandlersFor<typeof ImageServiceService>;

export interface CriServerOptions {
  socketPath: string;
  log: Logger;
  runtime: RuntimeHandlers;
  image: ImageHandlers;
  maxReceiveMessageLength?: number;
  maxSendMessageLength?: number;
}

export class CriServer {
  private readonly server: Server;
  private readonly tracker = new CallTracker();
  private listening = false;
  private injector: ConnectionInjector | undefined;
  private listener: NetServer | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly options: CriServerOptions) {
    this.server = new Server({
      'grpc.max_receive_message_length': options.maxReceiveMessageLength ?? 16 * 1024 * 1024,
      'grpc.max_send_message_length': options.maxSendMessageLength ?? 16 * 1024 * 1024,
      // skiff serves no channelz service: its per-call and per-connection bookkeeping would go unread.
      'grpc.enable_channelz': 0,
    });
    const wrapOptions = { log: options.log, tracker: this.tracker };
    this.server.addService(runtimeDefinition, wrapService(runtimeDefinition, options.runtime, wrapOptions));
    this.server.addService(ImageServiceService, wrapService(ImageServiceService, options.image, wrapOptions));
  }

  get socketPath(): string {
    return this.options.socketPath;
  }

  async start(): Promise<void> {
    const path = this.options.socketPath;
    await mkdir(dirname(path), { recursive: true, mode: 0o711 });
    await removeStaleSocket(path);
    // We own the listening socket and hand each connection to grpc-js through a connection injector, so
    // that the first client bytes pass AuthorityFixer first (acceptConnection in authority.ts: old grpc-go
    // clients), and the rest too when the client needs its authority fixed.
    const injector = this.server.createConnectionInjector(ServerCredentials.createInsecure());
    const log = this.options.log;
    const listener = createServer((socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      acceptConnection(
        socket,
        (connection) => {
          injector.injectConnection(connection);
        },
        log,
      );
    });
    await new Promise<void>((resolve, reject) => {
      listener.once('error', (err) => {
        reject(new SkiffError('unavailable', `listen on ${path}: ${err.message}`, { cause: err }));
      });
      listener.listen(path, () => {
        resolve();
      });
    });
    this.injector = injector;
    this.listener = listener;
    this.listening = true;
    // grpc-js creates the socket with the process umask; kubelet and crictl run as root, so 0660 suffices.
    await chmod(path, 0o660);
    this.options.log.info('serving CRI', { socket: path });
  }

  /**
   * Stops accepting, lets in-flight calls finish for up to `graceMs`, then cancels the rest, and removes
   * the socket file. Containers are not touched: they live on under conmon.
   */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    const inFlight = this.tracker.count;
    const finished = await this.tracker.drain(graceMs);
    if (!finished) {
      this.options.log.warn('shutdown grace period over, cancelling calls', { inFlight: this.tracker.count });
    } else if (inFlight > 0) {
      this.options.log.info('in-flight calls finished', { inFlight });
    }
    const listener = this.listener;
    await new Promise<void>((resolve) => {
      listener?.close();
      // Graceful: GOAWAY, then sessions close once their last response is flushed. Forced after 1 s.
      const timer = setTimeout(() => {
        this.injector?.destroy();
        this.server.forceShutdown();
        for (const socket of this.sockets) socket.destroy();
        resolve();
      }, 1000);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        for (const socket of this.sockets) socket.destroy();
        resolve();
      });
    });
    await unlink(this.options.socketPath).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    });
  }
}

/**
 * A socket file that nobody answers on is left from a crash: remove it. One that answers is a live daemon:
 * refuse, naming the path, rather than stealing the socket from under kubelet.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) {
    throw new SkiffError(
      'failed-precondition',
      `listen on ${path}: the path exists and is not a socket; move it away or set [grpc] address`,
    );
  }
  const live = await new Promise<boolean>((resolve) => {
    const sock = connect(path);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => {
      resolve(false);
    });
  });
  if (live) {
    throw new SkiffError(
      'already-exists',
      `listen on ${path}: another daemon is serving on this socket; stop it first or set [grpc] address`,
    );
  }
  await unlink(path).catch((err: unknown) => {
    throw new SkiffError('internal', `remove stale socket ${path}: ${messageOf(err)}`, { cause: err });
  });
}
