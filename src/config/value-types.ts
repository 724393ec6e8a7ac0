/**
 * Value types of config keys. Each one checks and converts a parsed TOML value (`decode`), turns the
 * Config value back into its TOML/JSON form (`encode`, e.g. durations back to "4h"), and says what it
 * accepts (`expected`), which is both the "expected …" half of a validation message and the type
 * column of the reference docs. A new kind of value is a new function here; nothing else changes.
 */
import { isIP } from 'node:net';
import { posix } from 'node:path';
import { TomlDate, type TomlTable, type TomlValue } from 'smol-toml';
import { formatDuration, parseDuration } from './duration.js';

/** A value as written to TOML and to the JSON effective config. */
export type Encoded = string | number | boolean | readonly Encoded[];

export interface ValueProblem {
  /** Appended to the key path: `[2]` for an array element, '' for the value itself. */
  readonly suffix: string;
  readonly expected: string;
  readonly found: string;
}

export type Decoded<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly problems: readonly ValueProblem[] };

export interface ValueType<T> {
  /** Completes "expected …": `an integer from 0 to 65535`. */
  readonly expected: string;
  /** Completes "an array of …" when used as an array element type. */
  readonly plural: string;
  /** Integers arrive as bigint (the parser is asked for that so that `5.0` is told apart from `5`). */
  decode(raw: TomlValue): Decoded<T>;
  encode(value: T): Encoded;
}

function ok<T>(value: T): Decoded<T> {
  return { ok: true, value };
}

function fail(expected: string, found: string): Decoded<never> {
  return { ok: false, problems: [{ suffix: '', expected, found }] };
}

export function isTable(raw: TomlValue): raw is TomlTable {
  return typeof raw === 'object' && !Array.isArray(raw) && !(raw instanceof Date);
}

function isArray(raw: TomlValue): raw is TomlValue[] {
  return Array.isArray(raw);
}

function floatLiteral(value: number): string {
  if (Number.isNaN(value)) return 'nan';
  if (!Number.isFinite(value)) return value > 0 ? 'inf' : '-inf';
  const text = String(value);
  return /[.e]/.test(text) ? text : `${text}.0`;
}

/** The type and value of something of the wrong type: `an integer (5)`, `a string ("x")`. */
export function describe(raw: TomlValue): string {
  if (typeof raw === 'string') return `a string (${JSON.stringify(raw)})`;
  if (typeof raw === 'bigint') return `an integer (${raw.toString()})`;
  if (typeof raw === 'number') return `a float (${floatLiteral(raw)})`;
  if (typeof raw === 'boolean') return `a boolean (${String(raw)})`;
  if (raw instanceof TomlDate) return `a date-time (${raw.toISOString()})`;
  if (isArray(raw)) return 'an array';
  return 'a table';
}

/** A value of the right type but not an allowed one, as written: `"verbose"`, `70000`. */
export function literal(raw: TomlValue): string {
  if (typeof raw === 'string') return JSON.stringify(raw);
  if (typeof raw === 'bigint') return raw.toString();
  if (typeof raw === 'number') return floatLiteral(raw);
  if (typeof raw === 'boolean') return String(raw);
  return describe(raw);
}

/** Any string; `nonEmpty` for values where "" could only be a mistake (a bind address, a binary). */
export function str(options: { nonEmpty?: boolean } = {}): ValueType<string> {
  const nonEmpty = options.nonEmpty ?? false;
  const expected = nonEmpty ? 'a non-empty string' : 'a string';
  return {
    expected,
    plural: nonEmpty ? 'non-empty strings' : 'strings',
    decode: (raw) => {
      if (typeof raw !== 'string') return fail(expected, describe(raw));
      return nonEmpty && raw === '' ? fail(expected, '""') : ok(raw);
    },
    encode: (value) => value,
  };
}

/**
 * An absolute path. Relative paths are rejected rather than resolved: the daemon's working directory
 * is whatever systemd gives it, so a relative path would mean something different under every unit.
 * `allowEmpty` is for optional paths where "" means "not set" or "derived" (documented per key).
 */
export function path(options: { allowEmpty?: boolean } = {}): ValueType<string> {
  const allowEmpty = options.allowEmpty ?? false;
  const expected = allowEmpty ? 'an absolute path or ""' : 'an absolute path';
  return {
    expected,
    plural: allowEmpty ? 'absolute paths or ""' : 'absolute paths',
    decode: (raw) => {
      if (typeof raw !== 'string') return fail(expected, describe(raw));
      if (raw === '' && allowEmpty) return ok(raw);
      return posix.isAbsolute(raw) && !raw.includes('\0') ? ok(raw) : fail(expected, JSON.stringify(raw));
    },
    encode: (value) => value,
  };
}

/** A string matching `pattern`, e.g. names of map entries. */
export function matching(pattern: RegExp, expected: string, plural: string): ValueType<string> {
  return {
    expected,
    plural,
    decode: (raw) => {
      if (typeof raw !== 'string') return fail(expected, describe(raw));
      return pattern.test(raw) ? ok(raw) : fail(expected, JSON.stringify(raw));
    },
    encode: (value) => value,
  };
}

export function bool(): ValueType<boolean> {
  const expected = 'a boolean (true or false)';
  return {
    expected,
    plural: 'booleans',
    decode: (raw) => (typeof raw === 'boolean' ? ok(raw) : fail(expected, describe(raw))),
    encode: (value) => value,
  };
}

/**
 * An integer, optionally bounded. Floats are rejected even when integral (`5.0`): TOML tells them
 * apart and so do we, rather than silently truncating `0.5`.
 */
export function int(options: { min?: number; max?: number } = {}): ValueType<number> {
  const { min, max } = options;
  const expected =
    min !== undefined && max !== undefined
      ? `an integer from ${min} to ${max}`
      : min !== undefined
        ? `an integer of at least ${min}`
        : max !== undefined
          ? `an integer of at most ${max}`
          : 'an integer';
  // Unbounded still means representable: beyond 2^53 a JS number would silently change the value.
  const low = BigInt(min ?? Number.MIN_SAFE_INTEGER);
  const high = BigInt(max ?? Number.MAX_SAFE_INTEGER);
  return {
    expected,
    plural: 'integers',
    decode: (raw) => {
      if (typeof raw !== 'bigint') return fail(expected, describe(raw));
      if (raw < low || raw > high) {
        return fail(min === undefined && max === undefined ? 'a 53-bit integer' : expected, raw.toString());
      }
      return ok(Number(raw));
    },
    encode: (value) => value,
  };
}

/** One of a fixed set of strings; the Config type is the union of them. */
export function oneOf<const V extends string>(values: readonly V[]): ValueType<V> {
  const expected = `one of ${values.join(', ')}`;
  return {
    expected,
    plural: `strings (${values.join(', ')})`,
    decode: (raw) => {
      if (typeof raw !== 'string') return fail(expected, describe(raw));
      const value = values.find((v) => v === raw);
      return value === undefined ? fail(expected, JSON.stringify(raw)) : ok(value);
    },
    encode: (value) => value,
  };
}

/**
 * Node's timers take at most 2^31-1 ms (about 24.8 days); a longer delay fires immediately with a
 * warning. Durations are timer delays, so that is the default upper bound.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const durationForm = 'a duration such as "30s", "5m", "4h" or "1m30s" (units h, m, s, ms)';

/** A duration string, held as milliseconds; see duration.ts for the accepted forms. */
export function duration(options: { min?: number; max?: number } = {}): ValueType<number> {
  const min = options.min ?? 0;
  const max = options.max ?? MAX_TIMER_MS;
  return {
    expected: durationForm,
    plural: 'durations',
    decode: (raw) => {
      if (typeof raw !== 'string') return fail(durationForm, describe(raw));
      const ms = parseDuration(raw);
      if (ms === undefined) return fail(durationForm, JSON.stringify(raw));
      if (ms < min) return fail(`a duration of at least ${formatDuration(min)}`, JSON.stringify(raw));
      if (ms > max) return fail(`a duration of at most ${formatDuration(max)}`, JSON.stringify(raw));
      return ok(ms);
    },
    encode: (value) => formatDuration(value),
  };
}

/** An array whose elements are all of `item`; element problems are keyed `key[i]`. */
export function list<T>(item: ValueType<T>): ValueType<T[]> {
  const expected = `an array of ${item.plural}`;
  return {
    expected,
    plural: `arrays of ${item.plural}`,
    decode: (raw) => {
      if (!isArray(raw)) return fail(expected, describe(raw));
      const values: T[] = [];
      const problems: ValueProblem[] = [];
      raw.forEach((element, index) => {
        const decoded = item.decode(element);
        if (decoded.ok) values.push(decoded.value);
        else problems.push(...decoded.problems.map((p) => ({ ...p, suffix: `[${index}]${p.suffix}` })));
      });
      return problems.length === 0 ? ok(values) : { ok: false, problems };
    },
    encode: (values) => values.map((value) => item.encode(value)),
  };
}

/** sun_path is 108 bytes on Linux including the terminating NUL; longer paths fail only at bind(). */
const maxSocketPathBytes = 107;

/**
 * A unix socket to listen on: an absolute path, or a `unix://` URL (kubelet's and crictl's endpoint
 * form, so the same string can be pasted both ways), normalised to the path. Other schemes (tcp://)
 * are rejected: CRI has no authentication, so the socket's file permissions are its access control.
 */
export function unixSocket(): ValueType<string> {
  const expected = 'a unix socket path such as "/run/skiff/skiff.sock" or "unix:///run/skiff/skiff.sock"';
  return {
    expected,
    plural: 'unix socket paths',
    decode: (raw) => {
      if (typeof raw !== 'string') return fail(expected, describe(raw));
      let socketPath = raw;
      if (raw.startsWith('unix:')) {
        socketPath = raw.slice('unix:'.length);
        if (socketPath.startsWith('//')) socketPath = socketPath.slice(2);
      }
      if (!posix.isAbsolute(socketPath) || socketPath.includes('\0'))
        return fail(expected, JSON.stringify(raw));
      if (Buffer.byteLength(socketPath) > maxSocketPathBytes) {
        return fail(`a unix socket path of at most ${maxSocketPathBytes} bytes`, JSON.stringify(raw));
      }
      return ok(socketPath);
    },
    encode: (value) => value,
  };
}

/** An IPv4 or IPv6 subnet in CIDR notation, checked here so a typo fails at startup, not at pod setup. */
export function cidr(): ValueType<string> {
  const expected = 'a subnet in CIDR notation such as "10.88.0.0/16"';
  return {
    expected,
    plural: 'subnets in CIDR notation',
    decode: (raw) => {
      if (typeof raw !== 'string') return fail(expected, describe(raw));
      const match = /^([^/]+)\/(\d{1,3})$/.exec(raw);
      const version = isIP(match?.[1] ?? '');
      const bits = Number(match?.[2]);
      return version !== 0 && bits <= (version === 4 ? 32 : 128)
        ? ok(raw)
        : fail(expected, JSON.stringify(raw));
    },
    encode: (value) => value,
  };
}

/** An http:// or https:// URL (registry mirrors). */
export function httpUrl(): ValueType<string> {
  const expected = 'an http:// or https:// URL such as "http://127.0.0.1:5000"';
  return {
    expected,
    plural: 'http:// or https:// URLs',
    decode: (raw) => {
      if (typeof raw !== 'string') return fail(expected, describe(raw));
      let protocol: string;
      try {
        protocol = new URL(raw).protocol;
      } catch {
        return fail(expected, JSON.stringify(raw));
      }
      return protocol === 'http:' || protocol === 'https:' ? ok(raw) : fail(expected, JSON.stringify(raw));
    },
    encode: (value) => value,
  };
}
