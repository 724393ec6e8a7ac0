/**
 * Undo steps of a multi-step create, run in reverse when a later step fails (containerd's deferred
 * cleanups): a failing undo is logged and the rest still run, so a failed create leaves nothing behind.
 */
import { messageOf } from '../errdefs.js';
import type { Logger } from '../log.js';

export class Rollback {
  private readonly steps: { what: string; undo: () => Promise<void> }[] = [];
  constructor(private readonly log: Logger) {}

  add(what: string, undo: () => Promise<void>): void {
    this.steps.push({ what, undo });
  }

  async run(): Promise<void> {
    for (const step of this.steps.reverse()) {
      try {
        await step.undo();
      } catch (err) {
        this.log.error('rollback step failed', { step: step.what, error: messageOf(err) });
      }
    }
  }
}
