/**
 * SyncWorker: drains a queue from the master and applies it to the replica.
 *
 * Each batch is applied on the replica by one script that also moves the
 * replica's watermark, so a batch sent twice (after a crash, a cut link, a
 * takeover) is applied once. Entries leave the master's log only after the
 * replica confirmed them. Several batches may be in flight (the window) to
 * hide the link's round trip; they are applied and trimmed in order. An
 * entry the replica refuses halts the worker or is parked as a dead letter
 * (drain/confirm.ts).
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { QueueKeys, DEFAULT_NAME } from '../../shared/keys.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import { KeyWakeups, type Wait } from '../../shared/wake-ups.js';
import { backoffDelay, sleep, type BackoffOptions } from './backoff.js';
import { closeConnections, connect, whenReady, describeError, isLinkError, onSide, SideError, type Side } from './connections.js';
import { connectedNode } from '../../shared/probe.js';
import { Lease, LeaseLost } from './lease.js';
import { haltDetail, refusalDetail, Confirmer, type ApplyReply } from './confirm.js';
import { HeldKeys, HeldCopyRefused } from './held-keys.js';
import { Detached, describeDetached, detachedReason } from './detached.js';
import { withDefaults, type WorkerOptions } from './options.js';
import { Batch } from './batch.js';
import { isSentinel } from '../../shared/config.js';
import { describeDivergence, findDivergence, KEEP_APPLIED_SENTINEL, recordApplied } from './divergence.js';
import { ReplyCode } from '../../shared/reply-codes.js';

import {
  APPLIED_FIELDS,
  appliedAtStart,
  applyFailure,
  checkLastApplied,
  checkMaster,
  MasterLostWrites,
  promotedReason,
  ReplicaPromoted,
  ResyncNeeded,
  type LastApplied,
} from './checks.js';

export { WORKER_DEFAULTS, type WorkerOptions } from './options.js';
export { MasterLostWrites, ReplicaPromoted, ResyncNeeded } from './checks.js';

export type WorkerState = 'starting' | 'standby' | 'streaming' | 'idle' | 'backing-off' | 'halted' | 'resync-needed' | 'replica-promoted' | 'stopped';

type Outcome = { batch: Batch; reply: ApplyReply; seconds: number } | { batch: Batch; error: Error };

/**
 * A backlog is shared out over at most this many batches: enough to leave at
 * once in small batches when the queue is short, without cutting a long
 * backlog into slivers that each cost a script call on both sides.
 */
const SPREAD = 4;

const BLOCK_SECONDS = 1;

/**
 * How often a replica with nothing left to read looks again while the log
 * still holds entries other replicas need (the wait for a non-empty log
 * would return at once), when no wake-up on the log's writes can come (the
 * ACL refuses client tracking): FOLLOW_MS; else at the next write to the
 * log, and at least every FOLLOW_WAKE_MS, what a lost wake-up costs at most.
 */
const FOLLOW_MS = 10;
const FOLLOW_WAKE_MS = 100;

export class SyncWorker extends EventEmitter {
  readonly keys: QueueKeys;
  readonly id: string;
  private readonly log: Logger;
  private readonly opts: Required<Omit<WorkerOptions, 'master' | 'replica' | 'logger' | 'id' | 'backoff' | 'keepApplied'>> & {
    backoff: BackoffOptions;
  };
  /** entries the replica keeps a record of (drain/divergence.ts); 0: none */
  private readonly keepApplied: number;
  /**
   * A Sentinel group as the replica: how many replicas of the group's master
   * must hold a batch before it leaves the log; null until counted on the
   * current connection. Undefined for a replica that is no group.
   */
  private replicaCopies?: number | null;
  private readonly master: Redis;
  /** Wake-ups on the log's writes, for a replica following a log the others still hold. */
  private follow?: { wakeups: KeyWakeups; wait: Wait };
  private readonly blocker: Redis;
  private readonly replica: Redis;
  private readonly lease: Lease;
  private readonly confirmer: Confirmer;
  private readonly held: HeldKeys;
  private readonly stop = new AbortController();
  private current: WorkerState = 'starting';
  private detail: Record<string, unknown> = {};
  private stateSince = Date.now();
  /** the current state was reached while the lease was not surely held, and is not in the status yet */
  private unpublished = false;
  private running?: Promise<void>;
  private closing?: Promise<void>;
  private failures = 0;
  private lastUnexpected?: string;
  private appliedTotal = 0;
  private readonly expiry = { aligned: 0, heldBack: 0, copied: 0 };
  private watermark = 0;
  /** the last wait for entries timed out: the queue is idle */
  private waitTimedOut = false;
  /** since when this replica has had nothing to read while the log held entries other replicas need */
  private followingSince?: number;
  /** the server each side's connection is on (for a Sentinel group, its master when connected) */
  private readonly nodes: Record<Side, string> = { master: '', replica: '' };
  /** a job waiting for, or running in, the pause that runExclusive makes */
  private exclusive?: { start(): void; fail(err: Error): void; done: Promise<void> };

  constructor(options: WorkerOptions) {
    super();
    this.opts = withDefaults(options);
    this.id = options.id ?? randomUUID();
    this.keys = new QueueKeys(this.opts.prefix, this.opts.queue, this.opts.name);
    const named = this.opts.name === DEFAULT_NAME ? {} : { replica: this.opts.name };
    this.log = (options.logger ?? createLogger()).child({ queue: this.opts.queue, ...named, worker: this.id });
    const conn = { backoff: this.opts.backoff, commandTimeoutMs: this.opts.timeoutMs };
    const db = this.opts.queueDb;
    this.master = connect({ ...options.master, db }, conn, `qsync:${this.opts.queue}:master`);
    this.blocker = connect({ ...options.master, db }, conn, `qsync:${this.opts.queue}:wait`, BLOCK_SECONDS * 1000);
    this.replica = connect({ ...options.replica, db }, conn, `qsync:${this.opts.queue}:replica`);
    this.lease = new Lease(this.master, this.keys, this.id, this.opts.leaseMs);
    this.confirmer = new Confirmer(this.master, this.replica, this.keys, this.id, this.log);
    this.held = new HeldKeys(this.master, this.replica, this.keys, db);
    this.master.on('ready', () => this.noteNode('master', this.master));
    this.replica.on('ready', () => this.noteNode('replica', this.replica));
    this.keepApplied = options.keepApplied ?? (isSentinel(options.master) ? KEEP_APPLIED_SENTINEL : 0);
    if (isSentinel(options.replica)) {
      this.replicaCopies = null;
      this.replica.on('ready', () => (this.replicaCopies = null));
    }
  }

  /**
   * With a Sentinel group as the replica, waits until the group's replicas
   * hold what was applied (WAIT): a batch leaves the master's log only then,
   * so that a failover inside the group never loses an entry the log no
   * longer has. The replicas are counted once per connection: one that goes
   * away (or is promoted, its old master still up) holds the drain, the
   * batch staying in the log, until the connection moves (to the promoted
   * master) or the replica is back. Fails when they do not in time.
   */
  private async replicated(): Promise<void> {
    if (this.replicaCopies === undefined) return;
    if (this.replicaCopies === null) {
      const info = await onSide('replica', this.replica.info('replication'));
      this.replicaCopies = Number(/connected_slaves:(\d+)/.exec(info)?.[1] ?? 0);
    }
    if (this.replicaCopies === 0) return;
    const acked = await onSide('replica', this.replica.wait(this.replicaCopies, this.opts.timeoutMs));
    if (acked < this.replicaCopies) {
      throw new SideError(
        'replica',
        new Error(
          `${acked} of the replica group's ${this.replicaCopies} replicas hold the batch after ${this.opts.timeoutMs} ms; it stays in the log`,
        ),
      );
    }
  }

  /** Records and logs the server a side's connection reached, and a change of it (a Sentinel failover). */
  private noteNode(side: Side, client: Redis): void {
    const node = connectedNode(client);
    if (!node || node === this.nodes[side]) return;
    if (this.nodes[side]) this.log.warn({ side, from: this.nodes[side], to: node }, `${side} is now another server`);
    else this.log.info({ side, node }, `${side} connected`);
    this.nodes[side] = node;
    this.publish();
  }

  /** The server each side's connection is on: `host:port`, empty before the first connection. */
  get servers(): Record<Side, string> {
    return { ...this.nodes };
  }

  get state(): WorkerState {
    return this.current;
  }

  /** Entries this worker applied to the replica since it started. */
  get applied(): number {
    return this.appliedTotal;
  }

  /**
   * What bringing the replica's keys to the master's view took since this
   * worker started: keys `aligned` (deleted, or given the master's expiry),
   * commands `heldBack` (on keys the replica had lost, or already in a copy)
   * and keys `copied` from the master.
   */
  get expiryFixes(): { aligned: number; heldBack: number; copied: number } {
    return { ...this.expiry };
  }

  /** Starts the loop in the background; returns at once. */
  start(): this {
    this.running ??= this.run();
    return this;
  }

  /**
   * Finishes the batches in flight, releases the lease and disconnects.
   * Safe to call more than once.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stop.abort();
      this.blocker.disconnect();
      await this.running?.catch(() => {});
      try {
        if (this.lease.valid()) await this.lease.release();
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'could not release the lease; it expires by itself');
      }
      this.setState('stopped');
      await closeConnections([this.master, this.replica]);
    })();
    return this.closing;
  }

  private get stopping(): boolean {
    return this.stop.signal.aborted;
  }

  /** The drain loop finishes its batches in flight and reads no more: stopping, or pausing for an exclusive job. */
  private get yielding(): boolean {
    return this.stopping || this.exclusive !== undefined;
  }

  /**
   * Runs `fn` while this worker holds the lease and applies nothing: the
   * drain loop confirms its batches in flight, stops, keeps renewing the
   * lease while `fn` runs, then resumes (reading the replica's watermark
   * afresh). `fn` gets the lease's validity, to check before each step.
   * Fails if another worker holds the lease or the worker is not running.
   * close() waits for a running `fn` to end.
   */
  async runExclusive<T>(fn: (lease: { valid(): boolean }) => Promise<T>): Promise<T> {
    if (!this.running || this.stopping) throw new Error('runExclusive: the worker is not running');
    if (this.exclusive) throw new Error('runExclusive: another exclusive job is running');
    let start!: () => void;
    let fail!: (err: Error) => void;
    let finish!: () => void;
    const started = new Promise<void>((resolve, reject) => {
      start = resolve;
      fail = reject;
    });
    const done = new Promise<void>((resolve) => {
      finish = resolve;
    });
    this.exclusive = { start, fail, done };
    try {
      await started;
      return await fn({ valid: () => this.lease.valid() });
    } finally {
      this.exclusive = undefined;
      finish();
    }
  }

  /** In the drain loop's place: takes the lease and lets the exclusive job run until it ends. */
  private async holdExclusive(job: NonNullable<SyncWorker['exclusive']>): Promise<void> {
    let refusal: Error | undefined;
    try {
      const wait = await onSide('master', this.lease.acquire());
      if (wait > 0) refusal = new Error(`runExclusive: another consumer holds the lease of queue '${this.opts.queue}' for ${wait} more ms`);
    } catch (err) {
      refusal = err as Error;
    }
    if (refusal) {
      job.fail(refusal);
    } else {
      this.log.info('pausing for an exclusive job');
      job.start();
    }
    // Either way the drain loop goes on only once the job is gone.
    await job.done;
    if (refusal) return;
    this.log.info('exclusive job ended; resuming');
    // The job may have written its own state (resyncing, repairing) to the
    // status: the drain loop starts over, and says so.
    this.setState('starting');
  }

  private setState(state: WorkerState, detail: Record<string, unknown> = {}): void {
    const changed = state !== this.current;
    if (!changed && JSON.stringify(detail) === JSON.stringify(this.detail)) return;
    // A new state is logged once. A new detail in the same state is news for
    // halted or resync-needed (another entry, another reason), but only noise
    // for backing-off, where each retry may fail a little differently.
    const failed = state === 'halted' || state === 'resync-needed' || state === 'replica-promoted';
    const level = failed ? 'error' : state === 'backing-off' ? (changed ? 'warn' : 'debug') : 'info';
    this.log[level]({ state, ...(changed ? { from: this.current } : {}), ...detail }, changed ? `state ${state}` : `state ${state}, new detail`);
    this.current = state;
    this.detail = detail;
    this.emit('state', state, detail);
    this.stateSince = Date.now();
    this.publish();
  }

  /**
   * Writes the current state to the queue's status. Only the lease holder
   * speaks for the queue: a standby's state would hide the active worker's.
   * A state reached while the lease was not surely held (a slow first batch,
   * a late renewal) is written by the next renewal that holds it. Best
   * effort: status readers see it when the master is reachable.
   */
  private publish(): void {
    this.unpublished = !this.lease.valid();
    if (this.unpublished) return;
    this.master
      .hset(
        this.keys.status,
        'state',
        this.current,
        'stateSince',
        this.stateSince,
        'detail',
        JSON.stringify(this.detail),
        'consumer',
        this.id,
        'masterNode',
        this.nodes.master,
        'replicaNode',
        this.nodes.replica,
      )
      .catch(() => {});
  }

  /** Waits until a connection is ready, for at most the link timeout, or until the worker stops. */
  private ready(client: Redis): Promise<void> {
    return whenReady(client, this.opts.timeoutMs, this.stop.signal);
  }

  private async run(): Promise<void> {
    await Promise.all([this.ready(this.master), this.ready(this.replica)]);
    const renew = setInterval(() => void this.renewLease(), Math.max(100, Math.floor(this.opts.leaseMs / 3)));
    try {
      while (!this.stopping) {
        try {
          if (this.exclusive) {
            await this.holdExclusive(this.exclusive);
            continue;
          }
          const wait = await onSide('master', this.lease.acquire());
          if (wait > 0) {
            this.setState('standby');
            await sleep(Math.min(wait + 20, this.opts.leaseMs), this.stop.signal);
            continue;
          }
          // A takeover: replace the previous holder's last state in the status.
          if (this.current === 'standby') this.setState('starting');
          await this.lead();
        } catch (err) {
          await this.recover(err as Error);
        }
      }
    } finally {
      clearInterval(renew);
      // A job still waiting for its turn would wait forever (no effect on one that started).
      this.exclusive?.fail(new Error('runExclusive: the worker stopped'));
    }
  }

  private async renewLease(): Promise<void> {
    if (this.stopping) return;
    // A lease that ran out before it was renewed (this process was paused,
    // or the master was slow to answer) is taken again when it is free, and
    // a consumer that drains stops claiming to once another holds it.
    const draining = this.current === 'streaming' || this.current === 'idle';
    // Every state but these is this worker leading the queue (halted,
    // resync-needed and backing-off included): its lease must outlive a late
    // renewal, or its state would vanish from the status while it still holds.
    const leading = this.current !== 'standby' && this.current !== 'starting' && this.current !== 'stopped';
    if (!this.lease.valid() && !leading) return;
    try {
      const wait = await this.lease.acquire();
      if (wait === 0 && this.unpublished) this.publish();
      if (wait > 0) {
        this.log.warn({ heldForMs: wait }, 'lease lost to another worker');
        if (draining) this.setState('standby', { reason: 'another consumer holds the lease' });
      }
    } catch {
      // The drain loop sees the link problem and the lease runs out by itself.
    }
  }

  private async recover(err: Error): Promise<void> {
    if (this.stopping) return;
    if (err instanceof ReplicaPromoted) {
      this.setState('replica-promoted', { reason: err.message });
      await sleep(this.opts.recheckMs, this.stop.signal);
      return;
    }
    if (err instanceof MasterLostWrites) {
      this.setState('resync-needed', await this.divergence(err));
      await sleep(this.opts.recheckMs, this.stop.signal);
      return;
    }
    if (err instanceof ResyncNeeded) {
      this.setState('resync-needed', { reason: err.message });
      await sleep(this.opts.recheckMs, this.stop.signal);
      return;
    }
    if (err instanceof LeaseLost) {
      // Expected after a pause or a cut longer than the lease. The drain
      // loop takes the lease again, or stands by when another consumer has it.
      this.log.warn({ reason: err.message }, 'lease lost: this consumer was paused or cut off for longer than the lease');
      return;
    }
    // A server that refuses every write (read-only, out of memory, no
    // permission) applies nothing until someone fixes it: halted, with why,
    // and checked again every few seconds.
    const refusal = refusalDetail(err);
    if (refusal) {
      this.setState('halted', refusal);
      await sleep(this.opts.recheckMs, this.stop.signal);
      return;
    }
    this.failures++;
    const side = err instanceof SideError ? err.side : undefined;
    const reason = err instanceof SideError ? err.cause.message : err.message;
    // A broken link is expected and shows as backing-off. Anything else is
    // logged as an error, once for as long as it keeps coming back.
    const unexpected = isLinkError(err) ? undefined : reason;
    if (unexpected && unexpected !== this.lastUnexpected) this.log.error({ side, err: reason }, 'unexpected error; retrying');
    this.lastUnexpected = unexpected;
    this.setState('backing-off', { side, reason: describeError(err) });
    // A connection that is reconnecting wakes the worker as soon as it is
    // back: the link healing is noticed at the connection's next attempt.
    const down = [this.master, this.replica].filter((c) => c.status !== 'ready');
    const wake = new AbortController();
    const onReady = () => wake.abort();
    for (const c of down) c.once('ready', onReady);
    this.stop.signal.addEventListener('abort', onReady, { once: true });
    try {
      await sleep(backoffDelay(this.failures, this.opts.backoff), wake.signal);
    } finally {
      for (const c of down) c.off('ready', onReady);
      this.stop.signal.removeEventListener('abort', onReady);
    }
  }

  /** Drains while this worker holds the lease. */
  private async lead(): Promise<void> {
    const applied = appliedAtStart(await onSide('replica', this.replica.hmget(this.keys.applied, ...APPLIED_FIELDS)));
    const { epoch } = applied;
    this.watermark = applied.seq;
    await this.attach();
    // Keys left pending by a worker that stopped before it copied them.
    if (epoch && applied.heldPending > 0) await this.copyHeld(epoch);
    // The entry the replica applied last, until the master's is seen to be the same one.
    const last: LastApplied = { seq: this.watermark, ts: applied.ts, checked: false };
    let offset = 0;
    let gapSeenAt = -1;
    // The batch read with the wake-up from the wait for entries, when there is (offset 0).
    let first: Batch | undefined;
    const inflight: Promise<Outcome>[] = [];
    // Confirmations sent whose answers are not in yet, in order.
    const confirming: Promise<void>[] = [];
    try {
      // Once stopping (or pausing for an exclusive job), no new batch is
      // read, but the batches in flight are still confirmed so that what the
      // replica applied leaves the log.
      while (this.lease.valid() && (!this.yielding || inflight.length > 0)) {
        while (!this.yielding && inflight.length < this.opts.window) {
          const batch = first ?? (await this.read(offset));
          first = undefined;
          // The read went out after the trims (one connection): their answers are in.
          await settle(confirming);
          checkMaster(batch, this.watermark, epoch);
          checkLastApplied(batch, last);
          if (batch.count === 0) break;
          offset += batch.count;
          if (this.keepApplied > 0) recordApplied(this.replica, this.keys, batch.epoch, batch.entries, last.seq, this.keepApplied);
          inflight.push(this.apply(batch));
          if (batch.remaining === 0) break;
        }
        if (inflight.length === 0) {
          await settle(confirming);
          if (this.yielding) break;
          // The blocking connection reconnects on its own schedule after an outage.
          await this.ready(this.blocker);
          const woken = await this.waitForEntries();
          if (woken instanceof Batch) {
            first = woken;
          } else if (!woken) {
            // A fenced master gets no more entries: its replica may have been promoted meanwhile.
            const [promotedNow] = await onSide('replica', this.replica.hmget(this.keys.applied, 'promoted'));
            if (promotedNow) throw new ReplicaPromoted(promotedReason(promotedNow));
            this.setState('idle');
          }
          continue;
        }
        const outcome = await inflight.shift()!;
        if ('error' in outcome) throw outcome.error;
        const [code] = outcome.reply;
        if (code === ReplyCode.ok) {
          const held = Number(outcome.reply[4] ?? 0) > 0;
          if (held || this.replicaCopies !== undefined) {
            await settle(confirming);
            await this.replicated();
            await this.confirm(outcome.batch, outcome.reply, outcome.seconds);
            // Before any further batch is read: the copies then reflect every
            // entry sent to the replica so far (shared/lua/restore-held-1.lua).
            if (held) await this.copyHeld(outcome.batch.epoch);
          } else {
            // The trim goes out now and the next read right behind it: the
            // master runs them in that order, and the read's batch is used
            // only once the trim succeeded.
            const confirmed = this.confirm(outcome.batch, outcome.reply, outcome.seconds);
            // Its failure is thrown where it is settled, not as an unhandled rejection meanwhile.
            confirmed.catch(() => {});
            confirming.push(confirmed);
          }
          offset -= outcome.batch.count;
          this.failures = 0;
          this.lastUnexpected = undefined;
          continue;
        }
        // Anything but success: let the window drain, then start over from the head.
        await settle(confirming);
        await Promise.all(inflight.splice(0));
        offset = 0;
        const failure = applyFailure(outcome.reply, gapSeenAt);
        if (failure !== 'halted') {
          gapSeenAt = failure.gapAt;
          this.watermark = failure.gapAt;
        } else {
          this.setState('halted', haltDetail(outcome.reply, outcome.batch.entries, this.keys.log));
          await sleep(this.opts.recheckMs, this.stop.signal);
        }
      }
    } finally {
      await Promise.all(inflight);
      await Promise.allSettled(confirming);
    }
  }

  /** Attaches this replica to the log, where it is (includes/replicas.lua): the log keeps what it has not applied. */
  private async attach(): Promise<void> {
    const [code, why] = await onSide('master', this.master.qsyncAttach(this.keys.meta, this.keys.log, this.keys.name, 'head', this.watermark));
    if (code === ReplyCode.detached) throw new ResyncNeeded(describeDetached(why, this.keys.name));
  }

  /**
   * Waits for the next write to the log (shared/wake-ups.ts) while it holds
   * entries other replicas need, where blocking on it would return at once.
   */
  private async nextWrite(): Promise<void> {
    if (!this.follow) {
      const wakeups = new KeyWakeups(this.master);
      this.follow = { wakeups, wait: wakeups.watch([this.keys.log]) };
      await this.follow.wait.ready;
    }
    const { wakeups, wait } = this.follow;
    try {
      await wait.next(wakeups.tracking ? FOLLOW_WAKE_MS : FOLLOW_MS);
      // A link lost meanwhile is made again.
      void wakeups.cover();
    } catch {
      // The master connection closed for good: look again at the pace without wake-ups.
      this.follow = undefined;
      await sleep(FOLLOW_MS, this.stop.signal);
    }
  }

  /** The read script's arguments for the entries after the `offset` this replica read but has not confirmed yet. */
  private readArgs(offset: number): (string | number)[] {
    const { batchSize, batchBytes, window } = this.opts;
    return [this.keys.log, this.keys.meta, offset, batchSize, batchBytes, Math.min(window, SPREAD), this.keys.name, 'joined'];
  }

  /** Reads the entries after the `offset` this replica read but has not confirmed yet. */
  private async read(offset: number): Promise<Batch> {
    return this.batchOf(await onSide('master', this.master.qsyncReadBatchBuffer(...this.readArgs(offset))), offset);
  }

  /**
   * Blocks until the log is non-empty: true, or false when nothing came
   * within BLOCK_SECONDS. While writes keep coming (the last wait did not
   * time out), the first batch is read in the same round trip, the read
   * waiting behind the blocking pop on its connection: the batch then. An
   * idle queue costs the master only the blocking pop, once a second.
   */
  private async waitForEntries(): Promise<Batch | boolean> {
    const { log } = this.keys;
    // Rotating the log's head onto itself changes nothing.
    const pipeline = this.blocker.pipeline().blmove(log, log, 'LEFT', 'LEFT', BLOCK_SECONDS);
    if (!this.waitTimedOut) pipeline.qsyncReadBatchBuffer(...this.readArgs(0));
    const [[blockError, woke], read] = (await onSide('master', pipeline.exec()))!;
    if (blockError) throw new SideError('master', blockError);
    this.waitTimedOut = woke === null;
    if (this.waitTimedOut) return false;
    if (!read) return true;
    const [readError, reply] = read;
    if (readError) throw new SideError('master', readError);
    return this.batchOf(reply as Buffer[], 0);
  }

  /** The batch in a reply of the read script, read from `offset`. */
  private async batchOf(reply: Buffer[], offset: number): Promise<Batch> {
    const [epoch, seq, remaining, behind, lengths, joined] = reply;
    if (Number(remaining) < 0) throw new ResyncNeeded(await onSide('master', detachedReason(this.master, this.keys)));
    const batch = new Batch(epoch.toString(), seq.length ? Number(seq.toString()) : null, Number(remaining), lengths, joined);
    if (batch.count === 0 && offset === 0 && Number(behind) > 0) {
      // Entries other replicas still need: the wait for a non-empty log would not block.
      // Idle, as when waiting for the log, once nothing came for as long.
      this.followingSince ??= Date.now();
      if (Date.now() - this.followingSince >= BLOCK_SECONDS * 1000) this.setState('idle');
      await this.nextWrite();
    } else if (batch.count > 0) {
      this.followingSince = undefined;
    }
    return batch;
  }

  /** What diverged between a master that lost writes and the replica, for the status; the error's own words when it cannot be told. */
  private async divergence(err: MasterLostWrites): Promise<Record<string, unknown>> {
    try {
      const d = await findDivergence(this.master, this.replica, this.keys);
      if (!d) return { reason: err.message };
      const { reason, diverged } = describeDivergence(d);
      return { reason: `${err.message}; ${reason}`, diverged };
    } catch (e) {
      return { reason: err.message, diverged: `not known: ${(e as Error).message}` };
    }
  }

  private apply(batch: Batch): Promise<Outcome> {
    const sent = process.hrtime.bigint();
    const lead = [this.keys.applied, batch.epoch, String(this.opts.queueDb), this.opts.onError];
    return onSide(
      'replica',
      // A relay logs what it applies in its own queue (shared/lua/includes/relay.lua),
      // decoded from the bytes of every entry.
      this.opts.relay
        ? this.replica.qsyncApplyBatch(...lead, batch.lengths, batch.joined, this.keys.log, this.keys.meta)
        : batch.applyOn(this.replica, lead),
    ).then(
      (reply) => ({ batch, reply: reply as ApplyReply, seconds: Number(process.hrtime.bigint() - sent) / 1e9 }),
      (error: Error) => ({ batch, error }),
    );
  }

  private async confirm(batch: Batch, reply: ApplyReply, seconds: number): Promise<void> {
    const [watermark, count] = [Number(reply[1]), Number(reply[2])];
    await this.confirmer.confirm(batch, reply).catch((err: Error) => {
      throw err instanceof Detached ? new ResyncNeeded(err.message) : err;
    });
    this.watermark = watermark;
    this.appliedTotal += count;
    if (count > 0) this.emit('applied', { count, watermark, seconds });
    const [aligned, heldBack] = [Number(reply[5] ?? 0), Number(reply[6] ?? 0)];
    if (aligned + heldBack > 0) {
      this.expiry.aligned += aligned;
      this.expiry.heldBack += heldBack;
      this.emit('expiry', { aligned, heldBack, copied: 0 });
      this.log.info({ aligned, heldBack, pending: Number(reply[4] ?? 0), watermark }, "brought keys to the master's view of their expiry");
    }
    this.setState('streaming');
  }

  /** Copies the keys the replica holds pending from the master; the stream goes on after. */
  private async copyHeld(epoch: string): Promise<void> {
    try {
      const { copied, pending } = await this.held.copy(epoch);
      this.expiry.copied += copied;
      this.emit('expiry', { aligned: 0, heldBack: 0, copied });
      this.log.info({ copied, pending }, 'copied from the master keys that had expired on the replica first');
    } catch (err) {
      if (err instanceof HeldCopyRefused) throw new ResyncNeeded(err.message);
      throw err;
    }
  }
}

/** Waits for the confirmations sent so far; throws the first one's failure. */
async function settle(confirming: Promise<void>[]): Promise<void> {
  if (confirming.length > 0) await Promise.all(confirming.splice(0));
}
