import type { Cluster, Redis } from 'ioredis';
import { sendFlat } from './flat.js';

/**
 * A batch of the master's log as the read script sends it ('joined',
 * shared/lua/read-batch-2.lua): the entries end to end in one buffer, after
 * their byte lengths as a msgpack array. The worker sends the apply script
 * the common entries read (flat.ts) and the others as they came, or (a
 * relay) every entry as it came; an entry is cut out of them only when one is
 * needed on its own (the last one, to confirm; a refused one, to say which).
 */
export class Batch {
  /** how many entries */
  readonly count: number;
  private readonly sizes: number[];
  private cut?: Buffer[];

  constructor(
    readonly epoch: string,
    /** the master's sequence when the batch was read; null for a master without one */
    readonly masterSeq: number | null,
    /** entries in the log after this batch */
    readonly remaining: number,
    /** the byte length of each entry, as a msgpack array */
    readonly lengths: Buffer,
    /** the entries, end to end */
    readonly joined: Buffer,
  ) {
    this.sizes = readLengths(lengths);
    this.count = this.sizes.length;
    const sum = this.sizes.reduce((n, s) => n + s, 0);
    if (sum !== joined.length) throw new Error(`a batch of ${joined.length} bytes with entries of ${sum} bytes in all`);
  }

  /** The bytes of all the entries. */
  get bytes(): number {
    return this.joined.length;
  }

  /** Each entry's bytes (views into the batch, cut once). */
  get entries(): Buffer[] {
    if (!this.cut) {
      let at = 0;
      this.cut = this.sizes.map((size) => {
        at += size;
        return this.joined.subarray(at - size, at);
      });
    }
    return this.cut;
  }

  /**
   * Runs the apply script on the batch, its common entries read here (flat.ts); lead: its
   * arguments before ARGV[4]; keys: more keys to declare (a Redis Cluster checks them first).
   */
  applyOn(replica: Redis | Cluster, lead: string[], keys: Buffer[] = []): Promise<unknown> {
    return sendFlat(replica, lead, this.sizes, this.joined, keys);
  }

  /** The last entry's bytes; an empty batch has none. */
  get last(): Buffer | undefined {
    if (this.count === 0) return undefined;
    return this.joined.subarray(this.joined.length - this.sizes[this.count - 1]);
  }
}

/** The numbers of a msgpack array of unsigned integers (as cmsgpack packs a Lua list of lengths). */
function readLengths(buf: Buffer): number[] {
  let pos = 0;
  const uint = (bytes: number): number => {
    if (pos + bytes > buf.length) throw new Error('the lengths of a batch end early');
    const v = bytes === 1 ? buf[pos] : bytes === 2 ? buf.readUInt16BE(pos) : buf.readUInt32BE(pos);
    pos += bytes;
    return v;
  };
  const head = uint(1);
  const n = head >= 0x90 && head <= 0x9f ? head & 0x0f : head === 0xdc ? uint(2) : head === 0xdd ? uint(4) : -1;
  if (n < 0) throw new Error(`the lengths of a batch are not a msgpack array (type 0x${head.toString(16)})`);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const t = uint(1);
    if (t <= 0x7f) out[i] = t;
    else if (t === 0xcc) out[i] = uint(1);
    else if (t === 0xcd) out[i] = uint(2);
    else if (t === 0xce) out[i] = uint(4);
    else throw new Error(`a length in a batch is not an unsigned integer (type 0x${t.toString(16)})`);
  }
  return out;
}
