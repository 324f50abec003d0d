/**
 * `qsync rejoin`: an old master comes back after its replica was promoted
 * (qsync promote) and becomes the new master's replica, with no full copy.
 *
 * What the old master A has that the new master B does not is exactly its
 * log's tail: the entries after the last one B applied (B's meta records it),
 * plus the keys written on A unqueued (A's dirty set). Everything else on A
 * is what B had when its own log started. So:
 * 1. A is fenced, naming B: nothing more lands on it.
 * 2. The tail is read and reported (entries, keys), then each entry is
 *    parked as a dead letter on B (the default: `qsync dlq list --master B`
 *    shows them, `qsync dlq retry` applies them on B later), applied on B
 *    now, or discarded.
 * 3. In one step on A: its watermark is set at the start of B's log, its own
 *    log goes, and every key the tail touched (with A's and B's dirty keys)
 *    is held pending (shared/lua/includes/held.lua).
 * 4. Those keys, and only those, are copied from B
 *    (consumer/drain/held-keys.ts): each copy carries B's sequence at the
 *    read, and the consumer then skips B's entries already in a copy, so
 *    that no entry is applied twice to a copied key. A consumer started
 *    before the copy finished copies the keys itself.
 */
import type { Redis } from 'ioredis';
import { entryKeys, keyId, type DbKey } from '../../shared/entry-keys.js';
import { decodeEntry, type Entry } from '../../shared/entry.js';
import { ExitCode, QsyncError, RoleError } from '../../shared/errors.js';
import type { QueueKeys } from '../../shared/keys.js';
import { assertDistinct } from '../../shared/probe.js';
import { defineScripts } from '../../shared/scripts.js';
import { encodeDeadLetter, readDeadLetters } from '../drain/dead-letter-record.js';
import { HeldKeys } from '../drain/held-keys.js';
import { applyTailEntry } from './tail.js';
import { addRole, becomeReplica, fence, readMasterRole, readReplicaRole, type RoleEvent } from './roles.js';

/** What becomes of the old master's tail on the new master. */
export const TAIL_ACTIONS = ['park', 'apply', 'discard'] as const;
export type TailAction = (typeof TAIL_ACTIONS)[number];

export interface RejoinOptions {
  /** the promoted server, master of the queue now */
  master: Redis;
  /** the old master, to become its replica */
  replica: Redis;
  masterWhere: string;
  replicaWhere: string;
  keys: QueueKeys;
  queueDb: number;
  tail: TailAction;
}

export interface RejoinResult {
  /** entries the old master logged after the last one the new master applied */
  tailEntries: number;
  /** keys those entries touched, with the keys written unqueued on either side */
  tailKeys: number;
  parked: number;
  applied: number;
  discarded: number;
  /** keys copied from the new master */
  repairedKeys: number;
  /** keys whose copy the consumer still has to make */
  pendingKeys: number;
  /** the new master's promotion point: the old master's last entry it applied */
  promotedAtSeq: number;
  /** the epoch of the new master's log, which the old master now follows */
  epoch: string;
}

const CHUNK = 1000;

export async function runRejoin(o: RejoinOptions): Promise<RejoinResult> {
  const { master, replica, keys, masterWhere: b, replicaWhere: a } = o;
  for (const c of [master, replica]) defineScripts(c);
  await assertDistinct(master, replica, b, a);
  const queue = `queue '${keys.queue}'`;
  const [bm, am, ar] = await Promise.all([readMasterRole(master, keys), readMasterRole(replica, keys), readReplicaRole(replica, keys)]);
  if (am.promotedFromEpoch !== null && am.promotedFromEpoch === bm.epoch)
    throw new RoleError(
      `qsync: rejoin: the roles are reversed: --replica ${a} was promoted from --master ${b}'s log; run qsync rejoin --master ${a} --replica ${b}; nothing changed`,
    );
  if (bm.promotedAtSeq === null || bm.promotedFromEpoch === null || bm.epoch === null)
    throw new RoleError(`qsync: rejoin: --master ${b} was never promoted to master of ${queue} (no promotion in ${keys.meta}); nothing changed`);
  if (ar.epoch === bm.epoch)
    throw new RoleError(
      `qsync: rejoin: --replica ${a} follows --master ${b}'s log already: run qsync consume --master ${b} --replica ${a}; nothing changed`,
    );
  if (am.epoch !== bm.promotedFromEpoch)
    throw new RoleError(
      `qsync: rejoin: --replica ${a} holds another log of ${queue} (epoch ${am.epoch ?? 'none'}) than the one --master ${b} was promoted from (epoch ${bm.promotedFromEpoch}): its data cannot be told apart; rebuild it with qsync resync --master ${b} --replica ${a}; nothing changed`,
    );

  if (am.fenced !== b) {
    const f = await fence(replica, keys, b);
    await addRole(replica, keys, { event: 'fenced', server: a, newMaster: b, seq: f.seq ?? 0, epoch: am.epoch, at: Date.now() });
  }
  const tail = await readTail(replica, keys, bm.promotedAtSeq);
  const touched = new Map<string, DbKey>();
  for (const e of tail) for (const k of entryKeys(e.entry)) touched.set(keyId(k.db, k.key), k);
  for (const server of [replica, master]) for (const k of await dirtyKeys(server, keys)) touched.set(keyId(k.db, k.key), k);

  const done = await settleTail(o, tail, bm.promotedFromEpoch, a);
  const held = [...touched.values()].map((k) => Buffer.concat([Buffer.from(`held:${k.db}:`), k.key]));
  await becomeReplica(replica, keys, bm.epoch, held);
  const { copied, pending } = await new HeldKeys(master, replica, keys, o.queueDb).copy(bm.epoch);

  const event: RoleEvent = {
    event: 'rejoined',
    server: a,
    master: b,
    tailEntries: tail.length,
    tailKeys: touched.size,
    repairedKeys: copied,
    at: Date.now(),
  };
  await Promise.all([addRole(master, keys, event), addRole(replica, keys, event)]);
  return {
    tailEntries: tail.length,
    tailKeys: touched.size,
    ...done,
    repairedKeys: copied,
    pendingKeys: pending,
    promotedAtSeq: bm.promotedAtSeq,
    epoch: bm.epoch,
  };
}

/** The old master's tail changed keys no list can name (a FLUSHDB, a FLUSHALL): only a resync can bring it back. */
class UnlistedTailError extends QsyncError {
  override readonly exitCode = ExitCode.resyncNeeded;
}

interface TailEntry {
  raw: Buffer;
  entry: Entry;
}

/** The entries of the old master's log after `after`, in order; a FLUSHDB or FLUSHALL among them changed keys no list can name. */
async function readTail(replica: Redis, keys: QueueKeys, after: number): Promise<TailEntry[]> {
  const out: TailEntry[] = [];
  for (let at = 0; ; at += CHUNK) {
    const chunk = (await replica.lrangeBuffer(keys.log, at, at + CHUNK - 1)) as Buffer[];
    for (const raw of chunk) {
      let entry: Entry;
      try {
        entry = decodeEntry(raw);
      } catch {
        // Bytes that are not an entry changed nothing on the old master.
        continue;
      }
      if (entry.seq <= after) continue;
      const flush = entry.commands.find((c) => /^flush(db|all)$/i.test(c[0].toString('latin1')));
      if (flush)
        throw new UnlistedTailError(
          `qsync: rejoin: entry ${entry.seq} of the old master's tail is a ${flush[0].toString().toUpperCase()}: the keys it changed cannot be listed; rebuild it with qsync resync; nothing changed`,
        );
      out.push({ raw, entry });
    }
    if (chunk.length < CHUNK) return out;
  }
}

/** The keys of a server's dirty set (members `<db>:<key>`): written there unqueued. */
async function dirtyKeys(server: Redis, keys: QueueKeys): Promise<DbKey[]> {
  const out: DbKey[] = [];
  let cursor = '0';
  do {
    const [next, members] = await server.sscanBuffer(keys.dirty, cursor, 'COUNT', CHUNK);
    cursor = next.toString();
    for (const m of members) {
      const colon = m.indexOf(':');
      out.push({ db: Number(m.subarray(0, colon).toString()), key: m.subarray(colon + 1) });
    }
  } while (cursor !== '0');
  return out;
}

/**
 * Parks, applies or discards the tail on the new master. Parking skips an
 * entry parked already (a rejoin run again after it stopped half way); an
 * entry the new master refuses to apply is parked instead, with why.
 */
async function settleTail(
  o: RejoinOptions,
  tail: TailEntry[],
  epoch: string,
  a: string,
): Promise<{ parked: number; applied: number; discarded: number }> {
  const { master, keys } = o;
  const done = { parked: 0, applied: 0, discarded: 0 };
  if (o.tail === 'discard') return { ...done, discarded: tail.length };
  const filed = new Set((await readDeadLetters(master, keys)).filter((l) => l.epoch === epoch).map((l) => l.seq));
  const letters: Buffer[] = [];
  const park = (t: TailEntry, error: string) => {
    done.parked++;
    if (!filed.has(t.entry.seq)) letters.push(encodeDeadLetter({ seq: t.entry.seq, epoch, index: 1, done: 0, error, parkedAt: Date.now() }, t.raw));
  };
  for (const t of tail) {
    if (o.tail === 'park') {
      park(t, `written on the old master ${a} after the new master was promoted (qsync rejoin)`);
      continue;
    }
    const refused = await applyTailEntry(master, keys, o.queueDb, t.entry);
    if (refused === null) done.applied++;
    else park(t, `the new master refused it: ${refused}`);
  }
  for (let i = 0; i < letters.length; i += CHUNK) await master.rpush(keys.dlq, ...letters.slice(i, i + CHUNK));
  return done;
}
