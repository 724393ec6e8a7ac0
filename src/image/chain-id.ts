/**
 * Layer ChainIDs (image-spec config.md, "Layer ChainID"): a name for a layer *as applied on top of all the
 * layers below it*, so two images that share a base share its snapshots while an identical layer on a
 * different base does not.
 *
 *   ChainID(L₀) = DiffID(L₀)
 *   ChainID(L₀|…|Lₙ) = Digest(ChainID(L₀|…|Lₙ₋₁) + " " + DiffID(Lₙ))
 *
 * where Digest is SHA-256 of the UTF-8 string and the result is written as a digest (`sha256:<hex>`).
 */
import { createHash } from 'node:crypto';
import { SkiffError } from '../errdefs.js';

const DIGEST = /^sha256:[a-f0-9]{64}$/;

/** The ChainID of each layer prefix: `chainIds(d)[i]` names layers 0..i. Throws for a malformed diffId. */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  let previous: string | undefined;
  for (const [i, diffId] of diffIds.entries()) {
    // config.md: rootfs.diff_ids are descriptors' digests; skiff hashes layers with SHA-256 only.
    if (!DIGEST.test(diffId)) {
      throw new SkiffError(
        'invalid-argument',
        `chain id: diff id ${i} ${JSON.stringify(diffId)} is not a sha256 digest`,
      );
    }
    previous =
      previous === undefined
        ? diffId
        : `sha256:${createHash('sha256').update(`${previous} ${diffId}`).digest('hex')}`;
    out.push(previous);
  }
  return out;
}
