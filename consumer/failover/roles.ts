/**
 * A queue's roles on its servers, as failover, promote and rejoin change
 * them, and as `qsync status` shows them.
 *
 * - A master is fenced by a field of its meta hash (`fenced`: the new
 *   master, `fencedAt`), which the log-write path reads on every call
 *   (shared/lua/includes/log-open.lua): from then on every producer write,
 *   commands and scripts alike, is refused atomically with a FencedError
 *   naming the new master.
 * - A replica is promoted by shared/lua/promote-6.lua: a log of its own with
 *   a new epoch, where it came from recorded in its meta hash, and its
 *   applied hash marked so that no consumer of the old master touches it.
 * - A server becomes a master's replica when its applied hash says it is at
 *   the start of that master's log (seq 0 of its epoch).
 * - Each server keeps the queue's role history (`roles`, one JSON record an
 *   event); a promotion starts from the old master's history when it can.
 */
import type { Redis, Result } from 'ioredis';
import type { QueueKeys } from '../../shared/keys.js';
import { ReplyCode } from '../../shared/reply-codes.js';
import { RoleError } from '../../shared/errors.js';

type Arg = string | Buffer | number;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    /** promote-6.lua: code, then last seq applied, old epoch, new epoch, at (ms), keys pending a copy */
    qsyncPromote(...args: Arg[]): Result<(number | string)[], Context>;
  }
}

/** One event of a queue's role history. */
export type RoleEvent =
  | {
      event: 'promoted';
      /** by `qsync failover` (planned) or `qsync promote` (emergency) */
      how: 'failover' | 'promote';
      /** the old master, as named on the command line ('' when not known) */
      from: string;
      fromEpoch: string;
      /** the last entry of the old master's log the promoted server applied */
      atSeq: number;
      /** ms since 1970, the promoted server's clock */
      at: number;
      /** the epoch of the promoted server's own log */
      epoch: string;
    }
  | { event: 'fenced'; server: string; newMaster: string; seq: number; epoch: string; at: number }
  | { event: 'rejoined'; server: string; master: string; tailEntries: number; tailKeys: number; repairedKeys: number; at: number };

/** The role history a server holds, oldest first (records that do not parse are left out). */
export async function readRoles(client: Redis, keys: QueueKeys): Promise<RoleEvent[]> {
  const out: RoleEvent[] = [];
  for (const text of await client.lrange(keys.roles, 0, -1)) {
    try {
      out.push(JSON.parse(text) as RoleEvent);
    } catch {
      // Not written by qsync: nothing to show.
    }
  }
  return out;
}

export async function addRole(client: Redis, keys: QueueKeys, event: RoleEvent): Promise<void> {
  await client.rpush(keys.roles, JSON.stringify(event));
}

/** A master's queue as a fence finds it, read in the same step as the fence. */
export interface Fence {
  /** the fence this one replaced (a server marked for another role), null for none */
  previous: string | null;
  seq: number | null;
  epoch: string | null;
  /** the queue's own state: writes went unqueued (mark-dirty) */
  state: string | null;
}

/** Fences the queue on a server, naming the new master; what it held before comes back, for unfence(). */
export async function fence(client: Redis, keys: QueueKeys, newMaster: string): Promise<Fence> {
  const [[, previous], , [, [seq, epoch, state]]] = (await client
    .multi()
    .hget(keys.meta, 'fenced')
    .hset(keys.meta, 'fenced', newMaster, 'fencedAt', Date.now())
    .hmget(keys.meta, 'seq', 'epoch', 'state')
    .exec()) as [[null, string | null], [null, number], [null, (string | null)[]]];
  return { previous, seq: seq === null ? null : Number(seq), epoch, state };
}

/** Takes a fence back: the server's fence as it was before (none, or the one it replaced). */
export async function unfence(client: Redis, keys: QueueKeys, before: Fence): Promise<void> {
  if (before.previous === null) await client.hdel(keys.meta, 'fenced', 'fencedAt');
  else await client.hset(keys.meta, 'fenced', before.previous);
}

/** What the promote script found and did. */
export interface Promotion {
  /** the last entry of the old master's log the promoted server applied */
  atSeq: number;
  fromEpoch: string;
  epoch: string;
  at: number;
  /** keys the replica was waiting to copy from the old master (expired on it first): their last writes are missing */
  pendingKeys: number;
}

/**
 * Promotes a replica (shared/lua/promote-6.lua). `expectEpoch`: the old
 * master's epoch the replica must follow ('' : any); `history`: the role
 * history to start from (none: the server's own).
 */
export async function promote(
  server: Redis,
  keys: QueueKeys,
  where: { server: string; from: string },
  how: 'failover' | 'promote',
  expectEpoch: string,
  history: RoleEvent[],
): Promise<Promotion> {
  const reply = await server.qsyncPromote(
    keys.meta,
    keys.log,
    keys.dirty,
    keys.status,
    keys.roles,
    keys.applied,
    expectEpoch,
    where.from,
    how,
    ...history.map((e) => JSON.stringify(e)),
  );
  const code = Number(reply[0]);
  const queue = `queue '${keys.queue}'`;
  if (code === ReplyCode.notAReplica)
    throw new RoleError(`qsync: ${how}: ${where.server} is not a replica of ${queue}: it holds no watermark (${keys.applied}); nothing changed`);
  if (code === ReplyCode.promoted)
    throw new RoleError(`qsync: ${how}: ${where.server} was promoted to master of ${queue} already (epoch ${reply[1]}); nothing changed`);
  if (code === ReplyCode.resyncing)
    throw new RoleError(`qsync: ${how}: a resync or repair of ${where.server} did not finish: its data is incomplete; nothing changed`);
  if (code === ReplyCode.otherLog)
    throw new RoleError(
      `qsync: ${how}: ${where.server} follows another log of ${queue} (epoch ${reply[1] || 'none'}) than ${where.from}'s (epoch ${expectEpoch}); nothing changed`,
    );
  return { atSeq: Number(reply[1]), fromEpoch: String(reply[2]), epoch: String(reply[3]), at: Number(reply[4]), pendingKeys: Number(reply[5]) };
}

/**
 * Makes a server a replica of the master whose log has `epoch`, at the start
 * of that log, in one step: its old watermark goes, and so does its own log
 * of the queue (every entry of it is on the new master, or was set aside by
 * rejoin). `held`: fields of keys it must copy from the new master before
 * applying anything to them (shared/lua/includes/held.lua).
 */
export async function becomeReplica(server: Redis, keys: QueueKeys, epoch: string, held: Buffer[] = []): Promise<void> {
  const tx = server.multi().del(keys.applied, keys.log, keys.dirty).hset(keys.applied, 'seq', '0', 'epoch', epoch);
  if (held.length > 0) {
    tx.hset(keys.applied, 'held', '0', 'heldPending', held.length);
    for (let i = 0; i < held.length; i += 1000) tx.hset(keys.applied, ...held.slice(i, i + 1000).flatMap((f) => [f, 'p0']));
  }
  await tx.exec();
}

/** A master of the queue as a failover or rejoin needs to see it. */
export interface MasterRole {
  seq: number | null;
  epoch: string | null;
  fenced: string | null;
  state: string | null;
  promotedFromEpoch: string | null;
  promotedAtSeq: number | null;
}

export async function readMasterRole(client: Redis, keys: QueueKeys): Promise<MasterRole> {
  const [seq, epoch, fenced, state, promotedFromEpoch, promotedAtSeq] = await client.hmget(
    keys.meta,
    'seq',
    'epoch',
    'fenced',
    'state',
    'promotedFromEpoch',
    'promotedAtSeq',
  );
  return {
    seq: seq === null ? null : Number(seq),
    epoch,
    fenced,
    state,
    promotedFromEpoch,
    promotedAtSeq: promotedAtSeq === null ? null : Number(promotedAtSeq),
  };
}

/** A replica of the queue: its watermark and the log it follows. */
export interface ReplicaRole {
  seq: number | null;
  epoch: string | null;
  heldPending: number;
  promoted: string | null;
}

export async function readReplicaRole(client: Redis, keys: QueueKeys): Promise<ReplicaRole> {
  const [seq, epoch, heldPending, promoted] = await client.hmget(keys.applied, 'seq', 'epoch', 'heldPending', 'promoted');
  return { seq: seq === null ? null : Number(seq), epoch, heldPending: Number(heldPending ?? 0), promoted };
}

/** A queue's roles on one server, as `qsync status` shows them. */
export interface RoleStatus {
  /** writes are refused here, naming the new master (qsync failover, promote, rejoin) */
  fenced: { newMaster: string; at: number | null } | null;
  /** the queue's role history, oldest first */
  history: RoleEvent[];
}

export async function readRoleStatus(client: Redis, keys: QueueKeys): Promise<RoleStatus> {
  const [[fenced, at], history] = await Promise.all([client.hmget(keys.meta, 'fenced', 'fencedAt'), readRoles(client, keys)]);
  return { fenced: fenced === null ? null : { newMaster: fenced, at: at === null ? null : Number(at) }, history };
}

const when = (ms: number) => new Date(ms).toISOString();

/** One line for an event of the role history. */
function roleEventText(e: RoleEvent): string {
  if (e.event === 'promoted')
    return `${when(e.at)} promoted (${e.how}) from ${e.from || 'an unnamed master'} at seq ${e.atSeq} of epoch ${e.fromEpoch || 'none'}; own log, epoch ${e.epoch}`;
  if (e.event === 'fenced') return `${when(e.at)} ${e.server} fenced at seq ${e.seq} of epoch ${e.epoch}; new master ${e.newMaster}`;
  return `${when(e.at)} ${e.server} rejoined as ${e.master}'s replica: tail ${e.tailEntries} entries, ${e.tailKeys} keys; ${e.repairedKeys} keys copied`;
}

/** The lines of `qsync status` for the queue's roles on a server: its fence, then its role history. */
export function roleLines(role: RoleStatus): string[] {
  const lines = role.history.map((e, i) => `  ${i === 0 ? 'role history' : '            '}    ${roleEventText(e)}`);
  const f = role.fenced;
  if (f) lines.unshift(`  fenced          writes are refused here${f.at ? ` since ${when(f.at)}` : ''}: the master is ${f.newMaster}`);
  return lines;
}
