/**
 * Device nodes for a privileged container's /dev and for CRI devices. Making device nodes needs root, so
 * a fake stat describes them in a plain temp dir; one test reads the real /dev/null.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { isSkiffError } from '../../../../src/errdefs.js';
import {
  type DeviceStat,
  deviceFromPath,
  devicesFor,
  listDevices,
  majorMinor,
  type StatFn,
} from '../../../../src/oci/spec/devices.js';

const CHR = 0o020000n;
const BLK = 0o060000n;
const DIR = 0o040000n;
const FIFO = 0o010000n;
const REG = 0o100000n;

const makedev = (major: number, minor: number): bigint =>
  (BigInt(minor) & 0xffn) |
  ((BigInt(major) & 0xfffn) << 8n) |
  ((BigInt(minor) & ~0xffn) << 12n) |
  ((BigInt(major) & ~0xfffn) << 32n);

/** A fake /dev: real files in a temp dir, with the stat answers below by name. */
async function fakeDev(): Promise<{ dev: string; stat: StatFn }> {
  const dev = await mkdtemp(join(tmpdir(), 'skiff-dev-'));
  onTestFinished(() => rm(dev, { recursive: true, force: true }));
  const nodes: Record<string, DeviceStat> = {
    null: { mode: CHR | 0o666n, rdev: makedev(1, 3), uid: 0n, gid: 0n },
    sda: { mode: BLK | 0o660n, rdev: makedev(8, 0), uid: 0n, gid: 6n },
    console: { mode: CHR | 0o600n, rdev: makedev(5, 1), uid: 0n, gid: 5n },
    initctl: { mode: FIFO | 0o600n, rdev: 0n, uid: 0n, gid: 0n },
    'dri/card0': { mode: CHR | 0o660n, rdev: makedev(226, 0), uid: 0n, gid: 44n },
    'pts/0': { mode: CHR | 0o620n, rdev: makedev(136, 0), uid: 1000n, gid: 5n },
    big: { mode: CHR | 0o600n, rdev: makedev(4095 + 1, 300), uid: 0n, gid: 0n },
  };
  for (const d of ['dri', 'pts', 'shm']) await mkdir(join(dev, d));
  for (const name of [...Object.keys(nodes), 'readme', 'shm/x']) await writeFile(join(dev, name), '');
  await symlink('null', join(dev, 'link-to-null'));
  const stat: StatFn = async (path) => {
    const rel = path.slice(dev.length + 1);
    const node = nodes[rel];
    if (node) return node;
    if (['dri', 'pts', 'shm'].includes(rel)) return { mode: DIR | 0o755n, rdev: 0n, uid: 0n, gid: 0n };
    if (rel === 'link-to-null') return { mode: 0o120000n | 0o777n, rdev: 0n, uid: 0n, gid: 0n };
    return { mode: REG | 0o644n, rdev: 0n, uid: 0n, gid: 0n };
  };
  return { dev, stat };
}

describe('majorMinor', () => {
  it('decodes glibc device numbers, large ones included', () => {
    expect(majorMinor(makedev(1, 3))).toEqual({ major: 1, minor: 3 });
    expect(majorMinor(makedev(259, 65536))).toEqual({ major: 259, minor: 65536 });
  });
});

describe('listDevices', () => {
  it('lists char and block nodes recursively, skipping console, FIFOs, links, pts and shm', async () => {
    const { dev, stat } = await fakeDev();
    expect(await listDevices(dev, '/dev', stat)).toEqual([
      { type: 'c', path: '/dev/big', major: 4096, minor: 300, fileMode: 0o600, uid: 0, gid: 0 },
      { type: 'c', path: '/dev/dri/card0', major: 226, minor: 0, fileMode: 0o660, uid: 0, gid: 44 },
      { type: 'c', path: '/dev/null', major: 1, minor: 3, fileMode: 0o666, uid: 0, gid: 0 },
      { type: 'b', path: '/dev/sda', major: 8, minor: 0, fileMode: 0o660, uid: 0, gid: 6 },
    ]);
  });
});

describe('devicesFor', () => {
  it('maps a directory of devices under the container path', async () => {
    const { dev, stat } = await fakeDev();
    expect((await devicesFor(join(dev, 'dri'), '/dev/gpu', stat)).map((d) => d.path)).toEqual([
      '/dev/gpu/card0',
    ]);
  });

  it('reads a real device node, following a symlink to it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skiff-devlink-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    await symlink('/dev/null', join(dir, 'null'));
    expect(await devicesFor(join(dir, 'null'), '/dev/mynull')).toEqual([
      expect.objectContaining({ type: 'c', path: '/dev/mynull', major: 1, minor: 3 }),
    ]);
    expect((await deviceFromPath('/dev/null'))?.path).toBe('/dev/null');
    expect(await deviceFromPath(join(dir, 'null'))).toBeUndefined(); // lstat: a link is not a device
  });

  it('refuses missing paths and files that are not devices', async () => {
    const { dev, stat } = await fakeDev();
    for (const [path, pattern] of [
      [join(dev, 'nope'), /does not exist on this node/],
      [join(dev, 'readme'), /not a character or block device/],
    ] as const) {
      const err: unknown = await devicesFor(path, '', stat).catch((e: unknown) => e);
      expect(isSkiffError(err, 'invalid-argument')).toBe(true);
      expect((err as Error).message).toMatch(pattern);
    }
  });
});
