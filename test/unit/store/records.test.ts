import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { RecordStore } from '../../../src/store/records.js';

interface M {
  version: 1;
  id: string;
  createdAt: string;
  config: { labels: Record<string, string> };
}

describe('RecordStore.select', () => {
  it('orders by createdAt numerically (ns beyond 2^53, different lengths) and filters by prefix and labels', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skiff-records-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    const store = new RecordStore<M, { version: 1 }>({ dir, what: 'thing', version: 1 });
    await store.load();
    const make = async (id: string, createdAt: string, labels: Record<string, string> = {}) => {
      await mkdir(store.dirOf(id)); // the services make an object's dir before its record
      await store.create({
        metadata: { version: 1, id, createdAt, config: { labels } },
        status: { version: 1 },
      });
    };
    await make('c1', '1795875914165740972', { app: 'x' });
    await make('a1', '9');
    await make('b1', '1795875914165740971', { app: 'x' });
    await make('b2', '10');
    expect(store.select({}).map((r) => r.metadata.id)).toEqual(['a1', 'b2', 'b1', 'c1']);
    expect(store.select({ idPrefix: 'b' }).map((r) => r.metadata.id)).toEqual(['b2', 'b1']);
    expect(store.select({ labels: { app: 'x' } }).map((r) => r.metadata.id)).toEqual(['b1', 'c1']);
    expect(store.select({ where: (r) => r.metadata.id.endsWith('2') }).map((r) => r.metadata.id)).toEqual([
      'b2',
    ]);
    // The order is kept between calls: it follows creates and removes, and statuses are the current ones.
    await store.remove('b2');
    await make('d1', '5');
    expect(store.select({}).map((r) => r.metadata.id)).toEqual(['d1', 'a1', 'b1', 'c1']);
    await store.writeStatus('b1', { version: 1 });
    const b1 = store.select({ idPrefix: 'b' })[0];
    expect(b1?.status).toBe(store.get('b1')?.status);
    // A caller changing the returned array does not change the next answer.
    store.select({}).reverse();
    expect(store.select({}).map((r) => r.metadata.id)).toEqual(['d1', 'a1', 'b1', 'c1']);
    const reloaded = new RecordStore<M, { version: 1 }>({ dir, what: 'thing', version: 1 });
    await reloaded.load();
    expect(reloaded.select({}).map((r) => r.metadata.id)).toEqual(['d1', 'a1', 'b1', 'c1']);
  });
});
