/**
 * `waitReplicated(numReplicas, timeoutMs)` on a Redis Cluster. Each hash slot
 * has its own log, and each replica its own watermark in each slot's
 * replicas hash (shared/lua/includes/replicas.lua), kept in the slot beside
 * its log. A replica counts once it applied, in every slot this producer
 * wrote to, the slot's log up to the sequence read right after the writes
 * (on the slot's owner, after them): every write this producer made so far,
 * as on a standalone master. A slot without entries asks for nothing; a
 * producer that logged nothing yet resolves at once with numReplicas.
 *
 * Each node tells only its own connections of writes, so no wake-ups here:
 * while someone waits, the replicas hashes of those slots are read again
 * every POLL_MS (one HGETALL a slot).
 */
import type { Cluster } from 'ioredis';
import { slotKeys } from '../shared/cluster.js';
import type { QueueKeys } from '../shared/keys.js';
import { appliedBy, checkWaitArgs, type InOrder } from './wait-replicated.js';

/** How often the replicas hashes are read while someone waits. */
const POLL_MS = 20;

/** The slots a producer wrote to, and its queue. */
interface Written {
  base: QueueKeys;
  written(): Iterable<number>;
}

/** A slot to wait on: its replicas hash, the seq to reach, and the replicas that reached it. */
interface SlotWait {
  replicas: string;
  seq: number;
  reached?: string[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class ClusterReplicationWaiter {
  constructor(
    private readonly cluster: Cluster,
    private readonly queues: Written,
    private readonly inOrder: InOrder,
  ) {}

  async wait(numReplicas: number, timeoutMs: number): Promise<number> {
    checkWaitArgs(numReplicas, timeoutMs);
    const { prefix, queue } = this.queues.base;
    const keys = [...this.queues.written()].map((slot) => slotKeys(prefix, queue, slot));
    const seqs = (await this.inOrder(() => Promise.all(keys.map((k) => this.cluster.hget(k.meta, 'seq'))))) as (string | null)[];
    const slots: SlotWait[] = [];
    keys.forEach((k, i) => {
      const seq = Number(seqs[i] ?? 0);
      if (seq > 0) slots.push({ replicas: k.replicas, seq });
    });
    // Nothing logged to wait for: every replica has all of it.
    if (slots.length === 0) return numReplicas;
    const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Number.POSITIVE_INFINITY;
    for (;;) {
      const count = await this.count(slots);
      const left = deadline - Date.now();
      if (count >= numReplicas || left <= 0 || this.cluster.status === 'end') return count;
      await sleep(Math.min(left, POLL_MS));
    }
  }

  /**
   * How many replicas reached their seq in every slot, the slots' replicas
   * hashes read again; one that cannot be read (the link, a slot moving)
   * counts as last read.
   */
  private async count(slots: SlotWait[]): Promise<number> {
    await Promise.all(
      slots.map(async (s) => {
        try {
          s.reached = appliedBy(await this.cluster.hgetall(s.replicas), s.seq);
        } catch {
          // Read again at the next round.
        }
      }),
    );
    let names: string[] | undefined;
    for (const s of slots) names = names ? names.filter((n) => s.reached?.includes(n)) : (s.reached ?? []);
    return names?.length ?? 0;
  }
}
