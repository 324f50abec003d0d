/**
 * The source cluster's masters and the slots each owns, as the consumer
 * follows them: read with CLUSTER SHARDS from any node that answers, again
 * every few seconds and whenever a read or a trim meets a slot that moved.
 */
import type { Cluster } from 'ioredis';

/** A master of the source and what it serves. */
export interface SourceShard {
  /** the master's node ID (CLUSTER MYID): the shard's lease and status are under it */
  id: string;
  host: string;
  port: number;
  /** the hash slots it owns now */
  slots: number[];
}

/** One CLUSTER SHARDS entry: `slots [start end ...] nodes [[field value ...] ...]`. */
type ShardReply = (string | number[] | (string | number)[][])[];

/** The fields of a CLUSTER SHARDS node as an object. */
function fieldsOf(flat: (string | number)[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

/** The masters serving slots, from CLUSTER SHARDS asked of any node of the cluster. */
export async function readTopology(source: Cluster): Promise<SourceShard[]> {
  const reply = (await source.call('CLUSTER', 'SHARDS')) as ShardReply[];
  const shards: SourceShard[] = [];
  for (const entry of reply) {
    const at = Object.fromEntries(Array.from({ length: entry.length / 2 }, (_, i) => [String(entry[2 * i]), entry[2 * i + 1]]));
    const ranges = (at.slots ?? []) as number[];
    if (ranges.length === 0) continue;
    const nodes = ((at.nodes ?? []) as (string | number)[][]).map(fieldsOf);
    const master = nodes.find((n) => n.role === 'master' && n.health !== 'fail');
    if (!master) continue;
    const slots: number[] = [];
    for (let i = 0; i + 1 < ranges.length; i += 2) for (let s = Number(ranges[i]); s <= Number(ranges[i + 1]); s++) slots.push(s);
    const host = master.ip || master.endpoint || master.hostname;
    shards.push({ id: master.id, host, port: Number(master.port ?? master['tls-port']), slots });
  }
  return shards;
}

/** Errors by which a node says a slot is not (or not wholly) its own now: the topology changed. */
const MOVED_ERRORS = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN)\b|non local key|cluster is down|Too many Cluster redirections/i;

/** Whether an error (or a refusal's text) is a cluster's slot moving or the cluster being down: retried once the topology settles. */
export function isTopologyError(message: string): boolean {
  return MOVED_ERRORS.test(message);
}
