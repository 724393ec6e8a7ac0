/**
 * Container states and what each verb may do in them (CRI ContainerState):
 *
 *            CreateContainer            StartContainer             process exits / StopContainer
 *   (none) ──────────────────▶ created ────────────────▶ running ──────────────────────────────▶ exited
 *                                 │                                                                 │
 *                                 └────────── StopContainer (never started: marked exited) ─────────┤
 *                                                                                                    ▼
 *                                 RemoveContainer from any state (a running one is killed first) ▶ (none)
 *
 * `unknown` is a recovered container whose runtime state could not be read; Stop and Remove still work.
 */
import type { ContainerState } from './record.js';

export function canStart(s: ContainerState): boolean {
  return s === 'created';
}

/** Stop of an exited container is not an error (CRI contract); it is simply nothing to do. */
export function needsStop(s: ContainerState): boolean {
  return s === 'running' || s === 'created' || s === 'unknown';
}

export function canExec(s: ContainerState): boolean {
  return s === 'running';
}

export function canReopenLog(s: ContainerState): boolean {
  return s === 'running';
}
