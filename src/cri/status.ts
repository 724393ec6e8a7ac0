/**
 * The one place where error kinds become gRPC status codes (design: "error classes mapped to gRPC codes
 * in exactly one place"). grpc-js honours only a numeric `code` plus `details`, so that is what we build.
 * ARCHITECTURE.md carries the same table; test/unit/cri/status.test.ts keeps the two in step.
 */
import { status as GrpcStatus, type ServiceError, Metadata } from '@grpc/grpc-js';
import { type ErrorKind, SkiffError, messageOf } from '../errdefs.js';

export const codeOfKind: Record<ErrorKind, GrpcStatus> = {
  'invalid-argument': GrpcStatus.INVALID_ARGUMENT,
  'not-found': GrpcStatus.NOT_FOUND,
  'already-exists': GrpcStatus.ALREADY_EXISTS,
  'failed-precondition': GrpcStatus.FAILED_PRECONDITION,
  'resource-exhausted': GrpcStatus.RESOURCE_EXHAUSTED,
  unavailable: GrpcStatus.UNAVAILABLE,
  'deadline-exceeded': GrpcStatus.DEADLINE_EXCEEDED,
  canceled: GrpcStatus.CANCELLED,
  unauthenticated: GrpcStatus.UNAUTHENTICATED,
  'permission-denied': GrpcStatus.PERMISSION_DENIED,
  'data-loss': GrpcStatus.DATA_LOSS,
  unimplemented: GrpcStatus.UNIMPLEMENTED,
  unknown: GrpcStatus.UNKNOWN,
  internal: GrpcStatus.INTERNAL,
};

/** The gRPC status name for a code, e.g. `NOT_FOUND` (for logs). */
export function codeName(code: GrpcStatus): string {
  return GrpcStatus[code];
}

export interface StatusError {
  code: GrpcStatus;
  details: string;
  /** True when the error is a bug (not a SkiffError): logged with its stack. */
  isBug: boolean;
}

/** Classifies anything thrown by a service. Anything that is not a SkiffError is a bug → INTERNAL. */
export function toStatus(err: unknown): StatusError {
  if (err instanceof SkiffError) {
    return { code: codeOfKind[err.kind], details: err.message, isBug: err.kind === 'internal' };
  }
  return { code: GrpcStatus.INTERNAL, details: `internal error: ${messageOf(err)}`, isBug: true };
}

/** The object grpc-js sends back as the call's status. */
export function toServiceError(s: StatusError): Partial<ServiceError> {
  return { code: s.code, details: s.details, metadata: new Metadata() };
}

export function unimplemented(rpc: string): SkiffError {
  return new SkiffError('unimplemented', `${rpc} is not implemented by skiff yet`);
}
