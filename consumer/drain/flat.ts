/**
 * The apply script's arguments for a batch (shared/lua/apply-batch-1.lua,
 * ARGV[4] on). The worker reads the common entries itself (one command, the
 * master's view of its first key or none: most writes) and sends each as six
 * numbers in the header and its arguments as plain arguments, so that the
 * replica builds no Lua string to read them, and a run of SETs is one MSET
 * of the arguments as they came. Every other entry goes as its bytes, in
 * its place. The script checks what it applies (seqs, links, views) from the
 * header as it does from bytes.
 */

/** A SET of a key and a value: its two arguments are sent, not its name. */
const SET_KV = -1;
/** The view of a key the command overwrites: nothing to check (shared/lua/includes/view.lua). */
const ANY = -3;
/** At most this many arguments for a command sent as arguments (Lua's unpack takes ~8000 values). */
const MAX_ARGS = 1000;
/** The most header bytes one entry takes: six numbers of 9 bytes at most. */
const HEADER_MAX = 6 * 9;

/**
 * The arguments for entries of the given sizes, end to end in joined.
 * ARGV[6] and ARGV[7] (a relay's log and meta) are '' here: a relay sends
 * every entry as bytes, since it logs the decoded entries again.
 */
export function flatten(sizes: number[], joined: Buffer): [Buffer, Buffer, string, string, ...Buffer[]] {
  const header = new Writer(5 + sizes.length * HEADER_MAX);
  header.arrayHead();
  const bytes: Buffer[] = [];
  const args: Buffer[] = [];
  const read = new CommonEntry();
  let numbers = 0;
  let at = 0;
  for (const size of sizes) {
    const entry = joined.subarray(at, at + size);
    at += size;
    if (read.from(entry)) {
      const set = read.args.length === 3 && read.args[0].length === 3 && read.args[0].toString('latin1') === 'set' && read.want === ANY;
      header.int(set ? SET_KV : -(read.args.length + 1));
      header.int(read.seq);
      header.int(read.ts);
      header.int(read.prev);
      header.int(read.db);
      header.int(read.want);
      numbers += 6;
      if (set) args.push(read.args[1], read.args[2]);
      else args.push(...read.args);
    } else {
      header.int(size);
      numbers += 1;
      bytes.push(entry);
    }
  }
  const rest = bytes.length === sizes.length ? joined : Buffer.concat(bytes);
  return [header.done(numbers), rest, '', '', ...args];
}

/** The apply script's arguments for the given entries (tests, tools). */
export function flatBatch(entries: Buffer[]): [Buffer, Buffer, string, string, ...Buffer[]] {
  return flatten(
    entries.map((e) => e.length),
    Buffer.concat(entries),
  );
}

/** What the worker reads of an entry of the common shape; null for any other (tests). */
export function readCommonEntry(entry: Buffer): { seq: number; ts: number; prev: number; db: number; args: Buffer[]; want: number } | null {
  const read = new CommonEntry();
  if (!read.from(entry)) return null;
  const { seq, ts, prev, db, args, want } = read;
  return { seq, ts, prev, db, args, want };
}

/** A msgpack array of integers, its count written at the end. */
class Writer {
  private readonly buf: Buffer;
  private pos = 0;
  constructor(max: number) {
    this.buf = Buffer.allocUnsafe(max);
  }

  arrayHead(): void {
    this.buf[0] = 0xdd; // array 32
    this.pos = 5;
  }

  int(n: number): void {
    const b = this.buf;
    if (n >= 0 && n < 0x80) b[this.pos++] = n;
    else if (n < 0 && n >= -32) b[this.pos++] = 0x100 + n;
    else if (n >= 0 && n <= 0xffffffff) {
      b[this.pos] = 0xce;
      b.writeUInt32BE(n, this.pos + 1);
      this.pos += 5;
    } else {
      b[this.pos] = 0xd3; // int 64: cmsgpack reads it exactly under 2^53
      b.writeBigInt64BE(BigInt(n), this.pos + 1);
      this.pos += 9;
    }
  }

  done(count: number): Buffer {
    this.buf.writeUInt32BE(count, 1);
    return this.buf.subarray(0, this.pos);
  }
}

/**
 * Reads an entry of the common shape, as cmsgpack packs it (shared/lua/includes/entry.lua):
 * [1, seq, ts, db, [[name, args...]], prev ts, [0 | [2, expiry]]]. Declines (false) any
 * other, which then goes as bytes and the script decodes it.
 */
class CommonEntry {
  seq = 0;
  ts = 0;
  prev = 0;
  db = 0;
  want = ANY;
  args: Buffer[] = [];
  private b: Buffer = Buffer.alloc(0);
  private p = 0;

  from(entry: Buffer): boolean {
    this.b = entry;
    this.p = 0;
    if (entry.length < 20 || entry[0] !== 0x97 || entry[1] !== 1) return false;
    this.p = 2;
    const seq = this.uint();
    const ts = this.uint();
    const db = this.uint();
    if (seq < 0 || ts < 0 || db < 0 || db > 0xffff || this.byte() !== 0x91) return false;
    const n = this.arrayLength();
    if (n < 1 || n > MAX_ARGS) return false;
    const args = new Array<Buffer>(n);
    for (let i = 0; i < n; i++) {
      const len = this.strLength();
      if (len < 0 || this.p + len > entry.length) return false;
      args[i] = entry.subarray(this.p, this.p + len);
      this.p += len;
    }
    const prev = this.uint();
    if (prev < 0 || this.byte() !== 0x91) return false;
    let want = ANY;
    const view = this.byte();
    if (view === 0x92) {
      if (this.byte() !== 2 || n < 2) return false;
      const expiry = this.int();
      if (expiry === null) return false;
      want = expiry;
    } else if (view !== 0) return false;
    if (this.p !== entry.length) return false;
    Object.assign(this, { seq, ts, db, prev, want, args });
    return true;
  }

  private byte(): number {
    return this.p < this.b.length ? this.b[this.p++] : -1;
  }

  /** An unsigned integer under 2^53; -1 for anything else. */
  private uint(): number {
    const t = this.byte();
    if (t >= 0 && t <= 0x7f) return t;
    const size = t === 0xcc ? 1 : t === 0xcd ? 2 : t === 0xce ? 4 : t === 0xcf ? 8 : 0;
    if (size === 0 || this.p + size > this.b.length) return -1;
    const at = this.p;
    this.p += size;
    if (size === 8) {
      const v = this.b.readBigUInt64BE(at);
      return v < 2n ** 53n ? Number(v) : -1;
    }
    return this.b.readUIntBE(at, size);
  }

  /** A signed integer under 2^53 in size; null for anything else. */
  private int(): number | null {
    const t = this.b[this.p];
    if (t >= 0xe0) {
      this.p++;
      return t - 0x100;
    }
    if (t >= 0xd0 && t <= 0xd3) {
      const size = 1 << (t - 0xd0);
      if (this.p + 1 + size > this.b.length) return null;
      const at = this.p + 1;
      this.p += 1 + size;
      if (size === 8) {
        const v = this.b.readBigInt64BE(at);
        return v < 2n ** 53n && v > -(2n ** 53n) ? Number(v) : null;
      }
      return this.b.readIntBE(at, size);
    }
    const v = this.uint();
    return v < 0 ? null : v;
  }

  private arrayLength(): number {
    const t = this.byte();
    if (t >= 0x90 && t <= 0x9f) return t - 0x90;
    if (t === 0xdc && this.p + 2 <= this.b.length) {
      this.p += 2;
      return this.b.readUInt16BE(this.p - 2);
    }
    return -1;
  }

  /** The length of a string that follows (as cmsgpack writes one); -1 for anything else. */
  private strLength(): number {
    const t = this.byte();
    if (t >= 0xa0 && t <= 0xbf) return t - 0xa0;
    const size = t === 0xd9 ? 1 : t === 0xda ? 2 : t === 0xdb ? 4 : 0;
    if (size === 0 || this.p + size > this.b.length) return -1;
    this.p += size;
    return this.b.readUIntBE(this.p - size, size);
  }
}
