/**
 * Whether the replica can still catch up from the queue, as verify sees it:
 * while it needs a resync, the entries still queued will never be applied,
 * so a key they touch differs for real rather than being in flight. The
 * same conditions the consumer stops on (drain/worker.ts), read from both
 * sides, and the consumer's own report when it is running.
 */
import type { Redis } from 'ioredis';
import { decodeEntry } from '../../shared/entry.js';
import type { QueueKeys } from '../../shared/keys.js';
import { markKind } from '../drain/mark.js';

/** The first entry's sequence number in the log, or undefined (empty, or not an entry). */
async function headSeq(master: Redis, keys: QueueKeys): Promise<number | undefined> {
  const head = await master.lindexBuffer(keys.log, 0);
  try {
    return head ? decodeEntry(head).seq : undefined;
  } catch {
    return undefined;
  }
}

/** Why the replica needs a resync, or undefined when the consumer may still bring it up to date. */
export async function resyncNeeded(master: Redis, replica: Redis, keys: QueueKeys): Promise<string | undefined> {
  const [[seq, epoch, resyncing], [masterSeq, masterEpoch], [state, detail, consumer], lease, first] = await Promise.all([
    replica.hmget(keys.applied, 'seq', 'epoch', 'resyncing'),
    master.hmget(keys.meta, 'seq', 'epoch'),
    master.hmget(keys.status, 'state', 'detail', 'consumer'),
    master.get(keys.lease),
    headSeq(master, keys),
  ]);
  if (resyncing) return `a ${markKind(resyncing)} of the replica started and did not finish`;
  if (state === 'resync-needed' && lease !== null && (consumer === null || consumer === lease)) {
    try {
      const reason = (JSON.parse(detail ?? '{}') as { reason?: unknown }).reason;
      if (typeof reason === 'string') return reason;
    } catch {
      // a detail that is not JSON: the state alone says it
    }
    return 'the consumer reports resync-needed';
  }
  const watermark = Number(seq ?? 0);
  if (epoch && masterEpoch && epoch !== masterEpoch) return `the replica follows another log (epoch ${epoch}, the master's ${masterEpoch})`;
  if (watermark > Number(masterSeq ?? 0)) return `the master's sequence (${masterSeq ?? 0}) is behind the replica's watermark (${watermark})`;
  if (first !== undefined && first > watermark + 1) return `entries ${watermark + 1} to ${first - 1} are gone from the master's log`;
  return undefined;
}
