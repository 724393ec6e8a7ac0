/**
 * The streaming server: kubelet and crictl call the CRI `Exec` / `Attach` / `PortForward` RPCs, get back
 * a URL from `getExec` / `getAttach` / `getPortForward`, and connect to it with an HTTP upgrade, to SPDY/3.1
 * (`Upgrade: SPDY/3.1`, subprotocol in `X-Stream-Protocol-Version`) or to WebSocket (subprotocol in
 * `Sec-WebSocket-Protocol`). The shape follows kubelet's CRI streaming server
 * (`pkg/kubelet/cri/streaming/server.go`), which containerd and CRI-O embed:
 *
 *   GET|POST /exec/<token>  /attach/<token>  /portforward/<token>
 *
 * A token is single-use and expires (`tokenTtlMs`, kubelet's 1 min); an unknown, used or expired token is
 * 404, as is a token of another kind. A request that is not a well-formed upgrade is 400 with the reason;
 * a subprotocol we do not speak is 403 listing the ones we do (kubelet `httpstream.Handshake`). The token
 * is spent by any request that presents it, well-formed or not, as in kubelet.
 *
 * This module only speaks the protocols: what runs is the `StreamRuntime`'s business (types.ts).
 */
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server, STATUS_CODES } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { SkiffError } from '../errdefs.js';
import type { Logger } from '../log.js';
import { portForwardProtocol, servePortForwardOverSpdy } from './portforward.js';
import { type RemoteCommand, spdyRemoteCommandProtocols } from './remotecommand.js';
import type { SessionContext } from './session-context.js';
import { serveRemoteCommandOverSpdy } from './spdy-remotecommand.js';
import { TokenCache } from './token-cache.js';
import type { AttachRequest, ExecRequest, PortForwardRequest, StreamRuntime } from './types.js';
import {
  negotiateSubprotocol,
  offeredSubprotocols,
  serveRemoteCommandOverWebSocket,
  servePortForwardOverWebSocket,
  wsPortForwardProtocols,
  wsRemoteCommandProtocols,
} from './websocket.js';

export interface StreamServerOptions {
  /** Address to listen on, and the host of the URLs handed out (so make it one clients can reach). */
  address: string;
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Serve HTTPS with this certificate and key (PEM); both or neither. */
  tlsCertFile?: string;
  tlsKeyFile?: string;
  /** Close a session after this long without traffic. Default 4 h (kubelet's StreamIdleTimeout). */
  idleTimeoutMs?: number;
  /** How long a URL stays valid. Default 60 s (kubelet's request cache TTL). */
  tokenTtlMs?: number;
  /** How long a client may take to open its streams after the upgrade. Default 30 s (kubelet). */
  streamCreationTimeoutMs?: number;
  runtime: StreamRuntime;
  log: Logger;
}

type CachedRequest =
  | { kind: 'exec'; request: ExecRequest }
  | { kind: 'attach'; request: AttachRequest }
  | { kind: 'portforward'; request: PortForwardRequest };

type Kind = CachedRequest['kind'];

const kinds: readonly Kind[] = ['exec', 'attach', 'portforward'];
const defaultIdleTimeoutMs = 4 * 60 * 60 * 1000;
const defaultTokenTtlMs = 60 * 1000;
const defaultStreamCreationTimeoutMs = 30 * 1000;
/** Largest WebSocket message accepted from a client (stdin and port-forward data arrive in ≤ 32 KiB). */
const maxWebSocketMessage = 4 * 1024 * 1024;
/** How long stop() waits for sessions to wind down after aborting them. */
const stopGraceMs = 5000;

/** A 4xx answer to an upgrade request, carrying the reason for the client's error message. */
class UpgradeRejection extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export class StreamServer {
  private readonly options: StreamServerOptions;
  private readonly log: Logger;
  private readonly tokens: TokenCache<CachedRequest>;
  private readonly sockets = new Set<Socket>();
  private readonly sessions = new Set<Promise<void>>();
  private readonly stopping = new AbortController();
  private readonly wsProtocols = new WeakMap<IncomingMessage, string>();
  private readonly wss: WebSocketServer;
  private server: Server | undefined;
  private baseUrl: string | undefined;

  constructor(options: StreamServerOptions) {
    if ((options.tlsCertFile === undefined) !== (options.tlsKeyFile === undefined)) {
      throw new SkiffError(
        'invalid-argument',
        'configure streaming TLS: give both a certificate file and a key file, or neither',
      );
    }
    this.options = options;
    this.log = options.log.child({ component: 'streaming' });
    this.tokens = new TokenCache({ ttlMs: options.tokenTtlMs ?? defaultTokenTtlMs });
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: maxWebSocketMessage,
      // The subprotocol was chosen while routing (negotiateSubprotocol); "" means answer none.
      handleProtocols: (_offered, req) => {
        const chosen = this.wsProtocols.get(req);
        return chosen === undefined || chosen === '' ? false : chosen;
      },
    });
  }

  /** The base URL (`http(s)://address:port`); valid after start(). */
  get url(): string {
    if (this.baseUrl === undefined) {
      throw new SkiffError('unavailable', 'streaming server is not started');
    }
    return this.baseUrl;
  }

  /** Listens on the configured address and port. */
  async start(): Promise<void> {
    if (this.server !== undefined)
      throw new SkiffError('failed-precondition', 'streaming server already started');
    const { tlsCertFile, tlsKeyFile } = this.options;
    let server: Server;
    if (tlsCertFile !== undefined && tlsKeyFile !== undefined) {
      const [cert, key] = await Promise.all([readFile(tlsCertFile), readFile(tlsKeyFile)]).catch(
        (err: unknown) => {
          throw new SkiffError(
            'invalid-argument',
            `read streaming TLS certificate "${tlsCertFile}" and key "${tlsKeyFile}": ${String(err)}`,
            { cause: err },
          );
        },
      );
      server = createHttpsServer({ cert, key });
    } else {
      server = createHttpServer();
    }
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    server.on('secureConnection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    server.on('request', (req, res) => {
      const { status, message } = this.rejectPlainRequest(req);
      res.writeHead(status, {
        'Content-Type': 'text/plain; charset=utf-8',
        'X-Content-Type-Options': 'nosniff',
      });
      res.end(`${message}\n`);
    });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.onUpgrade(req, socket, head);
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        reject(
          new SkiffError(
            'unavailable',
            `start streaming server on ${this.options.address}:${this.options.port}: ${err.message}`,
            { cause: err },
          ),
        );
      };
      server.once('error', onError);
      server.listen(this.options.port, this.options.address, () => {
        server.off('error', onError);
        resolve();
      });
    });
    server.on('error', (err) => {
      this.log.error('streaming server error', { error: err });
    });
    this.server = server;
    const { port } = server.address() as AddressInfo;
    const host = this.options.address.includes(':') ? `[${this.options.address}]` : this.options.address;
    this.baseUrl = `${tlsCertFile !== undefined ? 'https' : 'http'}://${host}:${port}`;
    this.log.info('streaming server listening', { url: this.baseUrl });
  }

  /**
   * Stops listening, aborts every session (the runtime sees `signal` abort), closes every connection,
   * and waits a bounded time for the sessions to finish. Idempotent.
   */
  async stop(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.stopping.abort();
    const closed = new Promise<void>((resolve) =>
      server.close(() => {
        resolve();
      }),
    );
    for (const socket of this.sockets) socket.destroy();
    const grace = new Promise<void>((resolve) => setTimeout(resolve, stopGraceMs).unref());
    await Promise.race([Promise.allSettled([...this.sessions]), grace]);
    await closed;
    this.wss.close();
  }

  /** The URL for an exec session; `req` is bound to a single-use token. */
  getExec(req: ExecRequest): string {
    requireContainer(req.containerId);
    if (req.cmd.length === 0) throw new SkiffError('invalid-argument', 'exec: cmd must not be empty');
    checkStreams(req);
    return this.issue({ kind: 'exec', request: { ...req, cmd: [...req.cmd] } });
  }

  /** The URL for an attach session. */
  getAttach(req: AttachRequest): string {
    requireContainer(req.containerId);
    checkStreams(req);
    return this.issue({ kind: 'attach', request: { ...req } });
  }

  /** The URL for a port-forward session. */
  getPortForward(req: PortForwardRequest): string {
    if (req.podSandboxId === '')
      throw new SkiffError('invalid-argument', 'port forward: missing required pod_sandbox_id');
    for (const port of req.ports) {
      if (!Number.isInteger(port) || port < 1 || port > 0xffff) {
        throw new SkiffError('invalid-argument', `port forward: port ${port} is not in 1-65535`);
      }
    }
    return this.issue({
      kind: 'portforward',
      request: { podSandboxId: req.podSandboxId, ports: [...req.ports] },
    });
  }

  private issue(entry: CachedRequest): string {
    const base = this.url;
    return `${base}/${entry.kind}/${this.tokens.insert(entry)}`;
  }

  /** Resolves the route and spends the token; throws UpgradeRejection for 404/405. */
  private consume(req: IncomingMessage): CachedRequest & { url: URL } {
    const url = new URL(req.url ?? '/', 'http://streaming.invalid');
    const match = /^\/(exec|attach|portforward)\/([A-Za-z0-9_-]+)\/?$/.exec(url.pathname);
    if (match === null) throw new UpgradeRejection(404, '404 page not found');
    if (req.method !== 'GET' && req.method !== 'POST') {
      throw new UpgradeRejection(405, `method ${req.method ?? ''} not allowed`, { Allow: 'GET, POST' });
    }
    const [, kind, token] = match as unknown as [string, Kind, string];
    const cached = this.tokens.consume(token);
    // A token of another kind is as unknown as a wrong one (kubelet answers NotFound too).
    if (cached === undefined || cached.kind !== kind || !kinds.includes(kind)) {
      throw new UpgradeRejection(404, '404 page not found');
    }
    return { ...cached, url };
  }

  private rejectPlainRequest(req: IncomingMessage): { status: number; message: string } {
    try {
      this.consume(req);
      return { status: 400, message: 'unable to upgrade: missing upgrade headers in request' };
    } catch (err) {
      if (err instanceof UpgradeRejection) return { status: err.status, message: err.message };
      throw err;
    }
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', (err: Error) => {
      this.log.debug('streaming connection error', { error: err });
    });
    let session: Promise<void>;
    try {
      const cached = this.consume(req);
      const upgrade = (req.headers.upgrade ?? '').toLowerCase();
      const connection = (req.headers.connection ?? '').toLowerCase();
      if (!connection.includes('upgrade')) {
        throw new UpgradeRejection(400, 'unable to upgrade: missing upgrade headers in request');
      }
      session =
        upgrade === 'websocket'
          ? this.startWebSocket(req, socket, head, cached)
          : this.startSpdy(req, socket, head, cached, upgrade);
    } catch (err) {
      if (err instanceof UpgradeRejection) {
        this.log.info('streaming request rejected', {
          path: req.url?.replace(/\/[^/]+$/, '/…'),
          status: err.status,
          reason: err.message,
        });
        writeRejection(socket, err);
        return;
      }
      this.log.error('streaming upgrade failed', { error: err });
      writeRejection(socket, new UpgradeRejection(500, 'internal error'));
      return;
    }
    const tracked: Promise<void> = session
      .catch((err: unknown) => {
        this.log.error('streaming session failed', { error: err });
      })
      .finally(() => this.sessions.delete(tracked));
    this.sessions.add(tracked);
  }

  private context(fields: Record<string, unknown>): SessionContext {
    return {
      runtime: this.options.runtime,
      log: this.log.child(fields),
      idleTimeoutMs: this.options.idleTimeoutMs ?? defaultIdleTimeoutMs,
      streamCreationTimeoutMs: this.options.streamCreationTimeoutMs ?? defaultStreamCreationTimeoutMs,
      serverSignal: this.stopping.signal,
    };
  }

  private startSpdy(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    cached: CachedRequest & { url: URL },
    upgrade: string,
  ): Promise<void> {
    // kubelet: the subprotocol handshake (httpstream.Handshake) comes first, then the upgrade headers.
    const offered = commaList(req.headers['x-stream-protocol-version']);
    if (offered.length === 0) {
      throw new UpgradeRejection(400, 'unable to upgrade: X-Stream-Protocol-Version is required');
    }
    const supported = cached.kind === 'portforward' ? [portForwardProtocol] : spdyRemoteCommandProtocols;
    const protocol = offered.find((p) => supported.includes(p));
    if (protocol === undefined) {
      throw new UpgradeRejection(
        403,
        `unable to upgrade: unable to negotiate protocol: client supports [${offered.join(' ')}], server accepts [${supported.join(' ')}]`,
        { 'X-Accepted-Stream-Protocol-Versions': supported.join(', ') },
      );
    }
    if (!upgrade.includes('spdy/3.1')) {
      throw new UpgradeRejection(400, 'unable to upgrade: missing upgrade headers in request');
    }
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\n' +
        'Connection: Upgrade\r\n' +
        'Upgrade: SPDY/3.1\r\n' +
        `X-Stream-Protocol-Version: ${protocol}\r\n` +
        `Date: ${new Date().toUTCString()}\r\n\r\n`,
    );
    const ctx = this.context({
      kind: cached.kind,
      transport: 'spdy',
      protocol,
      remote: req.socket.remoteAddress,
    });
    noDelay(socket);
    ctx.log.debug('streaming session started');
    if (cached.kind === 'portforward') return servePortForwardOverSpdy(socket, head, cached.request, ctx);
    return serveRemoteCommandOverSpdy(socket, head, protocol, remoteCommand(cached), ctx);
  }

  private startWebSocket(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    cached: CachedRequest & { url: URL },
  ): Promise<void> {
    const supported = cached.kind === 'portforward' ? wsPortForwardProtocols : wsRemoteCommandProtocols;
    const offered = offeredSubprotocols(req);
    const protocol = negotiateSubprotocol(offered, new Set(supported.keys()));
    if (protocol === undefined) {
      throw new UpgradeRejection(
        403,
        `unable to upgrade: requested protocol(s) are not supported: [${offered.join(' ')}]; supports [${[...supported.keys()].filter((p) => p !== '').join(' ')}]`,
      );
    }
    let ports: number[] = [];
    if (cached.kind === 'portforward') {
      ports = cached.request.ports.length > 0 ? cached.request.ports : queryPorts(cached.url);
    }
    this.wsProtocols.set(req, protocol);
    const ctx = this.context({
      kind: cached.kind,
      transport: 'websocket',
      protocol: protocol === '' ? '(none)' : protocol,
      remote: req.socket.remoteAddress,
    });
    return new Promise<WebSocket>((resolve, reject) => {
      // ws answers a malformed handshake (key, version, method) with 400 itself and never calls back.
      socket.once('close', () => {
        reject(new UpgradeRejection(400, 'websocket handshake failed'));
      });
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        resolve(ws);
      });
    }).then(
      (ws) => {
        // ws disables the socket timeout on upgrade; ours is the session's idle timeout.
        const idle = ctx.idleTimeoutMs;
        if (idle > 0 && 'setTimeout' in socket) {
          (socket as Socket).setTimeout(idle, () => {
            ctx.log.info('streaming connection idle, closing', { idleTimeoutMs: idle });
            ws.terminate();
          });
        }
        ctx.log.debug('streaming session started');
        if (cached.kind === 'portforward')
          return servePortForwardOverWebSocket(ws, protocol, cached.request, ports, ctx);
        return serveRemoteCommandOverWebSocket(ws, protocol, remoteCommand(cached), ctx);
      },
      (err: unknown) => {
        ctx.log.info('websocket handshake failed', { error: err });
      },
    );
  }
}

function requireContainer(containerId: string): void {
  if (containerId === '') throw new SkiffError('invalid-argument', 'missing required container_id');
}

/** kubelet validateExecRequest / validateAttachRequest. */
function checkStreams(req: { tty: boolean; stdin: boolean; stdout: boolean; stderr: boolean }): void {
  // A terminal has a single output stream: stderr cannot be separate (multiplexing is not supported).
  if (req.tty && req.stderr) throw new SkiffError('invalid-argument', 'tty and stderr cannot both be true');
  if (!req.stdin && !req.stdout && !req.stderr) {
    throw new SkiffError('invalid-argument', 'one of stdin, stdout, or stderr must be set');
  }
}

function remoteCommand(cached: CachedRequest): RemoteCommand {
  if (cached.kind === 'exec') return { kind: 'exec', request: cached.request };
  if (cached.kind === 'attach') return { kind: 'attach', request: cached.request };
  throw new Error('not a remote command');
}

function commaList(header: string | string[] | undefined): string[] {
  const values = header === undefined ? [] : Array.isArray(header) ? header : [header];
  return values
    .flatMap((v) => v.split(','))
    .map((p) => p.trim())
    .filter((p) => p !== '');
}

/** `?port=8080&port=9090` or `?port=8080,9090` (kubelet NewV4Options); 400 when missing or invalid. */
function queryPorts(url: URL): number[] {
  const values = url.searchParams.getAll('port');
  if (values.length === 0) throw new UpgradeRejection(400, 'query parameter "port" is required');
  const ports: number[] = [];
  for (const value of values) {
    if (value === '') throw new UpgradeRejection(400, 'query parameter "port" cannot be empty');
    for (const p of value.split(',')) {
      if (!/^\d{1,5}$/.test(p) || Number(p) > 0xffff)
        throw new UpgradeRejection(400, `unable to parse "${p}" as a port`);
      if (Number(p) < 1) throw new UpgradeRejection(400, `port "${p}" must be > 0`);
      ports.push(Number(p));
    }
  }
  return ports;
}

function writeRejection(socket: Duplex, rejection: UpgradeRejection): void {
  const body = `${rejection.message}\n`;
  const extra = Object.entries(rejection.headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.end(
    `HTTP/1.1 ${rejection.status} ${STATUS_CODES[rejection.status] ?? ''}\r\n` +
      'Content-Type: text/plain; charset=utf-8\r\n' +
      'X-Content-Type-Options: nosniff\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      'Connection: close\r\n' +
      extra +
      '\r\n' +
      body,
  );
}

function noDelay(socket: Duplex): void {
  // Interactive sessions send keystrokes one frame at a time; Nagle would hold them back.
  if ('setNoDelay' in socket && typeof socket.setNoDelay === 'function') (socket as Socket).setNoDelay(true);
}
