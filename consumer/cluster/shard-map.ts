/**
 * A Redis Cluster as the operator commands see it: its masters (the shards),
 * the slots each owns, and one plain connection per master, so that a
 * command reads every shard's part of a queue with one pipeline per node.
 */
import type { Redis, RedisOptions } from 'ioredis';
import { ConfigError } from '../../shared/errors.js';
import { slotKeys, SLOTS } from '../../shared/cluster.js';
import { probe } from '../../shared/probe.js';

export interface Shard {
  /** the master's node ID (CLUSTER MYID) */
  id: string;
  /** `host:port` as the cluster announces it */
  address: string;
  /** the hash slots it owns, ascending */
  slots: number[];
  /** a connection to this master */
  client: Redis;
}

export interface ClusterSide {
  shards: Shard[];
  /** the shard that owns a slot, undefined for a slot no master serves */
  ownerOf(slot: number): Shard | undefined;
  close(): void;
}

type SlotRange = [number, number, [string, number, string, ...unknown[]], ...unknown[]];

/** A Redis Cluster has db 0 only: a queue db other than 0 cannot be on one. */
export function clusterQueueDb(queueDb: number, flag: string, where: string): void {
  if (queueDb !== 0) throw new ConfigError(`qsync: ${flag} ${queueDb} cannot be used with ${where}, a Redis Cluster node (a cluster has db 0 only)`);
}

/**
 * Connects to every master of the cluster `options` reaches (any node of it),
 * each checked as probe() checks a server. `what` and `where` name the side in
 * messages (`master`, the URL given).
 */
export async function openCluster(options: RedisOptions, what: string, where: string, timeoutMs?: number): Promise<ClusterSide> {
  const clients: Redis[] = [];
  const close = () => {
    for (const c of clients) c.disconnect();
  };
  try {
    const first = await probe({ ...options, db: 0 }, what, where, timeoutMs);
    clients.push(first);
    const ranges = (await first.call('CLUSTER', 'SLOTS')) as SlotRange[];
    const byId = new Map<string, { address: string; host: string; port: number; slots: number[] }>();
    for (const [start, end, [host, port, id]] of ranges) {
      const shard = byId.get(id) ?? { address: `${host}:${port}`, host, port, slots: [] };
      for (let s = start; s <= end; s++) shard.slots.push(s);
      byId.set(id, shard);
    }
    const own = `${first.options.host}:${first.options.port}`;
    const shards: Shard[] = [];
    for (const [id, s] of [...byId].sort(([, a], [, b]) => a.slots[0] - b.slots[0])) {
      let client = first;
      if (s.address !== own) {
        client = await probe({ ...options, db: 0, host: s.host, port: s.port }, `${what} shard`, `${s.address} (of ${where})`, timeoutMs);
        clients.push(client);
      }
      shards.push({ id, address: s.address, slots: s.slots.sort((a, b) => a - b), client });
    }
    const owners: (Shard | undefined)[] = new Array(SLOTS);
    for (const shard of shards) for (const s of shard.slots) owners[s] = shard;
    return { shards, ownerOf: (slot) => owners[slot], close };
  } catch (err) {
    close();
    throw err;
  }
}

/** A command of one slot: its name and arguments. */
export type Read = [string, ...string[]];

const REDIRECT = /^(MOVED|ASK) \d+ (\S+)/;
const TRYAGAIN_MS = 100;
const MAX_TRIES = 50;

/** One command sent again after `err`: to the master a MOVED or ASK names, or after a pause on TRYAGAIN. */
async function sendAgain(client: Redis, command: Read, err: Error, side: ClusterSide | undefined, tries: number): Promise<unknown> {
  const to = REDIRECT.exec(err.message);
  const node = to ? side?.shards.find((s) => s.address === to[2])?.client : err.message.startsWith('TRYAGAIN') ? client : undefined;
  if (!node || tries >= MAX_TRIES) throw err;
  if (!to) await new Promise((r) => setTimeout(r, TRYAGAIN_MS));
  const [name, ...args] = command;
  const pipeline = to?.[1] === 'ASK' ? node.pipeline().call('ASKING') : node.pipeline();
  const [err2, reply] = ((await pipeline.call(name, ...args).exec()) ?? []).at(-1) ?? [null, null];
  return err2 ? sendAgain(node, command, err2, side, tries + 1) : reply;
}

/**
 * The replies of commands of one slot each sent to one node in one pipeline.
 * A command whose slot moved since the slot map was read (MOVED), or is
 * moving now and whose key has left (ASK), is sent again to the node the
 * error names, when that is a master of `side`; one whose keys a move has
 * split between two nodes (TRYAGAIN) is sent again after a pause; any other
 * error fails.
 */
export async function sendFollowing(client: Redis, commands: Read[], side?: ClusterSide): Promise<unknown[]> {
  const pipeline = client.pipeline();
  for (const [name, ...args] of commands) pipeline.call(name, ...args);
  const replies = (await pipeline.exec()) ?? [];
  return Promise.all(replies.map(([err, value], i) => (err ? sendAgain(client, commands[i], err, side, 1) : value)));
}

/** The replies of read commands sent to one node in one pipeline (sendFollowing), as numbers (nil: 0). */
export async function readNumbers(client: Redis, reads: Read[], side?: ClusterSide): Promise<number[]> {
  return (await sendFollowing(client, reads, side)).map((v) => Number(v ?? 0));
}

/** The replica's watermark of each slot (0 where it has none), one pipeline per target node. */
export async function slotWatermarks(
  target: Redis | ClusterSide,
  prefix: string,
  queue: string,
  name: string,
  slots: number[],
): Promise<Map<number, number>> {
  const side = 'shards' in target ? target : undefined;
  const groups = new Map<Redis, number[]>();
  for (const slot of slots) {
    const client = side ? side.ownerOf(slot)?.client : (target as Redis);
    if (!client) continue;
    groups.set(client, [...(groups.get(client) ?? []), slot]);
  }
  const marks = new Map<number, number>();
  for (const [client, group] of groups) {
    const seqs = await readNumbers(
      client,
      group.map((slot) => ['HGET', slotKeys(prefix, queue, slot, name).applied, 'seq']),
      side,
    );
    for (const [i, slot] of group.entries()) marks.set(slot, seqs[i]);
  }
  return marks;
}
