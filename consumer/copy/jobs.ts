/**
 * Resync and repair as control jobs: a consumer runs them inside its own
 * process, pausing its worker (SyncWorker.runExclusive) so that nothing is
 * applied meanwhile, and resumes streaming after them.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { probe } from '../../shared/probe.js';
import { describeTarget } from '../../shared/config.js';
import { QueueKeys } from '../../shared/keys.js';
import type { JobContext, JobType } from '../jobs/runner.js';
import type { CopyProgress, CopyRunResult } from './run.js';
import { readUsage } from '../queue/limits.js';
import { runRepair, type RepairResult } from './repair.js';
import { RESYNC_METHODS, runResync, type ResyncMethod, type ResyncOptions } from './resync.js';

export const RESYNC_JOB = 'resync';
export const REPAIR_JOB = 'repair';

/** Settings a resync or repair job carries (the CLI's --scan-count, --big-members...). */
export interface CopyJobSettings {
  scanCount?: number;
  bigMembers?: number;
  bigBytes?: number;
  chunk?: number;
  /** resync only (--method, --replication-timeout); a job without a method copies */
  method?: ResyncMethod;
  replicationTimeoutMs?: number;
}

function settings(data: Record<string, unknown>): CopyJobSettings {
  const out: CopyJobSettings = {};
  for (const k of ['scanCount', 'bigMembers', 'bigBytes', 'chunk', 'replicationTimeoutMs'] as const)
    if (typeof data[k] === 'number') out[k] = data[k];
  if ((RESYNC_METHODS as readonly unknown[]).includes(data.method)) out.method = data.method as ResyncMethod;
  return out;
}

/** Progress goes to the job (a write on the master) at most this often. */
const PROGRESS_EVERY_MS = 1000;
/** How often a repair job looks whether the log has room again. */
const ROOM_POLL_MS = 1000;

/** Runs `run` in the worker's pause with the job's connections, settings and progress. */
function inPause<T>(data: Record<string, unknown>, ctx: JobContext, run: (o: ResyncOptions) => Promise<T>): Promise<T> {
  let last = 0;
  return ctx.worker.runExclusive((lease) =>
    run({
      ...settings(data),
      master: ctx.master,
      replica: ctx.replica,
      prefix: ctx.prefix,
      queue: ctx.queue,
      queueDb: ctx.queueDb,
      name: ctx.name,
      heldLease: lease,
      signal: ctx.signal,
      logger: ctx.log,
      onProgress: (p: CopyProgress) => {
        if (Date.now() - last < PROGRESS_EVERY_MS && p.phase !== 'done') return;
        last = Date.now();
        ctx.progress({ done: p.copied, total: p.total, phase: p.phase, replayed: p.replayed, seconds: p.seconds });
      },
    }),
  );
}

/**
 * A repair can only start once the log has room (else the next write would go
 * unqueued again); meanwhile the worker keeps draining it.
 */
async function untilRoom(ctx: JobContext): Promise<void> {
  const master = await probe({ ...ctx.master, db: ctx.queueDb }, 'master', describeTarget(ctx.master));
  const keys = new QueueKeys(ctx.prefix, ctx.queue);
  try {
    for (let logged = false; ; logged = true) {
      const usage = await readUsage(master, keys);
      if (!usage.full || usage.queueState !== 'repair-needed') return;
      if (!logged) ctx.log.info({ depth: usage.depth }, 'repair: waiting until the consumer drains the log below its cap');
      ctx.progress({ done: 0, total: usage.dirtyKeys, phase: 'waiting', replayed: 0, seconds: 0 });
      await sleep(ROOM_POLL_MS, undefined, { signal: ctx.signal });
    }
  } finally {
    master.disconnect();
  }
}

/** A resync or repair result in a few words. */
export function describeCopy(what: 'resync' | 'repair', r: CopyRunResult): string {
  const repair = what === 'repair' ? (r as RepairResult) : undefined;
  if (repair && !repair.repaired) return 'no dirty keys; nothing to repair';
  const lost =
    repair?.lost && `${repair.dirtyKeys} to repair: ${repair.lost.keys} of entries ${repair.lost.from} to ${repair.lost.to}, which the master lost`;
  const how = (r as { method?: string }).method === 'replication' ? " by Redis's full sync" : '';
  const copied = repair ? `copied ${r.copied} keys (${lost ?? `${repair.dirtyKeys} dirty`})` : `copied ${r.copied} keys${how}`;
  const again = repair?.dirtyAgain ? '; writes went unqueued again meanwhile: run the repair again' : '';
  return `${copied}, replayed ${r.replayed} entries in ${r.seconds.toFixed(1)} s; streaming from entry ${r.seq}${again}`;
}

export const resyncJob: JobType = {
  // Only the consumer holding the lease can pause its drain for the copy.
  leaseHolderOnly: true,
  run: (data, ctx) => inPause(data, ctx, runResync),
  describe: (result) => describeCopy('resync', result as CopyRunResult),
};

export const repairJob: JobType = {
  leaseHolderOnly: true,
  run: async (data, ctx) => {
    await untilRoom(ctx);
    return inPause(data, ctx, runRepair);
  },
  describe: (result) => describeCopy('repair', result as CopyRunResult),
};
