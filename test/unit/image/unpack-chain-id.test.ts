/**
 * Layer ChainIDs (image-spec config.md "Layer ChainID") name the snapshots layers are unpacked into. The
 * expected values were computed independently with coreutils:
 *   printf 'sha256:<a…> sha256:<b…>' | sha256sum
 */
import { describe, expect, it } from 'vitest';
import { isSkiffError } from '../../../src/errdefs.js';
import { chainIds } from '../../../src/image/chain-id.js';

const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;
const C = `sha256:${'c'.repeat(64)}`;

describe('chainIds', () => {
  it('ChainID(L0) is DiffID(L0); each next is sha256 of "<previous chain id> <diff id>"', () => {
    expect(chainIds([A, B, C])).toEqual([A, CHAIN_AB, CHAIN_ABC]);
  });

  it('is empty for no layers and depends on the order', () => {
    expect(chainIds([])).toEqual([]);
    expect(chainIds([B, A])[1]).not.toBe(CHAIN_AB);
  });

  it('refuses a diff id that is not a sha256 digest', () => {
    let err: unknown;
    try {
      chainIds([A, 'sha256:xyz']);
    } catch (e) {
      err = e;
    }
    expect(isSkiffError(err, 'invalid-argument')).toBe(true);
    expect((err as Error).message).toBe('chain id: diff id 1 "sha256:xyz" is not a sha256 digest');
  });
});

const CHAIN_AB = 'sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c';
const CHAIN_ABC = 'sha256:c1377126441fb2f5ec2c21ae2a60255331d639e830f0ee1b40a36e52d4c40588';
