/**
 * Admission for the helper-heavy steps of pod start-up (RunPodSandbox, CreateContainer, StartContainer).
 *
 * Those steps are mostly processes started one after another (unshare, CNI plugins, mount, conmon, runc),
 * and on a small node they are CPU-bound. Run all at once, N pods share the CPU evenly and all of them are
 * ready only at the very end (processor sharing: every pod waits about as long as the whole batch). With
 * at most `width` steps in progress, the rest queued by priority, the first pods are ready early and the
 * batch takes no longer: the CPU stays just as busy. The priority is the pod's arrival order, so the
 * containers of a pod that arrived first go before the sandboxes of pods that arrived later, and a pod
 * started by kubelet is not overtaken by its successors.
 *
 * A step that already holds a slot runs nested steps (a pause container started inside RunPodSandbox)
 * without taking another, so the gate cannot deadlock on itself.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

interface Waiter {
  priority: number;
  seq: number;
  resolve: () => void;
}

export class PriorityGate {
  private active = 0;
  private seq = 0;
  private readonly waiting: Waiter[] = [];
  private readonly holding = new AsyncLocalStorage<true>();

  /** `width` ≥ 1: how many steps may be in progress at once. */
  constructor(readonly width: number) {
    if (!Number.isSafeInteger(width) || width < 1) throw new RangeError(`gate width ${String(width)}`);
  }

  /** Steps in progress and steps queued, for diagnostics. */
  get stats(): { active: number; waiting: number } {
    return { active: this.active, waiting: this.waiting.length };
  }

  /** Runs `fn` once a slot is free; lower `priority` first, then first come first served. */
  async run<T>(priority: number, fn: () => Promise<T>): Promise<T> {
    if (this.holding.getStore()) return fn();
    await this.acquire(priority);
    try {
      return await this.holding.run(true, fn);
    } finally {
      this.release();
    }
  }

  private acquire(priority: number): Promise<void> {
    if (this.active < this.width && this.waiting.length === 0) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const w: Waiter = { priority, seq: this.seq++, resolve };
      // Few waiters (a batch of pods): an ordered insert is simpler than a heap and as fast.
      const i = this.waiting.findIndex((other) => before(w, other));
      this.waiting.splice(i < 0 ? this.waiting.length : i, 0, w);
    });
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next.resolve();
    else this.active--;
  }
}

function before(a: Waiter, b: Waiter): boolean {
  return a.priority < b.priority || (a.priority === b.priority && a.seq < b.seq);
}
