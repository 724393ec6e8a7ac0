/**
 * Image references, normalised exactly as Docker and containerd's CRI plugin do (docker/distribution
 * `reference.ParseNormalizedNamed` followed by `reference.TagNameOnly`):
 *
 *   busybox                     → docker.io/library/busybox:latest
 *   user/app:v1                 → docker.io/user/app:v1
 *   localhost:5000/app          → localhost:5000/app:latest
 *   registry.k8s.io/pause@sha256:…  → digest kept, no tag invented
 *   app:v1@sha256:…             → both kept; the digest wins when resolving
 *
 * The grammar (distribution/reference `regexp.go`, quoted in the comments below):
 *
 *   reference      := name [ ":" tag ] [ "@" digest ]
 *   name           := [domain '/'] remote-name
 *   domain         := host [':' port-number]
 *   host           := domain-name | IPv4address | \[ IPv6address \]
 *   domain-name    := domain-component ['.' domain-component]*
 *   domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
 *   port-number    := /[0-9]+/
 *   path-component := alpha-numeric [separator alpha-numeric]*
 *   path (or "remote-name") := path-component ['/' path-component]*
 *   alpha-numeric  := /[a-z0-9]+/
 *   separator      := /[_.]|__|[-]+/
 *   tag            := /[\w][\w.-]{0,127}/
 *   digest         := digest-algorithm ":" digest-hex
 *
 * The name (domain and path together) is at most 255 characters.
 */
import { SkiffError } from '../errdefs.js';
import { validateDigest } from './oci-image.js';

export interface Reference {
  /** Registry host, with port when given: `docker.io`, `127.0.0.1:5000`, `[::1]:5000`. */
  domain: string;
  /** Repository path inside the registry: `library/busybox`. */
  path: string;
  /** Undefined only when the reference has a digest and no tag. */
  tag: string | undefined;
  /** `sha256:<hex>` when given; it wins over the tag for resolution. */
  digest: string | undefined;
}

/** Docker Hub's canonical domain, and the legacy names normalised to it (`splitDockerDomain`). */
export const DEFAULT_DOMAIN = 'docker.io';
const LEGACY_DEFAULT_DOMAIN = 'index.docker.io';
/** Official images live under `library/` on Docker Hub. */
const OFFICIAL_REPO_PREFIX = 'library/';
const DEFAULT_TAG = 'latest';
/** distribution/reference `NameTotalLengthMax`. */
const NAME_TOTAL_LENGTH_MAX = 255;

const domainComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const ipv6Address = '\\[(?:[a-fA-F0-9:]+)\\]';
const domainAndPort = `(?:${domainComponent}(?:\\.${domainComponent})*|${ipv6Address})(?::[0-9]+)?`;
const pathComponent = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const DOMAIN_RE = new RegExp(`^${domainAndPort}$`);
const PATH_RE = new RegExp(`^${pathComponent}(?:/${pathComponent})*$`);
const TAG_RE = /^[\w][\w.-]{0,127}$/;
/** distribution/reference `anchoredIdentifierRegexp`: a bare image id is not a name. */
const IDENTIFIER_RE = /^[a-f0-9]{64}$/;

function invalid(s: string, why: string): SkiffError {
  return new SkiffError('invalid-argument', `invalid image reference ${JSON.stringify(s)}: ${why}`);
}

/**
 * `splitDockerDomain`: the text before the first '/' is a registry domain only if it contains a '.' or
 * a ':', is `localhost`, or has an uppercase letter (which a path component may not); otherwise the
 * whole name is a Docker Hub repository, and a single-component one is an official `library/` image.
 */
function splitDomain(name: string): { domain: string; remainder: string } {
  const slash = name.indexOf('/');
  const first = slash === -1 ? '' : name.slice(0, slash);
  let domain: string;
  let remainder: string;
  if (slash === -1 || (!/[.:]/.test(first) && first !== 'localhost' && first.toLowerCase() === first)) {
    domain = DEFAULT_DOMAIN;
    remainder = name;
  } else {
    domain = first;
    remainder = name.slice(slash + 1);
  }
  if (domain === LEGACY_DEFAULT_DOMAIN) domain = DEFAULT_DOMAIN;
  if (domain === DEFAULT_DOMAIN && !remainder.includes('/')) remainder = OFFICIAL_REPO_PREFIX + remainder;
  return { domain, remainder };
}

/**
 * Parses and normalises an image reference. Throws `invalid-argument` naming the reference and why
 * (the same conditions distribution/reference rejects).
 */
export function parseReference(s: string): Reference {
  if (s === '') throw invalid(s, 'repository name must have at least one component');
  if (s.trim() !== s) throw invalid(s, 'leading or trailing whitespace');
  if (IDENTIFIER_RE.test(s)) {
    throw invalid(s, 'cannot specify 64-byte hexadecimal strings (an image id is not a reference)');
  }

  // "@" cannot appear in a name or tag, so the first one starts the digest.
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    const why = digestProblem(digest);
    if (why !== undefined) throw invalid(s, why);
  }

  // A tag follows the last ':' after the last '/' (a ':' before a '/' belongs to a host:port).
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon !== -1 && colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) {
      throw invalid(s, `invalid tag ${JSON.stringify(tag)} (letters, digits, '_', '.', '-'; at most 128)`);
    }
  }

  if (rest === '') throw invalid(s, 'repository name must have at least one component');
  const { domain, remainder } = splitDomain(rest);
  if (remainder.toLowerCase() !== remainder) {
    throw invalid(s, `repository name ${JSON.stringify(remainder)} must be lowercase`);
  }
  if (!DOMAIN_RE.test(domain)) throw invalid(s, `invalid registry domain ${JSON.stringify(domain)}`);
  if (remainder === '' || !PATH_RE.test(remainder)) {
    throw invalid(
      s,
      `invalid repository path ${JSON.stringify(remainder)} (lowercase components separated by '/', ` +
        `each of [a-z0-9] joined by '.', '_', '__' or '-')`,
    );
  }
  const name = `${domain}/${remainder}`;
  if (name.length > NAME_TOTAL_LENGTH_MAX) {
    throw invalid(s, `repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters`);
  }

  // TagNameOnly: a reference with neither tag nor digest means `:latest`.
  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  return { domain, path: remainder, tag, digest };
}

function digestProblem(digest: string): string | undefined {
  try {
    validateDigest(digest);
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/** `domain/path` */
export function nameOf(r: Reference): string {
  return `${r.domain}/${r.path}`;
}

/** The full normalised form: `domain/path[:tag][@digest]`. */
export function formatReference(r: Reference): string {
  return `${nameOf(r)}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`;
}

/** `domain/path:tag` (a CRI RepoTag), or undefined for a digest-only reference. */
export function tagged(r: Reference): string | undefined {
  return r.tag === undefined ? undefined : `${nameOf(r)}:${r.tag}`;
}

/**
 * `domain/path@digest` (a CRI RepoDigest): the reference's own digest, or `digest` — the one a tag
 * resolved to. Undefined when there is neither.
 */
export function digested(r: Reference, digest: string | undefined = r.digest): string | undefined {
  return digest === undefined ? undefined : `${nameOf(r)}@${digest}`;
}

/** What to ask the registry for: `manifests/<digest>` when there is one, else `manifests/<tag>`. */
export function manifestReferenceOf(r: Reference): string {
  return r.digest ?? r.tag ?? DEFAULT_TAG;
}
