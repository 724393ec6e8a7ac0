import { describe, expect, it } from 'vitest';
import { PriorityGate } from '../../../src/util/priority-gate.js';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('PriorityGate', () => {
  it('runs at most width steps at once and the rest by priority, then arrival', async () => {
    const gate = new PriorityGate(2);
    const order: string[] = [];
    const release = new Map<string, () => void>();
    const step = (name: string, priority: number): Promise<void> =>
      gate.run(priority, async () => {
        order.push(name);
        const d = deferred();
        release.set(name, d.resolve);
        await d.promise;
      });
    const all = [step('a', 5), step('b', 5), step('c', 9), step('d', 1), step('e', 5), step('f', 1)];
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual(['a', 'b']);
    expect(gate.stats).toEqual({ active: 2, waiting: 4 });
    for (const name of ['a', 'b', 'd', 'f', 'e', 'c']) {
      release.get(name)!();
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all(all);
    expect(order).toEqual(['a', 'b', 'd', 'f', 'e', 'c']);
    expect(gate.stats).toEqual({ active: 0, waiting: 0 });
  });

  it('lets a step that holds a slot run nested steps without another slot', async () => {
    const gate = new PriorityGate(1);
    const inner = await gate.run(1, () => gate.run(1, () => gate.run(0, async () => 'nested')));
    expect(inner).toBe('nested');
    expect(gate.stats).toEqual({ active: 0, waiting: 0 });
  });

  it('frees the slot when a step fails', async () => {
    const gate = new PriorityGate(1);
    await expect(gate.run(1, () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await gate.run(1, async () => 'next')).toBe('next');
  });

  it('refuses a width below 1', () => {
    expect(() => new PriorityGate(0)).toThrow(RangeError);
  });
});
