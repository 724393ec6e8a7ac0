/**
 * The cgroup readers on fake trees in a temp dir (no root, no real cgroups): runc's systemd path
 * expansion, cgroupfs paths, v1 and v2 accounting files, and "not there" as undefined.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { isSkiffError } from '../../../src/errdefs.js';
import { cgroupDirs, cgroupPath, expandSlice, parsePsi, readCgroupStats } from '../../../src/oci/cgroups.js';

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'skiff-cgroups-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function files(dir: string, entries: Record<string, string>): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, text] of Object.entries(entries)) await writeFile(join(dir, name), text);
}

const V1_MEMORY_STAT = [
  'cache 4096',
  'rss 8192',
  'total_cache 1000000',
  'total_rss 3000000',
  'total_pgfault 555',
  'total_pgmajfault 7',
  'total_inactive_file 400000',
  'total_active_file 100',
  '',
].join('\n');

const V2_MEMORY_STAT = [
  'anon 2500000',
  'file 900000',
  'inactive_file 300000',
  'active_file 600000',
  'pgfault 1234',
  'pgmajfault 5',
  '',
].join('\n');

const PSI_CPU =
  'some avg10=1.50 avg60=0.75 avg300=0.10 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=42\n';
const PSI_IO_OLD = 'some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n';

describe('systemd path expansion (runc ExpandSlice / getUnitName)', () => {
  it('expands nested slices', () => {
    expect(expandSlice('kubepods.slice')).toBe('/kubepods.slice');
    expect(expandSlice('kubepods-besteffort-pod1234.slice')).toBe(
      '/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice',
    );
    expect(expandSlice('-.slice')).toBe('/');
  });

  it('rejects names runc rejects', () => {
    for (const bad of ['.slice', 'kubepods', 'a--b.slice', '-a.slice', 'a/b.slice']) {
      expect(() => expandSlice(bad), bad).toThrow(/invalid systemd slice/);
    }
  });

  it('turns slice:prefix:name into the scope under the expanded slice', () => {
    expect(cgroupPath('kubepods-besteffort-pod1234.slice:skiff:abc', 'systemd')).toBe(
      '/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/skiff-abc.scope',
    );
    // An empty slice is system.slice; a name that is a slice is used as is.
    expect(cgroupPath(':skiff:abc', 'systemd')).toBe('/system.slice/skiff-abc.scope');
    expect(cgroupPath('a.slice:skiff:a-b.slice', 'systemd')).toBe('/a.slice/a-b.slice');
    // A pod's cgroup_parent is a bare slice.
    expect(cgroupPath('kubepods-burstable-podx.slice', 'systemd')).toBe(
      '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podx.slice',
    );
  });

  it('rejects a systemd path that is not slice:prefix:name', () => {
    try {
      cgroupPath('a.slice:b', 'systemd');
      expect.fail('expected a throw');
    } catch (err) {
      expect(isSkiffError(err, 'invalid-argument')).toBe(true);
    }
  });
});

describe('cgroupfs paths and per-controller dirs', () => {
  it('anchors cgroupfs paths at the hierarchy root', () => {
    expect(cgroupPath('/kubepods/besteffort/pod1/abc', 'cgroupfs')).toBe('/kubepods/besteffort/pod1/abc');
    expect(cgroupPath('skiff/abc', 'cgroupfs')).toBe('/skiff/abc');
    expect(cgroupPath('/../../etc', 'cgroupfs')).toBe('/etc');
  });

  it('puts v1 controllers in their own hierarchies and v2 in one', () => {
    expect(cgroupDirs('/skiff/abc', 'cgroupfs', { v2: false, root: '/cg' })).toEqual({
      path: '/skiff/abc',
      cpu: '/cg/cpuacct/skiff/abc',
      memory: '/cg/memory/skiff/abc',
      pids: '/cg/pids/skiff/abc',
    });
    expect(cgroupDirs('/skiff/abc', 'cgroupfs', { v2: true, root: '/cg' })).toEqual({
      path: '/skiff/abc',
      cpu: '/cg/skiff/abc',
      memory: '/cg/skiff/abc',
      pids: '/cg/skiff/abc',
    });
    expect(cgroupDirs('/skiff/abc', 'cgroupfs').cpu).toBe('/sys/fs/cgroup/cpuacct/skiff/abc');
  });
});

describe('readCgroupStats on cgroup v1', () => {
  it('reads cpuacct, memory (total_*), and pids', async () => {
    const root = await tempDir();
    const p = '/kubepods/besteffort/pod1/abc';
    await files(join(root, 'cpuacct', p), { 'cpuacct.usage': '987654321\n' });
    await files(join(root, 'memory', p), {
      'memory.usage_in_bytes': '5000000\n',
      'memory.limit_in_bytes': '9223372036854771712\n',
      'memory.stat': V1_MEMORY_STAT,
    });
    await files(join(root, 'pids', p), { 'pids.current': '3\n' });
    expect(await readCgroupStats(p, 'cgroupfs', { v2: false, root })).toEqual({
      cpu: { usageCoreNanoSeconds: 987654321n },
      memory: {
        usageBytes: 5000000n,
        workingSetBytes: 4600000n,
        rssBytes: 3000000n,
        pageFaults: 555n,
        majorPageFaults: 7n,
        limitBytes: undefined,
      },
      pids: { current: 3n },
    });
  });

  it('reports a real limit, floors the working set at 0, and resolves systemd paths', async () => {
    const root = await tempDir();
    const path = '/kubepods.slice/kubepods-pod1.slice/skiff-abc.scope';
    await files(join(root, 'cpuacct', path), { 'cpuacct.usage': '1\n' });
    await files(join(root, 'memory', path), {
      'memory.usage_in_bytes': '100\n',
      'memory.limit_in_bytes': '67108864\n',
      'memory.stat': 'total_inactive_file 4096\n',
    });
    const s = await readCgroupStats('kubepods-pod1.slice:skiff:abc', 'systemd', { v2: false, root });
    expect(s?.memory.limitBytes).toBe(67108864n);
    expect(s?.memory.workingSetBytes).toBe(0n);
    expect(s?.pids).toBeUndefined();
    expect(s?.psi).toBeUndefined();
  });

  it('is undefined when the cgroup is gone', async () => {
    const root = await tempDir();
    expect(await readCgroupStats('/skiff/gone', 'cgroupfs', { v2: false, root })).toBeUndefined();
    // cpu there but memory gone (removed between reads): still "not there".
    await files(join(root, 'cpuacct', 'skiff', 'half'), { 'cpuacct.usage': '1\n' });
    expect(await readCgroupStats('/skiff/half', 'cgroupfs', { v2: false, root })).toBeUndefined();
  });
});

describe('readCgroupStats on cgroup v2', () => {
  it('reads cpu.stat (µs → ns), memory, pids and PSI', async () => {
    const root = await tempDir();
    const p = '/kubepods/pod1/abc';
    await files(join(root, p), {
      'cpu.stat': 'usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n',
      'memory.current': '4000000\n',
      'memory.max': '8388608\n',
      'memory.stat': V2_MEMORY_STAT,
      'pids.current': '2\n',
      'cpu.pressure': PSI_CPU,
      'io.pressure': PSI_IO_OLD,
    });
    expect(await readCgroupStats(p, 'cgroupfs', { v2: true, root })).toEqual({
      cpu: { usageCoreNanoSeconds: 2500000n },
      memory: {
        usageBytes: 4000000n,
        workingSetBytes: 3700000n,
        rssBytes: 2500000n,
        pageFaults: 1234n,
        majorPageFaults: 5n,
        limitBytes: 8388608n,
      },
      pids: { current: 2n },
      psi: {
        cpu: {
          some: { avg10: 1.5, avg60: 0.75, avg300: 0.1, total: 123456n },
          full: { avg10: 0, avg60: 0, avg300: 0, total: 42n },
        },
        memory: undefined,
        io: { some: { avg10: 0, avg60: 0, avg300: 0, total: 9n } },
      },
    });
  });

  it('treats memory.max "max" as unlimited and no pressure files as no PSI', async () => {
    const root = await tempDir();
    await files(join(root, 'skiff', 'abc'), {
      'cpu.stat': 'usage_usec 1\n',
      'memory.current': '10\n',
      'memory.max': 'max\n',
      'memory.stat': 'anon 1\n',
    });
    const s = await readCgroupStats('/skiff/abc', 'cgroupfs', { v2: true, root });
    expect(s?.memory.limitBytes).toBeUndefined();
    expect(s?.psi).toBeUndefined();
    expect(s?.pids).toBeUndefined();
  });

  it('is undefined when the cgroup is gone', async () => {
    const root = await tempDir();
    expect(await readCgroupStats('/skiff/gone', 'cgroupfs', { v2: true, root })).toBeUndefined();
  });
});

describe('parsePsi', () => {
  it('ignores junk and returns undefined for nothing', () => {
    expect(parsePsi(undefined)).toBeUndefined();
    expect(parsePsi('')).toBeUndefined();
    expect(parsePsi('bogus line\nsome avg10=x avg60=1 avg300=2 total=3\n')).toEqual({
      some: { avg10: 0, avg60: 1, avg300: 2, total: 3n },
    });
  });
});
