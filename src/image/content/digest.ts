/**
 * Digests as image-spec descriptor.md "Digests" defines them: `algorithm ":" encoded`. Of the registered
 * algorithms, sha256 (64 lowercase hex) is what every registry uses and sha512 (128) is allowed; anything
 * else is refused before it can become a path component.
 */
import { createHash } from 'node:crypto';
import { SkiffError } from '../../errdefs.js';

export type DigestAlgorithm = 'sha256' | 'sha512';

export interface ParsedDigest {
  algorithm: DigestAlgorithm;
  /** The encoded part: lowercase hex, safe as a file name. */
  hex: string;
}

const ENCODED_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

/** Splits and validates a digest; throws `invalid-argument` naming it otherwise. */
export function parseDigest(digest: string): ParsedDigest {
  const m = /^(sha256|sha512):([a-f0-9]+)$/.exec(digest);
  const algorithm = m?.[1] as DigestAlgorithm | undefined;
  const hex = m?.[2];
  if (algorithm === undefined || hex === undefined || hex.length !== ENCODED_LENGTH[algorithm]) {
    throw new SkiffError(
      'invalid-argument',
      `digest ${JSON.stringify(digest)}: want sha256:<64 hex> or sha512:<128 hex> (image-spec descriptor.md)`,
    );
  }
  return { algorithm, hex };
}

/** `algorithm:hex` of `data`. */
export function digestOf(data: Uint8Array | string, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}
