/**
 * Registry authentication: challenge parsing (RFC 7235), credentials (CRI AuthConfig / Docker config.json
 * semantics), and bearer tokens from a token server (distribution "Token Authentication Specification",
 * docs/spec/auth/token.md; "OAuth2 Token Authentication", docs/spec/auth/oauth.md), with a cache.
 *
 * Credentials and tokens never appear in log lines or error messages.
 */
import { createHash } from 'node:crypto';
import { SkiffError } from '../../errdefs.js';

// ---------------------------------------------------------------------------------------------------------
// WWW-Authenticate (RFC 7235 §4.1, §2.1; RFC 7230 §3.2.6 for token and quoted-string)

export interface Challenge {
  /** The auth-scheme, lowercased (schemes are case-insensitive, RFC 7235 §2.1): `bearer`, `basic`. */
  scheme: string;
  /** auth-params by lowercased name (names are case-insensitive); values unquoted and unescaped. */
  params: Record<string, string>;
  /** The token68 form of credentials, when the challenge used it instead of auth-params. */
  token68?: string;
}

/** RFC 7230 §3.2.6 tchar */
const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
/** RFC 7235 §2.1 token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
const TOKEN68_RE = /^[A-Za-z0-9\-._~+/]+=*/;

class Cursor {
  i = 0;
  constructor(readonly s: string) {}
  isDone(): boolean {
    return this.i >= this.s.length;
  }
  peek(): string {
    return this.s[this.i] ?? '';
  }
  /** OWS / BWS = *( SP / HTAB ) */
  skipSpace(): void {
    while (this.peek() === ' ' || this.peek() === '\t') this.i++;
  }
  /** token = 1*tchar */
  token(): string | undefined {
    const start = this.i;
    while (!this.isDone() && TCHAR.test(this.peek())) this.i++;
    return this.i > start ? this.s.slice(start, this.i) : undefined;
  }
  /** quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE; quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
  quoted(): string | undefined {
    if (this.peek() !== '"') return undefined;
    let out = '';
    for (let j = this.i + 1; j < this.s.length; j++) {
      const c = this.s[j] ?? '';
      if (c === '\\' && j + 1 < this.s.length) {
        out += this.s[++j] ?? '';
      } else if (c === '"') {
        this.i = j + 1;
        return out;
      } else {
        out += c;
      }
    }
    return undefined; // unterminated
  }
  /** Skips list separators: `*( OWS "," )`, returning how many commas were seen. */
  commas(): number {
    let n = 0;
    for (;;) {
      this.skipSpace();
      if (this.peek() !== ',') return n;
      this.i++;
      n++;
    }
  }
}

/**
 * Parses a `WWW-Authenticate` header value into its challenges (RFC 7235 §4.1):
 *
 *   WWW-Authenticate = 1#challenge
 *   challenge   = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
 *   auth-param  = token BWS "=" BWS ( token / quoted-string )
 *
 * A comma separates both the params of one challenge and the challenges of a list; a `token` that is not
 * followed by "=" starts the next challenge. Parsing stops at the first syntax error, keeping what was
 * parsed before it (a registry's challenge is advice: a malformed one must not hide a valid one before it).
 */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const c = new Cursor(header);
  const out: Challenge[] = [];
  c.commas();
  while (!c.isDone()) {
    const scheme = c.token();
    if (scheme === undefined) break;
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    const afterScheme = c.i;
    if (c.commas() > 0 || c.isDone()) continue; // a bare scheme
    if (c.i === afterScheme) break; // the scheme must be followed by 1*SP

    let param = authParam(c);
    if (param === undefined) {
      // Not an auth-param: token68, which must be the whole of the challenge.
      const t68 = TOKEN68_RE.exec(header.slice(c.i))?.[0];
      if (t68 === undefined) break;
      c.i += t68.length;
      c.skipSpace();
      if (!c.isDone() && c.peek() !== ',') break;
      challenge.token68 = t68;
      c.commas();
      continue;
    }
    let separated = true;
    while (param !== undefined) {
      if (!separated) return out; // two params without a comma between them
      challenge.params[param[0].toLowerCase()] = param[1];
      separated = c.commas() > 0;
      if (c.isDone()) break;
      // A token not followed by "=" is the next challenge's scheme.
      param = authParam(c);
      if (param === undefined && !separated) return out;
    }
  }
  return out;
}

/** auth-param = token BWS "=" BWS ( token / quoted-string ); restores the cursor when it is not one. */
function authParam(c: Cursor): [string, string] | undefined {
  const save = c.i;
  const name = c.token();
  if (name !== undefined) {
    c.skipSpace();
    if (c.peek() === '=') {
      c.i++;
      c.skipSpace();
      const value = c.peek() === '"' ? c.quoted() : c.token();
      if (value !== undefined) return [name, value];
    }
  }
  c.i = save;
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Credentials

/** Credentials for one pull, as in CRI's AuthConfig (all optional; empty strings mean unset). */
export interface Credentials {
  username?: string;
  password?: string;
  /** base64 of `username:password` (Docker config.json `auth`). */
  auth?: string;
  /** OAuth2 refresh token (Docker `identitytoken`), exchanged at the token server. */
  identityToken?: string;
  /** A bearer token sent to the registry as is (CRI `registry_token`). */
  registryToken?: string;
}

/** What a set of credentials amounts to, in the order they are honoured. */
export type ResolvedCredentials =
  | { kind: 'none' }
  | { kind: 'registry-token'; token: string }
  | { kind: 'basic'; username: string; password: string }
  | { kind: 'identity-token'; username: string; token: string };

const nonEmpty = (s: string | undefined): s is string => s !== undefined && s !== '';

/** True when any credential field is set. */
export function hasAnyCredentials(c: Credentials | undefined): boolean {
  return (
    c !== undefined &&
    [c.username, c.password, c.auth, c.identityToken, c.registryToken].some((v) => nonEmpty(v))
  );
}

/**
 * Resolves credentials as containerd's CRI plugin does (`ParseAuth`): a registry token is used directly;
 * else username/password; else an identity token (OAuth2 refresh token); else `auth` decoded from
 * base64 `user:password`. Throws `invalid-argument` for an `auth` that does not decode (without echoing it).
 */
export function resolveCredentials(c: Credentials | undefined): ResolvedCredentials {
  if (c === undefined) return { kind: 'none' };
  if (nonEmpty(c.registryToken)) return { kind: 'registry-token', token: c.registryToken };
  if (nonEmpty(c.username)) return { kind: 'basic', username: c.username, password: c.password ?? '' };
  if (nonEmpty(c.identityToken)) return { kind: 'identity-token', username: '', token: c.identityToken };
  if (nonEmpty(c.auth)) {
    const { username, password } = decodeAuth(c.auth);
    return { kind: 'basic', username, password };
  }
  return { kind: 'none' };
}

/** Decodes Docker's `auth` field: base64(`username:password`). */
export function decodeAuth(auth: string): { username: string; password: string } {
  const text = auth.trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) {
    throw new SkiffError('invalid-argument', 'invalid registry auth: not base64 of "username:password"');
  }
  const decoded = Buffer.from(text, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) {
    throw new SkiffError(
      'invalid-argument',
      'invalid registry auth: the decoded value is not "username:password"',
    );
  }
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** RFC 7617: `Basic base64(user-id ":" password)`. */
export function basicAuthorization(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}

/** An opaque fingerprint of credentials, to key caches without holding the secret in the key. */
export function credentialsFingerprint(c: ResolvedCredentials): string {
  if (c.kind === 'none') return 'anonymous';
  return createHash('sha256').update(JSON.stringify(c)).digest('hex').slice(0, 32);
}

// ---------------------------------------------------------------------------------------------------------
// Token server responses

export interface TokenResponse {
  token: string;
  /** Seconds the token stays valid; token.md: "defaults to 60 seconds", and never less than that. */
  expiresIn: number;
  /** OAuth2 only: a refresh token to use next time. */
  refreshToken?: string;
}

/** token.md "Token Response Fields": at least one of token and access_token; when both, they agree. */
const MIN_EXPIRES_IN_S = 60;

/**
 * Parses a token server's JSON answer (token.md "Token Response Fields", oauth.md "Token Response").
 * Throws `unauthenticated` when there is no token in it.
 */
export function parseTokenResponse(body: string): TokenResponse {
  let o: unknown;
  try {
    o = JSON.parse(body);
  } catch {
    throw new SkiffError('unauthenticated', 'token server answered with invalid JSON');
  }
  if (typeof o !== 'object' || o === null)
    throw new SkiffError('unauthenticated', 'token server answered with no token');
  const r = o as Record<string, unknown>;
  const token =
    typeof r.token === 'string' && r.token !== ''
      ? r.token
      : typeof r.access_token === 'string' && r.access_token !== ''
        ? r.access_token
        : undefined;
  if (token === undefined) throw new SkiffError('unauthenticated', 'token server answered with no token');
  const expires = typeof r.expires_in === 'number' && Number.isFinite(r.expires_in) ? r.expires_in : 0;
  return {
    token,
    expiresIn: Math.max(expires, MIN_EXPIRES_IN_S),
    ...(typeof r.refresh_token === 'string' && r.refresh_token !== ''
      ? { refreshToken: r.refresh_token }
      : {}),
  };
}

/** `repository:<path>:pull` (token.md "Requesting a Token", resource scope). */
export function pullScope(path: string): string {
  return `repository:${path}:pull`;
}

/**
 * The query of a token GET (token.md "Requesting a Token"): `service`, one `scope` parameter per scope,
 * and `account` naming the user when credentials are sent.
 */
export function tokenRequestUrl(
  realm: string,
  service: string | undefined,
  scopes: string[],
  account?: string,
): URL {
  const url = new URL(realm);
  if (service !== undefined && service !== '') url.searchParams.set('service', service);
  for (const s of scopes) url.searchParams.append('scope', s);
  if (account !== undefined && account !== '') url.searchParams.set('account', account);
  return url;
}

/**
 * The form of an OAuth2 refresh-token POST (oauth.md "Refresh token format"): grant_type, service,
 * client_id, refresh_token and the scopes space-separated.
 */
export function refreshTokenForm(
  service: string | undefined,
  scopes: string[],
  refreshToken: string,
  clientId: string,
): URLSearchParams {
  const form = new URLSearchParams();
  form.set('grant_type', 'refresh_token');
  if (service !== undefined && service !== '') form.set('service', service);
  form.set('client_id', clientId);
  form.set('scope', scopes.join(' '));
  form.set('refresh_token', refreshToken);
  return form;
}

/** The scopes to ask for: ours, plus any the challenge names (space-separated in its `scope` param). */
export function mergeScopes(ours: string, challengeScope: string | undefined): string[] {
  const all = [ours, ...(challengeScope ?? '').split(' ').filter((s) => s !== '')];
  return [...new Set(all)].sort();
}

// ---------------------------------------------------------------------------------------------------------
// Token cache

interface CachedToken {
  authorization: string;
  expiresAt: number;
}

/** Renew a little before the server's expiry, so a token does not lapse in flight. */
const EXPIRY_MARGIN_MS = 5_000;

/**
 * Bearer tokens per registry host, scope and credentials (a token fetched with one pod's credentials is
 * never handed to a request with other, or no, credentials), valid until `expires_in`; plus the last
 * challenge each host sent, so later requests can authorise up front instead of collecting a 401 first.
 */
export class TokenCache {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly challenges = new Map<string, Challenge>();

  constructor(private readonly now: () => number = Date.now) {}

  private key(host: string, scope: string, fingerprint: string): string {
    return `${host}\u0000${scope}\u0000${fingerprint}`;
  }

  get(host: string, scope: string, fingerprint: string): string | undefined {
    const k = this.key(host, scope, fingerprint);
    const t = this.tokens.get(k);
    if (t === undefined) return undefined;
    if (t.expiresAt - EXPIRY_MARGIN_MS <= this.now()) {
      this.tokens.delete(k);
      return undefined;
    }
    return t.authorization;
  }

  set(host: string, scope: string, fingerprint: string, authorization: string, expiresInS: number): void {
    this.tokens.set(this.key(host, scope, fingerprint), {
      authorization,
      expiresAt: this.now() + expiresInS * 1000,
    });
  }

  delete(host: string, scope: string, fingerprint: string): void {
    this.tokens.delete(this.key(host, scope, fingerprint));
  }

  challengeFor(host: string): Challenge | undefined {
    return this.challenges.get(host);
  }

  setChallenge(host: string, challenge: Challenge): void {
    this.challenges.set(host, challenge);
  }
}

/** Picks the challenge we answer: Bearer (token auth) over Basic; others are not supported. */
export function pickChallenge(challenges: Challenge[]): Challenge | undefined {
  return challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
}
