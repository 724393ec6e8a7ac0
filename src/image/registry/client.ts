/**
 * A client for the OCI distribution-spec v1 pull API ("Pulling manifests", "Pulling blobs"):
 *
 *   GET /v2/<name>/manifests/<reference>     reference = tag or digest
 *   GET /v2/<name>/blobs/<digest>            may redirect (307) to blob storage
 *
 * over undici's fetch (Node's built-in fetch, plus an Agent per TLS configuration for `ca_file` and
 * `skip_verify`). It tries a registry's endpoints in order (mirrors, then the registry: see hosts.ts),
 * answers auth challenges (auth.ts), retries transient failures with backoff, verifies manifest digests,
 * and watches blob downloads for stalls. Every failure is a SkiffError whose message names the endpoint.
 *
 * Credentials and tokens never reach a log line or an error message; URLs are logged without their query
 * (blob storage redirects carry signatures there).
 */
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { rootCertificates } from 'node:tls';
import { Agent, fetch, type Dispatcher, type Response } from 'undici';
import { SkiffError, isSkiffError, messageOf, type ErrorKind } from '../../errdefs.js';
import type { Logger } from '../../log.js';
import {
  INDEX_MEDIA_TYPES,
  MANIFEST_MEDIA_TYPES,
  MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST,
  MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST,
  digestWithAlgorithmOf,
  isValidDigest,
  parseManifest,
  validateDigest,
  digestOf,
  type Descriptor,
  type ParsedManifest,
} from '../oci-image.js';
import { formatReference, manifestReferenceOf, type Reference } from '../reference.js';
import {
  TokenCache,
  basicAuthorization,
  credentialsFingerprint,
  hasAnyCredentials,
  mergeScopes,
  parseTokenResponse,
  parseWwwAuthenticate,
  pickChallenge,
  pullScope,
  refreshTokenForm,
  resolveCredentials,
  tokenRequestUrl,
  type Challenge,
  type Credentials,
  type ResolvedCredentials,
} from './auth.js';
import { describeErrorBody } from './errors.js';
import { endpointsFor, type Endpoint, type HostLookup, type RegistryHostOptions } from './hosts.js';

export type { Credentials } from './auth.js';
export type { Endpoint, RegistryHostOptions } from './hosts.js';

export interface RegistryClientOptions {
  /** Host options by exact `host[:port]` (the reference's domain, or a mirror's host). */
  hosts: (domain: string) => RegistryHostOptions | undefined;
  log: Logger;
  /** Retries after a connection error, a 5xx or a 429, per request. Default 3. */
  retries?: number;
  /** First backoff delay; doubles each retry (with jitter), capped at 10 s. Default 250 ms. */
  retryBaseDelayMs?: number;
  /** Until response headers (and, for manifests and tokens, the whole body). Default 30 s. */
  requestTimeoutMs?: number;
  userAgent?: string;
}

export interface ResolveResult {
  /** The endpoint that answered: fetch the image's other content from it. */
  endpoint: Endpoint;
  /** The manifest or index: its media type, digest (verified) and size. */
  descriptor: Descriptor;
  manifest: Buffer;
}

export interface FetchBlobOptions {
  signal?: AbortSignal;
  /**
   * The sliding window over which progress is judged. Default 60 s. The download fails with
   * `deadline-exceeded` when fewer than `minBytesPerSecond × window` bytes arrived in the last window.
   */
  progressTimeoutMs?: number;
  /** Default 1024. 0 means only a window with no bytes at all is a stall. */
  minBytesPerSecond?: number;
}

/** distribution's default manifest payload limit (`validation.manifests.payloadsizelimit`, 4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_ERROR_BODY_BYTES = 64 * 1024;
const MAX_TOKEN_BODY_BYTES = 1024 * 1024;
const MAX_REDIRECTS = 10;
const MAX_BACKOFF_MS = 10_000;
/** The longest Retry-After we honour; a registry asking for more gets this. */
const MAX_RETRY_AFTER_MS = 10_000;
const DEFAULT_PROGRESS_WINDOW_MS = 60_000;
const DEFAULT_MIN_BYTES_PER_SECOND = 1024;
/** oauth.md: "client_id: String identifying the client." */
const OAUTH_CLIENT_ID = 'skiff';

/**
 * The manifest types we ask for, best first (distribution-spec "Pulling manifests": the client SHOULD
 * send Accept). Schema 1 is included so that a registry holding only schema 1 says so, and we refuse it
 * with a clear message rather than a 404.
 */
const MANIFEST_ACCEPT = [
  ...INDEX_MEDIA_TYPES,
  ...MANIFEST_MEDIA_TYPES,
  MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST,
  MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST,
].join(', ');

/** TLS verification failures (OpenSSL / Node codes): not transient, and fixed by configuration. */
const TLS_ERROR_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REVOKED',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'EPROTO',
]);
/** Connection failures that a retry will not fix. */
const PERMANENT_NETWORK_CODES = new Set(['ENOTFOUND', 'ERR_INVALID_URL', 'ERR_SSL_WRONG_VERSION_NUMBER']);

/** What one request is for: where, under which scope and credentials. */
interface RequestContext {
  endpoint: Endpoint;
  scope: string;
  creds: ResolvedCredentials;
  signal: AbortSignal | undefined;
}

interface SendOptions {
  method: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  /** Keep the request deadline running until the caller calls `done()` (the body is read in full). */
  holdTimeout: boolean;
}

interface Sent {
  res: Response;
  /** Clears the request deadline; call once the body has been consumed or handed on. */
  done: () => void;
  /** The caller's signal combined with the request deadline (and the stream's own abort). */
  signal: AbortSignal;
  abort: (reason: unknown) => void;
}

interface Failure {
  endpoint: Endpoint;
  error: SkiffError;
}

export class RegistryClient {
  private readonly hosts: HostLookup;
  private readonly log: Logger;
  private readonly retries: number;
  private readonly retryBaseDelayMs: number;
  private readonly requestTimeoutMs: number;
  private readonly userAgent: string;
  private readonly tokens = new TokenCache();
  private readonly agents = new Map<string, Promise<Agent>>();
  private closed = false;

  constructor(options: RegistryClientOptions) {
    this.hosts = options.hosts;
    this.log = options.log;
    this.retries = options.retries ?? 3;
    this.retryBaseDelayMs = options.retryBaseDelayMs ?? 250;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.userAgent = options.userAgent ?? 'skiff';
  }

  /** The endpoints `ref` would be tried at, in order. */
  endpointsFor(ref: Reference): Endpoint[] {
    return endpointsFor(ref.domain, this.hosts);
  }

  /**
   * Fetches the manifest or index `ref` names (by digest when it has one, else by tag), trying each
   * endpoint in order until one answers. The bytes are verified against the reference's digest and the
   * registry's `Docker-Content-Digest`.
   *
   * Errors: `not-found` when every endpoint lacks it; `unavailable` when endpoints could not be reached;
   * `unauthenticated` / `permission-denied` on 401 / 403 (after authenticating); `data-loss` on a digest
   * mismatch; `failed-precondition` for a schema 1 manifest; `canceled` when `signal` aborts.
   */
  async resolve(ref: Reference, creds?: Credentials, signal?: AbortSignal): Promise<ResolveResult> {
    const image = formatReference(ref);
    const endpoints = this.endpointsFor(ref);
    const target = manifestReferenceOf(ref);
    const failures: Failure[] = [];
    for (const [i, endpoint] of endpoints.entries()) {
      let got: { bytes: Buffer; contentType: string; digest: string };
      try {
        got = await this.getManifest(endpoint, ref.path, target, ref.digest, creds, signal);
      } catch (e) {
        if (!isSkiffError(e) || !ENDPOINT_FAILURE_KINDS.has(e.kind)) {
          throw contextual(e, `resolve image ${JSON.stringify(image)} at ${endpoint.url}`);
        }
        failures.push({ endpoint, error: e });
        if (i < endpoints.length - 1) {
          this.log.warn('registry endpoint failed, trying the next', {
            image,
            endpoint: endpoint.url,
            next: endpoints[i + 1]?.url,
            error: e.message,
          });
        }
        continue;
      }
      let parsed: ParsedManifest;
      try {
        parsed = parseManifest(got.bytes, got.contentType);
      } catch (e) {
        throw contextual(e, `resolve image ${JSON.stringify(image)} at ${endpoint.url}`);
      }
      const descriptor: Descriptor = {
        mediaType: parsed.mediaType,
        digest: got.digest,
        size: got.bytes.length,
      };
      this.log.debug('resolved image', {
        image,
        endpoint: endpoint.url,
        digest: got.digest,
        mediaType: parsed.mediaType,
      });
      return { endpoint, descriptor, manifest: got.bytes };
    }
    throw combineFailures(`image ${JSON.stringify(image)}`, failures);
  }

  /** Fetches one manifest by digest from `endpoint`; the bytes are verified against `digest`. */
  async fetchManifest(
    endpoint: Endpoint,
    path: string,
    digest: string,
    creds?: Credentials,
    signal?: AbortSignal,
  ): Promise<Buffer> {
    validateDigest(digest);
    try {
      return (await this.getManifest(endpoint, path, digest, digest, creds, signal)).bytes;
    } catch (e) {
      throw contextual(e, `fetch manifest ${digest} from ${endpoint.url}`);
    }
  }

  /**
   * Streams a blob. Redirects are followed (without the Authorization header when the origin changes).
   * The stream errors with `deadline-exceeded` when the download stalls (see {@link FetchBlobOptions}),
   * `data-loss` when more or fewer bytes than `descriptor.size` arrive, `unavailable` when the connection
   * drops, and `canceled` when `signal` aborts. The digest itself is for the consumer to verify.
   */
  async fetchBlob(
    endpoint: Endpoint,
    path: string,
    descriptor: Descriptor,
    creds?: Credentials,
    options: FetchBlobOptions = {},
  ): Promise<Readable> {
    const digest = validateDigest(descriptor.digest);
    const what = `fetch blob ${digest} from ${endpoint.url}`;
    const ctx = this.context(endpoint, path, creds, options.signal);
    let sent: Sent;
    try {
      sent = await this.send(ctx, `${path}/blobs/${digest}`, { method: 'GET', holdTimeout: false });
    } catch (e) {
      throw contextual(e, what);
    }
    const { res } = sent;
    if (!res.ok) {
      throw contextual(await this.statusError(res, ctx), what);
    }
    const length = res.headers.get('content-length');
    if (length !== null && /^\d+$/.test(length) && Number(length) !== descriptor.size) {
      sent.abort(new SkiffError('data-loss', 'size mismatch'));
      await discard(res);
      throw new SkiffError(
        'data-loss',
        `${what}: the registry sends ${length} bytes but the descriptor says ${descriptor.size}`,
      );
    }
    if (res.body === null) {
      throw new SkiffError('unavailable', `${what}: the response has no body`);
    }
    const windowMs = options.progressTimeoutMs ?? DEFAULT_PROGRESS_WINDOW_MS;
    const minBytesPerSecond = options.minBytesPerSecond ?? DEFAULT_MIN_BYTES_PER_SECOND;
    return new BlobStream({
      reader: res.body.getReader(),
      expectedSize: descriptor.size,
      windowMs,
      minBytesPerSecond,
      what,
      stallMessage:
        minBytesPerSecond > 0
          ? `pull stalled: fewer than ${minBytesPerSecond} bytes/s for ${seconds(windowMs)} s from ${endpoint.url} while fetching ${digest}`
          : `pull stalled: no bytes for ${seconds(windowMs)} s from ${endpoint.url} while fetching ${digest}`,
      callerSignal: options.signal,
      abort: sent.abort,
    });
  }

  /** Closes every connection this client holds. Requests in flight fail. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    const agents = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(
      agents.map(async (p) => {
        try {
          await (await p).destroy();
        } catch {
          // a failed agent (unreadable ca_file) has nothing to close
        }
      }),
    );
  }

  // -------------------------------------------------------------------------------------------------------

  private context(
    endpoint: Endpoint,
    path: string,
    creds: Credentials | undefined,
    signal: AbortSignal | undefined,
  ): RequestContext {
    return {
      endpoint,
      scope: pullScope(path),
      creds: resolveCredentials(this.credentialsFor(endpoint, creds)),
      signal,
    };
  }

  /** Request credentials (from the CRI call) override the endpoint's configured ones. */
  private credentialsFor(endpoint: Endpoint, creds: Credentials | undefined): Credentials | undefined {
    if (hasAnyCredentials(creds)) return creds;
    if (endpoint.credentialsKey === undefined) return undefined;
    const o = this.hosts(endpoint.credentialsKey);
    if (o === undefined) return undefined;
    return { username: o.username, password: o.password, auth: o.auth, identityToken: o.identityToken };
  }

  private async getManifest(
    endpoint: Endpoint,
    path: string,
    target: string,
    expectedDigest: string | undefined,
    creds: Credentials | undefined,
    signal: AbortSignal | undefined,
  ): Promise<{ bytes: Buffer; contentType: string; digest: string }> {
    const ctx = this.context(endpoint, path, creds, signal);
    const sent = await this.send(ctx, `${path}/manifests/${target}`, {
      method: 'GET',
      headers: { accept: MANIFEST_ACCEPT },
      holdTimeout: true,
    });
    try {
      const { res } = sent;
      if (!res.ok) throw await this.statusError(res, ctx);
      const length = res.headers.get('content-length');
      if (length !== null && Number(length) > MAX_MANIFEST_BYTES) {
        await discard(res);
        throw new SkiffError(
          'failed-precondition',
          `manifest is ${length} bytes, over the ${MAX_MANIFEST_BYTES}-byte limit`,
        );
      }
      const bytes = await readBody(res, MAX_MANIFEST_BYTES, () => {
        throw new SkiffError('failed-precondition', `manifest is over the ${MAX_MANIFEST_BYTES}-byte limit`);
      });
      const contentType = res.headers.get('content-type') ?? '';

      // Pulling by digest: the content must hash to it (distribution-spec "Pulling manifests": the client
      // SHOULD verify the returned manifest's digest).
      let digest: string;
      if (expectedDigest !== undefined) {
        digest = digestWithAlgorithmOf(expectedDigest, bytes);
        if (digest !== expectedDigest) {
          throw new SkiffError(
            'data-loss',
            `manifest digest mismatch: requested ${expectedDigest}, received content is ${digest}`,
          );
        }
      } else {
        digest = digestOf(bytes);
      }
      // Docker-Content-Digest is the registry's own statement of the digest; it must agree with the bytes.
      const stated = res.headers.get('docker-content-digest')?.trim();
      if (stated !== undefined && stated !== '') {
        if (!isValidDigest(stated)) {
          this.log.debug('ignoring an invalid Docker-Content-Digest', {
            endpoint: endpoint.url,
            value: stated.slice(0, 100),
          });
        } else {
          const actual = digestWithAlgorithmOf(stated, bytes);
          if (actual !== stated) {
            throw new SkiffError(
              'data-loss',
              `manifest digest mismatch: the registry says ${stated} (Docker-Content-Digest), received content is ${actual}`,
            );
          }
        }
      }
      return { bytes, contentType, digest };
    } catch (e) {
      throw this.mapAbort(this.networkError(e, endpoint), sent.signal, ctx);
    } finally {
      sent.done();
    }
  }

  /**
   * One request with authentication, retries and redirects. Answers a 401 once per request by
   * authenticating (a token for Bearer, credentials for Basic) and resending; retries connection errors,
   * 5xx and 429 with backoff. Returns any other response, successful or not, to the caller.
   */
  private async send(ctx: RequestContext, pathAfterV2: string, options: SendOptions): Promise<Sent> {
    if (this.closed) throw new SkiffError('unavailable', 'the registry client is closed');
    const url = `${ctx.endpoint.url}/v2/${pathAfterV2}`;
    const dispatcher = await this.dispatcherFor(ctx.endpoint);
    let authenticated = false;
    for (let attempt = 0; ;) {
      const authorization = this.authorizationFor(ctx);
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...options.headers };
      if (authorization !== undefined) headers.authorization = authorization;

      const deadline = new AbortController();
      const timer = setTimeout(() => {
        deadline.abort(new SkiffError('deadline-exceeded', `no answer within ${this.requestTimeoutMs} ms`));
      }, this.requestTimeoutMs);
      const signal = ctx.signal ? AbortSignal.any([ctx.signal, deadline.signal]) : deadline.signal;
      const done = (): void => {
        clearTimeout(timer);
      };

      let res: Response;
      const started = Date.now();
      try {
        res = await this.fetchFollowing(url, { method: options.method, headers }, dispatcher, signal);
      } catch (e) {
        done();
        const err = this.mapAbort(this.networkError(e, ctx.endpoint), signal, ctx);
        if (attempt < this.retries && isRetryableNetworkError(err)) {
          attempt++;
          const delay = this.backoff(attempt);
          this.log.debug('registry request failed, retrying', {
            url: loggable(url),
            attempt,
            delayMs: delay,
            error: err.message,
          });
          await this.pause(delay, ctx);
          continue;
        }
        throw err;
      }
      this.log.debug('registry request', {
        method: options.method,
        url: loggable(url),
        status: res.status,
        durationMs: Date.now() - started,
      });

      if (res.status === 401 && !authenticated) {
        authenticated = true;
        let retry: boolean;
        try {
          retry = await this.authenticate(
            ctx,
            parseWwwAuthenticate(res.headers.get('www-authenticate') ?? ''),
            authorization,
          );
        } catch (e) {
          done();
          await discard(res);
          throw this.mapAbort(e, signal, ctx);
        }
        if (retry) {
          done();
          await discard(res);
          continue;
        }
      }

      if (isRetryableStatus(res.status) && attempt < this.retries) {
        attempt++;
        const delay = retryAfterMs(res.headers.get('retry-after')) ?? this.backoff(attempt);
        done();
        await discard(res);
        this.log.debug('registry answered a transient error, retrying', {
          url: loggable(url),
          status: res.status,
          attempt,
          delayMs: delay,
        });
        await this.pause(delay, ctx);
        continue;
      }
      if (!options.holdTimeout) done();
      return {
        res,
        done,
        signal,
        abort: (reason) => {
          deadline.abort(reason);
        },
      };
    }
  }

  /**
   * fetch with redirects followed here rather than by fetch, so that the rule is ours to see: the
   * Authorization header goes only to the origin it was meant for (blob storage behind a 307 gets a
   * signed URL, not our token), as the fetch standard's "HTTP-redirect fetch" step 13 also requires.
   */
  private async fetchFollowing(
    url: string,
    init: { method: string; headers: Record<string, string>; body?: string },
    dispatcher: Dispatcher,
    signal: AbortSignal,
  ): Promise<Response> {
    let current = new URL(url);
    let { method, body } = init;
    const headers = { ...init.headers };
    for (let hop = 0; ; hop++) {
      const res = await fetch(current, {
        method,
        headers,
        redirect: 'manual',
        dispatcher,
        signal,
        ...(body !== undefined ? { body } : {}),
      });
      const location = res.headers.get('location');
      if (![301, 302, 303, 307, 308].includes(res.status) || location === null) return res;
      await discard(res);
      if (hop >= MAX_REDIRECTS) throw new SkiffError('unavailable', `more than ${MAX_REDIRECTS} redirects`);
      let next: URL;
      try {
        next = new URL(location, current);
      } catch {
        throw new SkiffError('unavailable', `redirected to an invalid URL by ${loggable(current.href)}`);
      }
      if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        throw new SkiffError(
          'unavailable',
          `redirected to a ${next.protocol} URL by ${loggable(current.href)}`,
        );
      }
      if (next.origin !== current.origin) delete headers.authorization;
      // fetch standard "HTTP-redirect fetch" step 12: 303 (and 301/302 after a POST) becomes a GET.
      if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === 'POST')) {
        if (method !== 'HEAD') method = 'GET';
        body = undefined;
        delete headers['content-type'];
      }
      this.log.debug('registry redirect', {
        from: loggable(current.href),
        to: loggable(next.href),
        status: res.status,
      });
      current = next;
    }
  }

  // ---------------------------------------------------------------------------------------------- auth

  /** The Authorization header for a request, from what we already know about the host. */
  private authorizationFor(ctx: RequestContext): string | undefined {
    const { creds, endpoint } = ctx;
    // CRI's registry_token is "a bearer token to be sent to a registry": send it as is.
    if (creds.kind === 'registry-token') return `Bearer ${creds.token}`;
    const challenge = this.tokens.challengeFor(endpoint.host);
    if (challenge === undefined) return undefined;
    if (challenge.scheme === 'basic') {
      return creds.kind === 'basic' ? basicAuthorization(creds.username, creds.password) : undefined;
    }
    return this.tokens.get(endpoint.host, ctx.scope, credentialsFingerprint(creds));
  }

  /**
   * Handles a 401's challenges (distribution-spec / token.md "How to authenticate": the registry answers
   * 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`; the client gets a token from the realm
   * and retries with `Authorization: Bearer <token>`). Returns true when a retry can succeed where the
   * last attempt (sent with `sent`) failed.
   */
  private async authenticate(
    ctx: RequestContext,
    challenges: Challenge[],
    sent: string | undefined,
  ): Promise<boolean> {
    const challenge = pickChallenge(challenges);
    if (challenge === undefined) return false;
    const { endpoint, creds } = ctx;
    this.tokens.setChallenge(endpoint.host, challenge);
    if (creds.kind === 'registry-token') return false; // it was sent, and refused
    if (challenge.scheme === 'basic') {
      if (creds.kind !== 'basic') return false;
      return basicAuthorization(creds.username, creds.password) !== sent;
    }
    const fingerprint = credentialsFingerprint(creds);
    this.tokens.delete(endpoint.host, ctx.scope, fingerprint);
    const { token, expiresIn } = await this.fetchToken(ctx, challenge);
    const authorization = `Bearer ${token}`;
    this.tokens.set(endpoint.host, ctx.scope, fingerprint, authorization, expiresIn);
    return authorization !== sent;
  }

  /**
   * Gets a bearer token from the challenge's realm: token.md "Requesting a Token" (GET with `service`,
   * `scope`, and HTTP Basic credentials when we have them), or oauth.md "Refresh token format" (POST
   * `grant_type=refresh_token`) for an identity token, as Docker does.
   */
  private async fetchToken(
    ctx: RequestContext,
    challenge: Challenge,
  ): Promise<{ token: string; expiresIn: number }> {
    const realm = challenge.params.realm;
    const { endpoint, creds } = ctx;
    const credentialsNote = creds.kind === 'none' ? 'no credentials were sent' : 'credentials were sent';
    if (realm === undefined || realm === '') {
      throw new SkiffError(
        'unauthenticated',
        `the registry's Bearer challenge names no realm (${credentialsNote})`,
      );
    }
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm);
    } catch {
      throw new SkiffError(
        'unauthenticated',
        `the registry's token realm ${JSON.stringify(realm)} is not a URL`,
      );
    }
    if (realmUrl.protocol !== 'http:' && realmUrl.protocol !== 'https:') {
      throw new SkiffError(
        'unauthenticated',
        `the registry's token realm ${JSON.stringify(realm)} is not http(s)`,
      );
    }
    const scopes = mergeScopes(ctx.scope, challenge.params.scope);
    const service = challenge.params.service;
    const what = `get a token from ${loggable(realmUrl.href)}`;

    const headers: Record<string, string> = { 'user-agent': this.userAgent, accept: 'application/json' };
    let init: { method: string; headers: Record<string, string>; body?: string };
    let url: URL;
    if (creds.kind === 'identity-token') {
      url = realmUrl;
      headers['content-type'] = 'application/x-www-form-urlencoded';
      init = {
        method: 'POST',
        headers,
        body: refreshTokenForm(service, scopes, creds.token, OAUTH_CLIENT_ID).toString(),
      };
    } else {
      url = tokenRequestUrl(realm, service, scopes, creds.kind === 'basic' ? creds.username : undefined);
      if (creds.kind === 'basic') headers.authorization = basicAuthorization(creds.username, creds.password);
      init = { method: 'GET', headers };
    }

    const dispatcher = await this.dispatcherFor(endpoint);
    for (let attempt = 0; ; attempt++) {
      const deadline = AbortSignal.timeout(this.requestTimeoutMs);
      const signal = ctx.signal ? AbortSignal.any([ctx.signal, deadline]) : deadline;
      let res: Response;
      try {
        res = await this.fetchFollowing(url.href, init, dispatcher, signal);
      } catch (e) {
        const err = this.mapAbort(this.networkError(e, endpoint), signal, ctx);
        if (attempt < this.retries && isRetryableNetworkError(err)) {
          await this.pause(this.backoff(attempt + 1), ctx);
          continue;
        }
        throw contextual(err, what);
      }
      if (isRetryableStatus(res.status) && attempt < this.retries) {
        const delay = retryAfterMs(res.headers.get('retry-after')) ?? this.backoff(attempt + 1);
        await discard(res);
        await this.pause(delay, ctx);
        continue;
      }
      let body: string;
      try {
        body = (await readBody(res, MAX_TOKEN_BODY_BYTES, () => undefined)).toString('utf8');
      } catch (e) {
        throw contextual(this.mapAbort(this.networkError(e, endpoint), signal, ctx), what);
      }
      if (!res.ok) {
        const kind: ErrorKind =
          res.status === 401
            ? 'unauthenticated'
            : res.status === 403
              ? 'permission-denied'
              : res.status >= 500
                ? 'unavailable'
                : 'unauthenticated';
        const detail = describeErrorBody(body);
        throw new SkiffError(
          kind,
          `${what}: HTTP ${res.status} (${credentialsNote})${detail ? `: ${detail}` : ''}`,
        );
      }
      const parsed = parseTokenResponse(body);
      this.log.debug('registry token obtained', {
        realm: loggable(realmUrl.href),
        service,
        scope: scopes.join(' '),
        expiresInS: parsed.expiresIn,
      });
      return parsed;
    }
  }

  // ------------------------------------------------------------------------------------------ transport

  /** One undici Agent per TLS configuration (plain HTTP and default TLS share one), created on first use. */
  private dispatcherFor(endpoint: Endpoint): Promise<Agent> {
    const isHttps = endpoint.url.startsWith('https:');
    const { caFile, skipVerify } = endpoint.tls;
    const key = isHttps && (caFile !== '' || skipVerify) ? `${caFile}\u0000${String(skipVerify)}` : '';
    let agent = this.agents.get(key);
    if (agent === undefined) {
      agent = (async () => {
        if (key === '') return new Agent();
        let ca: string[] | undefined;
        if (caFile !== '') {
          try {
            // Added to the default roots, as containerd appends ca_file to the system pool.
            ca = [...rootCertificates, await readFile(caFile, 'utf8')];
          } catch (e) {
            throw new SkiffError(
              'failed-precondition',
              `read ca_file ${JSON.stringify(caFile)} for ${endpoint.url}: ${messageOf(e)}`,
              { cause: e },
            );
          }
        }
        return new Agent({ connect: { ...(ca ? { ca } : {}), rejectUnauthorized: !skipVerify } });
      })();
      const created = agent;
      created.catch(() => {
        if (this.agents.get(key) === created) this.agents.delete(key);
      });
      this.agents.set(key, created);
    }
    return agent;
  }

  /** A SkiffError for a failed fetch: TLS problems with the configuration hint, others as unavailable. */
  private networkError(e: unknown, endpoint: Endpoint): SkiffError {
    if (isSkiffError(e)) return e;
    const cause = rootCause(e);
    const code = errorCode(cause);
    const reason = messageOf(cause);
    if (code !== undefined && TLS_ERROR_CODES.has(code)) {
      const key = endpoint.isMirror ? endpoint.host : endpoint.registry;
      const tls = new SkiffError(
        'unavailable',
        `tls: ${reason} (${code}); set [registries.${JSON.stringify(key)}] ca_file or skip_verify` +
          (endpoint.url.startsWith('https:') ? ', or use http:// if the registry does not speak TLS' : ''),
        { cause: e },
      );
      permanent.add(tls); // a certificate does not fix itself between retries
      return tls;
    }
    const err = new SkiffError('unavailable', reason, { cause: e });
    if (code !== undefined && PERMANENT_NETWORK_CODES.has(code)) permanent.add(err);
    return err;
  }

  /** Maps an abort to `canceled` (the caller's signal) or keeps the deadline / stall error we aborted with. */
  private mapAbort<T>(e: T, signal: AbortSignal, ctx: RequestContext): T | SkiffError {
    if (ctx.signal?.aborted === true) {
      const reason: unknown = ctx.signal.reason;
      if (isSkiffError(reason)) return reason;
      return new SkiffError('canceled', 'canceled', { cause: reason });
    }
    if (signal.aborted && isSkiffError(signal.reason)) return signal.reason;
    return e;
  }

  private async pause(ms: number, ctx: RequestContext): Promise<void> {
    try {
      await sleep(ms, undefined, ctx.signal ? { signal: ctx.signal } : {});
    } catch (e) {
      throw this.mapAbort(e, ctx.signal ?? new AbortController().signal, ctx);
    }
  }

  /** Exponential backoff with "equal jitter": half the step fixed, half random. */
  private backoff(attempt: number): number {
    const step = Math.min(this.retryBaseDelayMs * 2 ** (attempt - 1), MAX_BACKOFF_MS);
    return Math.round(step / 2 + (Math.random() * step) / 2);
  }

  /** The SkiffError for an unsuccessful response (its body is consumed). */
  private async statusError(res: Response, ctx: RequestContext): Promise<SkiffError> {
    let detail: string | undefined;
    try {
      detail = describeErrorBody(
        (await readBody(res, MAX_ERROR_BODY_BYTES, () => undefined)).toString('utf8'),
      );
    } catch {
      detail = undefined;
    }
    const suffix = detail !== undefined ? `: ${detail}` : '';
    const sentCreds = ctx.creds.kind === 'none' ? 'no credentials were sent' : 'credentials were sent';
    const status = `HTTP ${res.status}${res.statusText ? ` ${res.statusText.toLowerCase()}` : ''}`;
    switch (res.status) {
      case 401:
        return new SkiffError('unauthenticated', `${status} (${sentCreds})${suffix}`);
      case 403:
        return new SkiffError('permission-denied', `${status} (${sentCreds})${suffix}`);
      case 404:
        return new SkiffError('not-found', `${status}${suffix}`);
      case 400:
        return new SkiffError('invalid-argument', `${status}${suffix}`);
      case 429:
        return new SkiffError('unavailable', `${status}: rate limited${suffix}`);
      default:
        return new SkiffError(res.status >= 500 ? 'unavailable' : 'unknown', `${status}${suffix}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Blob streams

interface BlobStreamOptions {
  reader: ReadableStreamDefaultReader<Uint8Array>;
  expectedSize: number;
  windowMs: number;
  minBytesPerSecond: number;
  what: string;
  stallMessage: string;
  callerSignal: AbortSignal | undefined;
  abort: (reason: unknown) => void;
}

/** The sliding window is judged in this many steps. */
const WINDOW_STEPS = 10;

/**
 * A Node Readable over a fetch body that enforces a minimum rate over a sliding window and the
 * descriptor's size. Time the consumer spends not reading (backpressure) does not count as a stall: a
 * step with no read pending and no bytes is skipped, not counted as an empty step.
 */
class BlobStream extends Readable {
  private readonly o: BlobStreamOptions;
  private reading = false;
  private received = 0;
  private stepBytes = 0;
  private readonly steps: number[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly threshold: number;
  private readonly onCallerAbort: () => void;

  constructor(o: BlobStreamOptions) {
    super({ highWaterMark: 1024 * 1024 });
    this.o = o;
    this.threshold = Math.max(1, (o.minBytesPerSecond * o.windowMs) / 1000);
    this.timer = setInterval(
      () => {
        this.tick();
      },
      Math.max(1, Math.round(o.windowMs / WINDOW_STEPS)),
    );
    this.timer.unref();
    this.onCallerAbort = () => {
      const reason: unknown = o.callerSignal?.reason;
      this.destroy(
        isSkiffError(reason) ? reason : new SkiffError('canceled', `${o.what}: canceled`, { cause: reason }),
      );
    };
    o.callerSignal?.addEventListener('abort', this.onCallerAbort, { once: true });
    if (o.callerSignal?.aborted === true) queueMicrotask(this.onCallerAbort);
  }

  private tick(): void {
    if (!this.reading && this.stepBytes === 0) return; // waiting for the consumer, not the network
    this.steps.push(this.stepBytes);
    this.stepBytes = 0;
    if (this.steps.length > WINDOW_STEPS) this.steps.shift();
    if (this.steps.length < WINDOW_STEPS) return;
    const inWindow = this.steps.reduce((a, b) => a + b, 0);
    if (inWindow < this.threshold) {
      this.destroy(new SkiffError('deadline-exceeded', this.o.stallMessage));
    }
  }

  override _read(): void {
    if (this.reading || this.destroyed) return;
    this.reading = true;
    this.o.reader.read().then(
      ({ done, value }) => {
        this.reading = false;
        if (this.destroyed) return;
        if (done) {
          if (this.received !== this.o.expectedSize) {
            this.destroy(
              new SkiffError(
                'data-loss',
                `${this.o.what}: the body ended after ${this.received} of ${this.o.expectedSize} bytes`,
              ),
            );
            return;
          }
          this.push(null);
          return;
        }
        this.received += value.byteLength;
        this.stepBytes += value.byteLength;
        if (this.received > this.o.expectedSize) {
          this.destroy(
            new SkiffError(
              'data-loss',
              `${this.o.what}: the body is longer than the descriptor's ${this.o.expectedSize} bytes`,
            ),
          );
          return;
        }
        this.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
      },
      (e: unknown) => {
        this.reading = false;
        if (this.destroyed) return;
        const reason: unknown =
          this.o.callerSignal?.aborted === true ? this.o.callerSignal.reason : undefined;
        if (reason !== undefined) {
          this.destroy(
            isSkiffError(reason)
              ? reason
              : new SkiffError('canceled', `${this.o.what}: canceled`, { cause: reason }),
          );
          return;
        }
        this.destroy(
          isSkiffError(e)
            ? e
            : new SkiffError(
                'unavailable',
                `${this.o.what}: connection lost after ${this.received} of ${this.o.expectedSize} bytes: ${messageOf(rootCause(e))}`,
                { cause: e },
              ),
        );
      },
    );
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    clearInterval(this.timer);
    this.o.callerSignal?.removeEventListener('abort', this.onCallerAbort);
    if (!this.readableEnded) {
      this.o.abort(err ?? new SkiffError('canceled', `${this.o.what}: stream closed`));
      this.o.reader.cancel().catch(() => undefined);
    }
    callback(err);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Helpers

/** Errors marked as not worth retrying (a DNS name that does not exist, say). */
const permanent = new WeakSet<SkiffError>();

function isRetryableNetworkError(e: unknown): boolean {
  return isSkiffError(e) && (e.kind === 'unavailable' || e.kind === 'deadline-exceeded') && !permanent.has(e);
}

/** 408, 429 and 5xx (but 501 Not Implemented) are worth another try. */
function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status !== 501 && status !== 505);
}

/** RFC 9110 §10.2.3 Retry-After: delay-seconds or an HTTP-date; bounded to {@link MAX_RETRY_AFTER_MS}. */
export function retryAfterMs(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  let ms: number;
  if (/^\d+$/.test(v)) ms = Number(v) * 1000;
  else {
    const at = Date.parse(v);
    if (Number.isNaN(at)) return undefined;
    ms = at - now;
  }
  return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
}

/** Errors that mean "this endpoint could not serve it": try the next one. */
const ENDPOINT_FAILURE_KINDS: ReadonlySet<ErrorKind> = new Set<ErrorKind>([
  'not-found',
  'unavailable',
  'unauthenticated',
  'permission-denied',
  'data-loss',
  'deadline-exceeded',
  'unknown',
  'invalid-argument',
]);

/** Which failure speaks for all when every endpoint failed (the most specific and actionable first). */
const FAILURE_PRIORITY: ErrorKind[] = [
  'data-loss',
  'permission-denied',
  'unauthenticated',
  'unavailable',
  'deadline-exceeded',
  'invalid-argument',
  'unknown',
  'not-found',
];

/**
 * One error for a resolve that failed everywhere. `not-found` when every endpoint said so or the registry
 * itself (the authority behind its mirrors) did; otherwise the most telling kind, with every endpoint's
 * answer in the message.
 */
function combineFailures(subject: string, failures: Failure[]): SkiffError {
  const all = failures.map((f) => `${f.endpoint.url}: ${f.error.message}`).join('; ');
  const notFound = failures.filter((f) => f.error.kind === 'not-found');
  const upstream = failures.find((f) => !f.endpoint.isMirror);
  if (notFound.length > 0 && (notFound.length === failures.length || upstream?.error.kind === 'not-found')) {
    const where = notFound.map((f) => f.endpoint.url).join(', ');
    const others = failures.filter((f) => f.error.kind !== 'not-found');
    return new SkiffError(
      'not-found',
      `${subject} not found in ${where}` +
        (others.length > 0
          ? ` (${others.map((f) => `${f.endpoint.url}: ${f.error.message}`).join('; ')})`
          : ''),
      { cause: failures[0]?.error },
    );
  }
  const kinds = new Set(failures.map((f) => f.error.kind));
  const kind = FAILURE_PRIORITY.find((k) => kinds.has(k)) ?? failures[0]?.error.kind ?? 'unavailable';
  const verb =
    failures.every((f) => f.error.kind === 'unavailable') && failures.length > 1
      ? ': no endpoint could be reached'
      : '';
  return new SkiffError(kind, `resolve ${subject}${verb}: ${all}`, { cause: failures[0]?.error });
}

function contextual(e: unknown, context: string): unknown {
  if (!isSkiffError(e)) return e;
  if (e.kind === 'canceled' && e.message === 'canceled')
    return new SkiffError('canceled', `${context}: canceled`, { cause: e });
  return new SkiffError(e.kind, `${context}: ${e.message}`, { cause: e });
}

/** Reads a body up to `limit` bytes; past it, calls `over` (which may throw) and returns what it has. */
async function readBody(res: Response, limit: number, over: () => void): Promise<Buffer> {
  if (res.body === null) return Buffer.alloc(0);
  const reader: ReadableStreamDefaultReader<Uint8Array> = res.body.getReader();
  const chunks: Buffer[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      over();
      const keep = value.byteLength - (size - limit);
      chunks.push(Buffer.from(value.buffer, value.byteOffset, Math.max(0, keep)));
      return Buffer.concat(chunks);
    }
    chunks.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
  }
  return Buffer.concat(chunks);
}

async function discard(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // already closed or errored: nothing to release
  }
}

/** The innermost `cause` (fetch wraps connection errors in `TypeError: fetch failed`). */
function rootCause(e: unknown): unknown {
  let cur = e;
  for (let i = 0; i < 5; i++) {
    if (cur instanceof Error && cur.cause !== undefined && !(cur instanceof SkiffError)) cur = cur.cause;
    else break;
  }
  return cur;
}

function errorCode(e: unknown): string | undefined {
  if (typeof e === 'object' && e !== null && 'code' in e) {
    const code = e.code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** A URL for logs and messages: origin and path, never the query (signed blob URLs) or userinfo. */
function loggable(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

function seconds(ms: number): string {
  return String(Math.round(ms / 100) / 10);
}
