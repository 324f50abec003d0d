/**
 * What `qsync resync` and `qsync repair` share on a Redis Cluster source:
 * a cluster's queue is one standalone-shaped queue per hash slot, so each
 * slot is resynced or repaired on its own by the standalone run
 * (consumer/copy/), with the source master that owns the slot as its master,
 * the target server that owns it as its replica, the slot's keys, and the
 * slot's own consumer lease (the one the cluster consumer takes to drain the
 * slot). Slots run several at a time per source shard; the progress and the
 * result are the slots' summed.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { clusterQueueKey, slotKeys, slotOf } from '../../shared/cluster.js';
import { QsyncError } from '../../shared/errors.js';
import { DEFAULT_NAME, DEFAULT_PREFIX, DEFAULT_QUEUE, type QueueKeys } from '../../shared/keys.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import { defineScripts } from '../../shared/scripts.js';
import { Lease } from '../drain/lease.js';
import type { Fail } from '../copy/log-follower.js';
import { COPY_DEFAULTS, underLease, type CopyProgress, type CopyRunOptions, type CopyRunResult, type RunContext } from '../copy/run.js';
import type { ClusterSide, Shard } from './shard-map.js';

/** Slots resynced or repaired at once per source shard. */
export const SLOTS_AT_ONCE = 8;

export interface ClusterCopyOptions extends Omit<CopyRunOptions, 'master' | 'replica' | 'queueDb' | 'heldLease'> {
  /** every master of the source cluster */
  source: ClusterSide;
  /** every master of the target cluster, or a standalone target server */
  target: ClusterSide | Redis;
  /** slots run at once per source shard. @default 8 */
  slotsAtOnce?: number;
}

/** A source shard's part of a run. */
export interface ShardFigures {
  /** `host:port` of the source master */
  address: string;
  /** slots resynced or repaired (those with nothing to do left out) */
  slots: number;
  copied: number;
  replayed: number;
}

export interface ClusterCopyResult extends Omit<CopyRunResult, 'seq'> {
  /** hash slots resynced or repaired one by one (the others had nothing to copy) */
  slots: number;
  shards: ShardFigures[];
}

/** A command sent in a pipeline: its name and arguments. */
export type Command = [string, ...(string | number)[]];

/** The replies of commands sent to one node in one pipeline; the first error fails. */
export async function pipelined(client: Redis, commands: Command[]): Promise<unknown[]> {
  if (commands.length === 0) return [];
  const pipeline = client.pipeline();
  for (const [name, ...args] of commands) pipeline.call(name, ...args);
  return ((await pipeline.exec()) ?? []).map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}

/** The server of the target that holds a slot's keys: the cluster master that owns it, or the standalone target. */
export function targetNode(target: ClusterSide | Redis, slot: number, fail: Fail): Redis {
  if (!('shards' in target)) return target;
  const owner = target.ownerOf(slot);
  if (!owner) throw fail(`no master of the target cluster serves hash slot ${slot} (CLUSTER SLOTS); fix the cluster, then run it again`);
  return owner.client;
}

/**
 * Fails, before anything changes, when a cluster consumer of the queue is
 * live: one in the queue's registry whose heartbeat has not expired by the
 * server's clock (the registry lives on the master that owns its slot).
 */
export async function refuseLiveConsumer(o: ClusterCopyOptions, what: string, fail: Fail): Promise<void> {
  const key = clusterQueueKey(o.prefix ?? DEFAULT_PREFIX, o.queue ?? DEFAULT_QUEUE, 'consumers', o.name ?? DEFAULT_NAME);
  const home = o.source.ownerOf(slotOf(key));
  if (!home) return;
  const [[sec, usec]] = (await pipelined(home.client, [['TIME']])) as [[string, string]];
  const now = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
  const live = await home.client.zcount(key, `(${now}`, '+inf');
  if (live > 0)
    throw fail(
      `${live} consumer(s) of queue '${o.queue ?? DEFAULT_QUEUE}' run on this cluster; stop them first (the ${what} takes every slot's lease)`,
    );
}

/** The slots' progress summed: those finished, and those under way. */
class SummedProgress {
  private readonly progress: CopyProgress = { phase: 'copy', copied: 0, total: 0, replayed: 0, seconds: 0 };
  private readonly running = new Map<number, CopyProgress>();
  private readonly started = Date.now();

  constructor(
    total: number,
    private readonly onProgress?: (p: CopyProgress) => void,
  ) {
    this.progress.total = total;
  }

  update(slot: number, p: CopyProgress): void {
    this.running.set(slot, p);
    this.report();
  }

  finished(slot: number, copied: number, replayed: number): void {
    this.running.delete(slot);
    this.progress.copied += copied;
    this.progress.replayed += replayed;
  }

  report(phase: CopyProgress['phase'] = 'copy'): void {
    let [copied, replayed] = [this.progress.copied, this.progress.replayed];
    for (const p of this.running.values()) [copied, replayed] = [copied + p.copied, replayed + p.replayed];
    const seconds = (Date.now() - this.started) / 1000;
    this.onProgress?.({ phase, copied, total: Math.max(this.progress.total, copied), replayed, seconds });
  }
}

/**
 * Runs `body`, turning an unexpected failure (a server gone, a slot that
 * moved since the slot map was read: MOVED, ASK) into the run's own error.
 */
export async function failingAs<T>(what: string, fail: Fail, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof QsyncError) throw err;
    throw fail(`${(err as Error).message}; slots not finished stay marked: run the ${what} again (after a reshard, once it is done)`);
  }
}

/** What a run does with one slot, given its connections and lease; the figures it reports. */
export type SlotRun = (ctx: RunContext, options: CopyRunOptions, slot: number) => Promise<CopyRunResult>;

/**
 * Runs `run` on each of `slots` (per source shard), several at a time per
 * shard, each under its slot's lease; the first failure stops the others at
 * their next step and is thrown, naming its slot. `total`: keys to copy in
 * all, for the progress.
 */
export async function runSlots(
  o: ClusterCopyOptions,
  what: 'resync' | 'repair',
  fail: Fail,
  slots: Map<Shard, number[]>,
  total: number,
  run: SlotRun,
): Promise<ClusterCopyResult> {
  const started = Date.now();
  const log = o.logger ?? createLogger('silent');
  const progress = new SummedProgress(total, o.onProgress);
  const stop = new AbortController();
  o.signal?.addEventListener('abort', () => stop.abort(), { once: true });
  const token = `${what}-${randomUUID()}`;
  const leaseMs = o.leaseMs ?? COPY_DEFAULTS.leaseMs;
  const result: ClusterCopyResult = { copied: 0, replayed: 0, skipped: 0, recopies: 0, seconds: 0, slots: 0, shards: [] };
  let failure: QsyncError | undefined;

  const one = async (shard: Shard, slot: number, figures: ShardFigures): Promise<void> => {
    const keys = slotKeys(o.prefix ?? DEFAULT_PREFIX, o.queue ?? DEFAULT_QUEUE, slot, o.name);
    const options: CopyRunOptions = {
      ...o,
      master: {},
      replica: {},
      queueDb: 0,
      signal: stop.signal,
      // One line per slot would flood the log: a slot's warnings only.
      logger: slotLogger(log, slot),
      onProgress: (p) => progress.update(slot, p),
    };
    const busy = (wait: number) =>
      fail(`a consumer holds the lease of hash slot ${slot} of queue '${keys.queue}' (for ${wait} more ms); stop it first`);
    const done = await underLease(new Lease(shard.client, keys, token, leaseMs), busy, (lease) =>
      run(contextOf(shard, o.target, slot, keys, lease, fail), options, slot),
    );
    progress.finished(slot, done.copied, done.replayed);
    result.copied += done.copied;
    result.replayed += done.replayed;
    result.skipped += done.skipped;
    result.recopies += done.recopies;
    result.slots++;
    figures.slots++;
    figures.copied += done.copied;
    figures.replayed += done.replayed;
  };

  const worker = async (shard: Shard, queue: number[], figures: ShardFigures): Promise<void> => {
    for (let slot = queue.shift(); slot !== undefined && !stop.signal.aborted; slot = queue.shift()) {
      try {
        await one(shard, slot, figures);
      } catch (err) {
        // The first failure is the one to report; the others follow from stopping.
        failure ??= inSlot(err, slot, what, fail);
        stop.abort();
      }
    }
  };

  await Promise.all(
    [...slots].map(([shard, list]) => {
      defineScripts(shard.client);
      const figures: ShardFigures = { address: shard.address, slots: 0, copied: 0, replayed: 0 };
      result.shards.push(figures);
      const queue = [...list];
      const workers = Math.min(o.slotsAtOnce ?? SLOTS_AT_ONCE, queue.length);
      return Promise.all(Array.from({ length: workers }, () => worker(shard, queue, figures)));
    }),
  );
  if (failure) throw failure;
  if (o.signal?.aborted) throw fail(`interrupted; the replica stays marked, run the ${what} again`);
  result.seconds = (Date.now() - started) / 1000;
  progress.report('done');
  return result;
}

function contextOf(shard: Shard, target: ClusterSide | Redis, slot: number, keys: QueueKeys, lease: Lease, fail: Fail): RunContext {
  const replica = targetNode(target, slot, fail);
  defineScripts(replica);
  return { master: shard.client, scanner: shard.client, replica, keys, queueDb: 0, lease, declareKeys: 'shards' in target };
}

function slotLogger(log: Logger, slot: number): Logger {
  const child = log.child({ slot });
  if (log.isLevelEnabled('info')) child.level = 'warn';
  return child;
}

/** A slot's failure as the command's error, naming the slot: `qsync: <what>: slot N: ...`. */
function inSlot(err: unknown, slot: number, what: string, fail: Fail): QsyncError {
  if (!(err instanceof QsyncError)) return fail(`slot ${slot}: ${(err as Error).message}; the replica stays marked, run the ${what} again`);
  const lead = `qsync: ${what}: `;
  if (err.message.startsWith(lead)) err.message = `${lead}slot ${slot}: ${err.message.slice(lead.length)}`;
  return err;
}
