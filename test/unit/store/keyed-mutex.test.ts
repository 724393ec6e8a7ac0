/** KeyedMutex serialises work per key, runs different keys in parallel, and forgets keys when idle. */
import { describe, expect, it } from 'vitest';
import { KeyedMutex } from '../../../src/store/keyed-mutex.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('KeyedMutex', () => {
  it('runs calls for one key one at a time, in arrival order', async () => {
    const mutex = new KeyedMutex();
    const events: string[] = [];
    let inside = 0;
    let maxInside = 0;
    const task = (name: string, ms: number) =>
      mutex.run('k', async () => {
        inside++;
        maxInside = Math.max(maxInside, inside);
        events.push(`start ${name}`);
        await sleep(ms);
        events.push(`end ${name}`);
        inside--;
        return name;
      });
    const results = await Promise.all([task('a', 30), task('b', 5), task('c', 10)]);
    expect(results).toEqual(['a', 'b', 'c']);
    expect(maxInside).toBe(1);
    expect(events).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  });

  it('runs different keys in parallel', async () => {
    const mutex = new KeyedMutex();
    let inside = 0;
    let maxInside = 0;
    await Promise.all(
      ['x', 'y', 'z'].map((k) =>
        mutex.run(k, async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          await sleep(20);
          inside--;
        }),
      ),
    );
    expect(maxInside).toBe(3);
  });

  it('a failing call releases the key for the next one', async () => {
    const mutex = new KeyedMutex();
    const failing = mutex.run('k', () => Promise.reject(new Error('boom')));
    const next = mutex.run('k', () => 'ran');
    await expect(failing).rejects.toThrow('boom');
    await expect(next).resolves.toBe('ran');
  });

  it('accepts synchronous functions, including throwing ones', async () => {
    const mutex = new KeyedMutex();
    await expect(mutex.run('k', () => 1)).resolves.toBe(1);
    await expect(
      mutex.run('k', () => {
        throw new Error('sync');
      }),
    ).rejects.toThrow('sync');
  });

  it('keeps no entry for a key once nobody holds or awaits it', async () => {
    const mutex = new KeyedMutex();
    const held = mutex.run('a', () => sleep(10));
    const queued = mutex.run('a', () => sleep(1));
    expect(mutex.isLocked('a')).toBe(true);
    expect(mutex.size).toBe(1);
    await Promise.all([held, queued]);
    await Promise.all(Array.from({ length: 100 }, (_, i) => mutex.run(`key-${i}`, () => sleep(1))));
    await mutex.run('b', () => Promise.reject(new Error('x'))).catch(() => undefined);
    expect(mutex.size).toBe(0);
    expect(mutex.isLocked('a')).toBe(false);
  });
});
