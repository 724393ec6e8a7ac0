import { status } from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { codeName, codeOfKind, toStatus } from '../../../src/cri/status.js';
import { SkiffError, errorKinds } from '../../../src/errdefs.js';

const repoRoot = join(import.meta.dirname, '..', '..', '..');

describe('error kinds and gRPC codes', () => {
  it('gives every kind a code', () => {
    for (const kind of errorKinds) expect(codeOfKind[kind], kind).toBeTypeOf('number');
  });

  it('matches the error table in ARCHITECTURE.md row for row', () => {
    const doc = readFileSync(join(repoRoot, 'ARCHITECTURE.md'), 'utf8');
    const rows = [...doc.matchAll(/^\| `([a-z-]+)` \| `([A-Z_]+)` \|/gm)].map((m) => [m[1], m[2]]);
    const code = Object.fromEntries(errorKinds.map((k) => [k, codeName(codeOfKind[k])]));
    expect(Object.fromEntries(rows)).toEqual(code);
  });

  it('keeps the message of a SkiffError and marks only non-domain errors as bugs', () => {
    expect(toStatus(new SkiffError('data-loss', 'digest mismatch'))).toEqual({
      code: status.DATA_LOSS,
      details: 'digest mismatch',
      isBug: false,
    });
    expect(toStatus(new RangeError('boom'))).toEqual({
      code: status.INTERNAL,
      details: 'internal error: boom',
      isBug: true,
    });
  });
});
