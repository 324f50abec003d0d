/**
 * Compares keys of one db between the master and the replica: existence,
 * type, value and absolute expiry.
 *
 * Values compare in a form that does not depend on the server: DUMP of a set
 * or hash in hash-table encoding lists members in an order set by the
 * server's random hash seed, so those compare as unordered members. Memory
 * stays bounded: small values are read whole in one pipeline per chunk of
 * keys; a big collection is walked in chunks (LRANGE and ZRANGE ranges; HSCAN
 * or SSCAN on the master checked member by member on the replica, which with
 * equal sizes proves equality). A stream compares as its entries and its
 * consumer groups (./streams.ts), all but the consumers' seen time.
 */
import type { Redis } from 'ioredis';
import { streamDifference } from './streams.js';

export type DiffKind = 'missing-on-replica' | 'missing-on-master' | 'type' | 'value' | 'ttl';
export const DIFF_KINDS: readonly DiffKind[] = ['missing-on-replica', 'missing-on-master', 'type', 'value', 'ttl'];

/** One side of a key, as reports show it. */
export interface KeySide {
  /** as TYPE says: 'none' when the key does not exist */
  type: string;
  /** absolute expiry, ms since the epoch; null when the key has none */
  expireAt: number | null;
  /** bytes of a string, members of a collection */
  size?: number;
}

/** A key that differs, with the first kind found: missing, then type, value, expiry. */
export interface KeyDiff {
  key: Buffer;
  kind: DiffKind;
  master: KeySide;
  replica: KeySide;
}

const SIZE_COMMAND: Record<string, string> = { string: 'STRLEN', hash: 'HLEN', set: 'SCARD', zset: 'ZCARD', list: 'LLEN', stream: 'XLEN' };
/** Collections up to this many members are read whole; bigger ones in chunks of CHUNK. */
const SMALL_MEMBERS = 512;
const CHUNK = 1000;
/** Strings up to this many bytes are read whole; longer ones in ranges of this size. */
const STRING_CHUNK = 512 * 1024;

type Arg = string | Buffer | number;
type Cmd = [string, ...Arg[]];

/** Runs commands in one pipeline; a command's error comes back as its reply. */
async function batch(client: Redis, cmds: Cmd[]): Promise<unknown[]> {
  if (cmds.length === 0) return [];
  const pipeline = client.pipeline();
  for (const [name, ...args] of cmds) pipeline.callBuffer(name, ...args);
  return ((await pipeline.exec()) ?? []).map(([err, value]) => err ?? value);
}

/** The same commands on both sides at once. */
function both(master: Redis, replica: Redis, cmds: Cmd[]): Promise<[unknown[], unknown[]]> {
  return Promise.all([batch(master, cmds), batch(replica, cmds)]);
}

const text = (v: unknown): string => (Buffer.isBuffer(v) ? v.toString() : String(v));
const num = (v: unknown): number => (typeof v === 'number' ? v : Number(text(v)));
const list = (v: unknown): Buffer[] => (Array.isArray(v) ? (v as Buffer[]) : []);

function sameOrdered(a: Buffer[], b: Buffer[]): boolean {
  return a.length === b.length && a.every((x, i) => x.equals(b[i]));
}

/** Members (stride 1) or field-value pairs (stride 2) in any order. */
function sameUnordered(a: Buffer[], b: Buffer[], stride: 1 | 2): boolean {
  if (a.length !== b.length) return false;
  const seen = new Map<string, string>();
  for (let i = 0; i < a.length; i += stride) seen.set(a[i].toString('latin1'), stride === 2 ? a[i + 1].toString('latin1') : '');
  for (let i = 0; i < b.length; i += stride) {
    if (seen.get(b[i].toString('latin1')) !== (stride === 2 ? b[i + 1].toString('latin1') : '')) return false;
  }
  return true;
}

/** The whole value of a small key, to compare with `sameSmall`. */
function readWhole(type: string, key: Buffer): Cmd {
  switch (type) {
    case 'string':
      return ['GET', key];
    case 'hash':
      return ['HGETALL', key];
    case 'set':
      return ['SMEMBERS', key];
    case 'zset':
      return ['ZRANGE', key, 0, -1, 'WITHSCORES'];
    case 'list':
      return ['LRANGE', key, 0, -1];
    default:
      return ['DUMP', key];
  }
}

function sameSmall(type: string, a: unknown, b: unknown): boolean {
  if (a instanceof Error || b instanceof Error) return false;
  if (type === 'hash') return sameUnordered(list(a), list(b), 2);
  if (type === 'set') return sameUnordered(list(a), list(b), 1);
  if (type === 'zset' || type === 'list') return sameOrdered(list(a), list(b));
  return Buffer.isBuffer(a) && Buffer.isBuffer(b) && a.equals(b);
}

/** Compares a big value chunk by chunk; both sides have `size` members (or bytes). */
async function sameBig(master: Redis, replica: Redis, key: Buffer, type: string, size: number): Promise<boolean> {
  if (type === 'string' || type === 'list' || type === 'zset') {
    const step = type === 'string' ? STRING_CHUNK : CHUNK;
    for (let i = 0; i < size; i += step) {
      const cmd: Cmd =
        type === 'string'
          ? ['GETRANGE', key, i, i + step - 1]
          : type === 'list'
            ? ['LRANGE', key, i, i + step - 1]
            : ['ZRANGE', key, i, i + step - 1, 'WITHSCORES'];
      const [[a], [b]] = await both(master, replica, [cmd]);
      if (!sameSmall(type, a, b)) return false;
    }
    return true;
  }
  // Hash or set: every member of the master, checked on the replica. SCAN may
  // repeat a member, which only checks it twice; equal sizes make it a proof.
  let cursor = '0';
  do {
    const [next, members] = (await master.callBuffer(type === 'hash' ? 'HSCAN' : 'SSCAN', key, cursor, 'COUNT', CHUNK)) as [Buffer, Buffer[]];
    cursor = next.toString();
    if (members.length === 0) continue;
    if (type === 'hash') {
      const fields = members.filter((_m, i) => i % 2 === 0);
      const values = (await replica.callBuffer('HMGET', key, ...fields)) as (Buffer | null)[];
      if (!values.every((v, i) => v?.equals(members[2 * i + 1]))) return false;
    } else {
      const found = (await replica.callBuffer('SMISMEMBER', key, ...members)) as number[];
      if (!found.every((f) => f === 1)) return false;
    }
  } while (cursor !== '0');
  return true;
}

function side(type: unknown, expire: unknown): KeySide {
  const t = type instanceof Error ? 'unknown' : text(type);
  const at = num(expire);
  return { type: t, expireAt: Number.isFinite(at) && at >= 0 ? at : null };
}

function ttlDiffers(m: KeySide, r: KeySide, toleranceMs: number): boolean {
  if (m.expireAt === null || r.expireAt === null) return m.expireAt !== r.expireAt;
  return Math.abs(m.expireAt - r.expireAt) > toleranceMs;
}

/**
 * Compares `keys` (all in the db `master` and `replica` have selected) and
 * returns those that differ. A key that changes while it is read may show as
 * different; the caller checks such keys again.
 */
export async function compareKeys(master: Redis, replica: Redis, keys: Buffer[], ttlToleranceMs: number): Promise<KeyDiff[]> {
  const [m1, r1] = await both(
    master,
    replica,
    keys.flatMap((k): Cmd[] => [
      ['TYPE', k],
      ['PEXPIRETIME', k],
    ]),
  );
  const diffs: KeyDiff[] = [];
  const candidates: { key: Buffer; type: string; m: KeySide; r: KeySide }[] = [];
  keys.forEach((key, i) => {
    const m = side(m1[2 * i], m1[2 * i + 1]);
    const r = side(r1[2 * i], r1[2 * i + 1]);
    if (m.type === 'none' && r.type === 'none') return;
    if (r.type === 'none') diffs.push({ key, kind: 'missing-on-replica', master: m, replica: r });
    else if (m.type === 'none') diffs.push({ key, kind: 'missing-on-master', master: m, replica: r });
    else if (m.type !== r.type || m.type === 'unknown') diffs.push({ key, kind: 'type', master: m, replica: r });
    else candidates.push({ key, type: m.type, m, r });
  });

  // Sizes first: a size that differs settles it, and says whether the value is small.
  const sized = candidates.filter((c) => SIZE_COMMAND[c.type]);
  const [m2, r2] = await both(
    master,
    replica,
    sized.map((c): Cmd => [SIZE_COMMAND[c.type], c.key]),
  );
  sized.forEach((c, i) => {
    c.m.size = num(m2[i]);
    c.r.size = num(r2[i]);
  });
  const small = candidates.filter(
    (c) =>
      c.type !== 'stream' && (c.m.size === undefined || (c.m.size === c.r.size && c.m.size <= (c.type === 'string' ? STRING_CHUNK : SMALL_MEMBERS))),
  );
  const [m3, r3] = await both(
    master,
    replica,
    small.map((c) => readWhole(c.type, c.key)),
  );
  const sameValue = new Map(small.map((c, i) => [c, sameSmall(c.type, m3[i], r3[i])]));
  for (const c of candidates) {
    let same = sameValue.get(c);
    if (c.type === 'stream') same = (await streamDifference(master, replica, c.key)) === undefined;
    if (same === undefined) same = c.m.size === c.r.size && Number.isFinite(c.m.size) && (await sameBig(master, replica, c.key, c.type, c.m.size!));
    if (!same) diffs.push({ key: c.key, kind: 'value', master: c.m, replica: c.r });
    else if (ttlDiffers(c.m, c.r, ttlToleranceMs)) diffs.push({ key: c.key, kind: 'ttl', master: c.m, replica: c.r });
  }
  return diffs;
}
