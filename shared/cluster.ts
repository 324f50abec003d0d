/**
 * Redis Cluster: which hash slot a key lives in, and qsync's keys per slot.
 *
 * A write and its log entry must stay one atomic script, and a script in a
 * cluster touches one slot: so a cluster's queue is one log per hash slot,
 * its keys carrying a hash tag that lands on that slot
 * (`<prefix>:{<tag>}:<queue>:log`). Everything the standalone queue keeps
 * (meta, lease, applied watermark, dead letters...) exists per slot the same
 * way, so the scripts that serve one queue serve one slot unchanged.
 */
import calculateSlot from 'cluster-key-slot';
import { QueueKeys, DEFAULT_NAME } from './keys.js';

/** Hash slots of a Redis Cluster. */
export const SLOTS = 16_384;

/** The hash slot of a key (CRC16 of the key or of its hash tag, mod 16384). */
export function slotOf(key: string | Buffer): number {
  return calculateSlot(key);
}

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';
let tags: string[] | undefined;

/**
 * The shortest tag (lowest in base-36 order among the shortest) whose hash
 * lands on each slot, computed once (about 40 ms): strings of up to three
 * characters cover all but a few slots, four characters the rest.
 */
function slotTags(): string[] {
  if (tags) return tags;
  const found: string[] = new Array(SLOTS);
  let missing = SLOTS;
  for (let length = 1; missing > 0; length++) {
    const total = ALPHABET.length ** length;
    for (let n = 0; n < total && missing > 0; n++) {
      let tag = '';
      for (let i = 0, v = n; i < length; i++, v = Math.floor(v / ALPHABET.length)) tag = ALPHABET[v % ALPHABET.length] + tag;
      const slot = calculateSlot(tag);
      if (found[slot] === undefined) {
        found[slot] = tag;
        missing--;
      }
    }
  }
  tags = found;
  return found;
}

/** The hash tag of a slot: a key containing `{<tag>}` lives in that slot. */
export function slotTag(slot: number): string {
  if (!Number.isInteger(slot) || slot < 0 || slot >= SLOTS) throw new RangeError(`slot ${slot} is not a hash slot (0 to ${SLOTS - 1})`);
  return slotTags()[slot];
}

/** The prefix of a slot's qsync keys: `<prefix>:{<tag>}`. */
export function slotPrefix(prefix: string, slot: number): string {
  return `${prefix}:{${slotTag(slot)}}`;
}

/** A queue's keys for one hash slot: the same names as a standalone queue's, under the slot's prefix. */
export function slotKeys(prefix: string, queue: string, slot: number, name: string = DEFAULT_NAME): QueueKeys {
  return new QueueKeys(slotPrefix(prefix, slot), queue, name);
}

/** The slot a key of qsync's per-slot namespace (`<prefix>:{<tag>}:...`) belongs to, or null for any other key. */
export function slotOfOwnKey(prefix: string, key: string): number | null {
  if (!key.startsWith(`${prefix}:{`)) return null;
  const end = key.indexOf('}', prefix.length + 2);
  if (end < 0) return null;
  const slot = slotOf(key);
  return slotTag(slot) === key.slice(prefix.length + 2, end) ? slot : null;
}

/**
 * A key of a cluster queue as a whole (not of one slot): the consumers'
 * registry, the shard leases, the shards' status. All of them share the hash
 * tag `{<queue>:cluster}` (never a slot tag, which has no colon), so they live
 * in one slot together: the one part of qsync every shard's worker touches,
 * a few times per lease period, never per entry. A named replica's keys carry
 * its name as a suffix, as a standalone queue's do.
 */
export function clusterQueueKey(prefix: string, queue: string, type: 'consumers' | 'shards' | 'shard-status', name: string = DEFAULT_NAME): string {
  return `${prefix}:{${queue}:cluster}:${type}${name === DEFAULT_NAME ? '' : `:${name}`}`;
}
