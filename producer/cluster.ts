/**
 * The producer on a Redis Cluster (an ioredis `Cluster`). A cluster's queue
 * is one queue per hash slot (shared/cluster.ts): a write runs the same log
 * scripts as on a standalone master, with the queue keys of its own keys'
 * slot, so the write and its entry stay one atomic script on the shard that
 * owns the slot, and the slot's log moves with the slot when it is resharded.
 *
 * Every key a script touches is declared to Redis with the slot's queue keys,
 * so Redis answers MOVED, ASK, TRYAGAIN or CROSSSLOT before anything runs;
 * the Cluster client follows the first three itself. A write or a group
 * whose keys span several slots fails with Redis's CROSSSLOT error, nothing
 * written; a write without a key (FLUSHALL...) has no slot whose log could
 * hold it and is refused. Writes of one tick go out in one call per slot.
 */
import { exists, getKeyIndexes } from '@ioredis/commands';
import { ReplyError, type ChainableCommander, type Cluster, type Redis } from 'ioredis';
import { callKeyIndexes, commandSpec } from '../shared/commands.js';
import { ConfigError, UnsupportedCommandError } from '../shared/errors.js';
import { QueueKeys } from '../shared/keys.js';
import { scripts } from '../shared/scripts.js';
import { evictionPolicy } from '../shared/probe.js';
import { slotKeys, slotOf } from '../shared/cluster.js';
import type { LoggedCommand } from './calls.js';
import { BlockingPops } from './blocking.js';
import { ScriptSender, type WrappedScript } from './user-scripts.js';
import { WriteGuard } from './write-guard.js';
import { WriteLog, type LogCall, type LogKeys } from './write-log.js';
import { ClusterReplicationWaiter } from './cluster-wait.js';
import type { InOrder } from './wait-replicated.js';

/** Redis's own error for keys in several slots. */
const CROSSSLOT = "CROSSSLOT Keys in request don't hash to the same slot";

const KEYLESS =
  "has no key, so in a Redis Cluster it has no hash slot whose log could hold it (qsync logs each slot's writes in that slot); write to keys instead";
const KEYLESS_SCRIPT =
  'of a script that names no key (numkeys 0) cannot be logged in a Redis Cluster: the hash slot of its keys decides which log holds its writes; pass the keys it writes as KEYS';

/** True for an ioredis Cluster. */
export function isCluster(client: unknown): client is Cluster {
  return (client as { isCluster?: boolean }).isCluster === true;
}

/** The keys a command touches: a write's from the command table (SORT's STORE too), any other's from Redis's command metadata. */
function commandKeys(name: string, args: (string | Buffer)[]): (string | Buffer)[] {
  const spec = commandSpec(name);
  if (spec) return callKeyIndexes(spec, args).map((i) => args[i]);
  if (!exists(name)) return [];
  try {
    return getKeyIndexes(name, args).map((i) => args[i]);
  } catch {
    return [];
  }
}

/** The one hash slot of the keys, -1 for none; Redis's CROSSSLOT error when they span several. */
function slotOfKeys(keys: (string | Buffer)[]): number {
  let slot = -1;
  for (const key of keys) {
    const s = slotOf(key);
    if (slot < 0) slot = s;
    else if (s !== slot) throw new ReplyError(CROSSSLOT) as Error;
  }
  return slot;
}

/** The keys of a call's commands, in order. */
function callKeys(commands: LoggedCommand[]): (string | Buffer)[] {
  return commands.flatMap((c) => commandKeys(c.name, c.args));
}

/** The keys of a script wrapper's items (producer/user-scripts.ts): each script's KEYS, each command's keys. */
function itemKeys(items: (string | Buffer)[]): (string | Buffer)[] {
  const keys: (string | Buffer)[] = [];
  let i = 0;
  while (i < items.length) {
    if (String(items[i]) === 's') {
      const k = Number(String(items[i + 2]));
      const a = Number(String(items[i + 3]));
      keys.push(...items.slice(i + 4, i + 4 + k));
      i += 4 + k + a;
    } else {
      const n = Number(String(items[i + 1]));
      keys.push(...commandKeys(String(items[i + 4]), items.slice(i + 5, i + 4 + n)));
      i += 4 + n;
    }
  }
  return keys;
}

/**
 * The keys the log scripts take for each slot's queue, made at the slot's
 * first write and kept (making them costs about 0.6 µs): three strings a
 * slot, about 8 MB once all 16,384 slots were written to (a whole QueueKeys
 * a slot would hold some 30 MB).
 */
export class SlotQueues {
  private readonly bySlot = new Map<number, LogKeys>();
  /** the queue's keys outside any slot: their prefix is what the guards refuse */
  readonly base: QueueKeys;

  constructor(prefix: string, queue: string) {
    this.base = new QueueKeys(prefix, queue);
  }

  /** The slots written to (or tried) so far. */
  written(): IterableIterator<number> {
    return this.bySlot.keys();
  }

  get(slot: number): LogKeys {
    let keys = this.bySlot.get(slot);
    if (!keys) {
      const { meta, log, dirty } = slotKeys(this.base.prefix, this.base.queue, slot);
      keys = { meta, log, dirty };
      this.bySlot.set(slot, keys);
    }
    return keys;
  }
}

/**
 * The log of a cluster's queue: each call goes to the queue of its keys'
 * slot. A batch of independent writes (a tick's, producer/batcher.ts) is
 * split into one call per slot, the replies put back in order; a call of one
 * slot that fails fails its own writes only.
 */
export class ClusterWriteLog extends WriteLog {
  constructor(
    private readonly cluster: Cluster,
    private readonly queues: SlotQueues,
  ) {
    super(cluster as unknown as Redis, { prefix: queues.base.prefix, queue: queues.base.queue, queueDb: 0 });
  }

  override send(via: Parameters<WriteLog['send']>[0], call: LogCall): Promise<unknown> | ChainableCommander {
    if (call.as === 'batch') return this.batch(call);
    const keys = callKeys(call.commands);
    let slot: number;
    try {
      slot = slotOfKeys(keys);
    } catch (err) {
      if (!call.callback) return Promise.reject(err);
      // In a pipeline, the call fails in its place.
      call.callback(err as Error);
      return via as ChainableCommander;
    }
    // A group of reads without keys logs nothing: any slot's queue serves it, and it is no slot written to.
    return super.send(via, { ...call, queue: slot < 0 ? slotKeys(this.queues.base.prefix, this.queues.base.queue, 0) : this.queues.get(slot), keys });
  }

  private async batch(call: LogCall): Promise<unknown[]> {
    const bySlot = new Map<number, { commands: LoggedCommand[]; places: number[] }>();
    call.commands.forEach((c, i) => {
      const slot = slotOfKeys(commandKeys(c.name, c.args));
      let part = bySlot.get(slot);
      if (!part) {
        part = { commands: [], places: [] };
        bySlot.set(slot, part);
      }
      part.commands.push(c);
      part.places.push(i);
    });
    const replies: unknown[] = new Array(call.commands.length);
    await Promise.all(
      [...bySlot].map(([slot, { commands, places }]) => {
        const sent = super.send(this.cluster as unknown as Redis, { ...call, commands, queue: this.queues.get(slot), keys: callKeys(commands) });
        return (sent as Promise<unknown[]>).then(
          (r) => {
            places.forEach((place, j) => {
              replies[place] = r[j];
            });
          },
          (err: Error) => {
            for (const place of places) replies[place] = err;
          },
        );
      }),
    );
    return replies;
  }
}

/**
 * The write guard of a cluster: qsync's own keys refused as on a standalone
 * master (the per-slot ones too, `<prefix>:{<tag>}:...`), and writes without
 * a key or with keys in several slots; the eviction policy of every master.
 */
export class ClusterWriteGuard extends WriteGuard {
  constructor(
    cluster: Cluster,
    private readonly queueKeys: QueueKeys,
    allowEviction: boolean,
  ) {
    super(cluster as unknown as Redis, queueKeys, 0, allowEviction);
    // A node added to the cluster (a new master, a promoted replica) is checked too.
    cluster.on('+node', () => {
      this.fit = false;
    });
  }

  override refuseOwnKeys(cmd: LoggedCommand, db: number): void {
    super.refuseOwnKeys(cmd, db);
    if (!cmd.write) return;
    if (slotOfKeys(commandKeys(cmd.name, cmd.args)) < 0) throw new UnsupportedCommandError(cmd.name, KEYLESS);
  }

  protected override async check(): Promise<void> {
    if (this.allowEviction) return;
    const cluster = this.client as unknown as Cluster;
    // The masters are known once the slot map is read.
    if (cluster.nodes('master').length === 0) await cluster.ping();
    const log = new QueueKeys(`${this.queueKeys.prefix}:{<slot>}`, this.queueKeys.queue).log;
    await Promise.all(
      cluster.nodes('master').map(async (node) => {
        this.refuseEviction(await evictionPolicy(node), `the master ${node.options.host}:${node.options.port}'s`, log);
      }),
    );
  }
}

/** User scripts on a cluster: each call with the queue keys of its keys' slot, all its keys declared. */
class ClusterScripts extends ScriptSender {
  constructor(private readonly queues: SlotQueues) {
    super(queues.base, '0');
  }

  protected override declared(items: (string | Buffer)[]): (string | Buffer)[] {
    const keys = itemKeys(items);
    const slot = slotOfKeys(keys);
    if (slot < 0) throw new UnsupportedCommandError('eval', KEYLESS_SCRIPT);
    const k = this.queues.get(slot);
    return [String(3 + keys.length), k.meta, k.log, k.dirty, ...keys];
  }

  /** A pipeline may go to any master: each gets the wrappers it lacks. */
  override async load(client: Redis, wrapped: WrappedScript[]): Promise<void> {
    const masters = (client as unknown as Cluster).nodes('master');
    await Promise.all(masters.map((node) => super.load(node, wrapped)));
  }
}

/** The producer's parts for a cluster: the queue in db 0, one log per slot. */
export function clusterParts(cluster: Cluster, settings: { prefix: string; queue: string; queueDb: number; allowEviction: boolean }) {
  const { prefix, queue, queueDb } = settings;
  if (queueDb !== 0) throw new ConfigError(`qsync: queueDb must be 0 on a Redis Cluster (a cluster has db 0 only), got ${queueDb}`);
  // ioredis's auto-pipelining would gather a defined script's calls by the slot of their first argument, the
  // key count, and then refuse the pipeline whose keys live elsewhere: qsync's scripts go out on their own.
  if (cluster.options.enableAutoPipelining) {
    const ignored = cluster.options.autoPipeliningIgnoredCommands ?? [];
    cluster.options.autoPipeliningIgnoredCommands = [
      ...ignored,
      ...scripts()
        .map((s) => s.command)
        .filter((name) => !ignored.includes(name)),
    ];
  }
  const queues = new SlotQueues(prefix, queue);
  const log = new ClusterWriteLog(cluster, queues);
  return {
    log,
    guard: new ClusterWriteGuard(cluster, log.keys, settings.allowEviction),
    blocking: new BlockingPops(undefined),
    scripts: new ClusterScripts(queues),
    waiter: (inOrder: InOrder) => new ClusterReplicationWaiter(cluster, queues, inOrder),
  };
}
