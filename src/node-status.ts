/**
 * The runtime's own readiness, as kubelet reads it from Status: RuntimeReady and NetworkReady, each with a
 * CamelCase reason and a message that tells the operator what to fix.
 */
import type { RuntimeHandlerInfo } from './oci/handlers.js';

export interface Condition {
  type: 'RuntimeReady' | 'NetworkReady';
  status: boolean;
  reason: string;
  message: string;
}

export interface NodeStatusOptions {
  defaultHandler: string;
  handlers: readonly RuntimeHandlerInfo[];
  /** Whether a pod network can be set up, with the reason when it cannot. */
  network: () => Promise<{ status: boolean; reason: string; message: string }>;
}

export class NodeStatus {
  constructor(private readonly options: NodeStatusOptions) {}

  get handlers(): readonly RuntimeHandlerInfo[] {
    return this.options.handlers;
  }

  get defaultHandler(): string {
    return this.options.defaultHandler;
  }

  async conditions(): Promise<Condition[]> {
    return [this.runtimeCondition(), { type: 'NetworkReady', ...(await this.options.network()) }];
  }

  private runtimeCondition(): Condition {
    const def = this.options.handlers.find((h) => h.name === this.options.defaultHandler);
    if (!def?.resolvedPath) {
      const bin = def?.binaryPath ?? this.options.defaultHandler;
      return {
        type: 'RuntimeReady',
        status: false,
        reason: 'RuntimeBinaryNotFound',
        message: `the default runtime handler "${this.options.defaultHandler}" needs "${bin}", which is not installed or not in PATH; install it (apt-get install ${bin === 'runsc' ? 'runsc' : 'runc'}) or set [runtimes.${this.options.defaultHandler}] binary_path`,
      };
    }
    return { type: 'RuntimeReady', status: true, reason: '', message: '' };
  }
}
