/**
 * The pull benchmark's images, built with the test fixtures' OCI image builder and pushed to the loopback
 * registry. Content is deterministic (an AES-128-CTR keystream from a fixed seed), so every build yields
 * the same digests, and realistic to compress: each 4 KiB block is either raw keystream (incompressible,
 * like already-compressed data or machine code) or text drawn from a small vocabulary (like config, docs
 * and scripts), giving gzip a ratio in the range real base images show (about 2x).
 */
import { createCipheriv, createHash } from 'node:crypto';
import {
  type BuiltImage,
  type ContainerConfig,
  type LayerEntry,
  type LayerSpec,
  buildImage,
  busyboxLayer,
} from '../test/fixtures/image-builder.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Content is generated in blocks of this size, each random or text. */
const BLOCK = 4 * KiB;
/** Share of blocks that are raw keystream (the rest is text). */
const RANDOM_SHARE = 0.3;

const WORDS = (
  'the of and to in is for on with as by at from this that be are or an it not which config value return ' +
  'const function import export default string number true false null undefined usr lib share bin etc ' +
  'local include python3 node_modules package index main error warning info debug 0x7f 0000 ffff ' +
  'README LICENSE Copyright {} () [] = ; ,'
).split(' ');

/** A deterministic byte stream: the AES-128-CTR keystream of a key derived from `seed`. */
export class ByteSource {
  private readonly cipher;
  constructor(seed: string) {
    const key = createHash('sha256').update(seed).digest().subarray(0, 16);
    this.cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  }
  next(n: number): Buffer {
    return this.cipher.update(Buffer.alloc(n));
  }
  /** A uniform integer in [min, max]. */
  int(min: number, max: number): number {
    return min + (this.next(4).readUInt32LE(0) % (max - min + 1));
  }
}

/** Writes words chosen by the bytes of `r` into out[off, off+len). */
function textBlock(r: Buffer, out: Buffer, off: number, len: number): void {
  let pos = off;
  const end = off + len;
  for (let i = 0; pos < end; i = (i + 1) % r.length) {
    const b = r[i] ?? 0;
    const word = WORDS[b % WORDS.length] ?? '';
    pos += out.write(word, pos, end - pos, 'latin1');
    if (pos < end) out[pos++] = b & 0x80 ? 0x0a : 0x20;
  }
}

/** `size` bytes of mixed random and text blocks. */
export function fileContent(src: ByteSource, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  for (let off = 0; off < size; off += BLOCK) {
    const len = Math.min(BLOCK, size - off);
    const r = src.next(len);
    if ((r[0] ?? 0) < RANDOM_SHARE * 256) r.copy(out, off);
    else textBlock(r, out, off, len);
  }
  return out;
}

/** `count` files of 1–16 KiB under `dir`, 100 per subdirectory, directories listed before their files. */
function smallFiles(src: ByteSource, dir: string, count: number): LayerEntry[] {
  const entries: LayerEntry[] = [];
  const parts = dir.split('/');
  for (let i = 1; i <= parts.length; i++) entries.push({ path: parts.slice(0, i).join('/'), type: 'dir' });
  for (let i = 0; i < count; i++) {
    const sub = `${dir}/d${String(Math.floor(i / 100)).padStart(3, '0')}`;
    if (i % 100 === 0) entries.push({ path: sub, type: 'dir' });
    const size = src.int(1 * KiB, 16 * KiB);
    entries.push({
      path: `${sub}/f${String(i).padStart(5, '0')}.dat`,
      type: 'file',
      content: fileContent(src, size),
    });
  }
  return entries;
}

function largeFile(src: ByteSource, path: string, size: number): LayerEntry {
  return { path, type: 'file', content: fileContent(src, size) };
}

export interface Workload {
  name: string;
  /** One line for the report. */
  description: string;
  /** 'repo:tag' in the registry. */
  repoTag: string;
  build(): Promise<BuiltWorkload>;
}

export interface BuiltWorkload {
  image: BuiltImage;
  /** Regular files across all layers and their total size (what unpacking writes). */
  files: number;
  fileBytes: number;
  /** Sum of the layer blobs' sizes (what pulling downloads). */
  compressedBytes: number;
}

async function finish(layers: LayerSpec[], config: ContainerConfig): Promise<BuiltWorkload> {
  let files = 0;
  let fileBytes = 0;
  for (const l of layers) {
    for (const e of l.entries) {
      if (e.type !== 'file') continue;
      files++;
      fileBytes += typeof e.content === 'string' ? Buffer.byteLength(e.content) : (e.content?.length ?? 0);
    }
  }
  const image = await buildImage({ layers, config });
  const compressedBytes = image.layers.reduce((n, l) => n + l.size, 0);
  return { image, files, fileBytes, compressedBytes };
}

/**
 * "large": about 200 MiB of files in 5 gzip layers: 9,000 small files (1–16 KiB) and 4 large ones
 * (24–40 MiB), spread so that some layers are all small files, one is all large files, two are mixed.
 */
export const large: Workload = {
  name: 'large',
  description:
    '5 gzip layers, ~200 MiB uncompressed: 9,000 files of 1–16 KiB and 4 files of 24–40 MiB, ~30% incompressible blocks',
  repoTag: 'skiff-bench/large:v1',
  async build() {
    const src = new ByteSource('skiff-bench large v1');
    const layers: LayerSpec[] = [
      { entries: smallFiles(src, 'opt/bench/small-a', 3000), createdBy: 'small files a' },
      {
        entries: [
          { path: 'opt', type: 'dir' },
          { path: 'opt/bench', type: 'dir' },
          { path: 'opt/bench/big', type: 'dir' },
          largeFile(src, 'opt/bench/big/blob-1.bin', 32 * MiB),
          largeFile(src, 'opt/bench/big/blob-2.bin', 32 * MiB),
        ],
        createdBy: 'large files',
      },
      { entries: smallFiles(src, 'opt/bench/small-b', 3000), createdBy: 'small files b' },
      {
        entries: [
          ...smallFiles(src, 'opt/bench/small-c', 1000),
          largeFile(src, 'opt/bench/small-c/blob-3.bin', 40 * MiB),
        ],
        createdBy: 'mixed c',
      },
      {
        entries: [
          ...smallFiles(src, 'opt/bench/small-d', 2000),
          largeFile(src, 'opt/bench/small-d/blob-4.bin', 24 * MiB),
        ],
        createdBy: 'mixed d',
      },
    ];
    return finish(layers, { Cmd: ['/bin/sh'] });
  },
};

/** "many-layers": the busybox root filesystem plus 40 tiny layers of 5 small files each. */
export const manyLayers: Workload = {
  name: 'many-layers',
  description: 'busybox base + 40 gzip layers of 5 files (1–8 KiB) each, 41 layers',
  repoTag: 'skiff-bench/many-layers:v1',
  async build() {
    const src = new ByteSource('skiff-bench many-layers v1');
    const layers: LayerSpec[] = [{ entries: busyboxLayer(), createdBy: 'busybox rootfs' }];
    for (let l = 1; l <= 40; l++) {
      const dir = `opt/layers/${String(l).padStart(2, '0')}`;
      const entries: LayerEntry[] = [
        { path: 'opt', type: 'dir' },
        { path: 'opt/layers', type: 'dir' },
        { path: dir, type: 'dir' },
        { path: 'etc', type: 'dir' },
        // The same path in every layer: upper layers shadow lower ones, as real images do.
        { path: 'etc/bench-layer', type: 'file', content: `${l}\n` },
      ];
      for (let f = 0; f < 5; f++) {
        entries.push({
          path: `${dir}/file-${f}`,
          type: 'file',
          content: fileContent(src, src.int(1 * KiB, 8 * KiB)),
        });
      }
      layers.push({ entries, createdBy: `layer ${l}` });
    }
    return finish(layers, {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['sh'],
    });
  },
};

export const WORKLOADS: readonly Workload[] = [large, manyLayers];
