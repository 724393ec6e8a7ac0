/**
 * writeFileAtomic leaves the old contents or the new ones, never a mix, even when the writer is killed
 * mid-write (design guide "On disk": temp file in the same dir, fsync, rename, fsync the dir).
 */
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFinished } from 'vitest';
import { isAtomicTemp, writeFileAtomic, writeFilesAtomic } from '../../../src/util/atomic.js';
import { run } from '../../../src/util/exec.js';

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-atomic-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

describe('writeFilesAtomic', () => {
  it('writes several files of a dir with their modes and leaves no temp file', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'b'), 'old b');
    await writeFilesAtomic(dir, [
      { name: 'a', data: 'A', mode: 0o600 },
      { name: 'b', data: Buffer.from('new b') },
    ]);
    expect(await readFile(join(dir, 'a'), 'utf8')).toBe('A');
    expect((await stat(join(dir, 'a'))).mode & 0o777).toBe(0o600);
    expect(await readFile(join(dir, 'b'), 'utf8')).toBe('new b');
    expect((await stat(join(dir, 'b'))).mode & 0o777).toBe(0o644);
    expect((await readdir(dir)).sort()).toEqual(['a', 'b']);
  });

  it('renames in order: a failing later name leaves the earlier ones written and no temp file', async () => {
    const dir = await tempDir();
    await import('node:fs/promises').then((fs) =>
      fs.mkdir(join(dir, 'blocked', 'child'), { recursive: true }),
    );
    await expect(
      writeFilesAtomic(dir, [
        { name: 'first', data: '1' },
        { name: 'blocked', data: '2' },
      ]),
    ).rejects.toThrow();
    expect(await readFile(join(dir, 'first'), 'utf8')).toBe('1');
    expect((await readdir(dir)).sort()).toEqual(['blocked', 'first']);
  });
});

describe('writeFileAtomic', () => {
  it('writes a new file with the given mode and leaves no temp file', async () => {
    const dir = await tempDir();
    const path = join(dir, 'record.json');
    await writeFileAtomic(path, '{"version":1}\n', 0o600);
    expect(await readFile(path, 'utf8')).toBe('{"version":1}\n');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['record.json']);
  });

  it('replaces an existing file whole', async () => {
    const dir = await tempDir();
    const path = join(dir, 'r');
    await writeFile(path, 'old contents that are longer');
    await writeFileAtomic(path, Buffer.from('new'));
    expect(await readFile(path, 'utf8')).toBe('new');
    expect((await stat(path)).mode & 0o777).toBe(0o644);
    expect(await readdir(dir)).toEqual(['r']);
  });

  it('leaves the old file and no temp file when the write fails', async () => {
    const dir = await tempDir();
    const path = join(dir, 'r');
    await writeFile(path, 'old');
    // A directory where the temp file's rename target is cannot be replaced by a file.
    const blocked = join(dir, 'blocked');
    await import('node:fs/promises').then((fs) => fs.mkdir(join(blocked, 'child'), { recursive: true }));
    await expect(writeFileAtomic(blocked, 'x')).rejects.toThrow();
    expect(await readFile(path, 'utf8')).toBe('old');
    expect((await readdir(dir)).sort()).toEqual(['blocked', 'r']);
  });

  it('names its temp files so that start-up cleanups recognise them', () => {
    expect(isAtomicTemp('.record.json.tmp-0a1b2c')).toBe(true);
    expect(isAtomicTemp('record.json')).toBe(false);
  });

  it('a writer killed at random moments leaves either the old or the new contents', async () => {
    const dir = await tempDir();
    const path = join(dir, 'r');
    const a = 'A'.repeat(1 << 20);
    const b = 'B'.repeat(1 << 20);
    await writeFile(path, a);
    // The child runs the real module, transpiled with the project's TypeScript (it imports only node:*).
    const source = await readFile(
      fileURLToPath(new URL('../../../src/util/atomic.ts', import.meta.url)),
      'utf8',
    );
    const ts = (await import('typescript')).default;
    const js = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    const module = join(dir, 'atomic.mjs');
    await writeFile(module, js);
    const script = `
      import { writeFileAtomic } from ${JSON.stringify(module)};
      const [path, a, b] = [process.argv[1], 'A'.repeat(1 << 20), 'B'.repeat(1 << 20)];
      for (let i = 0; ; i++) await writeFileAtomic(path, i % 2 ? a : b);
    `;
    for (const ms of [150, 220, 330, 410]) {
      // SIGKILL after `ms` (run's timeout): no chance to clean up, as in a crash.
      const res = await run(process.execPath, ['--input-type=module', '-e', script, path], { timeoutMs: ms });
      expect(res.signal).toBe('SIGKILL');
      const contents = await readFile(path, 'utf8');
      expect(contents === a || contents === b).toBe(true);
    }
  });
});
