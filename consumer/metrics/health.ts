/**
 * Liveness and readiness of a consumer, answered from its worker's state,
 * for /healthz and /readyz next to /metrics.
 *
 * Live: the process answers and its worker runs, in whatever state. A halted
 * or resync-needed worker is live: it checks again by itself, and a restart
 * would not help. Ready: the worker streams, waits for writes (idle) or
 * stands by for the lease; not while it starts, backs off, halts, needs a
 * resync or stops.
 */
import type { SyncWorker, WorkerState } from '../drain/worker.js';

export const READY_STATES: readonly WorkerState[] = ['streaming', 'idle', 'standby'];

export interface HealthReport {
  /** 200 when the check passes, 503 when it does not */
  status: 200 | 503;
  body: {
    /** the check passed */
    ok: boolean;
    state: WorkerState;
    /** why the worker is in its state, for backing-off, halted and resync-needed */
    reason: string | null;
    /** the state's details (the refused entry, the unreachable side...) */
    detail: Record<string, unknown>;
    /** when the state began, ms since the epoch */
    sinceMs: number;
  };
}

export interface WorkerHealth {
  live(): HealthReport;
  ready(): HealthReport;
}

/** Follows a worker's state changes; call before the worker can change state unseen (right after creating it). */
export function workerHealth(worker: SyncWorker): WorkerHealth {
  let detail: Record<string, unknown> = {};
  let sinceMs = Date.now();
  let last = worker.state;
  worker.on('state', (state: WorkerState, d: Record<string, unknown>) => {
    if (state !== last) sinceMs = Date.now();
    last = state;
    detail = d;
  });
  const report = (ok: boolean): HealthReport => ({
    status: ok ? 200 : 503,
    body: { ok, state: worker.state, reason: typeof detail.reason === 'string' ? detail.reason : null, detail, sinceMs },
  });
  return {
    live: () => report(worker.state !== 'stopped'),
    ready: () => report(READY_STATES.includes(worker.state)),
  };
}
