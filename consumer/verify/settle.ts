/**
 * Deciding what a difference verify found is: lag (gone once the consumer
 * caught up), in flight, or real.
 *
 * A chunk's reads fall between the replica's watermark read before them
 * (`from`) and the master's sequence read after them (`to`), so only entries
 * in (from, to] can explain a difference. Those entries are in the master's
 * log, unless the consumer applied and trimmed them meanwhile. So:
 * - a key that an entry of its window touches waits until the replica's
 *   watermark reaches `to`, and is compared again; if the wait runs out and
 *   it still differs, it is 'in flight';
 * - a key that no entry of its window touches, with the whole window still in
 *   the log, differs for real;
 * - while the replica needs a resync (the consumer will never apply the
 *   entries still queued), a key they touch differs for real too;
 * - otherwise (part of the window was trimmed, or the key is on one side
 *   only and that side's copy expires within the TTL tolerance, so that the
 *   other side may have expired it first by its clock) it is compared
 *   again, once that expiry has passed, a few rounds at most.
 * A key that differs in value, type or expiry is never waited out until it
 * expires: both sides would then be empty and the difference gone unseen.
 */
import { sleep } from '../drain/backoff.js';
import type { KeyDiff } from './compare.js';
import type { LogView, Window } from './log-view.js';
import { byDb } from '../../shared/entry-keys.js';

/** A difference waiting to be decided, with the window of its reads. */
export interface Pending extends Window {
  db: number;
  diff: KeyDiff;
}

export interface SettleSides {
  /** the replica's watermark now */
  watermark(): Promise<number>;
  /** the log, read for these keys */
  logView(items: Pending[]): Promise<LogView>;
  /** compares keys of a db again: those that still differ, with fresh windows */
  compare(db: number, keys: Buffer[]): Promise<Pending[]>;
  /**
   * Why the consumer will never apply the entries still queued (the replica
   * needs a resync), or undefined when it may: a difference they explain is
   * then real, not in flight.
   */
  stuck(): Promise<string | undefined>;
}

export interface SettleOptions {
  /** how long a batch of differences waits for the consumer */
  drainTimeoutMs: number;
  /** expiries this close count as equal (the clocks of the two sides may differ by this much) */
  ttlToleranceMs: number;
  signal?: AbortSignal;
  onWaiting?(w: { keys: number; watermark: number; target: number; timeoutMs: number }): void;
  /** a decided difference: in flight, or real */
  decide(p: Pending, inFlight: boolean): void;
}

/** Times a difference the log cannot account for is compared again. */
const ROUNDS = 3;
const POLL_MS = 100;

/**
 * When a key is on one side only, the time at which the side that has it
 * expires it, if that is close enough to now that the other side may have
 * expired it already (its clock within the tolerance, or the two reads on
 * either side of the moment): the difference is then compared again after
 * it. Undefined for any other difference, which is decided as it is.
 */
function expiryExplains(d: KeyDiff, toleranceMs: number): number | undefined {
  const at = d.kind === 'missing-on-replica' ? d.master.expireAt : d.kind === 'missing-on-master' ? d.replica.expireAt : null;
  return at !== null && at <= Date.now() + toleranceMs ? at : undefined;
}

export class Settler {
  /** the watermark at which a wait last ran out: the consumer is not applying */
  private stalledAt?: number;

  constructor(
    private readonly sides: SettleSides,
    private readonly o: SettleOptions,
  ) {}

  /** Decides every difference of a batch. */
  async settle(found: Pending[]): Promise<void> {
    // SCAN may return a key twice; it is one key.
    let items = [...new Map(found.map((p) => [p.id, p])).values()];
    let deadline = Date.now() + this.o.drainTimeoutMs;
    for (let round = 0; items.length > 0; round++) {
      this.o.signal?.throwIfAborted();
      const stuck = (await this.sides.stuck()) !== undefined;
      const log = await this.sides.logView(items);
      const late = Date.now() >= deadline;
      const again: Pending[] = [];
      for (const p of items) {
        if (log.explained.has(p.id)) {
          if (stuck) this.o.decide(p, false);
          else if (late) this.o.decide(p, true);
          else again.push(p);
        } else if ((!log.covers(p) || expiryExplains(p.diff, this.o.ttlToleranceMs) !== undefined) && round < ROUNDS) {
          again.push(p);
        } else {
          this.o.decide(p, false);
        }
      }
      if (again.length === 0) return;
      // A consumer that does not catch up ends the wait for this batch.
      if (!(await this.waitFor(again, stuck ? Date.now() : deadline))) deadline = Date.now();
      items = [];
      for (const [db, keys] of byDb(again.map((p) => ({ db: p.db, key: p.diff.key })))) items.push(...(await this.sides.compare(db, keys)));
    }
  }

  /**
   * Waits until the replica has applied every entry the keys' windows reach;
   * false when it did not by the deadline, or had not moved since a wait
   * that ran out before.
   */
  private async waitFor(items: Pending[], deadline: number): Promise<boolean> {
    const target = Math.max(...items.map((p) => p.to));
    let wm = await this.sides.watermark();
    if (wm < target && Date.now() < deadline) {
      if (wm === this.stalledAt) return false;
      this.o.onWaiting?.({ keys: items.length, watermark: wm, target, timeoutMs: Math.max(0, deadline - Date.now()) });
      while (wm < target && Date.now() < deadline) {
        await sleep(POLL_MS, this.o.signal);
        this.o.signal?.throwIfAborted();
        wm = await this.sides.watermark();
      }
      this.stalledAt = wm < target ? wm : undefined;
    }
    // A key on one side only, about to expire there, is compared again once it has.
    const expiries = items.map((p) => expiryExplains(p.diff, this.o.ttlToleranceMs)).filter((at): at is number => at !== undefined);
    const wait = Math.max(0, ...expiries.map((at) => at + 50 - Date.now()));
    if (wait > 0) await sleep(wait, this.o.signal);
    return wm >= target;
  }
}
