/**
 * Error kinds shared by every service. Services throw `SkiffError(kind, message)`; only
 * `cri/status.ts` maps a kind to a gRPC code, so this module imports nothing from gRPC.
 *
 * Messages are lowercase chains `verb object: cause`, quote ids, and name the fix when there is one.
 */

export const errorKinds = [
  'invalid-argument',
  'not-found',
  'already-exists',
  'failed-precondition',
  'resource-exhausted',
  'unavailable',
  'deadline-exceeded',
  'canceled',
  'unauthenticated',
  'permission-denied',
  'data-loss',
  'unimplemented',
  'unknown',
  'internal',
] as const;

export type ErrorKind = (typeof errorKinds)[number];

export class SkiffError extends Error {
  override readonly name = 'SkiffError';
  readonly kind: ErrorKind;

  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
  }
}

/** True when `err` is a SkiffError, optionally of the given kind. */
export function isSkiffError(err: unknown, kind?: ErrorKind): err is SkiffError {
  return err instanceof SkiffError && (kind === undefined || err.kind === kind);
}

/** The kind of `err`; anything that is not a SkiffError is `internal` (a bug). */
export function kindOf(err: unknown): ErrorKind {
  return err instanceof SkiffError ? err.kind : 'internal';
}

/**
 * Adds context to an error while keeping its kind: `wrap(err, 'pull image "x"')` gives
 * `pull image "x": <cause message>`. A non-SkiffError keeps kind `internal`.
 */
export function wrap(err: unknown, context: string): SkiffError {
  const message = err instanceof Error ? err.message : String(err);
  return new SkiffError(kindOf(err), `${context}: ${message}`, { cause: err });
}

/** The message of any thrown value. */
/** The errno name of a Node.js system error (`ENOENT`, `EBUSY`, ...), or undefined for anything else. */
export function errnoOf(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
