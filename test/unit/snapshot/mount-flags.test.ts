import { describe, expect, it } from 'vitest';
import { mountFlags } from '../../../src/snapshot/mount.js';

const MS_RDONLY = 0x1;
const MS_NOSUID = 0x2;
const MS_NODEV = 0x4;
const MS_NOEXEC = 0x8;
const MS_BIND = 0x1000;
const MS_REC = 0x4000;
const MS_PRIVATE = 0x40000;

describe('mountFlags (mount(8) option words → mount(2) flags and data)', () => {
  it('keeps filesystem options as data, in order', () => {
    expect(mountFlags(['workdir=/w', 'upperdir=/u', 'lowerdir=/a:/b'])).toEqual({
      flags: 0,
      data: 'workdir=/w,upperdir=/u,lowerdir=/a:/b',
      remountRo: false,
    });
  });

  it('turns flag words into bits and leaves the rest (a tmpfs for /dev/shm)', () => {
    expect(mountFlags(['nosuid', 'nodev', 'noexec', 'mode=1777', 'size=65536'])).toEqual({
      flags: MS_NOSUID | MS_NODEV | MS_NOEXEC,
      data: 'mode=1777,size=65536',
      remountRo: false,
    });
    expect(mountFlags(['ro', 'rw', 'defaults']).flags).toBe(MS_RDONLY);
  });

  it('makes a read-only bind two calls: the bind, then a read-only remount', () => {
    expect(mountFlags(['bind'])).toEqual({ flags: MS_BIND, data: '', remountRo: false });
    expect(mountFlags(['ro', 'rbind'])).toEqual({ flags: MS_BIND | MS_REC, data: '', remountRo: true });
  });

  it('knows propagation words, recursive ones with MS_REC', () => {
    expect(mountFlags(['private']).flags).toBe(MS_PRIVATE);
    expect(mountFlags(['rprivate']).flags).toBe(MS_PRIVATE | MS_REC);
    // "rec" alone is not a mount(8) word: it stays data, where the kernel will refuse it.
    expect(mountFlags(['rec']).data).toBe('rec');
  });
});
