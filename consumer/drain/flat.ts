/**
 * The apply script's arguments for a batch (shared/lua/apply-batch-1.lua,
 * ARGV[4] on). The worker reads the common entries itself (one command, the
 * master's view of its first key or none: most writes) and sends each as
 * five or six numbers in the header and its arguments as plain arguments, so that the
 * replica builds no Lua string to read them, and a run of SETs is one MSET
 * of the arguments as they came. Every other entry goes as its bytes, in
 * its place. The script checks what it applies (seqs, links, views) from the
 * header as it does from bytes.
 *
 * The worker writes the whole request itself (sendFlat), copying each
 * argument once from the batch: thousands of arguments through the client's
 * own encoding would cost the worker more than the replica saves.
 */
import { createHash } from 'node:crypto';
import { Command, type Cluster, type Redis } from 'ioredis';
import { scripts } from '../../shared/scripts.js';

/** A SET of a key and a value: its two arguments are sent, not its name. */
const SET_KV = -1;
/** The view of a key the command overwrites: nothing to check (shared/lua/includes/view.lua). */
const ANY = -3;
/** At most this many arguments for a command sent as arguments (Lua's unpack takes ~8000 values). */
const MAX_ARGS = 1000;
/** The most header bytes one entry takes: six numbers of 9 bytes at most. */
const HEADER_MAX = 6 * 9;
/** ARGV[6] and ARGV[7], a relay's log and meta: none (a relay sends every entry as bytes, to log it decoded). */
const NO_RELAY = ['', ''];

/**
 * A batch read for the apply script: the header, where the entries sent as
 * bytes are in the batch, and where each argument of the common entries is
 * (start and length pairs).
 */
class Flat {
  readonly header: Buffer;
  private readonly bytes: number[] = [];
  private bytesLength = 0;
  private readonly args: number[] = [];

  constructor(
    sizes: number[],
    private readonly joined: Buffer,
  ) {
    const header = new Writer(5 + sizes.length * HEADER_MAX);
    const read = new CommonEntry(joined, this.args);
    let numbers = 0;
    let at = 0;
    for (const size of sizes) {
      if (read.from(at, at + size)) {
        header.int(read.kind);
        header.int(read.seq);
        header.int(read.ts);
        header.int(read.prev);
        header.int(read.db);
        numbers += 5;
        if (read.kind !== SET_KV) {
          header.int(read.want);
          numbers += 1;
        }
      } else {
        header.int(size);
        numbers += 1;
        this.bytes.push(at, size);
        this.bytesLength += size;
      }
      at += size;
    }
    this.header = header.done(numbers);
  }

  /** The arguments from ARGV[4] on, as buffers (tests, tools). */
  argv(): [Buffer, Buffer, string, string, ...Buffer[]] {
    const cut = (spans: number[]) => {
      const out: Buffer[] = [];
      for (let i = 0; i < spans.length; i += 2) out.push(this.joined.subarray(spans[i], spans[i] + spans[i + 1]));
      return out;
    };
    return [this.header, Buffer.concat(cut(this.bytes)), '', '', ...cut(this.args)];
  }

  /**
   * The whole request in the protocol: EVALSHA sha (or EVAL script) 1 <lead...> then ARGV[4] on.
   * `keys`, declared after the watermark's key (the script reads KEYS[1] only), have a
   * Redis Cluster check them all before the script runs.
   */
  request(command: 'evalsha' | 'eval', script: string, lead: string[], keys: Buffer[] = []): Buffer {
    const { args, joined } = this;
    const [watermark, ...argv] = lead.map((w) => Buffer.from(w));
    const words = [
      ...[command, script, String(1 + keys.length)].map((w) => Buffer.from(w)),
      watermark,
      ...keys,
      ...argv,
      ...NO_RELAY.map((w) => Buffer.from(w)),
    ];
    let size = 16;
    for (const w of words) size += bulkSize(w.length);
    size += bulkSize(this.header.length) + bulkSize(this.bytesLength);
    for (let i = 1; i < args.length; i += 2) size += bulkSize(args[i]);
    const out = Buffer.allocUnsafe(size);
    let p = out.write(`*${words.length + 2 + args.length / 2}\r\n`, 0, 'latin1');
    const bulk = (len: number) => {
      out[p] = 0x24; // $
      p = writeDecimal(out, p + 1, len);
      out[p] = 0x0d;
      out[p + 1] = 0x0a;
      p += 2;
    };
    const end = () => {
      out[p] = 0x0d;
      out[p + 1] = 0x0a;
      p += 2;
    };
    for (const w of [...words.slice(0, -2), this.header]) {
      bulk(w.length);
      p += w.copy(out, p);
      end();
    }
    bulk(this.bytesLength);
    for (let i = 0; i < this.bytes.length; i += 2) p = copy(joined, this.bytes[i], this.bytes[i + 1], out, p);
    end();
    for (const w of words.slice(-2)) {
      bulk(w.length);
      end();
    }
    for (let i = 0; i < args.length; i += 2) {
      bulk(args[i + 1]);
      p = copy(joined, args[i], args[i + 1], out, p);
      end();
    }
    return out.subarray(0, p);
  }
}

/** Copies len bytes from start in from to p in out; returns the position after them. */
function copy(from: Buffer, start: number, len: number, out: Buffer, p: number): number {
  // A native copy costs more than a loop for a few bytes.
  if (len > 64) return p + from.copy(out, p, start, start + len);
  for (let i = 0; i < len; i++) out[p + i] = from[start + i];
  return p + len;
}

/** The bytes of a bulk string of len bytes in the protocol: $len\r\n...\r\n */
function bulkSize(len: number): number {
  return len + 5 + decimalDigits(len);
}

function decimalDigits(n: number): number {
  let digits = 1;
  while (n >= 10) {
    n = Math.floor(n / 10);
    digits++;
  }
  return digits;
}

/** Writes n (not negative) in decimal at p; returns the position after it. */
function writeDecimal(out: Buffer, p: number, n: number): number {
  const end = p + decimalDigits(n);
  let at = end;
  do {
    out[--at] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  } while (n > 0);
  return end;
}

/** The apply script's arguments from ARGV[4] on for the given entries (tests, tools). */
export function flatBatch(entries: Buffer[]): [Buffer, Buffer, string, string, ...Buffer[]] {
  return new Flat(
    entries.map((e) => e.length),
    Buffer.concat(entries),
  ).argv();
}

/** The whole request the worker sends for these entries (tests). */
export function flatRequest(sha: string, lead: string[], entries: Buffer[]): Buffer {
  return new Flat(
    entries.map((e) => e.length),
    Buffer.concat(entries),
  ).request('evalsha', sha, lead);
}

/** The apply script and its SHA1, as the client's script commands have them. */
let applyScript: { lua: string; sha: string } | undefined;
function apply(): { lua: string; sha: string } {
  if (!applyScript) {
    const lua = scripts().find((s) => s.command === 'qsyncApplyBatch')?.lua;
    if (!lua) throw new Error('apply-batch-1.lua is missing');
    applyScript = { lua, sha: createHash('sha1').update(lua).digest('hex') };
  }
  return applyScript;
}

/** A command whose request is written already. */
class Written extends Command {
  constructor(
    private readonly bytes: Buffer,
    /** the script's first key: a Redis Cluster client sends the command to the node of its slot */
    private readonly key: string,
  ) {
    // Its name for the client's own checks; what is sent is bytes.
    super('evalsha', [], { replyEncoding: 'utf8' });
  }

  override getKeys(): string[] {
    return [this.key];
  }

  override toWritable(): Buffer {
    return this.bytes;
  }
}

/**
 * Runs the apply script on entries of the given sizes, end to end in joined,
 * with the arguments before ARGV[4] (the watermark's key, epoch, queue db,
 * on refusal) and the keys to declare besides (on a Redis Cluster): the
 * reply, as the script's command gives it. Sends the script
 * itself (EVAL) when the server does not have it, as the client's script
 * commands do: qsync's users may run scripts, not load them.
 */
export async function sendFlat(client: Redis | Cluster, lead: string[], sizes: number[], joined: Buffer, keys: Buffer[] = []): Promise<unknown> {
  const { lua, sha } = apply();
  const flat = new Flat(sizes, joined);
  try {
    return await client.sendCommand(new Written(flat.request('evalsha', sha, lead, keys), lead[0]));
  } catch (err) {
    if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
    return client.sendCommand(new Written(flat.request('eval', lua, lead, keys), lead[0]));
  }
}

/** A msgpack array of integers, its count written at the end. */
class Writer {
  private readonly buf: Buffer;
  private pos = 5;
  constructor(max: number) {
    this.buf = Buffer.allocUnsafe(max);
    this.buf[0] = 0xdd; // array 32
  }

  int(n: number): void {
    const b = this.buf;
    if (n >= 0 && n < 0x80) b[this.pos++] = n;
    else if (n < 0 && n >= -32) b[this.pos++] = 0x100 + n;
    else if (n >= 0 && n <= 0xffffffff) {
      b[this.pos] = 0xce;
      b.writeUInt32BE(n, this.pos + 1);
      this.pos += 5;
    } else if (n > 0) {
      b[this.pos] = 0xcf; // uint 64: cmsgpack reads it exactly under 2^53
      b.writeUInt32BE(Math.floor(n / 0x100000000), this.pos + 1);
      b.writeUInt32BE(n % 0x100000000, this.pos + 5);
      this.pos += 9;
    } else {
      b[this.pos] = 0xd3; // int 64
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
 * other, which then goes as bytes and the script decodes it. The arguments sent (all of
 * them, or a SET's key and value) are added to spans as start and length pairs.
 */
class CommonEntry {
  kind = 0;
  seq = 0;
  ts = 0;
  prev = 0;
  db = 0;
  want = ANY;
  private p = 0;
  private end = 0;

  constructor(
    private readonly b: Buffer,
    private readonly spans: number[],
  ) {}

  from(start: number, end: number): boolean {
    const mark = this.spans.length;
    if (this.read(start, end)) return true;
    this.spans.length = mark;
    return false;
  }

  private read(start: number, end: number): boolean {
    const b = this.b;
    this.p = start + 2;
    this.end = end;
    if (end - start < 20 || b[start] !== 0x97 || b[start + 1] !== 1) return false;
    const seq = this.uint();
    const ts = this.uint();
    const db = this.uint();
    if (seq < 0 || ts < 0 || db < 0 || db > 0xffff || this.byte() !== 0x91) return false;
    const n = this.arrayLength();
    if (n < 1 || n > MAX_ARGS) return false;
    const first = this.spans.length;
    for (let i = 0; i < n; i++) {
      const len = this.strLength();
      if (len < 0 || this.p + len > end) return false;
      this.spans.push(this.p, len);
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
    if (this.p !== end) return false;
    const s = this.spans;
    const name = s[first];
    const set = n === 3 && want === ANY && s[first + 1] === 3 && b[name] === 0x73 && b[name + 1] === 0x65 && b[name + 2] === 0x74;
    if (set) {
      // The key and the value only: the script knows the name from the kind.
      s[first] = s[first + 2];
      s[first + 1] = s[first + 3];
      s[first + 2] = s[first + 4];
      s[first + 3] = s[first + 5];
      s.length = first + 4;
    }
    this.kind = set ? SET_KV : -(n + 1);
    this.seq = seq;
    this.ts = ts;
    this.prev = prev;
    this.db = db;
    this.want = want;
    return true;
  }

  private byte(): number {
    return this.p < this.end ? this.b[this.p++] : -1;
  }

  /** An unsigned integer under 2^53; -1 for anything else. */
  private uint(): number {
    const t = this.byte();
    if (t >= 0 && t <= 0x7f) return t;
    const size = t === 0xcc ? 1 : t === 0xcd ? 2 : t === 0xce ? 4 : t === 0xcf ? 8 : 0;
    if (size === 0 || this.p + size > this.end) return -1;
    const at = this.p;
    this.p += size;
    if (size === 8) {
      const high = this.b.readUInt32BE(at);
      return high < 0x200000 ? high * 0x100000000 + this.b.readUInt32BE(at + 4) : -1;
    }
    return this.unsigned(at, size);
  }

  /** The unsigned number of size bytes (1, 2 or 4) at at. */
  private unsigned(at: number, size: number): number {
    const b = this.b;
    if (size === 1) return b[at];
    if (size === 2) return (b[at] << 8) | b[at + 1];
    return b[at] * 0x1000000 + ((b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]);
  }

  /** A signed integer under 2^53 in size; null for anything else. */
  private int(): number | null {
    const t = this.p < this.end ? this.b[this.p] : -1;
    if (t >= 0xe0) {
      this.p++;
      return t - 0x100;
    }
    if (t >= 0xd0 && t <= 0xd3) {
      const size = 1 << (t - 0xd0);
      if (this.p + 1 + size > this.end) return null;
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
    if (t === 0xdc && this.p + 2 <= this.end) {
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
    if (size === 0 || this.p + size > this.end) return -1;
    this.p += size;
    return this.unsigned(this.p - size, size);
  }
}

/** What the worker reads of an entry of the common shape; null for any other (tests). */
export function readCommonEntry(entry: Buffer): { seq: number; ts: number; prev: number; db: number; args: Buffer[]; want: number } | null {
  const spans: number[] = [];
  const read = new CommonEntry(entry, spans);
  if (!read.from(0, entry.length)) return null;
  const args: Buffer[] = [];
  for (let i = 0; i < spans.length; i += 2) args.push(entry.subarray(spans[i], spans[i] + spans[i + 1]));
  if (read.kind === SET_KV) args.unshift(Buffer.from('set'));
  const { seq, ts, prev, db, want } = read;
  return { seq, ts, prev, db, args, want };
}
