/**
 * Compares a stream key between the master and the replica, as the stream
 * and its consumer groups: the entries (XRANGE, in chunks), the stream's
 * length, last generated ID, max deleted entry ID and entries added (XINFO
 * STREAM); each group's last delivered ID, entries read, pending entries
 * (ID, owner, delivery count and time) and consumers (name, pending count).
 *
 * Not compared: a consumer's seen time (XINFO's idle). Each server sets it
 * from its own clock whenever the consumer reads or claims, also when the
 * replica applies the logged form of a read, so it differs by nature. Nor
 * how the entries are laid out inside the server (DUMP differs after an
 * approximate trim, which removes whole nodes where the exact one left
 * deleted entries behind), which no client sees.
 *
 * Delivery times are read exactly (XINFO STREAM FULL) for the first
 * FULL_COUNT pending entries of each group; past those, pending entries
 * compare by ID, owner and delivery count (XPENDING in chunks), since
 * XPENDING gives only the idle time, which moves while it is read.
 */
import type { Redis } from 'ioredis';

/** Entries and pending entries are read this many at a time. */
const CHUNK = 1000;
/** Pending entries of a group whose delivery time is read exactly. */
const FULL_COUNT = 10_000;

type Reply = Buffer | number | null | Reply[];

const str = (v: Reply): string => (Buffer.isBuffer(v) ? v.toString('latin1') : v === null ? 'nil' : String(v));

/** A flat field/value reply as a map of its fields. */
function fieldsOf(reply: Reply): Map<string, Reply> {
  const out = new Map<string, Reply>();
  const list = Array.isArray(reply) ? reply : [];
  for (let i = 0; i + 1 < list.length; i += 2) out.set(str(list[i]), list[i + 1]);
  return out;
}

/** The named fields of a flat field/value reply, as one comparable line. */
function pick(reply: Reply, names: readonly string[]): string {
  const fields = fieldsOf(reply);
  return JSON.stringify(names.map((n) => [n, canonical(fields.get(n) ?? null)]));
}

/** Any reply as a string that two servers give equal exactly when the replies are. */
function canonical(v: Reply): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (Buffer.isBuffer(v)) return JSON.stringify(v.toString('latin1'));
  return String(v);
}

const STREAM_FIELDS = ['length', 'last-generated-id', 'max-deleted-entry-id', 'entries-added', 'groups'] as const;
const GROUP_FIELDS = ['name', 'consumers', 'pending', 'last-delivered-id', 'entries-read'] as const;
const CONSUMER_FIELDS = ['name', 'pending'] as const;

/**
 * One side of a stream as a sequence of named parts, each a string, read a
 * chunk at a time: two streams are equal when their parts are. The parts
 * are read in the same order on both sides, so that the first that differs
 * stops the comparison.
 */
export async function* streamParts(client: Redis, key: Buffer): AsyncGenerator<[string, string]> {
  const info = (await client.callBuffer('XINFO', 'STREAM', key)) as Reply;
  yield ['stream', pick(info, STREAM_FIELDS)];
  let start: string | Buffer = '-';
  for (let page = 0; ; page++) {
    const entries = (await client.callBuffer('XRANGE', key, start, '+', 'COUNT', CHUNK)) as Reply[];
    yield [`entries ${page}`, canonical(entries)];
    if (entries.length < CHUNK) break;
    start = `(${str((entries[entries.length - 1] as Reply[])[0])}`;
  }
  const groups = (await client.callBuffer('XINFO', 'GROUPS', key)) as Reply[];
  if (groups.length === 0) return;
  const most = Math.min(FULL_COUNT, Math.max(...groups.map((g) => Number(fieldsOf(g).get('pending')))));
  const full = fieldsOf((await client.callBuffer('XINFO', 'STREAM', key, 'FULL', 'COUNT', Math.max(most, 1))) as Reply);
  const fullGroups = new Map(((full.get('groups') ?? []) as Reply[]).map((g) => [str(fieldsOf(g).get('name') ?? null), fieldsOf(g)]));
  for (const g of groups) {
    const name = fieldsOf(g).get('name') as Buffer;
    yield [`group ${str(name)}`, pick(g, GROUP_FIELDS)];
    const consumers = (await client.callBuffer('XINFO', 'CONSUMERS', key, name)) as Reply[];
    yield [`consumers of ${str(name)}`, consumers.map((c) => pick(c, CONSUMER_FIELDS)).join('\n')];
    // [id, owner, delivery time, delivery count] for the first FULL_COUNT pending entries
    yield [`delivery times in ${str(name)}`, canonical(fullGroups.get(str(name))?.get('pending') ?? null)];
    let from: string | Buffer = '-';
    for (let page = 0; ; page++) {
      // [id, owner, idle, delivery count]: the idle time left out
      const pel = (await client.callBuffer('XPENDING', key, name, from, '+', CHUNK)) as Reply[][];
      yield [`pending ${page} in ${str(name)}`, canonical(pel.map(([id, owner, , count]) => [id, owner, count]))];
      if (pel.length < CHUNK) break;
      from = `(${str(pel[pel.length - 1][0])}`;
    }
  }
}

/** The first part in which the stream differs between master and replica (its name), or undefined when they are equal. */
export async function streamDifference(master: Redis, replica: Redis, key: Buffer): Promise<string | undefined> {
  const m = streamParts(master, key);
  const r = streamParts(replica, key);
  for (;;) {
    const [a, b] = await Promise.all([m.next(), r.next()]);
    if (a.done || b.done) return a.done && b.done ? undefined : 'parts';
    if (a.value[0] !== b.value[0] || a.value[1] !== b.value[1]) {
      await Promise.all([m.return(undefined), r.return(undefined)]);
      return a.value[0];
    }
  }
}

/** The whole stream as one string (for small streams: tests, reports). */
export async function streamImage(client: Redis, key: Buffer): Promise<string> {
  const parts: string[] = [];
  for await (const [name, part] of streamParts(client, key)) parts.push(`${name}: ${part}`);
  return parts.join('\n');
}
