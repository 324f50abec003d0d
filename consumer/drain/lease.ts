/**
 * The consumer lease: one active consumer per queue. The holder renews it
 * every third of its time; a standby takes it over once it expires. The
 * lease only says who may trim the master's log: exactly-once apply rests on
 * the replica's watermark, so two workers racing briefly cannot double apply.
 */
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { QueueKeys } from '../../shared/keys.js';

/**
 * Until when, by this process's clock, a lease of `ms` taken by a call sent
 * at `sentAt` surely holds: the server counted from no earlier than the call,
 * and a margin covers the clocks' drift over the lease.
 */
export function heldUntil(sentAt: number, ms: number): number {
  return sentAt + ms - Math.min(1000, ms / 10);
}

export class Lease {
  private validUntil = 0;
  readonly holder = `${hostname()} pid ${process.pid}`;

  constructor(
    private readonly master: Redis,
    private readonly keys: QueueKeys,
    readonly token: string,
    readonly ms: number,
  ) {}

  /**
   * Takes or renews the lease. Returns 0 when held, otherwise how long (ms)
   * the current holder still has it.
   */
  async acquire(): Promise<number> {
    const started = Date.now();
    const [held, pttl] = await this.master.qsyncLease(this.keys.lease, this.keys.status, this.token, this.ms, this.holder);
    if (held === 1) {
      // Count from before the call: the server's expiry started no earlier.
      this.validUntil = heldUntil(started, this.ms);
      return 0;
    }
    this.validUntil = 0;
    // A lease key without expiry (set by hand) would otherwise be polled in a tight loop.
    return pttl > 0 ? pttl : this.ms;
  }

  /** True while this worker surely still holds the lease. */
  valid(): boolean {
    return Date.now() < this.validUntil;
  }

  async release(): Promise<void> {
    this.validUntil = 0;
    await this.master.qsyncRelease(this.keys.lease, this.token);
  }
}

/**
 * This consumer's lease ran out and another consumer may hold it: expected
 * after this process was paused (SIGSTOP, a long GC) or cut off for longer
 * than the lease. The worker stands by.
 */
export class LeaseLost extends Error {}
