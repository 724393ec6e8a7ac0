/**
 * CNI plugin output: success results and error results (CNI SPEC.md 1.0.0, "Section 5: Result Types"),
 * with the older shapes plugins still print for older `cniVersion`s (0.3.x `ips[].version`, 0.1/0.2
 * `ip4` / `ip6`). Pure functions only.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { ErrorKind } from '../errdefs.js';

/** SPEC §5 "Error": `{cniVersion, code, msg, details}`; codes 0-99 are well-known, 100+ plugin-specific. */
export interface CniError {
  code: number;
  msg: string;
  details: string;
}

/** SPEC §5 "Error", the well-known codes a runtime acts on. */
export const CNI_ERR_CONTAINER_UNKNOWN = 3;
export const CNI_ERR_TRY_AGAIN_LATER = 11;

/**
 * The error result a failed plugin printed on stdout (SPEC §2 "Errors": "it should output an error result
 * structure"), or undefined when stdout holds none (then stderr is all there is).
 */
export function parseCniError(stdout: string): CniError | undefined {
  const v = parseJsonObject(stdout);
  if (!v || typeof v.code !== 'number') return undefined;
  return {
    code: v.code,
    msg: typeof v.msg === 'string' ? v.msg : '',
    details: typeof v.details === 'string' ? v.details : '',
  };
}

/**
 * The kind an error result maps to: code 11 "Try again later" is `unavailable`; host-local's exhausted pool
 * ("no IP addresses available in range set") is `resource-exhausted` (the design's IP pool row); the rest
 * is a plugin failure we cannot classify, `unknown`.
 */
export function cniErrorKind(err: CniError): ErrorKind {
  if (err.code === CNI_ERR_TRY_AGAIN_LATER) return 'unavailable';
  if (/no IP addresses available/i.test(`${err.msg} ${err.details}`)) return 'resource-exhausted';
  return 'unknown';
}

/** `msg (details)`, or whichever of the two is there. */
export function formatCniError(err: CniError): string {
  const msg = err.msg.trim();
  const details = err.details.trim();
  if (msg && details && details !== msg) return `${msg} (${details})`;
  return msg || details || `error code ${err.code}`;
}

/**
 * A success result (SPEC §5 "Success"): a JSON object. Returns undefined when stdout is not one, which for
 * ADD is a plugin bug the caller reports.
 */
export function parseSuccessResult(stdout: string): Record<string, unknown> | undefined {
  return parseJsonObject(stdout);
}

/**
 * The pod's addresses from a success result, without prefix length, IPv4 first then IPv6, each family in
 * result order, without repeats. SPEC §5 "Success": `ips[].address` is "an IP address in CIDR notation";
 * 0.3.x results add `ips[].version` ("4" / "6"), which is not needed since the address tells its family;
 * 0.1.0 / 0.2.0 results carry `ip4.ip` and `ip6.ip` instead.
 */
export function resultIps(result: unknown): string[] {
  if (typeof result !== 'object' || result === null) return [];
  const r = result as Record<string, unknown>;
  const cidrs: string[] = [];
  if (Array.isArray(r.ips)) {
    for (const entry of r.ips as unknown[]) {
      if (typeof entry === 'object' && entry !== null) {
        const address = (entry as Record<string, unknown>).address;
        if (typeof address === 'string') cidrs.push(address);
      }
    }
  }
  for (const key of ['ip4', 'ip6']) {
    const legacy = r[key];
    if (typeof legacy === 'object' && legacy !== null) {
      const ip = (legacy as Record<string, unknown>).ip;
      if (typeof ip === 'string') cidrs.push(ip);
    }
  }
  const v4: string[] = [];
  const v6: string[] = [];
  for (const cidr of cidrs) {
    const ip = cidr.split('/')[0] ?? '';
    if (isIPv4(ip)) v4.push(ip);
    else if (isIPv6(ip)) v6.push(ip);
  }
  return [...new Set([...v4, ...v6])];
}

function parseJsonObject(text: string): Record<string, unknown> | undefined {
  const t = text.trim();
  if (!t.startsWith('{')) return undefined;
  try {
    const v: unknown = JSON.parse(t);
    return typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}
