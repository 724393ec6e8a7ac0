/**
 * Registry host configuration → the ordered list of endpoints to try for one registry, in the manner of
 * containerd's hosts configuration (docs/hosts.md) and CRI-O's registries.conf mirrors:
 *
 *   1. each mirror, in the configured order (`http://127.0.0.1:5000`, `https://mirror.example/prefix`);
 *   2. the registry itself ("upstream"), unless `fallback_to_upstream = false`.
 *
 * A mirror serves the same repository paths as the registry it mirrors (`registry.k8s.io/pause` via the
 * mirror `http://127.0.0.1:5000` is `http://127.0.0.1:5000/v2/pause/...`), as in the distribution
 * "pull-through cache" and containerd's mirrors. Docker Hub (`docker.io`) is served by
 * `https://registry-1.docker.io`. Loopback registries and `insecure = true` use plain HTTP (containerd tries
 * HTTPS then HTTP for localhost; a loopback registry with TLS can still be listed as an https mirror).
 *
 * TLS settings and credentials of an endpoint come from the host configuration keyed by the endpoint's own
 * `host[:port]`, as containerd's `registry.configs."<host>"`: the registry's entry for its upstream, a
 * mirror's own entry for the mirror. A mirror without an entry of its own inherits the registry entry's TLS
 * settings (`ca_file`, `skip_verify`), never its credentials.
 */
import { isIP } from 'node:net';
import { SkiffError } from '../../errdefs.js';
import { DEFAULT_DOMAIN } from '../reference.js';

/** One `[registries."host[:port]"]` table of the configuration, as plain values. */
export interface RegistryHostOptions {
  /** Mirror URLs (`http://host:port` or `https://host[:port][/prefix]`), tried first, in order. */
  mirrors: string[];
  /** Use plain HTTP for this registry's upstream. */
  insecure: boolean;
  /** PEM CA bundle trusted for this host, in addition to the default roots ('' = none). */
  caFile: string;
  /** Do not verify the TLS certificate at all. */
  skipVerify: boolean;
  username: string;
  password: string;
  /** base64 of `username:password`, as in Docker's config.json. */
  auth: string;
  /** An OAuth2 refresh token (Docker's `identitytoken`). */
  identityToken: string;
  /** When false, only the mirrors are tried: the registry itself is never contacted. */
  fallbackToUpstream: boolean;
}

/** Looks up the options of a registry or mirror by its exact `host[:port]` key. */
export type HostLookup = (host: string) => RegistryHostOptions | undefined;

export interface EndpointTls {
  caFile: string;
  skipVerify: boolean;
}

/** Where to send distribution API requests for one registry. Holds no secrets, so it may be logged. */
export interface Endpoint {
  /** Base URL without a trailing slash; requests go to `${url}/v2/...`. */
  url: string;
  /** `host[:port]` of `url`: the key for tokens and host options. */
  host: string;
  /** The registry (reference domain) this endpoint serves. */
  registry: string;
  isMirror: boolean;
  /** TLS settings for an https endpoint (ignored for http). */
  tls: EndpointTls;
  /** The host options key whose credentials apply, or undefined when none are configured. */
  credentialsKey: string | undefined;
}

/** Docker Hub's API host (docker/docker registry `DefaultV2Registry`). */
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

/** Hostnames that name this machine: plain HTTP is fine there. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1';
  return false;
}

/** The hostname part of `host[:port]` (brackets kept off an IPv6 literal). */
function hostnameOf(hostAndPort: string): string {
  if (hostAndPort.startsWith('[')) return hostAndPort.slice(1, hostAndPort.indexOf(']'));
  const colon = hostAndPort.lastIndexOf(':');
  return colon === -1 ? hostAndPort : hostAndPort.slice(0, colon);
}

function keyOf(registry: string): string {
  return `[registries.${JSON.stringify(registry)}]`;
}

/** Parses one mirror entry into a base URL; a bare `host[:port]` means https (http for loopback). */
function mirrorUrl(registry: string, raw: string): URL {
  const text = raw.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text)
    ? text
    : `${isLoopbackHost(hostnameOf(text.split('/')[0] ?? '')) ? 'http' : 'https'}://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new SkiffError(
      'invalid-argument',
      `${keyOf(registry)} mirrors: invalid URL ${JSON.stringify(raw)}`,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new SkiffError(
      'invalid-argument',
      `${keyOf(registry)} mirrors: ${JSON.stringify(raw)} must be an http:// or https:// URL`,
    );
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new SkiffError(
      'invalid-argument',
      `${keyOf(registry)} mirrors: ${JSON.stringify(raw)} must not carry credentials, a query or a fragment ` +
        '(set username/password in the mirror host\'s own [registries."host"] table)',
    );
  }
  return url;
}

/** `origin + path prefix`, without a trailing slash or a trailing `/v2` (containerd appends /v2 itself). */
function baseOf(url: URL): string {
  let path = url.pathname.replace(/\/+$/, '');
  if (path.endsWith('/v2')) path = path.slice(0, -'/v2'.length);
  return `${url.origin}${path}`;
}

function tlsOf(o: RegistryHostOptions | undefined): EndpointTls {
  return { caFile: o?.caFile ?? '', skipVerify: o?.skipVerify ?? false };
}

function hasCredentials(o: RegistryHostOptions | undefined): boolean {
  return (
    o !== undefined && (o.username !== '' || o.password !== '' || o.auth !== '' || o.identityToken !== '')
  );
}

/**
 * The endpoints to try for `registry` (a reference domain), mirrors first. Throws `invalid-argument`
 * for a malformed mirror or when the configuration leaves no endpoint at all.
 */
export function endpointsFor(registry: string, lookup: HostLookup): Endpoint[] {
  const options = lookup(registry);
  const endpoints: Endpoint[] = [];
  for (const raw of options?.mirrors ?? []) {
    const url = mirrorUrl(registry, raw);
    const own = lookup(url.host);
    endpoints.push({
      url: baseOf(url),
      host: url.host,
      registry,
      isMirror: true,
      tls: tlsOf(own ?? options),
      credentialsKey: hasCredentials(own) ? url.host : undefined,
    });
  }
  if (options?.fallbackToUpstream ?? true) {
    const apiHost = registry === DEFAULT_DOMAIN ? DOCKER_HUB_API_HOST : registry;
    const plain = (options?.insecure ?? false) || isLoopbackHost(hostnameOf(apiHost));
    const url = new URL(`${plain ? 'http' : 'https'}://${apiHost}`);
    endpoints.push({
      url: url.origin,
      host: url.host,
      registry,
      isMirror: false,
      tls: tlsOf(options),
      credentialsKey: hasCredentials(options) ? registry : undefined,
    });
  }
  if (endpoints.length === 0) {
    throw new SkiffError(
      'invalid-argument',
      `no endpoint for registry ${JSON.stringify(registry)}: ${keyOf(registry)} has no mirrors and ` +
        'fallback_to_upstream = false; add a mirror or set fallback_to_upstream = true',
    );
  }
  return endpoints;
}
