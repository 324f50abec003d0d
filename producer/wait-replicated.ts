/**
 * `waitReplicated(numReplicas, timeoutMs)`: like Redis's WAIT, across data
 * centres. Resolves with how many attached replicas applied every write this
 * producer made so far, as soon as `numReplicas` have, or when the timeout
 * passes (with fewer); a timeout of 0 waits for ever.
 *
 * The producer's last write is at or before the queue's sequence read right
 * after its writes (on the same connection, so after them). Each replica's
 * consumer records its watermark in the replicas hash when it confirms a
 * batch, which is after the replica applied it (shared/lua/includes/
 * replicas.lua). One watcher per producer reads that hash, on a connection
 * of its own, only while someone waits: nothing runs when nobody does. It
 * reads it again at each write to the hash (shared/wake-ups.ts), and at least
 * every WAKE_MS; every WATCH_MS where the ACL refuses those wake-ups.
 */
import type { Redis } from 'ioredis';
import type { QueueKeys } from '../shared/keys.js';
import { ConfigError } from '../shared/errors.js';
import { KeyWakeups, type Wait } from '../shared/wake-ups.js';

export interface WaitReplicated {
  /**
   * Waits until `numReplicas` attached replicas applied every write made
   * through this producer so far. Resolves with how many have: at least
   * `numReplicas`, or fewer when `timeoutMs` passed first (0: no timeout).
   * @example
   * await db.set('order:1', 'paid');
   * if ((await db.waitReplicated(1, 2000)) < 1) console.warn('not yet in the other data centre');
   */
  waitReplicated(numReplicas: number, timeoutMs: number): Promise<number>;
}

/** Sends a command after the writes issued before it (the producer's order). */
export type InOrder = (send: () => unknown) => unknown;

/** How often the watcher reads the replicas' watermarks while someone waits: with wake-ups on the hash's writes, and without. */
const WAKE_MS = 100;
const WATCH_MS = 10;

/** The queue's sequence, read in the queue db whatever db the connection is in (a script's SELECT ends with it). */
const READ_SEQ = "#!lua flags=no-writes\nredis.call('SELECT', ARGV[1]) return redis.call('HGET', KEYS[1], 'seq')";

interface Waiter {
  seq: number;
  want: number;
  resolve(count: number): void;
  timer?: NodeJS.Timeout;
}

/** The names of the attached replicas (a position, not 'detached:...') whose watermark is at or past seq. */
export function appliedBy(replicas: Record<string, string>, seq: number): string[] {
  return Object.keys(replicas).filter((name) => {
    const m = /^\d+:\d+:(\d+)$/.exec(replicas[name]);
    return m !== null && Number(m[1]) >= seq;
  });
}

/** How many attached replicas have a watermark at or past seq. */
function countAt(replicas: Record<string, string>, seq: number): number {
  return appliedBy(replicas, seq).length;
}

/** Throws a ConfigError for waitReplicated's arguments out of range. */
export function checkWaitArgs(numReplicas: number, timeoutMs: number): void {
  if (!Number.isInteger(numReplicas) || numReplicas < 0)
    throw new ConfigError(`waitReplicated: numReplicas must be a whole number from 0, got ${numReplicas}`);
  if (!Number.isFinite(timeoutMs) || timeoutMs < 0) throw new ConfigError(`waitReplicated: timeoutMs must be 0 or more ms, got ${timeoutMs}`);
}

export class ReplicationWaiter {
  private readonly waiters = new Set<Waiter>();
  private watcher?: Redis;
  private wakeups?: KeyWakeups;
  private woken?: Wait;
  private running = false;
  private closed = false;
  /** the replicas hash as last read */
  private last: Record<string, string> = {};

  constructor(
    private readonly client: Redis,
    private readonly keys: QueueKeys,
    private readonly queueDb: string,
    private readonly inOrder: InOrder,
  ) {
    client.once('end', () => this.close());
  }

  async wait(numReplicas: number, timeoutMs: number): Promise<number> {
    checkWaitArgs(numReplicas, timeoutMs);
    const seq = Number((await this.inOrder(() => this.client.eval(READ_SEQ, 1, this.keys.meta, this.queueDb))) ?? 0);
    // Woken by the writes to the hash from here on: none between this read and the next is missed.
    await this.wakeup().ready;
    this.last = await this.watch().hgetall(this.keys.replicas);
    const now = countAt(this.last, seq);
    if (now >= numReplicas) return now;
    return new Promise((resolve) => {
      const waiter: Waiter = { seq, want: numReplicas, resolve };
      if (timeoutMs > 0) waiter.timer = setTimeout(() => this.settle(waiter), timeoutMs);
      this.waiters.add(waiter);
      void this.run();
    });
  }

  /** The watcher's connection, made on first use, in the queue db. */
  private watch(): Redis {
    this.watcher ??= this.client.duplicate({ db: Number(this.queueDb), connectionName: `qsync:${this.keys.queue}:wait-replicated` });
    return this.watcher;
  }

  /** The wait on the hash's writes, made on first use. */
  private wakeup(): Wait {
    this.wakeups ??= new KeyWakeups(this.client);
    this.woken ??= this.wakeups.watch([this.keys.replicas]);
    return this.woken;
  }

  /** Reads the hash at each write to it until no one waits. */
  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.waiters.size > 0 && !this.closed) {
        try {
          await this.wakeup().next(this.wakeups?.tracking ? WAKE_MS : WATCH_MS);
          void this.wakeups?.cover();
        } catch {
          // The client closed for good.
          return;
        }
        try {
          this.last = await this.watch().hgetall(this.keys.replicas);
          for (const w of this.waiters) if (countAt(this.last, w.seq) >= w.want) this.settle(w);
        } catch {
          // The master cannot be reached: the waiters wait on, until their timeout.
          await new Promise((resolve) => setTimeout(resolve, WATCH_MS));
        }
      }
    } finally {
      this.running = false;
    }
  }

  /** Resolves a waiter with how many replicas had its writes when the hash was last read. */
  private settle(w: Waiter): void {
    if (!this.waiters.delete(w)) return;
    clearTimeout(w.timer);
    w.resolve(countAt(this.last, w.seq));
  }

  /** The producer's connection ended: the waiters get what is known, the watcher closes. */
  close(): void {
    this.closed = true;
    for (const w of [...this.waiters]) this.settle(w);
    this.woken?.close();
    this.watcher?.disconnect();
  }
}
