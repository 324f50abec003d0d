/**
 * Reads log entries in Node (status, dead letters, tools). Entries are packed
 * by cmsgpack inside the producer's script (see lua/includes/entry.lua), so
 * this decoder reads the msgpack subset cmsgpack writes, keeping every string
 * as a Buffer: keys and values are binary.
 */
import { QsyncError } from './errors.js';

export interface Entry {
  seq: number;
  /** master time of the write, ms */
  ts: number;
  db: number;
  /** each command as [name, ...args] */
  commands: Buffer[][];
  /** ts of the entry before it on the master (0 for the first) */
  prevTs: number;
  /**
   * For each command, the master's view of its keys just before it ran, as
   * flat pairs [position, expiry]: the key is `commands[i][position - 1]`
   * (positions count as Lua does, the name at 1), expiry is PEXPIRETIME's
   * answer (-2 absent, -1 persistent, else absolute ms) or VIEW_ANY for a
   * key the command overwrites. Undefined for entries of older producers
   * (shared/lua/includes/view.lua).
   */
  views?: number[][];
}

/** A key's expiry in a view when the command overwrites it: its state before does not matter. */
export const VIEW_ANY = -3;

export class EntryFormatError extends QsyncError {}

type Value = number | boolean | null | Buffer | Value[];

class Reader {
  pos = 0;
  constructor(private readonly buf: Buffer) {}

  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new EntryFormatError('not a qsync entry: truncated');
  }

  private bytes(n: number): Buffer {
    this.need(n);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  private uint(n: 1 | 2 | 4 | 8): number {
    this.need(n);
    const b = this.buf;
    const p = this.pos;
    this.pos += n;
    if (n === 1) return b.readUInt8(p);
    if (n === 2) return b.readUInt16BE(p);
    if (n === 4) return b.readUInt32BE(p);
    return Number(b.readBigUInt64BE(p));
  }

  private int(n: 1 | 2 | 4 | 8): number {
    this.need(n);
    const b = this.buf;
    const p = this.pos;
    this.pos += n;
    if (n === 1) return b.readInt8(p);
    if (n === 2) return b.readInt16BE(p);
    if (n === 4) return b.readInt32BE(p);
    return Number(b.readBigInt64BE(p));
  }

  private array(n: number, depth: number): Value[] {
    // An entry nests three deep (entry, commands, command): anything deeper is
    // not an entry, and bounding it keeps garbage from exhausting the stack.
    if (depth > 3) throw new EntryFormatError('not a qsync entry: nested too deep');
    if (n > this.buf.length - this.pos) throw new EntryFormatError('not a qsync entry: truncated');
    const out: Value[] = [];
    for (let i = 0; i < n; i++) out.push(this.value(depth));
    return out;
  }

  value(depth = 0): Value {
    const t = this.uint(1);
    if (t <= 0x7f) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t >= 0xa0 && t <= 0xbf) return this.bytes(t & 0x1f);
    if (t >= 0x90 && t <= 0x9f) return this.array(t & 0x0f, depth + 1);
    switch (t) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
      case 0xd9:
        return this.bytes(this.uint(1));
      case 0xc5:
      case 0xda:
        return this.bytes(this.uint(2));
      case 0xc6:
      case 0xdb:
        return this.bytes(this.uint(4));
      case 0xca:
        this.need(4);
        this.pos += 4;
        return this.buf.readFloatBE(this.pos - 4);
      case 0xcb:
        this.need(8);
        this.pos += 8;
        return this.buf.readDoubleBE(this.pos - 8);
      case 0xcc:
        return this.uint(1);
      case 0xcd:
        return this.uint(2);
      case 0xce:
        return this.uint(4);
      case 0xcf:
        return this.uint(8);
      case 0xd0:
        return this.int(1);
      case 0xd1:
        return this.int(2);
      case 0xd2:
        return this.int(4);
      case 0xd3:
        return this.int(8);
      case 0xdc:
        return this.array(this.uint(2), depth + 1);
      case 0xdd:
        return this.array(this.uint(4), depth + 1);
      default:
        throw new EntryFormatError(`not a qsync entry: unexpected msgpack type 0x${t.toString(16)}`);
    }
  }
}

const isNumber = (v: Value): v is number => typeof v === 'number' && Number.isSafeInteger(v);

/** Decodes one raw entry; throws EntryFormatError for anything else. */
export function decodeEntry(raw: Buffer): Entry {
  const reader = new Reader(raw);
  const v = reader.value();
  if (reader.pos !== raw.length) throw new EntryFormatError('not a qsync entry: bytes after the end');
  if (!Array.isArray(v) || (v.length !== 6 && v.length !== 7) || v[0] !== 1) {
    throw new EntryFormatError('not a qsync entry: expected [1, seq, ts, db, commands, prev ts, views?]');
  }
  const [, seq, ts, db, cmds, prevTs, rawViews] = v;
  if (!isNumber(seq) || !isNumber(ts) || !isNumber(db) || !Array.isArray(cmds) || !isNumber(prevTs)) {
    throw new EntryFormatError('not a qsync entry: bad header');
  }
  const commands = cmds.map((c) => {
    if (!Array.isArray(c) || c.length === 0 || !c.every(Buffer.isBuffer)) {
      throw new EntryFormatError(`not a qsync entry: bad command in entry ${seq}`);
    }
    return c as Buffer[];
  });
  if (rawViews === undefined) return { seq, ts, db, commands, prevTs };
  if (!Array.isArray(rawViews) || rawViews.length !== commands.length) throw new EntryFormatError(`not a qsync entry: bad views in entry ${seq}`);
  const views = rawViews.map((raw, i) => {
    // 0 stands for the most common view, the first key overwritten (shared/lua/includes/view.lua).
    const view = raw === 0 ? [2, VIEW_ANY] : raw;
    if (!Array.isArray(view) || view.length % 2 !== 0 || !view.every(isNumber))
      throw new EntryFormatError(`not a qsync entry: bad views in entry ${seq}`);
    for (let j = 0; j < view.length; j += 2) {
      if ((view[j] as number) < 2 || (view[j] as number) > commands[i].length)
        throw new EntryFormatError(`not a qsync entry: bad views in entry ${seq}`);
    }
    return view as number[];
  });
  return { seq, ts, db, commands, prevTs, views };
}

/** A command for people: printable arguments, long ones cut. */
export function describeCommand(cmd: Buffer[], maxArg = 64): string {
  return cmd
    .map((a, i) => {
      const printable = /^[\x20-\x7e]*$/.test(a.toString('latin1'));
      const s = printable ? a.toString('latin1') : `0x${a.toString('hex')}`;
      const shown = s.length > maxArg ? `${s.slice(0, maxArg)}…(${a.length} bytes)` : s;
      return i === 0 ? shown.toUpperCase() : shown;
    })
    .join(' ');
}

/**
 * A batch as the apply script (shared/lua/apply-batch-1.lua) takes it: the
 * byte length of each entry as a msgpack array, and the entries one after
 * the other.
 */
export function frameBatch(entries: Buffer[]): [lengths: Buffer, entries: Buffer] {
  const lengths = Buffer.allocUnsafe(5 + entries.length * 5);
  lengths[0] = 0xdd; // array 32
  lengths.writeUInt32BE(entries.length, 1);
  entries.forEach((e, i) => {
    lengths[5 + i * 5] = 0xce; // uint 32
    lengths.writeUInt32BE(e.length, 6 + i * 5);
  });
  return [lengths, Buffer.concat(entries)];
}
