import { describe, expect, it } from 'vitest';
import { eachLimited } from '../../../src/util/each-limited.js';

describe('eachLimited', () => {
  it('runs every item with at most `limit` in flight', async () => {
    let inFlight = 0;
    let most = 0;
    const seen: number[] = [];
    await eachLimited([1, 2, 3, 4, 5, 6, 7], 3, async (n) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, 5 + (n % 3)));
      seen.push(n);
      inFlight--;
    });
    expect(seen.sort()).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(most).toBe(3);
  });

  it('settles every item before rejecting with the first error', async () => {
    const done: number[] = [];
    const p = eachLimited([1, 2, 3, 4], 2, async (n) => {
      await new Promise((r) => setTimeout(r, n));
      if (n === 2) throw new Error('two');
      done.push(n);
    });
    await expect(p).rejects.toThrow('two');
    expect(done.sort()).toEqual([1, 3, 4]);
  });

  it('does nothing for no items', async () => {
    await expect(eachLimited([], 4, () => Promise.reject(new Error('never')))).resolves.toBeUndefined();
  });
});
