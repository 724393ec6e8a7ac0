/**
 * Single-use, expiring tokens that stand for a streaming request: the CRI answers a URL that carries
 * nothing but the token, and the request's parameters stay here, bound to it (kubelet
 * `pkg/kubelet/cri/streaming/request_cache.go`: TTL 1 min, at most 1000 in flight).
 *
 * Tokens are 256 bits from the CSPRNG, base64url: unguessable, so knowing one is the capability to use
 * the request once. (kubelet's are 8 characters; we keep a margin, as the design asks for ≥ 128 bits.)
 */
import { randomBytes } from 'node:crypto';
import { SkiffError } from '../errdefs.js';

export interface TokenCacheOptions {
  /** How long a token stays valid after it is issued. */
  ttlMs: number;
  /** At most this many unexpired tokens at once; more is `resource-exhausted`. */
  maxInFlight?: number;
  /** The clock, in ms (tests pass a fake one). */
  now?: () => number;
}

interface Entry<T> {
  value: T;
  expiresAt: number;
}

const tokenBytes = 32;

export class TokenCache<T> {
  private readonly ttlMs: number;
  private readonly maxInFlight: number;
  private readonly now: () => number;
  /** Insertion order is expiry order (the TTL is fixed), so the oldest entries come first. */
  private readonly entries = new Map<string, Entry<T>>();

  constructor(options: TokenCacheOptions) {
    this.ttlMs = options.ttlMs;
    this.maxInFlight = options.maxInFlight ?? 1000;
    this.now = options.now ?? Date.now;
  }

  /** Binds `value` to a new token and returns the token. */
  insert(value: T): string {
    this.collect();
    if (this.entries.size >= this.maxInFlight) {
      throw new SkiffError(
        'resource-exhausted',
        `issue streaming token: ${this.maxInFlight} streaming requests are already waiting for a client to connect; retry later`,
      );
    }
    let token = randomBytes(tokenBytes).toString('base64url');
    // A collision of 256 random bits does not happen; the loop only keeps the invariant obvious.
    while (this.entries.has(token)) token = randomBytes(tokenBytes).toString('base64url');
    this.entries.set(token, { value, expiresAt: this.now() + this.ttlMs });
    return token;
  }

  /** The value bound to `token`, removing it: a second call, or a call after expiry, gets undefined. */
  consume(token: string): T | undefined {
    const entry = this.entries.get(token);
    if (entry === undefined) return undefined;
    this.entries.delete(token);
    return this.now() > entry.expiresAt ? undefined : entry.value;
  }

  /** Unexpired tokens outstanding. */
  get size(): number {
    this.collect();
    return this.entries.size;
  }

  /** Drops expired entries (oldest first, stopping at the first live one). */
  private collect(): void {
    const now = this.now();
    for (const [token, entry] of this.entries) {
      if (now <= entry.expiresAt) return;
      this.entries.delete(token);
    }
  }
}
