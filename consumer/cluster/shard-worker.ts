/**
 * The worker of one source master (a shard): drains the slots it owns that
 * have entries, a batch per slot in turn (fair between slots), several
 * slots at once, each slot's batches in order. A slot in trouble (halted,
 * resync-needed, promoted target) waits and is reported, loudly, while the
 * others go on; a slot that moved is left to its new owner's worker.
 */
import { EventEmitter } from 'node:events';
import type { Cluster, Redis, RedisOptions } from 'ioredis';
import type { Logger } from '../../shared/logger.js';
import { slotKeys } from '../../shared/cluster.js';
import { backoffDelay, sleep, type BackoffOptions } from '../drain/backoff.js';
import { MasterLostWrites, ReplicaPromoted, ResyncNeeded } from '../drain/checks.js';
import type { OnError } from '../drain/confirm.js';
import { refusalDetail } from '../drain/confirm.js';
import { closeConnections, connect, whenReady, describeError, isLinkError, onSide, SideError } from '../drain/connections.js';
import { LeaseLost } from '../drain/lease.js';
import type { WorkerState } from '../drain/worker.js';
import { subscribeLogs } from './log-wakeups.js';
import { SlotDrain, SlotHalted, SlotLeased, SlotMoving, type Applied } from './slot-drain.js';
import { isTopologyError, type SourceShard } from './topology.js';

/** How often the logs of every owned slot are swept for entries (a notification may be lost). */
export const SWEEP_MS = 1000;
/** How long a slot that is moving waits before it is tried again. */
const MOVING_RETRY_MS = 200;

export interface ShardWorkerOptions {
  prefix: string;
  queue: string;
  name: string;
  batchSize: number;
  batchBytes: number;
  /** slots drained at once */
  window: number;
  leaseMs: number;
  timeoutMs: number;
  recheckMs: number;
  onError: OnError;
  backoff: BackoffOptions;
  /** the consumer's id: the token of the slots' leases */
  token: string;
  log: Logger;
  /** the topology may have changed (a slot moved): read it again */
  onMoved: () => void;
}

/** A slot that waits: why, and until when. */
interface SlotTrouble {
  state: WorkerState;
  reason: string;
  until: number;
  detail?: Record<string, unknown>;
}

export interface ShardStatus {
  state: WorkerState;
  node: string;
  slots: number;
  busySlots: number;
  applied: number;
  since: number;
  detail?: Record<string, unknown>;
}

export class ShardWorker extends EventEmitter {
  private readonly master: Redis;
  private readonly subscriber: Redis;
  private readonly log: Logger;
  private readonly stop = new AbortController();
  private owned = new Set<number>();
  /** slots with entries, in the order they are drained (a slot drained goes to the back) */
  private readonly busy = new Set<number>();
  /** slots with a batch in flight */
  private readonly running = new Set<number>();
  private readonly drains = new Map<number, SlotDrain>();
  private readonly waiting = new Map<number, SlotTrouble>();
  private wake?: () => void;
  private loop?: Promise<void>;
  private closing?: Promise<void>;
  private current: WorkerState = 'starting';
  private since = Date.now();
  private reason?: string;
  private failures = 0;
  private appliedTotal = 0;
  private lastApplyAt = 0;
  private subscribed = false;
  /** when the logs of the owned slots are swept next */
  private nextSweep = 0;
  private readonly logKeys: string[] = [];

  constructor(
    readonly shard: SourceShard,
    source: RedisOptions,
    private readonly target: Redis | Cluster,
    private readonly opts: ShardWorkerOptions,
  ) {
    super();
    this.log = opts.log.child({ shard: shard.id, node: this.node });
    const options = { ...source, host: shard.host, port: shard.port, db: 0 };
    const conn = { backoff: opts.backoff, commandTimeoutMs: opts.timeoutMs };
    this.master = connect(options, conn, `qsync:${opts.queue}:shard`);
    this.subscriber = connect(options, conn, `qsync:${opts.queue}:shard-wake`);
    this.setSlots(shard.slots);
  }

  get node(): string {
    return `${this.shard.host}:${this.shard.port}`;
  }

  get applied(): number {
    return this.appliedTotal;
  }

  get state(): WorkerState {
    return this.current;
  }

  /** The slots this shard's master owns now; a slot it lost is dropped after its batch in flight. */
  setSlots(slots: number[]): void {
    this.owned = new Set(slots);
    for (const slot of [...this.drains.keys()]) if (!this.owned.has(slot) && !this.running.has(slot)) this.drains.delete(slot);
    for (const slot of this.busy) if (!this.owned.has(slot)) this.busy.delete(slot);
    for (const slot of this.waiting.keys()) if (!this.owned.has(slot)) this.waiting.delete(slot);
    this.shard.slots = slots;
  }

  /** The shard's status as the cluster's `shard-status` hash holds it. */
  status(): ShardStatus {
    const slots: Record<string, { state: WorkerState; reason: string }> = {};
    for (const [slot, t] of this.waiting) if (t.state !== 'backing-off' && t.state !== 'standby') slots[slot] = { state: t.state, reason: t.reason };
    const detail = { ...(this.reason ? { reason: this.reason } : {}), ...(Object.keys(slots).length ? { slots } : {}) };
    return {
      state: this.current,
      node: this.node,
      slots: this.owned.size,
      busySlots: this.busy.size + this.running.size,
      applied: this.appliedTotal,
      since: this.since,
      ...(Object.keys(detail).length ? { detail } : {}),
    };
  }

  start(): this {
    this.loop ??= this.run();
    return this;
  }

  /** Finishes the batches in flight, releases the slots' leases and disconnects. Safe to call more than once. */
  close(): Promise<void> {
    this.closing ??= this.shutDown();
    return this.closing;
  }

  private async shutDown(): Promise<void> {
    this.stop.abort();
    this.wake?.();
    await this.loop?.catch(() => {});
    await Promise.allSettled([...this.drains.values()].map((d) => d.release()));
    this.setState('stopped');
    await closeConnections([this.master, this.subscriber]);
  }

  private setState(state: WorkerState, reason?: string): void {
    if (state === this.current && reason === this.reason) return;
    this.current = state;
    this.reason = reason;
    this.since = Date.now();
    this.emit('state', state, reason);
  }

  private noteWrite(slot: number): void {
    if (!this.owned.has(slot)) return;
    this.busy.add(slot);
    this.wake?.();
  }

  private async run(): Promise<void> {
    await Promise.all([this.master, this.subscriber].map((c) => whenReady(c, this.opts.timeoutMs, this.stop.signal)));
    while (!this.stopping) {
      try {
        if (Date.now() >= this.nextSweep) {
          await this.subscribe();
          await this.sweep();
          this.nextSweep = Date.now() + SWEEP_MS;
        }
        if (this.nextReady() === undefined) {
          if (this.current === 'streaming' && Date.now() - this.lastApplyAt > SWEEP_MS) this.setState('idle');
          if (this.current === 'starting' || this.current === 'backing-off') this.setState('idle');
          await this.sleepUntil(Math.min(this.nextSweep, this.nextRetry()));
          continue;
        }
        // Every runner finishes its batch before a failure backs the shard off.
        const ends = await Promise.allSettled(Array.from({ length: this.opts.window }, () => this.runner()));
        const failed = ends.find((e) => e.status === 'rejected');
        if (failed) throw failed.reason;
        this.failures = 0;
      } catch (err) {
        await this.backOff(err as Error);
      }
    }
  }

  /** Subscribes to the wake-ups on the slots' logs, once; tried again at each sweep until it succeeds. */
  private async subscribe(): Promise<void> {
    if (this.subscribed) return;
    const { prefix, queue } = this.opts;
    try {
      await subscribeLogs(this.master, this.subscriber, prefix, queue, this.log, (slot) => this.noteWrite(slot));
      this.subscribed = true;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'no wake-ups on the logs yet: the sweep finds entries meanwhile');
    }
  }

  private get stopping(): boolean {
    return this.stop.signal.aborted;
  }

  /**
   * Every owned slot whose log holds entries is busy: one script call on the
   * master (shared/lua/sweep-logs-0.lua), or, when it fails (a slot moving
   * off the node), one LLEN per slot.
   */
  private async sweep(): Promise<void> {
    const slots = [...this.owned];
    const keys = slots.map((slot) => this.logKey(slot));
    try {
      const busy = await onSide('master', this.master.qsyncSweepLogs(...keys));
      for (const i of busy) this.busy.add(slots[i - 1]);
      return;
    } catch (err) {
      if (isLinkError(err)) throw err;
      if (isTopologyError((err as SideError).cause.message)) this.opts.onMoved();
    }
    const pipeline = this.master.pipeline();
    for (const key of keys) pipeline.llen(key);
    const replies = (await onSide('master', pipeline.exec())) ?? [];
    replies.forEach(([err, length], i) => {
      if (!err && Number(length) > 0) this.busy.add(slots[i]);
    });
    const linkError = replies.find(([err]) => err && isLinkError(err))?.[0];
    if (linkError) throw new SideError('master', linkError);
  }

  /** A slot's log key, made once per slot. */
  private logKey(slot: number): string {
    this.logKeys[slot] ??= slotKeys(this.opts.prefix, this.opts.queue, slot).log;
    return this.logKeys[slot];
  }

  /** The first busy slot that may be drained now (not in flight, not waiting), in turn. */
  private nextReady(): number | undefined {
    const now = Date.now();
    for (const slot of this.busy) if (!this.running.has(slot) && (this.waiting.get(slot)?.until ?? 0) <= now) return slot;
    return undefined;
  }

  private nextRetry(): number {
    let next = Number.POSITIVE_INFINITY;
    for (const slot of this.busy) next = Math.min(next, this.waiting.get(slot)?.until ?? next);
    return next;
  }

  private sleepUntil(at: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, Math.min(at - Date.now(), SWEEP_MS)));
      this.wake = done;
    });
  }

  /** Drains ready slots one batch at a time until none is ready or the sweep is due. */
  private async runner(): Promise<void> {
    for (;;) {
      if (this.stopping || Date.now() >= this.nextSweep) return;
      const slot = this.nextReady();
      if (slot === undefined) return;
      this.busy.delete(slot);
      this.running.add(slot);
      try {
        if (await this.step(slot)) this.busy.add(slot);
      } finally {
        this.running.delete(slot);
        if (!this.owned.has(slot)) this.drains.delete(slot);
      }
    }
  }

  /** One batch of a slot; true when its log holds more. A failure of the slot alone is noted and does not throw. */
  private async step(slot: number): Promise<boolean> {
    let drain = this.drains.get(slot);
    if (!drain) {
      const { batchSize, batchBytes, onError, leaseMs, token } = this.opts;
      const keys = slotKeys(this.opts.prefix, this.opts.queue, slot, this.opts.name);
      drain = new SlotDrain(slot, keys, this.master, this.target, { batchSize, batchBytes, onError, leaseMs, token, log: this.log });
      this.drains.set(slot, drain);
    }
    try {
      const more = await drain.step((applied) => this.noteApplied(slot, applied));
      this.recovered(slot);
      return more;
    } catch (err) {
      drain.restart();
      return this.slotFailed(slot, err as Error);
    }
  }

  private noteApplied(slot: number, { count, watermark, seconds }: Applied): void {
    if (count === 0) return;
    this.appliedTotal += count;
    this.lastApplyAt = Date.now();
    if (this.current !== 'streaming') this.setState('streaming');
    this.emit('applied', { slot, count, watermark, seconds });
  }

  private recovered(slot: number): void {
    const was = this.waiting.get(slot);
    if (!was) return;
    this.waiting.delete(slot);
    if (was.state !== 'backing-off') this.log.info({ slot, was: was.state }, 'slot drains again');
  }

  /** Notes why a slot waits, and for how long; link failures go up to the shard. Returns whether to keep it busy. */
  private slotFailed(slot: number, err: Error): boolean {
    const now = Date.now();
    const cause = err instanceof SideError ? err.cause : err;
    if (err instanceof SlotMoving || isTopologyError(cause.message)) {
      this.waiting.set(slot, { state: 'backing-off', reason: `the slot is moving: ${cause.message}`, until: now + MOVING_RETRY_MS });
      this.opts.onMoved();
      return true;
    }
    if (err instanceof SlotLeased) {
      this.waiting.set(slot, { state: 'standby', reason: err.message, until: now + Math.min(err.waitMs + 20, this.opts.leaseMs) });
      return true;
    }
    if (err instanceof LeaseLost) return true;
    if (isLinkError(err)) throw err;
    let trouble: Omit<SlotTrouble, 'until'>;
    if (err instanceof ReplicaPromoted) trouble = { state: 'replica-promoted', reason: err.message };
    else if (err instanceof ResyncNeeded || err instanceof MasterLostWrites) trouble = { state: 'resync-needed', reason: err.message };
    else if (err instanceof SlotHalted) trouble = { state: 'halted', reason: err.message, detail: err.detail };
    else {
      const refusal = refusalDetail(err);
      trouble = refusal ? { state: 'halted', reason: String(refusal.reason), detail: refusal } : { state: 'halted', reason: describeError(err) };
    }
    const was = this.waiting.get(slot);
    if (was?.state !== trouble.state || was.reason !== trouble.reason) {
      this.log.error(
        { slot, state: trouble.state, reason: trouble.reason, ...trouble.detail },
        `slot ${slot} is ${trouble.state}; the other slots go on`,
      );
      this.emit('slot-state', { slot, state: trouble.state, reason: trouble.reason });
    }
    this.waiting.set(slot, { ...trouble, until: now + this.opts.recheckMs });
    return true;
  }

  /** A link to the shard's master or to the target is down: every slot waits, with backoff. */
  private async backOff(err: Error): Promise<void> {
    if (this.stopping) return;
    this.failures++;
    const side = err instanceof SideError ? err.side : undefined;
    this.setState('backing-off', `${side ?? 'link'}: ${describeError(err)}`);
    if (!isLinkError(err)) this.log.warn({ side, err: err.message }, 'unexpected error; retrying');
    await sleep(backoffDelay(this.failures, this.opts.backoff), this.stop.signal);
  }
}
