/**
 * The registry's JSON error body (distribution-spec "Error Codes"):
 *
 *   { "errors": [ { "code": "<error identifier>", "message": "<message>", "detail": ... }, ... ] }
 *
 * `code` is one of the spec's identifiers (BLOB_UNKNOWN, MANIFEST_UNKNOWN, NAME_UNKNOWN, UNAUTHORIZED,
 * DENIED, TOOMANYREQUESTS, ...); registries add their own. Parsing is best effort: a body that is not this
 * shape yields no errors, and the caller falls back to the HTTP status.
 */

export interface RegistryErrorEntry {
  code: string;
  message: string;
}

/** Caps what an error body may add to a message (a proxy may answer with a whole HTML page). */
const MAX_MESSAGE = 300;

export function parseRegistryErrors(body: string): RegistryErrorEntry[] {
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch {
    return [];
  }
  if (typeof doc !== 'object' || doc === null) return [];
  const errors = (doc as { errors?: unknown }).errors;
  if (!Array.isArray(errors)) return [];
  const out: RegistryErrorEntry[] = [];
  for (const e of errors) {
    if (typeof e !== 'object' || e === null) continue;
    const { code, message } = e as { code?: unknown; message?: unknown };
    out.push({
      code: typeof code === 'string' ? code : '',
      message: typeof message === 'string' ? message : '',
    });
  }
  return out;
}

/**
 * A short description of an error body: `MANIFEST_UNKNOWN: manifest unknown; ...`, or the start of a
 * plain-text body, or undefined when there is nothing worth quoting.
 */
export function describeErrorBody(body: string): string | undefined {
  const entries = parseRegistryErrors(body);
  if (entries.length > 0) {
    const text = entries
      .map((e) => [e.code, e.message].filter((s) => s !== '').join(': '))
      .filter((s) => s !== '')
      .join('; ');
    return text === '' ? undefined : clip(text);
  }
  const trimmed = body.trim();
  if (trimmed === '' || trimmed.startsWith('<')) return undefined; // empty, or an HTML error page
  return clip(trimmed.replace(/\s+/g, ' '));
}

/** True when any entry carries `code`. */
export function hasErrorCode(body: string, code: string): boolean {
  return parseRegistryErrors(body).some((e) => e.code === code);
}

function clip(s: string): string {
  return s.length > MAX_MESSAGE ? `${s.slice(0, MAX_MESSAGE)}…` : s;
}
