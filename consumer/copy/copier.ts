/**
 * Copies keys from the master to the replica for a resync, each exactly as
 * it was after a known log entry (the seq returned with it).
 *
 * Small keys travel whole (DUMP, RESTORE ... ABSTTL), a batch of them in one
 * atomic read on the master, packed there and passed on to the replica as
 * one value. A big key is first copied to a snapshot key on
 * the master in one atomic step, then read from the snapshot in chunks into a
 * temporary key on the replica that replaces the key at the end: writers
 * keep changing the original meanwhile, and this process never holds the
 * key whole.
 */
import type { Redis } from 'ioredis';
import type { QueueKeys } from '../../shared/keys.js';
import type { Fail } from './log-follower.js';

export interface CopyLimits {
  /** a key with more members than this is copied in chunks. @default 10000 */
  bigMembers: number;
  /** a key bigger than this (bytes, MEMORY USAGE) is copied in chunks. @default 8388608 (8 MiB) */
  bigBytes: number;
  /** members read from the snapshot per round trip. @default 2000 */
  chunk: number;
}

/** Bytes of a big string read per round trip. */
const STRING_CHUNK = 1024 * 1024;

export class Copier {
  /** the master's epoch, once known */
  private epoch = '';
  private lastSeq = 0;
  private readonly snapshot: string;
  private readonly tmp: string;
  /** the last batch written to the replica, still on its way while the next batch is read */
  private writing: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly master: Redis,
    private readonly replica: Redis,
    private readonly keys: QueueKeys,
    private readonly queueDb: number,
    private readonly fail: Fail,
    private readonly limits: CopyLimits,
    /** the replica is a Redis Cluster node: writes to it declare their keys (RunContext.declareKeys) */
    private readonly declareKeys = false,
  ) {
    this.snapshot = keys.snapshot;
    this.tmp = keys.tmp;
  }

  /** Seeds the epoch and sequence the master had when the resync started. */
  start(seq: number, epoch: string): void {
    this.lastSeq = seq;
    this.epoch = epoch;
  }

  /** Copies keys of one db; returns, for each key copied, the seq its copy reflects. */
  async copy(db: number, keys: Buffer[]): Promise<Array<{ key: Buffer; seq: number }>> {
    const { bigMembers, bigBytes } = this.limits;
    const reply = await this.master.qsyncResyncReadBuffer(this.keys.meta, this.queueDb, db, bigMembers, bigBytes, ...keys);
    const seq = this.check(Number(String(reply[0])), String(reply[1]));
    const packs = Number(reply[2]);
    const big = reply.slice(3 + packs) as Buffer[];
    const whole = big.length === 0 ? keys : keys.filter((k) => !big.some((b) => b.equals(k)));
    // One batch in flight to the replica while the next is read from the
    // master; the replica runs them in the order sent.
    await this.writing;
    if (packs > 0) {
      // Each pack declares the batch's keys: some of them are in the other packs, all in one slot on a cluster.
      const declared = this.declared(whole);
      const writing = Promise.all((reply.slice(3, 3 + packs) as Buffer[]).map((copies) => this.restore(declared, db, 'packed', copies)));
      writing.catch(() => {}); // reported where it is awaited
      this.writing = writing;
    }
    const out = whole.map((key) => ({ key, seq }));
    for (const key of big) out.push({ key, seq: await this.copyBig(db, key) });
    return out;
  }

  /** The keys a write to the replica declares: none unless the replica is a Redis Cluster node. */
  private declared(keys: Array<Buffer | string>): Array<Buffer | string> {
    return this.declareKeys ? keys : [];
  }

  /** Runs resync-restore.lua on the replica with `keys` declared. */
  private restore(keys: Array<Buffer | string>, ...args: Array<Buffer | string | number>): Promise<number> {
    return this.replica.qsyncResyncRestore(keys.length, ...keys, ...args);
  }

  /** Waits until every key copied so far is written on the replica. */
  async settle(): Promise<void> {
    await this.writing;
  }

  /** One atomic read on the master: a key copied to the snapshot key, and the seq it reflects. */
  private async snapshotOf(db: number, key: Buffer): Promise<Array<Buffer | number>> {
    const { bigMembers, bigBytes } = this.limits;
    return (await this.master.qsyncResyncCopyBuffer(this.keys.meta, this.queueDb, db, bigMembers, bigBytes, this.snapshot, key)) as Array<
      Buffer | number
    >;
  }

  /** Fails unless the master's seq and epoch continue the history seen so far; returns seq. */
  check(seq: number, epoch: string): number {
    if ((this.epoch && epoch !== this.epoch) || seq < this.lastSeq) {
      throw this.fail(`the master's sequence started over meanwhile (epoch ${this.epoch} at ${this.lastSeq}, now ${epoch} at ${seq}); run it again`);
    }
    this.epoch = epoch;
    this.lastSeq = seq;
    return seq;
  }

  private async copyBig(db: number, key: Buffer): Promise<number> {
    await this.settle();
    try {
      const reply = await this.snapshotOf(db, key);
      const seq = this.check(Number(String(reply[0])), String(reply[1]));
      const [type, at] = [String(reply[3]), String(reply[5])];
      if (type === 'none') {
        await this.restore(this.declared([key]), db, 'restore', key, at, '');
        return seq;
      }
      let first = true;
      const put = async (values: Buffer[]) => {
        // Bounded so that no Lua call on the replica takes too many arguments.
        for (let i = 0; i < values.length || first; i += 2 * this.limits.chunk) {
          await this.restore(
            this.declared([this.tmp]),
            db,
            'append',
            this.tmp,
            type,
            first ? '1' : '0',
            ...values.slice(i, i + 2 * this.limits.chunk),
          );
          first = false;
        }
      };
      await this.readChunks(type, put);
      await this.restore(this.declared([this.tmp, key]), db, 'finish', this.tmp, key, at);
      return seq;
    } finally {
      await this.master.del(this.snapshot);
    }
  }

  /** Reads the snapshot in chunks, handing each to `put`. */
  private async readChunks(type: string, put: (values: Buffer[]) => Promise<void>): Promise<void> {
    const { chunk } = this.limits;
    const scan = { hash: 'HSCAN', set: 'SSCAN', zset: 'ZSCAN' }[type];
    if (scan) {
      // The snapshot does not change, so a full scan returns every member (some perhaps twice, which writes the same).
      let cursor = '0';
      do {
        const [next, values] = (await this.master.callBuffer(scan, this.snapshot, cursor, 'COUNT', chunk)) as [Buffer, Buffer[]];
        cursor = next.toString();
        await put(values);
      } while (cursor !== '0');
    } else if (type === 'list') {
      for (let i = 0; ; i += chunk) {
        const values = await this.master.lrangeBuffer(this.snapshot, i, i + chunk - 1);
        await put(values);
        if (values.length < chunk) break;
      }
    } else if (type === 'string') {
      for (let i = 0; ; i += STRING_CHUNK) {
        const piece = await this.master.getrangeBuffer(this.snapshot, i, i + STRING_CHUNK - 1);
        if (piece.length > 0) await put([piece]);
        if (piece.length < STRING_CHUNK) break;
      }
    } else {
      throw this.fail(`no chunked copy for a big key of type ${type}`);
    }
  }
}
