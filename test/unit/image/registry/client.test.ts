/**
 * The registry client's protocol logic against real loopback HTTP(S) servers started here (a tiny fake
 * registry, a token server, blob storage): auth flows, retries, endpoint fallback, redirects, digest
 * checks, stall detection, TLS configuration and error messages. No request leaves 127.0.0.1.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { describe, expect, it, onTestFinished } from 'vitest';
import { SkiffError } from '../../../../src/errdefs.js';
import { Logger, silentLogger } from '../../../../src/log.js';
import {
  MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST,
  MEDIA_TYPE_OCI_CONFIG,
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_LAYER_GZIP,
  MEDIA_TYPE_OCI_MANIFEST,
  digestOf,
  type Descriptor,
} from '../../../../src/image/oci-image.js';
import { parseReference } from '../../../../src/image/reference.js';
import {
  RegistryClient,
  type Endpoint,
  type RegistryClientOptions,
  type RegistryHostOptions,
} from '../../../../src/image/registry/client.js';

// A throwaway self-signed certificate for 127.0.0.1 (P-256, valid until 2126), for the TLS tests only.
const TEST_CERT = `-----BEGIN CERTIFICATE-----
MIIBsDCCAVWgAwIBAgIUPsC5IigTnJaNZ1+dZc9Hv4Do/GcwCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTc2tpZmYtdGVzdC1yZWdpc3RyeTAgFw0yNjExMjgxMDE5NDRa
GA8yMTI2MTEwNDEwMTk0NFowHjEcMBoGA1UEAwwTc2tpZmYtdGVzdC1yZWdpc3Ry
eTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABJzqUueeV/51nDKfo4hfPK0AaPCD
CV+Fzqm+w7ooiyg3SXT5p9Tgfi7Swet7V9loXtX8wWiogXuIGkdgm99/5pmjbzBt
MB0GA1UdDgQWBBRpg+BDE3qbOBqEseZIwysozhHd1TAfBgNVHSMEGDAWgBRpg+BD
E3qbOBqEseZIwysozhHd1TAPBgNVHRMBAf8EBTADAQH/MBoGA1UdEQQTMBGHBH8A
AAGCCWxvY2FsaG9zdDAKBggqhkjOPQQDAgNJADBGAiEAsC+cDBfJ/g0h9bzO9lel
chYqjdZkGDbuq9Uqw6YSMG0CIQCfjL07YJbZ58mvOQltFVN1aCbkvyHjDAKbW/Rx
x8bfvQ==
-----END CERTIFICATE-----
`;
const TEST_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgaH4jUOfiTfuIvox5
oPXlq7SDu3fjye7WbuEHoFrNu4uhRANCAASc6lLnnlf+dZwyn6OIXzytAGjwgwlf
hc6pvsO6KIsoN0l0+afU4H4u0sHre1fZaF7V/MFoqIF7iBpHYJvff+aZ
-----END PRIVATE KEY-----
`;

// ---------------------------------------------------------------------------------------------------------
// Test servers

interface Seen {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  body: string;
}

type Handler = (req: IncomingMessage, res: ServerResponse, seen: Seen, n: number) => void | Promise<void>;

interface TestServer {
  /** '127.0.0.1:PORT' */
  host: string;
  url: string;
  port: number;
  requests: Seen[];
}

/** Starts an HTTP(S) server on 127.0.0.1 that records requests; closed when the test finishes. */
async function serve(handler: Handler, tls = false): Promise<TestServer> {
  const requests: Seen[] = [];
  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const u = new URL(req.url ?? '/', 'http://x');
      const seen: Seen = {
        method: req.method ?? '',
        path: u.pathname,
        query: u.searchParams,
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      };
      requests.push(seen);
      Promise.resolve(handler(req, res, seen, requests.length)).catch((e: unknown) => {
        res.destroy(e instanceof Error ? e : new Error(String(e)));
      });
    });
  };
  const server: Server = tls
    ? createHttpsServer({ cert: TEST_CERT, key: TEST_KEY }, listener)
    : createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onTestFinished(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) =>
      server.close(() => {
        resolve();
      }),
    );
  });
  const { port } = server.address() as AddressInfo;
  return { host: `127.0.0.1:${port}`, url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`, port, requests };
}

/** A port with nothing listening (bound, then released). */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) =>
    s.close(() => {
      resolve();
    }),
  );
  return port;
}

function json(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

function registryError(
  res: ServerResponse,
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): void {
  json(res, status, { errors: [{ code, message, detail: null }] }, headers);
}

interface Content {
  /** tag or digest → manifest */
  manifests: Map<string, { body: Buffer; mediaType: string; digestHeader?: string }>;
  blobs: Map<string, Buffer>;
}

function image(): {
  content: Content;
  manifest: Buffer;
  digest: string;
  layer: Buffer;
  layerDescriptor: Descriptor;
} {
  const layer = Buffer.from('pretend this is a gzipped tar');
  const config = Buffer.from(
    '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}',
  );
  const layerDescriptor = {
    mediaType: MEDIA_TYPE_OCI_LAYER_GZIP,
    digest: digestOf(layer),
    size: layer.length,
  };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_OCI_MANIFEST,
      config: { mediaType: MEDIA_TYPE_OCI_CONFIG, digest: digestOf(config), size: config.length },
      layers: [layerDescriptor],
    }),
  );
  const digest = digestOf(manifest);
  const entry = { body: manifest, mediaType: MEDIA_TYPE_OCI_MANIFEST };
  return {
    content: {
      manifests: new Map([
        ['latest', entry],
        [digest, entry],
      ]),
      blobs: new Map([
        [digestOf(layer), layer],
        [digestOf(config), config],
      ]),
    },
    manifest,
    digest,
    layer,
    layerDescriptor,
  };
}

/** Serves `content` for repository `repo` per distribution-spec "Pulling", after `guard` allows it. */
function registryHandler(
  repo: string,
  content: Content,
  guard?: (seen: Seen, res: ServerResponse) => boolean,
): Handler {
  return (_req, res, seen) => {
    if (guard && !guard(seen, res)) return;
    const prefix = `/v2/${repo}/`;
    if (seen.path.startsWith(`${prefix}manifests/`)) {
      const ref = seen.path.slice(`${prefix}manifests/`.length);
      const m = content.manifests.get(ref);
      if (!m) {
        registryError(res, 404, 'MANIFEST_UNKNOWN', 'manifest unknown');
        return;
      }
      res.writeHead(200, {
        'content-type': m.mediaType,
        'docker-content-digest': m.digestHeader ?? digestOf(m.body),
        'content-length': String(m.body.length),
      });
      res.end(seen.method === 'HEAD' ? undefined : m.body);
      return;
    }
    if (seen.path.startsWith(`${prefix}blobs/`)) {
      const blob = content.blobs.get(seen.path.slice(`${prefix}blobs/`.length));
      if (!blob) {
        registryError(res, 404, 'BLOB_UNKNOWN', 'blob unknown to registry');
        return;
      }
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': String(blob.length),
      });
      res.end(blob);
      return;
    }
    registryError(res, 404, 'NAME_UNKNOWN', 'repository name not known to registry');
  };
}

function hostOptions(o: Partial<RegistryHostOptions> = {}): RegistryHostOptions {
  return {
    mirrors: [],
    insecure: false,
    caFile: '',
    skipVerify: false,
    username: '',
    password: '',
    auth: '',
    identityToken: '',
    fallbackToUpstream: true,
    ...o,
  };
}

function newClient(
  table: Record<string, Partial<RegistryHostOptions>> = {},
  extra: Partial<RegistryClientOptions> = {},
): RegistryClient {
  const client = new RegistryClient({
    hosts: (h) => (table[h] ? hostOptions(table[h]) : undefined),
    log: silentLogger(),
    retries: 2,
    retryBaseDelayMs: 5,
    requestTimeoutMs: 5_000,
    ...extra,
  });
  onTestFinished(() => client.close());
  return client;
}

async function caught(p: Promise<unknown>): Promise<SkiffError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof SkiffError) return e;
    throw e;
  }
  throw new Error('expected the promise to reject');
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function capturingLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return {
    log: new Logger({ level: 'debug', format: 'json', sink: { write: (l) => lines.push(l) } }),
    lines,
  };
}

// ---------------------------------------------------------------------------------------------------------

describe('RegistryClient.resolve', () => {
  it('resolves a tag with the manifest Accept types and verifies Docker-Content-Digest', async () => {
    const img = image();
    const reg = await serve(registryHandler('app', img.content));
    const got = await newClient().resolve(parseReference(`${reg.host}/app`));
    expect(got.descriptor).toEqual({
      mediaType: MEDIA_TYPE_OCI_MANIFEST,
      digest: img.digest,
      size: img.manifest.length,
    });
    expect(got.manifest.equals(img.manifest)).toBe(true);
    expect(got.endpoint).toMatchObject({ url: reg.url, isMirror: false, registry: reg.host });
    const accept = reg.requests[0]?.headers.accept ?? '';
    for (const t of [
      MEDIA_TYPE_OCI_MANIFEST,
      MEDIA_TYPE_OCI_INDEX,
      'application/vnd.docker.distribution.manifest.v2+json',
    ]) {
      expect(accept).toContain(t);
    }
    expect(reg.requests[0]?.path).toBe('/v2/app/manifests/latest');
  });

  it('asks by digest when the reference has one, even with a tag', async () => {
    const img = image();
    const reg = await serve(registryHandler('app', img.content));
    const got = await newClient().resolve(parseReference(`${reg.host}/app:whatever@${img.digest}`));
    expect(got.descriptor.digest).toBe(img.digest);
    expect(reg.requests.map((r) => r.path)).toEqual([`/v2/app/manifests/${img.digest}`]);
  });

  it('refuses content that does not hash to the requested digest (data-loss naming both digests and the endpoint)', async () => {
    const img = image();
    const other = Buffer.from(img.manifest.toString().replace('"schemaVersion":2', '"schemaVersion": 2'));
    img.content.manifests.set(img.digest, {
      body: other,
      mediaType: MEDIA_TYPE_OCI_MANIFEST,
      digestHeader: img.digest,
    });
    const reg = await serve(registryHandler('app', img.content));
    const e = await caught(newClient().resolve(parseReference(`${reg.host}/app@${img.digest}`)));
    expect(e.kind).toBe('data-loss');
    expect(e.message).toContain(img.digest);
    expect(e.message).toContain(digestOf(other));
    expect(e.message).toContain(reg.url);
  });

  it('refuses a manifest whose Docker-Content-Digest disagrees with its bytes', async () => {
    const img = image();
    const wrong = `sha256:${'0'.repeat(64)}`;
    img.content.manifests.set('latest', {
      body: img.manifest,
      mediaType: MEDIA_TYPE_OCI_MANIFEST,
      digestHeader: wrong,
    });
    const reg = await serve(registryHandler('app', img.content));
    const e = await caught(newClient().resolve(parseReference(`${reg.host}/app`)));
    expect(e.kind).toBe('data-loss');
    expect(e.message).toBe(
      `resolve image "${reg.host}/app:latest": ${reg.url}: manifest digest mismatch: the registry says ${wrong} ` +
        `(Docker-Content-Digest), received content is ${img.digest}`,
    );
  });

  it('refuses schema 1 with the re-push advice', async () => {
    const body = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'app', tag: 'old', fsLayers: [] }));
    const reg = await serve(
      registryHandler('app', {
        manifests: new Map([['old', { body, mediaType: MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST }]]),
        blobs: new Map(),
      }),
    );
    const e = await caught(newClient().resolve(parseReference(`${reg.host}/app:old`)));
    expect(e.kind).toBe('failed-precondition');
    expect(e.message).toContain('schema 1 manifests are not supported (deprecated by the registry spec)');
    expect(e.message).toContain('re-push the image with a current client');
  });

  it('answers not-found naming the reference and the endpoints, with the registry error', async () => {
    const reg = await serve(registryHandler('app', image().content));
    const client = newClient();
    const e = await caught(client.resolve(parseReference(`${reg.host}/app:nope`)));
    expect(e.kind).toBe('not-found');
    expect(e.message).toBe(`image "${reg.host}/app:nope" not found in ${reg.url}`);
    expect(reg.requests).toHaveLength(1); // 404 is not retried

    const direct = await caught(
      client.fetchManifest(
        client.endpointsFor(parseReference(`${reg.host}/app`))[0]!,
        'app',
        `sha256:${'1'.repeat(64)}`,
      ),
    );
    expect(direct.kind).toBe('not-found');
    expect(direct.message).toContain('MANIFEST_UNKNOWN: manifest unknown');
  });
});

describe('endpoints and fallback', () => {
  it('moves on from a mirror that answers 404 to the next endpoint', async () => {
    const img = image();
    const mirror = await serve((_req, res) => {
      registryError(res, 404, 'MANIFEST_UNKNOWN', 'manifest unknown');
    });
    const upstream = await serve(registryHandler('app', img.content));
    const { log, lines } = capturingLogger();
    const client = newClient({ [upstream.host]: { mirrors: [mirror.url] } }, { log });
    const got = await client.resolve(parseReference(`${upstream.host}/app`));
    expect(got.endpoint.url).toBe(upstream.url);
    expect(mirror.requests.map((r) => r.path)).toEqual(['/v2/app/manifests/latest']);
    expect(
      lines.some((l) => l.includes('registry endpoint failed, trying the next') && l.includes(mirror.url)),
    ).toBe(true);
  });

  it('maps a mirrored registry path unchanged and never contacts the upstream when fallback is off', async () => {
    const img = image();
    const mirror = await serve(registryHandler('pause', img.content));
    const upstream = await serve(registryHandler('pause', img.content));
    const client = newClient({ [upstream.host]: { mirrors: [mirror.url], fallbackToUpstream: false } });
    await client.resolve(parseReference(`${upstream.host}/pause`));
    const e = await caught(client.resolve(parseReference(`${upstream.host}/pause:missing`)));
    expect(e.kind).toBe('not-found');
    expect(e.message).toBe(`image "${upstream.host}/pause:missing" not found in ${mirror.url}`);
    expect(upstream.requests).toHaveLength(0);
  });

  it('resolves registry.k8s.io through a loopback mirror without fallback', async () => {
    const img = image();
    const mirror = await serve(registryHandler('pause', img.content));
    const client = newClient({ 'registry.k8s.io': { mirrors: [mirror.url], fallbackToUpstream: false } });
    const got = await client.resolve(parseReference('registry.k8s.io/pause'));
    expect(got.endpoint).toMatchObject({ url: mirror.url, isMirror: true, registry: 'registry.k8s.io' });
    expect(mirror.requests[0]?.path).toBe('/v2/pause/manifests/latest');
  });

  it('moves on from an unreachable mirror', async () => {
    const img = image();
    const dead = `http://127.0.0.1:${await closedPort()}`;
    const upstream = await serve(registryHandler('app', img.content));
    const client = newClient({ [upstream.host]: { mirrors: [dead] } }, { retries: 1 });
    expect((await client.resolve(parseReference(`${upstream.host}/app`))).endpoint.url).toBe(upstream.url);
  });

  it('answers unavailable naming every endpoint and its error when none can be reached', async () => {
    const p1 = await closedPort();
    const p2 = await closedPort();
    const client = newClient(
      { [`127.0.0.1:${p2}`]: { mirrors: [`http://127.0.0.1:${p1}`] } },
      { retries: 1 },
    );
    const e = await caught(client.resolve(parseReference(`127.0.0.1:${p2}/app`)));
    expect(e.kind).toBe('unavailable');
    expect(e.message).toContain(`resolve image "127.0.0.1:${p2}/app:latest": no endpoint could be reached`);
    expect(e.message).toContain(`http://127.0.0.1:${p1}: connect ECONNREFUSED 127.0.0.1:${p1}`);
    expect(e.message).toContain(`http://127.0.0.1:${p2}: connect ECONNREFUSED 127.0.0.1:${p2}`);
  });

  it('counts a mirror failure as unavailable when the upstream could not be asked either', async () => {
    const mirror = await serve((_req, res) => {
      registryError(res, 404, 'MANIFEST_UNKNOWN', 'manifest unknown');
    });
    const dead = await closedPort();
    const client = newClient({ [`127.0.0.1:${dead}`]: { mirrors: [mirror.url] } }, { retries: 0 });
    const e = await caught(client.resolve(parseReference(`127.0.0.1:${dead}/app`)));
    expect(e.kind).toBe('unavailable');
    expect(e.message).toContain(`${mirror.url}: HTTP 404 not found: MANIFEST_UNKNOWN: manifest unknown`);
  });
});

describe('retries', () => {
  it('retries 5xx with backoff, then succeeds', async () => {
    const img = image();
    const serveImage = registryHandler('app', img.content);
    const reg = await serve((req, res, seen, n) => {
      if (n <= 2) {
        registryError(res, 503, 'UNAVAILABLE', 'try later');
        return;
      }
      return serveImage(req, res, seen, n);
    });
    await newClient({}, { retries: 3 }).resolve(parseReference(`${reg.host}/app`));
    expect(reg.requests).toHaveLength(3);
  });

  it('gives up after the configured retries with the registry error', async () => {
    const reg = await serve((_req, res) => {
      registryError(res, 500, 'UNKNOWN', 'boom');
    });
    const e = await caught(newClient({}, { retries: 1 }).resolve(parseReference(`${reg.host}/app`)));
    expect(reg.requests).toHaveLength(2);
    expect(e.kind).toBe('unavailable');
    expect(e.message).toBe(
      `resolve image "${reg.host}/app:latest": ${reg.url}: HTTP 500 internal server error: UNKNOWN: boom`,
    );
  });

  it('does not retry other 4xx', async () => {
    const reg = await serve((_req, res) => {
      registryError(res, 400, 'NAME_INVALID', 'invalid repository name');
    });
    const e = await caught(newClient({}, { retries: 3 }).resolve(parseReference(`${reg.host}/app`)));
    expect(reg.requests).toHaveLength(1);
    expect(e.kind).toBe('invalid-argument');
    expect(e.message).toContain('NAME_INVALID: invalid repository name');
  });

  it('honours Retry-After on 429', async () => {
    const img = image();
    const serveImage = registryHandler('app', img.content);
    const reg = await serve((req, res, seen, n) => {
      if (n === 1) {
        registryError(res, 429, 'TOOMANYREQUESTS', 'slow down', { 'retry-after': '1' });
        return;
      }
      return serveImage(req, res, seen, n);
    });
    const started = Date.now();
    await newClient({}, { retries: 2 }).resolve(parseReference(`${reg.host}/app`));
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(reg.requests).toHaveLength(2);
  });

  it('times out a request that gets no answer', async () => {
    const reg = await serve(() => undefined); // never answers
    const started = Date.now();
    const e = await caught(
      newClient({}, { retries: 0, requestTimeoutMs: 200 }).resolve(parseReference(`${reg.host}/app`)),
    );
    expect(e.kind).toBe('deadline-exceeded');
    expect(e.message).toContain('no answer within 200 ms');
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('stops at once when the caller cancels', async () => {
    const reg = await serve(() => undefined);
    const controller = new AbortController();
    setTimeout(() => {
      controller.abort();
    }, 100);
    const e = await caught(
      newClient().resolve(parseReference(`${reg.host}/app`), undefined, controller.signal),
    );
    expect(e.kind).toBe('canceled');
  });
});

describe('authentication', () => {
  /** A registry that wants `Authorization: Bearer <token>` from a token server at `realm`. */
  async function tokenRegistry(
    img: ReturnType<typeof image>,
    token: string,
    tokenHandler: Handler,
  ): Promise<{ reg: TestServer; auth: TestServer }> {
    const auth = await serve(tokenHandler);
    const reg = await serve(
      registryHandler('app', img.content, (seen, res) => {
        if (seen.headers.authorization === `Bearer ${token}`) return true;
        registryError(res, 401, 'UNAUTHORIZED', 'authentication required', {
          'www-authenticate': `Bearer realm="${auth.url}/token",service="fake-registry",scope="repository:app:pull"`,
        });
        return false;
      }),
    );
    return { reg, auth };
  }

  it('gets a token from the realm after a 401, retries, and caches the token', async () => {
    const img = image();
    const { reg, auth } = await tokenRegistry(img, 'tok-1', (_req, res, seen) => {
      json(res, 200, {
        token: seen.query.get('service') === 'fake-registry' ? 'tok-1' : 'wrong',
        expires_in: 300,
      });
    });
    const client = newClient();
    await client.resolve(parseReference(`${reg.host}/app`));
    expect(reg.requests.map((r) => r.headers.authorization)).toEqual([undefined, 'Bearer tok-1']);
    expect(auth.requests).toHaveLength(1);
    expect(auth.requests[0]?.query.getAll('scope')).toEqual(['repository:app:pull']);
    expect(auth.requests[0]?.headers.authorization).toBeUndefined(); // anonymous

    // The token is reused, up front, for the same scope: no 401, no token request.
    await client.resolve(parseReference(`${reg.host}/app`));
    await client.fetchBlob(
      (await client.resolve(parseReference(`${reg.host}/app`))).endpoint,
      'app',
      img.layerDescriptor,
    );
    expect(auth.requests).toHaveLength(1);
    expect(reg.requests.slice(2).every((r) => r.headers.authorization === 'Bearer tok-1')).toBe(true);
  });

  it('sends basic credentials and the account to the token server', async () => {
    const img = image();
    const { reg, auth } = await tokenRegistry(img, 'user-token', (_req, res, seen) => {
      if (seen.headers.authorization !== `Basic ${Buffer.from('alice:s3cret').toString('base64')}`) {
        json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] });
        return;
      }
      json(res, 200, { access_token: 'user-token' });
    });
    const client = newClient({ [reg.host]: { username: 'alice', password: 's3cret' } });
    await client.resolve(parseReference(`${reg.host}/app`));
    expect(auth.requests[0]?.query.get('account')).toBe('alice');

    // Request credentials override the configured ones, and are not served the other credentials' token.
    const e = await caught(
      client.resolve(parseReference(`${reg.host}/app`), { username: 'mallory', password: 'guess' }),
    );
    expect(e.kind).toBe('unauthenticated');
    expect(e.message).toContain(
      `get a token from ${auth.url}/token: HTTP 401 (credentials were sent): UNAUTHORIZED: bad credentials`,
    );
    expect(e.message).not.toContain('guess');
  });

  it('exchanges an identity token with an OAuth2 refresh-token POST', async () => {
    const img = image();
    const { reg, auth } = await tokenRegistry(img, 'oauth-token', (_req, res, seen) => {
      const form = new URLSearchParams(seen.body);
      if (seen.method !== 'POST' || form.get('refresh_token') !== 'refresh-123') {
        json(res, 401, {});
        return;
      }
      json(res, 200, { access_token: 'oauth-token', expires_in: 600, refresh_token: 'refresh-456' });
    });
    await newClient().resolve(parseReference(`${reg.host}/app`), { identityToken: 'refresh-123' });
    const form = Object.fromEntries(new URLSearchParams(auth.requests[0]?.body));
    expect(form).toEqual({
      grant_type: 'refresh_token',
      service: 'fake-registry',
      client_id: 'skiff',
      scope: 'repository:app:pull',
      refresh_token: 'refresh-123',
    });
    expect(auth.requests[0]?.headers['content-type']).toBe('application/x-www-form-urlencoded');
  });

  it('sends a registry token as the bearer directly', async () => {
    const img = image();
    const { reg, auth } = await tokenRegistry(img, 'given-token', (_req, res) => {
      json(res, 500, {});
    });
    await newClient().resolve(parseReference(`${reg.host}/app`), { registryToken: 'given-token' });
    expect(reg.requests.map((r) => r.headers.authorization)).toEqual(['Bearer given-token']);
    expect(auth.requests).toHaveLength(0);
  });

  it('answers a Basic challenge with credentials, and says when none were sent', async () => {
    const img = image();
    const expected = `Basic ${Buffer.from('bob:pw').toString('base64')}`;
    const reg = await serve(
      registryHandler('app', img.content, (seen, res) => {
        if (seen.headers.authorization === expected) return true;
        registryError(res, 401, 'UNAUTHORIZED', 'authentication required', {
          'www-authenticate': 'Basic realm="fake"',
        });
        return false;
      }),
    );
    const anonymous = await caught(newClient().resolve(parseReference(`${reg.host}/app`)));
    expect(anonymous.kind).toBe('unauthenticated');
    expect(anonymous.message).toBe(
      `resolve image "${reg.host}/app:latest": ${reg.url}: HTTP 401 unauthorized (no credentials were sent): ` +
        'UNAUTHORIZED: authentication required',
    );

    const client = newClient();
    const auth = Buffer.from('bob:pw').toString('base64');
    await client.resolve(parseReference(`${reg.host}/app`), { auth });
    expect(reg.requests.slice(-2).map((r) => r.headers.authorization)).toEqual([undefined, expected]);
    await client.resolve(parseReference(`${reg.host}/app`), { auth }); // authorised up front now
    expect(reg.requests.at(-1)?.headers.authorization).toBe(expected);

    const wrong = await caught(
      newClient().resolve(parseReference(`${reg.host}/app`), { username: 'bob', password: 'nope' }),
    );
    expect(wrong.kind).toBe('unauthenticated');
    expect(wrong.message).toContain('(credentials were sent)');
  });

  it('maps 403 to permission-denied', async () => {
    const reg = await serve((_req, res) => {
      registryError(res, 403, 'DENIED', 'requested access to the resource is denied');
    });
    const e = await caught(
      newClient().resolve(parseReference(`${reg.host}/app`), { username: 'u', password: 'p' }),
    );
    expect(e.kind).toBe('permission-denied');
    expect(e.message).toBe(
      `resolve image "${reg.host}/app:latest": ${reg.url}: HTTP 403 forbidden (credentials were sent): ` +
        'DENIED: requested access to the resource is denied',
    );
  });

  it('never logs credentials or tokens', async () => {
    const img = image();
    const { reg } = await tokenRegistry(img, 'secret-token-xyz', (_req, res) => {
      json(res, 200, { token: 'secret-token-xyz' });
    });
    const { log, lines } = capturingLogger();
    const client = newClient({}, { log });
    const got = await client.resolve(parseReference(`${reg.host}/app`), {
      username: 'carol',
      password: 'pa55word',
    });
    await readAll(
      await client.fetchBlob(got.endpoint, 'app', img.layerDescriptor, {
        username: 'carol',
        password: 'pa55word',
      }),
    );
    await caught(
      client.resolve(parseReference(`${reg.host}/app:missing`), { username: 'carol', password: 'pa55word' }),
    );
    const text = lines.join('');
    expect(lines.length).toBeGreaterThan(3);
    for (const secret of ['secret-token-xyz', 'pa55word', Buffer.from('carol:pa55word').toString('base64')]) {
      expect(text).not.toContain(secret);
    }
  });
});

describe('RegistryClient.fetchBlob', () => {
  it('streams a blob', async () => {
    const img = image();
    const reg = await serve(registryHandler('app', img.content));
    const client = newClient();
    const { endpoint } = await client.resolve(parseReference(`${reg.host}/app`));
    const body = await readAll(await client.fetchBlob(endpoint, 'app', img.layerDescriptor));
    expect(body.equals(img.layer)).toBe(true);
  });

  it('follows a redirect to another origin without the Authorization header, and keeps it on the same origin', async () => {
    const img = image();
    const storage = await serve((_req, res, seen) => {
      if (seen.query.get('sig') !== 'signed') {
        res.writeHead(403);
        res.end();
        return;
      }
      res.writeHead(200, { 'content-length': String(img.layer.length) });
      res.end(img.layer);
    });
    const reg = await serve((req, res, seen, n) => {
      if (seen.headers.authorization !== 'Bearer t') {
        registryError(res, 401, 'UNAUTHORIZED', 'authentication required', {
          'www-authenticate': `Bearer realm="${auth.url}/token",service="s"`,
        });
        return;
      }
      if (seen.path === `/v2/app/blobs/${img.layerDescriptor.digest}`) {
        res.writeHead(307, { location: `/v2/app/internal/${img.layerDescriptor.digest}` });
        res.end();
        return;
      }
      if (seen.path.startsWith('/v2/app/internal/')) {
        res.writeHead(307, { location: `${storage.url}/bucket/blob?sig=signed` });
        res.end();
        return;
      }
      return registryHandler('app', img.content)(req, res, seen, n);
    });
    const auth = await serve((_req, res) => {
      json(res, 200, { token: 't' });
    });
    const client = newClient();
    const { endpoint } = await client.resolve(parseReference(`${reg.host}/app`));
    const body = await readAll(await client.fetchBlob(endpoint, 'app', img.layerDescriptor));
    expect(body.equals(img.layer)).toBe(true);
    const internal = reg.requests.find((r) => r.path.startsWith('/v2/app/internal/'));
    expect(internal?.headers.authorization).toBe('Bearer t'); // same origin: kept
    expect(storage.requests).toHaveLength(1);
    expect(storage.requests[0]?.headers.authorization).toBeUndefined(); // other origin: dropped
  });

  it('fails with not-found for an unknown blob, naming the digest and endpoint', async () => {
    const img = image();
    const reg = await serve(registryHandler('app', img.content));
    const client = newClient();
    const [endpoint] = client.endpointsFor(parseReference(`${reg.host}/app`));
    const missing = { ...img.layerDescriptor, digest: `sha256:${'9'.repeat(64)}` };
    const e = await caught(client.fetchBlob(endpoint!, 'app', missing));
    expect(e.kind).toBe('not-found');
    expect(e.message).toBe(
      `fetch blob ${missing.digest} from ${reg.url}: HTTP 404 not found: BLOB_UNKNOWN: blob unknown to registry`,
    );
  });

  it('refuses a blob whose size disagrees with its descriptor', async () => {
    const img = image();
    const reg = await serve(registryHandler('app', img.content));
    const client = newClient();
    const [endpoint] = client.endpointsFor(parseReference(`${reg.host}/app`));
    const e = await caught(client.fetchBlob(endpoint!, 'app', { ...img.layerDescriptor, size: 3 }));
    expect(e.kind).toBe('data-loss');

    // Without Content-Length, the stream itself stops at the descriptor's size.
    const chunked = await serve((_req, res) => {
      res.writeHead(200);
      res.write(Buffer.alloc(10));
      setTimeout(() => res.end(Buffer.alloc(10)), 20);
    });
    const ep: Endpoint = { ...endpoint!, url: chunked.url, host: chunked.host };
    const long = await caught(
      readAll(await client.fetchBlob(ep, 'app', { ...img.layerDescriptor, size: 15 })),
    );
    expect(long.kind).toBe('data-loss');
    const short = await caught(
      readAll(await client.fetchBlob(ep, 'app', { ...img.layerDescriptor, size: 25 })),
    );
    expect(short.kind).toBe('data-loss');
    expect(short.message).toContain('the body ended after 20 of 25 bytes');
  });

  /** A blob server that sends `size` bytes as `chunk`-byte pieces every `everyMs`, or stops after `stopAfter`. */
  async function slowBlob(
    size: number,
    chunk: number,
    everyMs: number,
    stopAfter = Infinity,
  ): Promise<{ endpoint: Endpoint; descriptor: Descriptor }> {
    const data = Buffer.alloc(size, 7);
    const srv = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': String(size) });
      let sent = 0;
      const timer = setInterval(() => {
        if (res.destroyed || sent >= Math.min(size, stopAfter)) {
          clearInterval(timer);
          if (sent >= size) res.end();
          return;
        }
        const piece = data.subarray(sent, Math.min(size, sent + chunk, stopAfter));
        sent += piece.length;
        res.write(piece);
      }, everyMs);
      res.on('close', () => {
        clearInterval(timer);
      });
    });
    const endpoint: Endpoint = {
      url: srv.url,
      host: srv.host,
      registry: srv.host,
      isMirror: false,
      tls: { caFile: '', skipVerify: false },
      credentialsKey: undefined,
    };
    return { endpoint, descriptor: { mediaType: MEDIA_TYPE_OCI_LAYER_GZIP, digest: digestOf(data), size } };
  }

  it('fails a stalled download with deadline-exceeded within the window', async () => {
    const { endpoint, descriptor } = await slowBlob(10_000, 100, 10, 200);
    const started = Date.now();
    const stream = await newClient().fetchBlob(endpoint, 'app', descriptor, undefined, {
      progressTimeoutMs: 300,
      minBytesPerSecond: 100,
    });
    const e = await caught(readAll(stream));
    const elapsed = Date.now() - started;
    expect(e.kind).toBe('deadline-exceeded');
    expect(e.message).toBe(
      `pull stalled: fewer than 100 bytes/s for 0.3 s from ${endpoint.url} while fetching ${descriptor.digest}`,
    );
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(2000);
  });

  it('does not let a trickle keep a stalled download alive', async () => {
    const { endpoint, descriptor } = await slowBlob(10_000, 1, 20); // ~50 bytes/s
    const e = await caught(
      readAll(
        await newClient().fetchBlob(endpoint, 'app', descriptor, undefined, {
          progressTimeoutMs: 300,
          minBytesPerSecond: 1000,
        }),
      ),
    );
    expect(e.kind).toBe('deadline-exceeded');
  });

  it('lets a slow but steady download finish', async () => {
    const { endpoint, descriptor } = await slowBlob(40_000, 2_000, 50); // ~40 KB/s for ~1 s
    const stream = await newClient().fetchBlob(endpoint, 'app', descriptor, undefined, {
      progressTimeoutMs: 300,
      minBytesPerSecond: 1000,
    });
    const body = await readAll(stream);
    expect(body.length).toBe(40_000);
    expect(`sha256:${createHash('sha256').update(body).digest('hex')}`).toBe(descriptor.digest);
  });

  it('does not count a consumer that pauses as a stall', async () => {
    const { endpoint, descriptor } = await slowBlob(4_000, 4_000, 5);
    const stream = await newClient().fetchBlob(endpoint, 'app', descriptor, undefined, {
      progressTimeoutMs: 100,
      minBytesPerSecond: 1000,
    });
    const first = await new Promise<Buffer>((resolve) => stream.once('data', resolve));
    stream.pause();
    await new Promise((r) => setTimeout(r, 400));
    const rest = await readAll(stream);
    expect(first.length + rest.length).toBe(4_000);
  });

  it('cancels a download when the caller aborts', async () => {
    const { endpoint, descriptor } = await slowBlob(10_000, 10, 10);
    const controller = new AbortController();
    const stream = await newClient().fetchBlob(endpoint, 'app', descriptor, undefined, {
      signal: controller.signal,
    });
    setTimeout(() => {
      controller.abort();
    }, 50);
    const e = await caught(readAll(stream));
    expect(e.kind).toBe('canceled');
  });
});

describe('TLS', () => {
  async function tlsSetup(): Promise<{ reg: TestServer; img: ReturnType<typeof image>; caFile: string }> {
    const img = image();
    const reg = await serve(registryHandler('app', img.content), true);
    const dir = await mkdtemp(join(tmpdir(), 'skiff-registry-tls-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    const caFile = join(dir, 'ca.pem');
    await writeFile(caFile, TEST_CERT);
    return { reg, img, caFile };
  }

  it('fails an untrusted certificate with the reason and the config hint, without retrying', async () => {
    const { reg } = await tlsSetup();
    const client = newClient(
      { 'reg.test': { mirrors: [reg.url], fallbackToUpstream: false } },
      { retries: 3 },
    );
    const e = await caught(client.resolve(parseReference('reg.test/app')));
    expect(e.kind).toBe('unavailable');
    expect(e.message).toContain('tls: self-signed certificate');
    expect(e.message).toContain(`set [registries."${reg.host}"] ca_file or skip_verify`);
    expect(reg.requests).toHaveLength(0);
  });

  it('trusts a ca_file from the mirror host entry', async () => {
    const { reg, img, caFile } = await tlsSetup();
    const client = newClient({
      'reg.test': { mirrors: [reg.url], fallbackToUpstream: false },
      [reg.host]: { caFile },
    });
    const got = await client.resolve(parseReference('reg.test/app'));
    expect(got.descriptor.digest).toBe(img.digest);
    expect(
      (await readAll(await client.fetchBlob(got.endpoint, 'app', img.layerDescriptor))).equals(img.layer),
    ).toBe(true);
  });

  it('skips verification when skip_verify is set on the registry entry', async () => {
    const { reg, img } = await tlsSetup();
    const client = newClient({
      'reg.test': { mirrors: [reg.url], fallbackToUpstream: false, skipVerify: true },
    });
    expect((await client.resolve(parseReference('reg.test/app'))).descriptor.digest).toBe(img.digest);
  });

  it('names an unreadable ca_file', async () => {
    const { reg } = await tlsSetup();
    const client = newClient({
      'reg.test': { mirrors: [reg.url], fallbackToUpstream: false, caFile: '/nonexistent/ca.pem' },
    });
    const e = await caught(client.resolve(parseReference('reg.test/app')));
    expect(e.kind).toBe('failed-precondition');
    expect(e.message).toContain('read ca_file "/nonexistent/ca.pem"');
  });
});
