/**
 * What qsync checks about the two servers it was given, before it uses them
 * and while the consumer runs:
 * - they are two servers, the right way round (checkPair);
 * - neither may evict keys on its own, and their clocks agree (measureServers):
 *   the consumer logs these as warnings, records them in the queue's status
 *   hash for `qsync status`, and serves them as metrics.
 */
import type { Redis } from 'ioredis';
import { ConfigError } from '../../shared/errors.js';
import { QueueKeys } from '../../shared/keys.js';
import { assertDistinct, canEvict, clockOffset, evictionPolicy, type ClockOffset } from '../../shared/probe.js';

/** Where the queue lives and how the two servers are named in messages (no passwords). */
export interface PairPlace {
  prefix: string;
  queue: string;
  masterWhere: string;
  replicaWhere: string;
}

/**
 * Refuses a master and a replica that are the same server, or that look
 * swapped: the "replica" holds the queue's sequence and the "master" holds a
 * watermark of it but no queue of its own (after a failover that made the
 * old replica the master, the new master has its own sequence once written
 * to, and this does not fire).
 */
export async function checkPair(master: Redis, replica: Redis, p: PairPlace): Promise<void> {
  await assertDistinct(master, replica, p.masterWhere, p.replicaWhere);
  const keys = new QueueKeys(p.prefix, p.queue);
  // HMGET and LLEN only: what the least-privilege consumer users may run.
  const [[replicaSeq], [masterSeq], [watermark], depth] = await Promise.all([
    replica.hmget(keys.meta, 'seq'),
    master.hmget(keys.meta, 'seq'),
    master.hmget(keys.applied, 'seq'),
    master.llen(keys.log),
  ]);
  if (replicaSeq !== null && masterSeq === null && depth === 0 && watermark !== null) {
    throw new ConfigError(
      `qsync: master and replica look swapped: --replica ${p.replicaWhere} holds the sequence of queue '${p.queue}' (${keys.meta}, seq ${replicaSeq}) and --master ${p.masterWhere} holds its watermark (${keys.applied}, seq ${watermark}); swap the URLs, or delete those keys if the roles changed on purpose`,
    );
  }
}

/** What the consumer found about the two servers, as recorded for `qsync status`. */
export interface ServerReport {
  /** when measured, ms since the epoch */
  at: number;
  /** the replica's clock minus the master's, ms; null when TIME could not be run */
  clockOffsetMs: number | null;
  /** how far off the offset may be (half the round trips), ms */
  clockUncertaintyMs: number | null;
  /** above this offset (either way) the consumer warns */
  maxClockOffsetMs: number;
  /** each side's maxmemory-policy; null when the user may not read it */
  maxmemoryPolicy: { master: string | null; replica: string | null };
  /** one sentence each, empty when all is well */
  warnings: string[];
}

/** Default of --max-clock-offset-ms. */
export const MAX_CLOCK_OFFSET_MS = 1000;

/** The warnings a report carries: a side that may evict, clocks too far apart. */
export function serverWarnings(policy: ServerReport['maxmemoryPolicy'], clock: ClockOffset | null, maxClockOffsetMs: number): string[] {
  const warnings: string[] = [];
  for (const side of ['master', 'replica'] as const) {
    const p = policy[side];
    if (canEvict(p)) {
      warnings.push(
        `${side} maxmemory-policy is ${p}: when memory is full Redis removes keys on its own (${side === 'master' ? "the queue's log, or data keys with no entry written" : 'replicated keys, or the watermark'}), and the replica silently differs; set noeviction`,
      );
    }
  }
  if (clock && Math.abs(clock.offsetMs) > maxClockOffsetMs) {
    warnings.push(
      `replica clock is ${Math.abs(clock.offsetMs)} ms ${clock.offsetMs > 0 ? 'ahead of' : 'behind'} the master's (more than ${maxClockOffsetMs} ms): expiries, set on the master's clock, run out early or late on the replica`,
    );
  }
  return warnings;
}

/** Measures both servers: their eviction policies and the clock offset between them. */
export async function measureServers(master: Redis, replica: Redis, maxClockOffsetMs: number): Promise<ServerReport> {
  const [masterPolicy, replicaPolicy, clock] = await Promise.all([
    evictionPolicy(master),
    evictionPolicy(replica),
    clockOffset(master, replica).catch((err: Error) => {
      if (/NOPERM/.test(err.message)) return null;
      throw err;
    }),
  ]);
  const maxmemoryPolicy = { master: masterPolicy, replica: replicaPolicy };
  return {
    at: Date.now(),
    clockOffsetMs: clock?.offsetMs ?? null,
    clockUncertaintyMs: clock?.uncertaintyMs ?? null,
    maxClockOffsetMs,
    maxmemoryPolicy,
    warnings: serverWarnings(maxmemoryPolicy, clock, maxClockOffsetMs),
  };
}

/** Field of the queue's status hash on the master that holds the last ServerReport, as JSON. */
export const SERVERS_FIELD = 'servers';

/** The report recorded in a status hash, or null. */
export function parseServerReport(text: string | undefined): ServerReport | null {
  if (!text) return null;
  try {
    return JSON.parse(text) as ServerReport;
  } catch {
    return null;
  }
}
