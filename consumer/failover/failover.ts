/**
 * `qsync failover`: a planned switchover of a queue's master, with no
 * acknowledged write lost, in the way of Redis's own FAILOVER command.
 *
 * 1. The replica B is marked first (fenced, naming itself): a writer that
 *    moves to B as soon as A refuses it is refused by B too, with the same
 *    FencedError, until B is the master.
 * 2. A is fenced, naming B: from that step on A logs nothing more, so its
 *    sequence read in the same step is final.
 * 3. The running consumer brings B's watermark to that sequence; if it does
 *    not within the timeout, both fences are taken back and nothing changed.
 * 4. B is promoted (shared/lua/promote-6.lua), which also ends its mark:
 *    writes to B go through from that step on, into B's own log.
 * 5. A becomes B's replica at the start of B's log, with no copy: it holds
 *    everything B held when its log started. It stays fenced, so a writer
 *    left on A keeps being told where the master is.
 * The writes were refused from step 2 to step 4: that pause is measured.
 */
import type { Redis } from 'ioredis';
import { ExitCode, NotCaughtUpError, QsyncError, RoleError } from '../../shared/errors.js';
import type { QueueKeys } from '../../shared/keys.js';
import { assertDistinct } from '../../shared/probe.js';
import { defineScripts } from '../../shared/scripts.js';
import { addRole, becomeReplica, fence, promote, readMasterRole, readReplicaRole, readRoles, unfence, type Fence, type RoleEvent } from './roles.js';

export interface FailoverOptions {
  master: Redis;
  replica: Redis;
  /** how people name each server (no passwords) */
  masterWhere: string;
  replicaWhere: string;
  keys: QueueKeys;
  /** how long the replica has to apply everything once the master is fenced */
  timeoutMs: number;
}

export interface FailoverResult {
  /** the last entry of the old master's log, applied on the new master */
  seq: number;
  fromEpoch: string;
  /** the epoch of the new master's log */
  epoch: string;
  /** how long writes were refused, ms */
  pauseMs: number;
}

/** How often the replica's watermark is read while the master is fenced. */
const POLL_MS = 2;

export async function runFailover(o: FailoverOptions): Promise<FailoverResult> {
  const { master, replica, keys, masterWhere: a, replicaWhere: b } = o;
  for (const c of [master, replica]) defineScripts(c);
  await assertDistinct(master, replica, a, b);
  const queue = `queue '${keys.queue}'`;
  const [m, r] = await Promise.all([readMasterRole(master, keys), readReplicaRole(replica, keys)]);
  if (m.seq === null || m.epoch === null)
    throw new RoleError(`qsync: failover: --master ${a} is not a master of ${queue}: it holds no log sequence (${keys.meta}); nothing changed`);
  if (m.fenced) throw new RoleError(`qsync: failover: --master ${a} is fenced already: the master of ${queue} is ${m.fenced}; nothing changed`);
  if (m.state) throw unqueued(a, m.state);
  if (r.promoted)
    throw new RoleError(`qsync: failover: --replica ${b} is a master of ${queue} already (promoted, epoch ${r.promoted}); nothing changed`);
  if (r.seq === null || r.epoch !== m.epoch)
    throw new RoleError(
      `qsync: failover: --replica ${b} is not a replica of ${queue} on ${a}: ${r.seq === null ? `it holds no watermark (${keys.applied})` : `it follows epoch ${r.epoch ?? 'none'}, the master's is ${m.epoch}`}; nothing changed`,
    );

  const mark = await fence(replica, keys, b);
  let fenced: Fence | undefined;
  let since = 0;
  let promoted: Awaited<ReturnType<typeof promote>>;
  try {
    since = performance.now();
    fenced = await fence(master, keys, b);
    if (fenced.state) throw unqueued(a, fenced.state);
    const seq = fenced.seq ?? 0;
    await caughtUp(replica, keys, seq, m.epoch, o.timeoutMs, a, b);
    const fencedEvent: RoleEvent = { event: 'fenced', server: a, newMaster: b, seq, epoch: m.epoch, at: Date.now() };
    const history = [...(await readRoles(master, keys)), fencedEvent];
    promoted = await promote(replica, keys, { server: `--replica ${b}`, from: a }, 'failover', m.epoch, history);
    await addRole(master, keys, fencedEvent);
  } catch (err) {
    // Nothing changed: each server's fence goes back to what it was.
    if (fenced) await unfence(master, keys, fenced);
    await unfence(replica, keys, mark);
    throw err;
  }
  const pauseMs = Math.round(performance.now() - since);
  await becomeReplica(master, keys, promoted.epoch);
  return { seq: promoted.atSeq, fromEpoch: promoted.fromEpoch, epoch: promoted.epoch, pauseMs };
}

/** What `qsync failover --abort` took back. */
export interface AbortResult {
  /** the master's fence, naming the replica, was removed: writes go through again */
  unfencedMaster: boolean;
  /** the replica's mark was removed */
  unmarkedReplica: boolean;
}

/**
 * Takes back a failover that stopped half-way (its process killed after
 * fencing the master, before promoting the replica): the master's fence
 * naming the replica, and the replica's mark, go. A failover that promoted
 * the replica is done, and is not taken back: the old master comes back with
 * qsync rejoin.
 */
export async function abortFailover(o: Omit<FailoverOptions, 'timeoutMs'>): Promise<AbortResult> {
  const { master, replica, keys, masterWhere: a, replicaWhere: b } = o;
  await assertDistinct(master, replica, a, b);
  const [m, r, rm] = await Promise.all([readMasterRole(master, keys), readReplicaRole(replica, keys), readMasterRole(replica, keys)]);
  if (r.promoted || rm.promotedFromEpoch !== null) {
    throw new RoleError(
      `qsync: failover --abort: --replica ${b} was promoted already, the failover is done: bring ${a} back with qsync rejoin --master ${b} --replica ${a}; nothing changed`,
    );
  }
  const unfencedMaster = m.fenced === b;
  const unmarkedReplica = rm.fenced === b;
  if (!unfencedMaster && !unmarkedReplica) {
    throw new RoleError(
      `qsync: failover --abort: no failover from ${a} to ${b} to take back (${a} is ${m.fenced ? `fenced, naming ${m.fenced}` : 'not fenced'}); nothing changed`,
    );
  }
  if (unfencedMaster) await master.hdel(keys.meta, 'fenced', 'fencedAt');
  if (unmarkedReplica) await replica.hdel(keys.meta, 'fenced', 'fencedAt');
  return { unfencedMaster, unmarkedReplica };
}

/** Writes to the master went unqueued: the replica cannot get them from the log until a repair copies them. */
class UnqueuedWritesError extends QsyncError {
  override readonly exitCode = ExitCode.repairNeeded;
}

function unqueued(a: string, state: string): UnqueuedWritesError {
  return new UnqueuedWritesError(
    `qsync: failover: writes to --master ${a} went unqueued (queue state ${state}): the replica cannot get them from the log; run qsync repair first; nothing changed`,
  );
}

/** Waits until the replica applied the master's log up to seq (and copied every key it held back). */
async function caughtUp(replica: Redis, keys: QueueKeys, seq: number, epoch: string, timeoutMs: number, a: string, b: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const r = await readReplicaRole(replica, keys);
    if (r.epoch !== null && r.epoch !== epoch)
      throw new RoleError(
        `qsync: failover: --replica ${b} began to follow another log (epoch ${r.epoch}) meanwhile; ${a} was unfenced and nothing changed`,
      );
    if (r.seq === seq && r.heldPending === 0) return;
    if (performance.now() > deadline) {
      throw new NotCaughtUpError(
        `qsync: failover: --replica ${b} applied up to seq ${r.seq ?? 0} of ${seq} within ${timeoutMs} ms (is a consumer running? qsync consume --master ${a} --replica ${b}); ${a} was unfenced and nothing changed`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
