/**
 * Sandbox records: `<root>/sandboxes/<id>/metadata.json` (immutable: what was asked for) and
 * `status.json` (mutable: what is). Written atomically; the metadata is written only once the sandbox is
 * ready (a record is written last), so a crash mid-RunPodSandbox leaves only dirs that recovery removes.
 */
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SkiffError } from '../errdefs.js';
import { writeFileAtomic } from '../util/atomic.js';

export const SANDBOX_RECORD_VERSION = 1;

export type NamespaceMode = 'pod' | 'container' | 'node' | 'target';

export interface PortMapping {
  protocol: 'tcp' | 'udp' | 'sctp';
  containerPort: number;
  hostPort: number;
  hostIp: string;
}

/** What RunPodSandbox asked for, in domain terms (the CRI adapter turns the request into this). */
export interface SandboxConfig {
  name: string;
  namespace: string;
  uid: string;
  attempt: number;
  hostname: string;
  logDirectory: string;
  dns: { servers: string[]; searches: string[]; options: string[] } | undefined;
  portMappings: PortMapping[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
  cgroupParent: string;
  sysctls: Record<string, string>;
  namespaces: { network: NamespaceMode; pid: NamespaceMode; ipc: NamespaceMode; targetId: string };
  privileged: boolean;
  runtimeHandler: string;
}

export interface SandboxMetadata {
  version: typeof SANDBOX_RECORD_VERSION;
  id: string;
  config: SandboxConfig;
  /** Unix nanoseconds, as a decimal string (beyond 2^53). */
  createdAt: string;
  /** The handler actually used (the configured default when the request named none). */
  runtimeHandler: string;
}

export interface SandboxStatus {
  version: typeof SANDBOX_RECORD_VERSION;
  state: 'ready' | 'notready';
  /** Pod IPs, v4 first. */
  ips: string[];
  /** Pinned namespace files (absent for the node's). */
  namespaces: { net?: string; ipc?: string; uts?: string; pid?: string };
  /** The process holding a shared PID namespace, with its start time to detect PID reuse. */
  infra?: { pid: number; startTime: string };
  shmPath?: string;
  /** Why a recovered sandbox is not ready, for `crictl inspectp`. */
  reason?: string;
  stoppedAt?: string;
}

export interface SandboxRecord {
  metadata: SandboxMetadata;
  status: SandboxStatus;
}

export class SandboxRecords {
  readonly dir: string;
  private readonly byId = new Map<string, SandboxRecord>();

  constructor(root: string) {
    this.dir = join(root, 'sandboxes');
  }

  /** Loads every complete record; returns the ids of dirs without metadata (interrupted runs). */
  async load(): Promise<string[]> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const orphans: string[] = [];
    for (const id of await readdir(this.dir)) {
      let metadata: SandboxMetadata;
      let status: SandboxStatus;
      try {
        metadata = JSON.parse(await readFile(join(this.dir, id, 'metadata.json'), 'utf8')) as SandboxMetadata;
        status = JSON.parse(await readFile(join(this.dir, id, 'status.json'), 'utf8')) as SandboxStatus;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          orphans.push(id);
          continue;
        }
        throw err;
      }
      for (const [what, v] of [
        ['metadata', metadata.version as unknown],
        ['status', status.version as unknown],
      ] as const) {
        if (v !== SANDBOX_RECORD_VERSION) {
          throw new SkiffError(
            'failed-precondition',
            `load sandbox ${what} ${join(this.dir, id)}: unknown version ${JSON.stringify(v)}; this skiff reads version ${SANDBOX_RECORD_VERSION}`,
          );
        }
      }
      this.byId.set(id, { metadata, status });
    }
    return orphans;
  }

  list(): SandboxRecord[] {
    return [...this.byId.values()];
  }

  get(id: string): SandboxRecord | undefined {
    return this.byId.get(id);
  }

  /**
   * The sandbox a full id or a unique prefix names, as crictl accepts. Unknown → not-found; a prefix
   * that matches several → invalid-argument listing them.
   */
  resolve(idOrPrefix: string): SandboxRecord {
    const exact = this.byId.get(idOrPrefix);
    if (exact) return exact;
    const matches = idOrPrefix
      ? [...this.byId.values()].filter((r) => r.metadata.id.startsWith(idOrPrefix))
      : [];
    if (matches.length === 1 && matches[0]) return matches[0];
    if (matches.length > 1) {
      throw new SkiffError(
        'invalid-argument',
        `pod sandbox id prefix "${idOrPrefix}" is ambiguous: it matches ${matches.map((m) => m.metadata.id.slice(0, 13)).join(', ')}; give more characters`,
      );
    }
    throw new SkiffError('not-found', `pod sandbox "${idOrPrefix}" not found`);
  }

  /** The sandbox's persistent dir (pod files live here too). */
  dirOf(id: string): string {
    return join(this.dir, id);
  }

  async writeStatus(id: string, status: SandboxStatus): Promise<void> {
    await writeFileAtomic(join(this.dirOf(id), 'status.json'), JSON.stringify(status), 0o600);
    const r = this.byId.get(id);
    if (r) r.status = status;
  }

  /** Makes the sandbox exist: status first, metadata last (its presence means "complete"). */
  async create(record: SandboxRecord): Promise<void> {
    const dir = this.dirOf(record.metadata.id);
    await writeFileAtomic(join(dir, 'status.json'), JSON.stringify(record.status), 0o600);
    await writeFileAtomic(join(dir, 'metadata.json'), JSON.stringify(record.metadata), 0o600);
    this.byId.set(record.metadata.id, record);
  }

  /** Forgets the record first, then deletes its dir (and pod files). Idempotent. */
  async remove(id: string): Promise<void> {
    this.byId.delete(id);
    await rm(join(this.dirOf(id), 'metadata.json'), { force: true });
    await rm(this.dirOf(id), { recursive: true, force: true });
  }
}
