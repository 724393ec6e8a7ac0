/**
 * Turns pull measurements into the Markdown report: machine facts, the workloads, medians per runtime,
 * skiff/containerd ratios against the targets, and every run's raw numbers. The report replaces the text
 * between the `bench:pull` markers in BENCHMARKS.md (appended when the markers are missing).
 */
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, release, totalmem } from 'node:os';
import { basename } from 'node:path';
import { output } from './proc.js';

export const TARGET_TIME_RATIO = 0.8;
/** skiff's peak RSS during a pull, in MiB (VmHWM is reported in KiB). */
export const TARGET_SKIFF_RSS_MIB = 150;
/** Other work above this share of one core during a pull marks the run as noisy in the report. */
const NOISY_SHARE = 0.25;

export interface PullSample {
  wallMs: number;
  /** VmHWM after a reset just before the pull, KiB. */
  peakRssKiB: number;
  /** VmRSS just before the pull, KiB. */
  baselineRssKiB: number;
  /** Daemon CPU time during the pull, user and system, seconds. */
  cpuUserS: number;
  cpuSysS: number;
  /** Bytes the runtime's root holds once the pull returned. */
  diskBytes: number;
  /** CPU time of kernel threads during the pull (writeback, the loop device), seconds. */
  kernelCpuS: number;
  /**
   * CPU time of every other process during the pull (not the pulling daemon, the registry, the bench or a
   * kernel thread): work competing for the cores, i.e. noise. Seconds.
   */
  otherCpuS: number;
  /** Child processes of the daemon seen during the pull (their memory is not in the daemon's RSS). */
  helpers: number;
}

export interface WorkloadFacts {
  name: string;
  description: string;
  layers: number;
  files: number;
  fileBytes: number;
  compressedBytes: number;
}

export interface Results {
  repoRoot: string;
  /** Where the runtimes' roots live: a scratch loop-mounted ext4, or the host's /var/lib; and in words. */
  fsMode: 'loop' | 'host';
  fs: string;
  startedAt: Date;
  /** /proc/loadavg's first three fields at the start and the end of the measured runs. */
  loadBefore: string;
  loadAfter: string;
  command: string;
  runs: number;
  warmup: number;
  workloads: WorkloadFacts[];
  samples: Map<string, PullSample[]>;
}

export const key = (workload: string, runtime: string): string => `${workload}/${runtime}`;

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2;
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
const kibToMib = (kib: number): number => kib / 1024;
const secs = (ms: number): string => (ms / 1000).toFixed(2);

export function machine(repoRoot: string, fs: string): string[] {
  const firstLine = (s: string): string => s.split('\n')[0] ?? '';
  const debian = (() => {
    try {
      return `Debian ${readFileSync('/etc/debian_version', 'utf8').trim()}`;
    } catch {
      return 'unknown distribution';
    }
  })();
  const commit = output('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']);
  const dirty = output('git', ['-C', repoRoot, 'status', '--porcelain', '--', 'src']) !== '';
  const [source = '', fsType = '?'] = output('findmnt', [
    '-n',
    '-o',
    'SOURCE,FSTYPE',
    '--target',
    '/var/lib',
  ]).split(/\s+/);
  // ext4 lists its journal thread in sysfs; "<none>" means no journal.
  const journal = (() => {
    try {
      const task = readFileSync(`/sys/fs/ext4/${basename(source)}/journal_task`, 'utf8').trim();
      return task === '<none>' ? ' without a journal' : ' with a journal';
    } catch {
      return '';
    }
  })();
  return [
    `- CPU: ${availableParallelism()} × ${cpus()[0]?.model ?? 'unknown'} (nproc ${output('nproc', []) || '?'})`,
    `- memory: ${(totalmem() / 2 ** 30).toFixed(1)} GiB; kernel ${release()}; ${debian}; host /var/lib on ${fsType}${journal}`,
    `- node ${process.version}; ${firstLine(output('containerd', ['--version']))}; ` +
      `${firstLine(output('runc', ['--version']))}; docker-registry ${output('docker-registry', ['--version']).split(' ').slice(-1)[0] ?? '?'}`,
    `- runtimes' roots on ${fs}`,
    `- skiff at commit ${commit || '?'}${dirty ? ' with uncommitted changes in src/' : ''}`,
  ];
}

/** How busy the machine was with other work: load averages, and CPU used outside the measured processes. */
function noise(r: Results): string[] {
  const all = [...r.samples.values()].flat();
  const other = all.map((x) => x.otherCpuS);
  const worst = Math.max(0, ...all.map((x) => x.otherCpuS / (x.wallMs / 1000)));
  const lines = [
    `- load average (1/5/15 min) ${r.loadBefore} before the pulls, ${r.loadAfter} after; other work on the ` +
      `machine during a pull (CPU time of other processes; kernel threads, which do the pull's own writeback, ` +
      `not counted): median ` +
      `${median(other).toFixed(2)} s, at most ${(100 * worst).toFixed(0)}% of a core`,
  ];
  for (const [k, s] of r.samples) {
    const n = Math.max(0, ...s.map((x) => x.helpers));
    if (n > 0)
      lines.push(`- ${k}: the daemon ran ${n} child process(es) during a pull; their memory is not counted`);
  }
  if (worst > NOISY_SHARE) {
    lines.push(
      `- **noisy run**: other work took up to ${(100 * worst).toFixed(0)}% of a core during some pulls (see "other CPU"); ` +
        'both runtimes were measured alternately, so the ratios are fairer than the absolute times',
    );
  }
  return lines;
}

function verdict(ok: boolean): string {
  return ok ? 'met' : '**missed**';
}

export function renderReport(r: Results): string {
  const lines: string[] = [];
  const where = r.fsMode === 'host' ? ", runtimes' roots on the host filesystem" : '';
  lines.push(`### Image pull${where}, measured ${r.startedAt.toISOString().replace(/\.\d+Z$/, 'Z')}`, '');
  lines.push(
    `Command: \`${r.command}\` (${r.runs} measured runs per runtime and workload after ${r.warmup} warm-up).`,
    '',
  );
  lines.push(...machine(r.repoRoot, r.fs), ...noise(r), '');

  lines.push(
    '| workload | layers | files | file bytes | gzip blobs | what |',
    '|---|---:|---:|---:|---:|---|',
  );
  for (const w of r.workloads) {
    lines.push(
      `| ${w.name} | ${w.layers} | ${w.files} | ${mib(w.fileBytes)} | ${mib(w.compressedBytes)} | ${w.description} |`,
    );
  }
  lines.push('');

  lines.push(
    '| workload | runtime | pull time, median (min–max) | peak RSS, median (max) | RSS before | daemon CPU user + sys | kernel threads CPU | root after pull | other CPU |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|',
  );
  for (const w of r.workloads) {
    for (const rt of ['skiff', 'containerd']) {
      const s = r.samples.get(key(w.name, rt)) ?? [];
      const wall = s.map((x) => x.wallMs);
      const rss = s.map((x) => x.peakRssKiB);
      lines.push(
        `| ${w.name} | ${rt} | ${secs(median(wall))} s (${secs(Math.min(...wall))}–${secs(Math.max(...wall))}) ` +
          `| ${kibToMib(median(rss)).toFixed(1)} MiB (${kibToMib(Math.max(...rss)).toFixed(1)}) ` +
          `| ${kibToMib(median(s.map((x) => x.baselineRssKiB))).toFixed(1)} MiB ` +
          `| ${median(s.map((x) => x.cpuUserS)).toFixed(2)} + ${median(s.map((x) => x.cpuSysS)).toFixed(2)} s ` +
          `| ${median(s.map((x) => x.kernelCpuS)).toFixed(2)} s | ${mib(median(s.map((x) => x.diskBytes)))} ` +
          `| ${median(s.map((x) => x.otherCpuS)).toFixed(2)} s |`,
      );
    }
  }
  lines.push('');

  lines.push(
    `| workload | time ratio skiff/containerd | target ≤ ${TARGET_TIME_RATIO.toFixed(2)} | skiff peak RSS | target ≤ ${TARGET_SKIFF_RSS_MIB} MiB | RSS ratio skiff/containerd |`,
    '|---|---:|---|---:|---|---:|',
  );
  for (const w of r.workloads) {
    const sk = r.samples.get(key(w.name, 'skiff')) ?? [];
    const cd = r.samples.get(key(w.name, 'containerd')) ?? [];
    const timeRatio = median(sk.map((x) => x.wallMs)) / median(cd.map((x) => x.wallMs));
    const skRss = kibToMib(median(sk.map((x) => x.peakRssKiB)));
    const rssRatio = median(sk.map((x) => x.peakRssKiB)) / median(cd.map((x) => x.peakRssKiB));
    lines.push(
      `| ${w.name} | ${timeRatio.toFixed(2)} | ${verdict(timeRatio <= TARGET_TIME_RATIO)} | ${skRss.toFixed(1)} MiB ` +
        `| ${verdict(skRss <= TARGET_SKIFF_RSS_MIB)} | ${rssRatio.toFixed(2)} |`,
    );
  }
  lines.push('');

  lines.push(
    '<details><summary>Every measured run (pull seconds / peak RSS MiB / other CPU seconds)</summary>',
    '',
  );
  lines.push('| workload | runtime | runs |', '|---|---|---|');
  for (const w of r.workloads) {
    for (const rt of ['skiff', 'containerd']) {
      const s = r.samples.get(key(w.name, rt)) ?? [];
      const runs = s
        .map((x) => `${secs(x.wallMs)} / ${kibToMib(x.peakRssKiB).toFixed(0)} / ${x.otherCpuS.toFixed(1)}`)
        .join(', ');
      lines.push(`| ${w.name} | ${rt} | ${runs} |`);
    }
  }
  lines.push('', '</details>');
  return lines.join('\n');
}

/**
 * Replaces the generated section `section` of BENCHMARKS.md (between `<!-- bench:<section>:begin … -->`
 * and `<!-- bench:<section>:end -->`) with `report`, or appends the section.
 */
export async function writeReport(path: string, section: string, report: string): Promise<void> {
  const BEGIN = `<!-- bench:${section}:begin (written by \`npm run bench\`; edits inside are overwritten) -->`;
  const END = `<!-- bench:${section}:end -->`;
  const text = await readFile(path, 'utf8').catch(() => '# Benchmarks\n');
  const block = `${BEGIN}\n\n${report}\n\n${END}`;
  const b = text.indexOf(BEGIN);
  const e = text.indexOf(END);
  const next =
    b >= 0 && e > b
      ? text.slice(0, b) + block + text.slice(e + END.length)
      : `${text.trimEnd()}\n\n${block}\n`;
  await writeFile(path, next);
}
