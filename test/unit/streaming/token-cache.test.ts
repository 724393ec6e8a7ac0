/** Streaming tokens (kubelet request_cache.go): single use, expiring, unguessable, bounded. */
import { describe, expect, it } from 'vitest';
import { isSkiffError } from '../../../src/errdefs.js';
import { TokenCache } from '../../../src/streaming/token-cache.js';

function fakeClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

describe('TokenCache', () => {
  it('gives back the value once, then forgets the token', () => {
    const cache = new TokenCache<string>({ ttlMs: 60_000 });
    const token = cache.insert('exec c1');
    expect(cache.consume(token)).toBe('exec c1');
    expect(cache.consume(token)).toBeUndefined();
  });

  it('issues 256-bit base64url tokens that do not repeat', () => {
    const cache = new TokenCache<number>({ ttlMs: 60_000 });
    const tokens = new Set<string>();
    for (let i = 0; i < 500; i++) tokens.add(cache.insert(i));
    expect(tokens.size).toBe(500);
    for (const t of tokens) expect(t).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('refuses a token after its TTL, and counts only live tokens', () => {
    const clock = fakeClock();
    const cache = new TokenCache<string>({ ttlMs: 60_000, now: clock.now });
    const early = cache.insert('a');
    clock.advance(30_000);
    const late = cache.insert('b');
    expect(cache.size).toBe(2);
    clock.advance(30_001);
    expect(cache.size).toBe(1);
    expect(cache.consume(early)).toBeUndefined();
    expect(cache.consume(late)).toBe('b');
  });

  it('accepts a token up to the last millisecond of its TTL', () => {
    const clock = fakeClock();
    const cache = new TokenCache<string>({ ttlMs: 1000, now: clock.now });
    const token = cache.insert('x');
    clock.advance(1000);
    expect(cache.consume(token)).toBe('x');
  });

  it('is resource-exhausted when too many tokens wait, until some expire', () => {
    const clock = fakeClock();
    const cache = new TokenCache<number>({ ttlMs: 1000, maxInFlight: 3, now: clock.now });
    cache.insert(1);
    cache.insert(2);
    cache.insert(3);
    let error: unknown;
    try {
      cache.insert(4);
    } catch (err) {
      error = err;
    }
    expect(isSkiffError(error, 'resource-exhausted')).toBe(true);
    expect(String(error)).toMatch(/3 streaming requests are already waiting/);
    clock.advance(1001);
    expect(() => cache.insert(4)).not.toThrow();
  });

  it('does not accept a token it did not issue', () => {
    const cache = new TokenCache<string>({ ttlMs: 1000 });
    cache.insert('x');
    expect(cache.consume('AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')).toBeUndefined();
  });
});
