import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startThroughExecFifo } from '../../../src/oci/exec-fifo.js';
import { runChecked } from '../../../src/util/exec.js';

let dir: string;
let fifo: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'skiff-fifo-'));
  fifo = join(dir, 'exec.fifo');
  await runChecked('mkfifo', [fifo]);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** runc init's side: opens the fifo for writing after `delayMs`, writes `data`, closes it. */
function writer(delayMs: number, data: string): Promise<number | null> {
  const child = spawn('sh', [
    '-c',
    `sleep ${String(delayMs / 1000)}; printf '%s' "$1" > "$2"`,
    'sh',
    data,
    fifo,
  ]);
  return new Promise((resolve) => child.once('exit', resolve));
}

describe('startThroughExecFifo (the reader runc start is)', () => {
  it('reads the "0" of a writer that comes later and removes the fifo', async () => {
    const w = writer(150, '0');
    expect(await startThroughExecFifo(fifo, async () => true, 5000, 'start')).toBe('started');
    expect(await w).toBe(0);
    expect(existsSync(fifo)).toBe(false);
  });

  it('says no-fifo when there is none (already started, or not runc)', async () => {
    await rm(fifo);
    expect(await startThroughExecFifo(fifo, async () => true, 5000, 'start')).toBe('no-fifo');
  });

  it('fails when init is gone before opening its end, and keeps the fifo', async () => {
    await expect(startThroughExecFifo(fifo, async () => false, 5000, 'start c1')).rejects.toThrow(
      /start c1: the container's init process is gone/,
    );
    expect(existsSync(fifo)).toBe(true);
  });

  it('fails when the writer closes without writing (init exited instead of starting)', async () => {
    const w = writer(50, '');
    await expect(startThroughExecFifo(fifo, async () => true, 5000, 'start')).rejects.toThrow(
      /exited before starting it/,
    );
    await w;
  });

  it('gives up after the deadline while init lives but never opens its end', async () => {
    await expect(startThroughExecFifo(fifo, async () => true, 200, 'start')).rejects.toThrow(
      /did not open .* within 200 ms/,
    );
  });
});
