/**
 * The content store: blobs addressed by digest, verified before they are visible.
 *
 *   <root>/blobs/<alg>/<hex>      verified blobs only (a name here is a promise that the bytes hash to it)
 *   <root>/ingest/<alg>-<hex>/    one partial download: `data`, hashed and counted as it is written
 *
 * A download streams into its ingest file while being hashed; only when size and digest both match the
 * descriptor (image-spec descriptor.md: "the content MUST be verified against the digest") is it fsynced
 * and renamed into `blobs/`. A crash leaves at most an ingest dir, which `cleanup()` removes at start-up.
 * Concurrent ingests of one digest share a single download.
 */
import { createHash, randomBytes } from 'node:crypto';
import { close as closeFd, createReadStream, open as openFd, read as readFd } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SkiffError, isSkiffError, messageOf } from '../../errdefs.js';
import type { Logger } from '../../log.js';
import { diskUsage, type DiskUsage } from '../../snapshot/usage.js';
import { fsyncDir } from '../../util/atomic.js';
import { digestOf, parseDigest, type DigestAlgorithm } from './digest.js';
import { afterWrite } from '../../util/write-all.js';

export interface ContentStoreOptions {
  /** `<root>/content`. */
  root: string;
  log: Logger;
}

export interface BlobInfo {
  digest: string;
  size: number;
}

/** What a descriptor promises about a blob (image-spec descriptor.md `digest` and `size`). */
export interface ExpectedBlob {
  digest: string;
  size: number;
}

/**
 * Opens the blob's bytes, e.g. a registry GET. The signal aborts when the download is no longer wanted
 * (every caller waiting for it aborted, or verification failed early).
 */
export type BlobSource = (signal: AbortSignal) => Promise<Readable>;

export interface IngestOptions {
  signal?: AbortSignal;
  /**
   * Called with the number of bytes just received (a delta, so a pull can sum over its layers), once per
   * chunk; a caller that joins a shared download hears the chunks from then on.
   */
  onProgress?: (bytes: number) => void;
  /** Where the bytes come from, for messages: e.g. `registry.example/library/busybox`. */
  label?: string;
  /**
   * A consumer of the blob's bytes while they arrive, so a pull can unpack a layer without reading it back
   * from disk: typically a PassThrough whose other end `unpackLayer` reads. Every byte is written to it in
   * order and back-pressure is honoured (a slow consumer slows the download rather than buffering). It is
   * ended only after the blob was verified and stored, and destroyed with the error when ingesting fails,
   * so a consumer that waits for the end never acts on unverified bytes. When this call does not download
   * (the blob is already stored, or another call is downloading it), the stored blob is streamed into it
   * once complete. If the consumer goes away early, the download carries on without it.
   */
  tee?: Writable;
}

interface Download {
  promise: Promise<'present' | 'downloaded'>;
  controller: AbortController;
  participants: number;
  progress: Set<(bytes: number) => void>;
  settled: boolean;
  /** The tee of the call that started the download, while it still waits. */
  tee?: TeeSink;
}

/** Bytes gathered before one write to the ingest file: fewer, larger writes than network-sized chunks. */
const WRITE_BATCH = 1 << 20;

export class ContentStore {
  readonly root: string;
  private readonly log: Logger;
  private readonly downloads = new Map<string, Download>();
  private dirsReady: Promise<void> | undefined;

  constructor(options: ContentStoreOptions) {
    this.root = options.root;
    this.log = options.log;
  }

  /** Where the verified blob lives (whether or not it is there). Throws `invalid-argument` for a bad digest. */
  path(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.root, 'blobs', algorithm, hex);
  }

  async has(digest: string): Promise<boolean> {
    try {
      return (await stat(this.path(digest))).isFile();
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return false;
      throw err;
    }
  }

  /** The stored blob's size in bytes; `not-found` when absent. */
  async size(digest: string): Promise<number> {
    try {
      return (await stat(this.path(digest))).size;
    } catch (err) {
      throw isErrno(err, 'ENOENT') ? notFound(digest) : err;
    }
  }

  /** Streams a stored blob; the stream fails with `not-found` when it is absent. */
  open(digest: string): Readable {
    const path = this.path(digest);
    // createReadStream opens lazily; its `fs` hook lets the open error carry our kind (ENOENT is not, in
    // general, NOT_FOUND: here it is, because the caller asked for this digest).
    return createReadStream(path, {
      highWaterMark: 1 << 20,
      fs: {
        open: (
          p: string,
          flags: string,
          mode: number,
          cb: (err: NodeJS.ErrnoException | null, fd?: number) => void,
        ): void => {
          openFd(p, flags, mode, (err, fd) => {
            cb(err && err.code === 'ENOENT' ? notFound(digest) : err, fd);
          });
        },
        close: closeFd,
        read: readFd,
      },
    });
  }

  /** Reads a whole stored blob (manifests, configs: small ones). */
  async read(digest: string): Promise<Buffer> {
    try {
      return await readFile(this.path(digest));
    } catch (err) {
      throw isErrno(err, 'ENOENT') ? notFound(digest) : err;
    }
  }

  /** Removes a blob; removing an absent blob succeeds. */
  async delete(digest: string): Promise<void> {
    try {
      await unlink(this.path(digest));
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
  }

  async list(): Promise<BlobInfo[]> {
    const out: BlobInfo[] = [];
    for (const algorithm of ['sha256', 'sha512'] as const) {
      const dir = join(this.root, 'blobs', algorithm);
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if (isErrno(err, 'ENOENT')) continue;
        throw err;
      }
      for (const name of names) {
        const digest = `${algorithm}:${name}`;
        try {
          parseDigest(digest);
        } catch {
          continue; // not ours; blobs/ only ever receives renames of verified files
        }
        try {
          out.push({ digest, size: (await stat(join(dir, name))).size });
        } catch (err) {
          if (!isErrno(err, 'ENOENT')) throw err; // deleted meanwhile
        }
      }
    }
    return out;
  }

  /** Disk usage of the whole store (blobs and ingests), du-style. */
  usage(): Promise<DiskUsage> {
    return diskUsage(this.root);
  }

  /**
   * Makes the blob `expected` present and verified, downloading it from `source` unless it is stored
   * already (then it returns at once, after feeding `tee` if given). Concurrent calls for one digest share
   * one download: each caller sees its outcome, and aborting one caller's signal only detaches that caller;
   * the download stops when no caller waits any more.
   *
   * Errors: `data-loss` when the bytes do not match the descriptor's size or digest (the ingest is
   * discarded); `resource-exhausted` on ENOSPC; `canceled` on abort; the source's own SkiffError (e.g.
   * `unauthenticated`) as is, and `unavailable` for a stream that breaks mid-download. Nothing is left in
   * `ingest/` after any of them.
   */
  async ingest(expected: ExpectedBlob, source: BlobSource, options: IngestOptions = {}): Promise<void> {
    try {
      await this.ingestOrJoin(expected, source, options);
    } catch (err) {
      // Whatever failed, a consumer waiting on the tee must not wait forever.
      if (options.tee && !options.tee.destroyed) options.tee.destroy(err as Error);
      throw err;
    }
  }

  /**
   * Stores a small blob held in memory (manifest, config), verifying it against `expectedDigest` when
   * given; returns its digest. Idempotent.
   */
  async writeBlob(bytes: Uint8Array, expectedDigest?: string): Promise<string> {
    const algorithm: DigestAlgorithm = expectedDigest ? parseDigest(expectedDigest).algorithm : 'sha256';
    const digest = digestOf(bytes, algorithm);
    if (expectedDigest !== undefined && digest !== expectedDigest) {
      throw new SkiffError(
        'data-loss',
        `blob ${expectedDigest}: expected digest ${expectedDigest}, got ${digest}`,
      );
    }
    if (await this.has(digest)) return digest;
    await this.ensureDirs();
    const { hex } = parseDigest(digest);
    // A name of its own, so it never collides with a streaming ingest of the same digest.
    const dir = join(this.root, 'ingest', `${algorithm}-${hex}.${randomBytes(4).toString('hex')}`);
    try {
      await mkdir(dir);
      const data = join(dir, 'data');
      const fh = await open(data, 'wx', 0o444);
      try {
        await fh.writeFile(bytes);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(data, this.path(digest));
      await fsyncDir(join(this.root, 'blobs', algorithm));
    } catch (err) {
      throw classifyFsError(err, `write blob ${digest}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    return digest;
  }

  /**
   * Start-up: creates the layout and removes every ingest left by a previous run (partial downloads are
   * not resumed: registries need not support ranged GETs, and a layer is usually re-fetched in seconds).
   */
  async cleanup(): Promise<void> {
    await this.ensureDirs();
    const ingestRoot = join(this.root, 'ingest');
    const active = new Set([...this.downloads.keys()].map((d) => d.replace(':', '-')));
    for (const name of await readdir(ingestRoot)) {
      if (active.has(name)) continue;
      await rm(join(ingestRoot, name), { recursive: true, force: true });
      this.log.info('removed stale ingest', { ingest: name });
    }
  }

  // -------------------------------------------------------------------------------------------------------

  private async ingestOrJoin(
    expected: ExpectedBlob,
    source: BlobSource,
    options: IngestOptions,
  ): Promise<void> {
    const { digest } = expected;
    const { algorithm } = parseDigest(digest);
    if (!Number.isSafeInteger(expected.size) || expected.size < 0) {
      throw new SkiffError('invalid-argument', `blob ${digest}: size ${expected.size} is not a byte count`);
    }
    if (options.signal?.aborted) throw canceled(options.signal, `ingest blob ${digest}`);

    // Get-or-create without an await in between, so two callers can never start two downloads.
    let download = this.downloads.get(digest);
    const mine = download === undefined;
    if (download === undefined) {
      const created: Download = {
        controller: new AbortController(),
        participants: 0,
        progress: new Set(),
        settled: false,
        promise: Promise.resolve('present'),
        ...(options.tee ? { tee: new TeeSink(options.tee) } : {}),
      };
      created.promise = this.download(expected, algorithm, source, options.label, created).finally(() => {
        created.settled = true;
        if (this.downloads.get(digest) === created) this.downloads.delete(digest);
      });
      // A download whose every caller has aborted rejects with nobody listening: that is expected.
      created.promise.catch(() => undefined);
      this.downloads.set(digest, created);
      download = created;
    }

    const outcome = await this.participate(download, options, mine);
    if (options.tee && (!mine || outcome === 'present')) {
      // This call did not stream the bytes as they arrived: feed the consumer from the stored blob.
      await this.pipeStored(digest, options.tee, options.signal);
    }
  }

  private ensureDirs(): Promise<void> {
    this.dirsReady ??= (async () => {
      for (const d of ['blobs/sha256', 'blobs/sha512', 'ingest']) {
        await mkdir(join(this.root, d), { recursive: true, mode: 0o700 });
      }
    })().catch((err: unknown) => {
      this.dirsReady = undefined;
      throw classifyFsError(err, `create content store ${this.root}`);
    });
    return this.dirsReady;
  }

  /** Waits for `download` on behalf of one caller, who may abort without stopping it for the others. */
  private participate(
    download: Download,
    options: IngestOptions,
    owner: boolean,
  ): Promise<'present' | 'downloaded'> {
    download.participants += 1;
    const { onProgress, signal } = options;
    if (onProgress) download.progress.add(onProgress);
    let left = false;
    const leave = (): void => {
      if (left) return;
      left = true;
      download.participants -= 1;
      if (onProgress) download.progress.delete(onProgress);
      if (download.participants === 0 && !download.settled) {
        download.controller.abort(new SkiffError('canceled', `ingest blob: every caller cancelled`));
      }
    };
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const err = canceled(signal, 'ingest blob');
        if (owner) download.tee?.destroy(err);
        leave();
        if (download.participants > 0) {
          reject(err);
          return;
        }
        // The last caller stops the download; answer once its ingest is cleaned up.
        void download.promise.then(
          () => {
            reject(err);
          },
          () => {
            reject(err);
          },
        );
      };
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      download.promise.then(
        (v) => {
          signal?.removeEventListener('abort', onAbort);
          leave();
          resolve(v);
        },
        (err: unknown) => {
          signal?.removeEventListener('abort', onAbort);
          leave();
          reject(err instanceof Error ? err : new Error(String(err)));
        },
      );
    });
  }

  /** The one download of a digest: stream → ingest file (+ tee), verify, fsync, rename into blobs/. */
  private async download(
    expected: ExpectedBlob,
    algorithm: DigestAlgorithm,
    source: BlobSource,
    label: string | undefined,
    download: Download,
  ): Promise<'present' | 'downloaded'> {
    const { digest, size } = expected;
    const what = `blob ${digest}${label ? ` from ${label}` : ''}`;
    const signal = download.controller.signal;
    // Checked here too (not only by the caller) so a download started just after another one finished
    // does not fetch the blob again.
    if (await this.has(digest)) {
      await this.checkStoredSize(expected, what);
      return 'present';
    }
    await this.ensureDirs();
    const { hex } = parseDigest(digest);
    const ingestDir = join(this.root, 'ingest', `${algorithm}-${hex}`);
    const dataPath = join(ingestDir, 'data');
    let fh: FileHandle | undefined;
    let stream: Readable | undefined;
    let onAbort: (() => void) | undefined;
    try {
      await rm(ingestDir, { recursive: true, force: true });
      await mkdir(ingestDir);
      // Mode 0444 from the start: a verified blob is immutable; this descriptor may still write.
      fh = await open(dataPath, 'wx', 0o444);
      signal.throwIfAborted();
      stream = await abortable(source(signal), signal);
      // A source that ignores its signal must still stop: destroying the stream ends the loop below.
      const opened = stream;
      onAbort = () => opened.destroy();
      signal.addEventListener('abort', onAbort, { once: true });
      const hash = createHash(algorithm);
      let received = 0;
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      for await (const data of stream) {
        const chunk = typeof data === 'string' ? Buffer.from(data) : (data as Buffer);
        signal.throwIfAborted();
        received += chunk.length;
        if (received > size) {
          // Stop at once: a blob longer than its descriptor is wrong whatever follows.
          throw new SkiffError('data-loss', `${what}: expected size ${size}, got more than ${size} bytes`);
        }
        hash.update(chunk);
        pending.push(chunk);
        pendingBytes += chunk.length;
        const writes: Promise<unknown>[] = [];
        if (pendingBytes >= WRITE_BATCH) {
          writes.push(writeAll(fh, pending));
          pending = [];
          pendingBytes = 0;
        }
        const teeing = download.tee?.write(chunk);
        if (teeing) writes.push(teeing);
        if (writes.length > 0) await Promise.all(writes);
        for (const cb of download.progress) cb(chunk.length);
      }
      if (pending.length > 0) await writeAll(fh, pending);
      if (received !== size) {
        throw new SkiffError('data-loss', `${what}: expected size ${size}, got ${received} bytes`);
      }
      const got = `${algorithm}:${hash.digest('hex')}`;
      if (got !== digest) throw new SkiffError('data-loss', `${what}: expected digest ${digest}, got ${got}`);
      await fh.sync();
      await fh.close();
      fh = undefined;
      await rename(dataPath, this.path(digest));
      await fsyncDir(join(this.root, 'blobs', algorithm));
      download.tee?.end();
      this.log.debug('blob stored', { digest, size, source: label });
      return 'downloaded';
    } catch (err) {
      const e = signal.aborted ? canceled(signal, `ingest ${what}`) : classifyIngestError(err, what);
      download.tee?.destroy(e);
      throw e;
    } finally {
      if (onAbort) signal.removeEventListener('abort', onAbort);
      stream?.destroy();
      await fh?.close().catch(() => undefined);
      await rm(ingestDir, { recursive: true, force: true }).catch((err: unknown) => {
        this.log.warn('remove ingest failed', { ingest: ingestDir, error: messageOf(err) });
      });
    }
  }

  private async checkStoredSize(expected: ExpectedBlob, what: string): Promise<void> {
    const stored = await this.size(expected.digest);
    if (stored !== expected.size) {
      // Same digest, different size: the descriptor is wrong (the stored bytes were verified).
      throw new SkiffError(
        'data-loss',
        `${what}: expected size ${expected.size}, stored blob has ${stored} bytes`,
      );
    }
  }

  private async pipeStored(digest: string, tee: Writable, signal: AbortSignal | undefined): Promise<void> {
    try {
      await pipeline(this.open(digest), tee, ...(signal ? [{ signal }] : []));
    } catch (err) {
      if (signal?.aborted) throw canceled(signal, `read blob ${digest}`);
      if (isSkiffError(err)) throw err;
      // The consumer failed or went away: its own error is what its caller will see.
      throw new SkiffError('canceled', `read blob ${digest}: consumer stopped: ${messageOf(err)}`, {
        cause: err,
      });
    }
  }
}

/** `promise`, or a rejection as soon as `signal` aborts (a late result's stream is destroyed). */
function abortable(promise: Promise<Readable>, signal: AbortSignal): Promise<Readable> {
  return new Promise<Readable>((resolve, reject) => {
    const onAbort = (): void => {
      reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (stream) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) stream.destroy();
        resolve(stream);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/** Writes a batch of chunks fully (a short write only happens on ENOSPC; loop to surface its error). */
async function writeAll(fh: FileHandle, chunks: Buffer[]): Promise<void> {
  let buffers = chunks;
  while (buffers.length > 0) {
    const { bytesWritten } = await fh.writev(buffers);
    buffers = afterWrite(buffers, bytesWritten);
  }
}

/**
 * The consumer end of `IngestOptions.tee`: waits for 'drain' (back-pressure) and stops writing, without
 * failing the download, once the consumer errors or closes.
 */
class TeeSink {
  private dead = false;

  constructor(private readonly out: Writable) {
    const gone = (): void => {
      this.dead = true;
    };
    out.on('error', gone);
    out.on('close', gone);
  }

  write(chunk: Buffer): Promise<void> | undefined {
    if (this.dead || this.out.destroyed || this.out.writableEnded) return undefined;
    if (this.out.write(chunk)) return undefined;
    return new Promise<void>((resolve) => {
      const done = (): void => {
        this.out.off('drain', done);
        this.out.off('close', done);
        this.out.off('error', done);
        resolve();
      };
      this.out.on('drain', done);
      this.out.on('close', done);
      this.out.on('error', done);
    });
  }

  end(): void {
    if (!this.dead && !this.out.writableEnded) this.out.end();
  }

  destroy(err: Error): void {
    if (!this.out.destroyed) this.out.destroy(err);
  }
}

function notFound(digest: string): SkiffError {
  return new SkiffError('not-found', `blob ${digest} not found in the content store`);
}

function canceled(signal: AbortSignal | undefined, what: string): SkiffError {
  const reason: unknown = signal?.reason;
  if (isSkiffError(reason)) return reason;
  return new SkiffError('canceled', `${what}: cancelled`, { cause: reason });
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code !== undefined && codes.includes(code);
}

/** Our own filesystem's errors: ENOSPC/EDQUOT are resource exhaustion (design: ENOSPC while pulling). */
function classifyFsError(err: unknown, what: string): SkiffError {
  if (isSkiffError(err)) return err;
  if (isErrno(err, 'ENOSPC', 'EDQUOT')) {
    return new SkiffError(
      'resource-exhausted',
      `${what}: no space left on device: free space or raise the quota`,
      {
        cause: err,
      },
    );
  }
  return new SkiffError('internal', `${what}: ${messageOf(err)}`, { cause: err });
}

/** The syscalls of our own file handling; an error from any other came from the network stream. */
const FS_SYSCALLS = new Set([
  'open',
  'write',
  'writev',
  'fsync',
  'close',
  'rename',
  'mkdir',
  'rmdir',
  'unlink',
  'stat',
]);

/** Errors while downloading: ENOSPC is resource exhaustion, our own filesystem errors are bugs or broken
 * disks, and everything else (a reset connection, a truncated body) is the registry being unavailable. */
function classifyIngestError(err: unknown, what: string): SkiffError {
  if (isSkiffError(err)) return err;
  const syscall = (err as NodeJS.ErrnoException | undefined)?.syscall;
  if (isErrno(err, 'ENOSPC', 'EDQUOT') || (syscall !== undefined && FS_SYSCALLS.has(syscall))) {
    return classifyFsError(err, `ingest ${what}`);
  }
  return new SkiffError('unavailable', `download ${what}: ${messageOf(err)}`, { cause: err });
}
