/**
 * One lock per key (design guide, "Locks": one keyed mutex per object serialises its lifecycle; different
 * objects run in parallel). Waiters queue in arrival order. The map holds an entry only while a key is held
 * or awaited, so keys of long-gone objects do not accumulate.
 */
export class KeyedMutex {
  /** key → the promise that settles when the last queued holder of the key releases it. */
  private readonly tails = new Map<string, Promise<void>>();

  /**
   * Runs `fn` once every earlier `run` with the same key has finished (resolved or rejected), and returns
   * its result. `fn`'s failure does not poison the key: the next waiter runs regardless.
   */
  async run<T>(key: string, fn: () => Promise<T> | T): Promise<T> {
    const previous = this.tails.get(key);
    let release: () => void = () => undefined;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    // Tails never reject: each one is a `release` promise, so chaining on them is safe.
    const tail = previous ? previous.then(() => mine) : mine;
    this.tails.set(key, tail);
    try {
      if (previous) await previous;
      return await fn();
    } finally {
      release();
      // Only the last holder in the queue removes the entry; a later waiter has replaced the tail.
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** True while some `run` holds or awaits `key`. */
  isLocked(key: string): boolean {
    return this.tails.has(key);
  }

  /** Keys currently held or awaited (for tests and leak checks). */
  get size(): number {
    return this.tails.size;
  }
}
