/**
 * Keys the replica held back from the stream because it had lost them while
 * the master still had them (they expired here first: lag, or a clock
 * ahead; see shared/lua/includes/held.lua). The worker copies them from the
 * master after the batch that held them, the stream going on around them:
 * each copy is read in one atomic step with the master's sequence
 * (shared/lua/resync-copy-1.lua) and restored in one step that turns the
 * keys from pending into marked (shared/lua/restore-held-1.lua), after
 * which the replica skips the entries already in the copies.
 */
import type { Cluster, Redis } from 'ioredis';
import type { QueueKeys } from '../../shared/keys.js';
import { ReplyCode } from '../../shared/reply-codes.js';
import { onSide } from './connections.js';

/** Keys per atomic copy on the master and restore on the replica. */
const CHUNK = 256;
/** Rounds of copies before giving up until the next batch (a key copied too early is copied again). */
const ROUNDS = 3;
/** Keys are copied whole, however big (held keys are few; a resync copies big keys in chunks). */
const WHOLE = 2 ** 31;

export interface HeldCopy {
  /** keys restored from the master (or deleted, gone there) */
  copied: number;
  /** keys still pending */
  pending: number;
}

/** The copy cannot be restored: the replica is being resynced, or follows another log. */
export class HeldCopyRefused extends Error {}

export class HeldKeys {
  constructor(
    private readonly master: Redis,
    private readonly replica: Redis | Cluster,
    private readonly keys: QueueKeys,
    private readonly queueDb: number,
  ) {}

  /** The pending keys, by db. */
  private async pending(): Promise<Map<number, Buffer[]>> {
    const out = new Map<number, Buffer[]>();
    let cursor = '0';
    do {
      const [next, flat] = (await onSide('replica', this.replica.hscanBuffer(this.keys.applied, cursor, 'MATCH', 'held:*', 'COUNT', 1000))) as [
        Buffer,
        Buffer[],
      ];
      cursor = next.toString();
      for (let i = 0; i < flat.length; i += 2) {
        if (flat[i + 1][0] !== 0x70 /* 'p' */) continue;
        const field = flat[i];
        const cut = field.indexOf(0x3a /* ':' */, 5);
        const db = Number(field.subarray(5, cut).toString());
        const key = field.subarray(cut + 1);
        const group = out.get(db);
        if (group) group.push(key);
        else out.set(db, [key]);
      }
    } while (cursor !== '0');
    return out;
  }

  /**
   * Copies every pending key from the master, under the master's epoch
   * `epoch`. Throws HeldCopyRefused when the replica may not take it.
   */
  async copy(epoch: string): Promise<HeldCopy> {
    let copied = 0;
    let pending = 0;
    for (let round = 0; round < ROUNDS; round++) {
      pending = 0;
      const byDb = await this.pending();
      if (byDb.size === 0) break;
      for (const [db, keys] of byDb) {
        for (let i = 0; i < keys.length; i += CHUNK) {
          const [restored, stale] = await this.copyChunk(epoch, db, keys.slice(i, i + CHUNK));
          copied += restored;
          pending += stale;
        }
      }
      if (pending === 0) break;
    }
    return { copied, pending };
  }

  private async copyChunk(epoch: string, db: number, keys: Buffer[]): Promise<[number, number]> {
    const reply = (await onSide('master', this.master.qsyncResyncCopyBuffer(this.keys.meta, this.queueDb, db, WHOLE, WHOLE, '', ...keys))) as Array<
      Buffer | number
    >;
    const [seq, masterEpoch] = [String(reply[0]), String(reply[1])];
    // A master whose history changed is caught by the drain loop itself.
    if (masterEpoch !== epoch) return [0, keys.length];
    const triples: Array<Buffer | string> = [];
    for (let i = 2; i < reply.length; i += 4) {
      const type = String(reply[i + 1]);
      triples.push(reply[i] as Buffer, String(reply[i + 3]), type === 'none' ? '' : (reply[i + 2] as Buffer));
    }
    const [code, restored, stale] = await onSide(
      'replica',
      this.replica.qsyncRestoreHeld(this.keys.applied, epoch, this.queueDb, db, seq, ...triples),
    );
    if (code === ReplyCode.resyncing) throw new HeldCopyRefused('a resync or repair of the replica is under way or did not finish');
    if (code === ReplyCode.otherLog) throw new HeldCopyRefused(`the replica follows another log (epoch ${restored})`);
    return [Number(restored), Number(stale)];
  }
}
