/**
 * Resync as a control job: a consumer runs it inside its own process,
 * pausing its worker (SyncWorker.runExclusive) so that nothing is applied
 * meanwhile, and resumes streaming after it.
 */
import type { JobContext, JobType } from './jobs.js';
import { runResync, type ResyncResult } from './resync.js';

export const RESYNC_JOB = 'resync';

/** Settings a resync job carries (the CLI's --scan-count, --big-members...). */
export interface ResyncJobSettings {
  scanCount?: number;
  bigMembers?: number;
  bigBytes?: number;
  chunk?: number;
}

function settings(data: Record<string, unknown>): ResyncJobSettings {
  const out: Record<string, number> = {};
  for (const k of ['scanCount', 'bigMembers', 'bigBytes', 'chunk'] as const) if (typeof data[k] === 'number') out[k] = data[k];
  return out;
}

/** Progress goes to the job (a write on the master) at most this often. */
const PROGRESS_EVERY_MS = 1000;

export const resyncJob: JobType = {
  // Only the consumer holding the lease can pause its drain for the copy.
  leaseHolderOnly: true,
  run: (data: Record<string, unknown>, ctx: JobContext) => {
    let last = 0;
    return ctx.worker.runExclusive((lease) =>
      runResync({
        ...settings(data),
        master: ctx.master,
        replica: ctx.replica,
        prefix: ctx.prefix,
        queue: ctx.queue,
        queueDb: ctx.queueDb,
        heldLease: lease,
        signal: ctx.signal,
        logger: ctx.log,
        onProgress: (p) => {
          if (Date.now() - last < PROGRESS_EVERY_MS && p.phase !== 'done') return;
          last = Date.now();
          ctx.progress({ done: p.copied, total: p.total, phase: p.phase, replayed: p.replayed, seconds: p.seconds });
        },
      }),
    );
  },
  describe: (result) => {
    const r = result as ResyncResult;
    return `copied ${r.copied} keys, replayed ${r.replayed} entries in ${r.seconds.toFixed(1)} s; streaming from entry ${r.seq}`;
  },
};
