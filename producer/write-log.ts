/**
 * Sends writes through the log-write script: each call runs its writes on the
 * master and appends their logged form to the queue in one atomic step.
 */
import { ReplyError, type Redis, type ChainableCommander, type ClusterOptions, type RedisOptions } from 'ioredis';
import { commandSpec, isUnsupportedWrite, keyIndexes, logRule, viewSpec } from '../shared/commands.js';
import { ConfigError, FencedError, QueueFullError } from '../shared/errors.js';
import { QueueKeys, DEFAULT_PREFIX, DEFAULT_QUEUE, DEFAULT_QUEUE_DB } from '../shared/keys.js';
import { defineScripts } from '../shared/scripts.js';
import { exactReplies, mayCarryDigits } from './exact-integers.js';
import { reportRefusal } from './refusals.js';
import { logArgs, type Callback, type LoggedCommand } from './calls.js';
// Kept in write-log.d.ts too: it brings the types of the script commands (an ioredis augmentation).
import '../shared/scripts.js';

export interface ProducerOptions {
  /**
   * Name of the queue the writes are logged to.
   * @default 'default'
   */
  queue?: string;
  /**
   * Prefix of qsync's own keys.
   * @default 'qsync'
   */
  prefix?: string;
  /**
   * Logical db that holds the queue on the master.
   * @default 0
   */
  queueDb?: number;
}

/** The queue keys the log scripts take. */
export type LogKeys = Pick<QueueKeys, 'meta' | 'log' | 'dirty'>;

type Sender = Pick<Redis, 'qsyncLogWrite' | 'qsyncLogWriteBuffer' | 'qsyncLogSimple' | 'qsyncLogSimpleBuffer'> | ChainableCommander;

/** One call of the log-write script. */
export interface LogCall {
  /** the db the writes run in */
  db: number;
  commands: LoggedCommand[];
  /**
   * `one`: a single write, whose reply comes back as it is; `group`: the
   * commands make one entry (multi()), an array of replies comes back;
   * `batch`: independent writes, an entry each, an array of replies.
   */
  as: 'one' | 'group' | 'batch';
  /** replies stay Buffers (the `...Buffer` methods) */
  buffer: boolean;
  /** a node-style callback, for a call queued in a pipeline */
  callback?: Callback;
  /** the queue's keys to log to, when not the log's own (a Redis Cluster's slot: producer/cluster.ts) */
  queue?: LogKeys;
  /**
   * Every key the commands touch, declared to Redis with the queue's keys
   * (Redis Cluster: producer/cluster.ts), so that Redis answers MOVED, ASK,
   * TRYAGAIN or CROSSSLOT before the script runs. Without it the log-write
   * script is told the written keys alone, and the lean script none.
   */
  keys?: (string | Buffer)[];
}

/** How the log-write script's error reply for a full queue starts; the cap follows. */
const QUEUE_FULL = 'QSYNCFULL ';
/** How its error reply for a fenced queue starts (qsync failover); the new master follows. */
const FENCED = 'QSYNCFENCED ';
/** The lean script's answer when the queue is marked dirty: nothing ran, the call goes to log-write.lua. */
const SLOW = 'QSYNCSLOW ';

type ScriptFn = (...args: unknown[]) => Promise<unknown>;

/**
 * True for a write the lean script (shared/lua/log-simple.lua) logs as
 * log-write.lua would: one logged as it was sent, always or when it changed
 * something.
 */
function isSimple(c: LoggedCommand): boolean {
  if (!c.write) return false;
  const spec = commandSpec(c.name);
  if (!spec) return false;
  const rule = logRule(c.name, spec, c.args.length);
  return rule === 'always' || rule === 'changed';
}

/**
 * The arguments of a call of the lean script: a command with the same name,
 * rule and key spec as the one before it sends only -n and its arguments
 * (a command's name decides both, for the writes the lean script takes).
 */
function leanArgs({ db, commands, as }: LogCall, queueDb: string): (string | Buffer)[] {
  const argv: (string | Buffer)[] = [String(db), queueDb, as === 'batch' ? 'b' : '1'];
  let name = '';
  for (const c of commands) {
    const n = c.args.length + 1;
    if (c.name === name) argv.push(String(-n));
    else {
      const spec = commandSpec(c.name) as NonNullable<ReturnType<typeof commandSpec>>;
      argv.push(String(n), logRule(c.name, spec, c.args.length), viewSpec(spec), c.name);
      name = c.name;
    }
    for (const a of c.args) argv.push(a);
  }
  return argv;
}

export class WriteLog {
  readonly keys: QueueKeys;
  readonly queueDb: string;
  /** The options the client's connections parse replies with (a Redis Cluster keeps them apart, as redisOptions). */
  private readonly replyOptions: RedisOptions;

  constructor(
    readonly client: Redis,
    options: ProducerOptions = {},
  ) {
    const queueDb = options.queueDb ?? DEFAULT_QUEUE_DB;
    if (!Number.isInteger(queueDb) || queueDb < 0) throw new ConfigError(`qsync: queueDb must be a db number, got ${String(options.queueDb)}`);
    if (client.options.keyPrefix) {
      throw new ConfigError(`qsync: clients with keyPrefix ('${client.options.keyPrefix}') are not supported; add the prefix to the keys instead`);
    }
    this.keys = new QueueKeys(options.prefix ?? DEFAULT_PREFIX, options.queue ?? DEFAULT_QUEUE);
    this.queueDb = String(queueDb);
    this.replyOptions = client.isCluster ? ((client.options as ClusterOptions).redisOptions ?? {}) : client.options;
    defineScripts(client);
  }

  /** True for a command that must go through the log: a supported or a refused write. */
  isLogged(name: string): boolean {
    return commandSpec(name) !== undefined || name === 'eval' || name === 'evalsha' || isUnsupportedWrite(name);
  }

  /**
   * The script's refusal of a write because the queue is full (policy
   * `reject`) as a QueueFullError naming the queue and the cap, or because
   * the queue is fenced (qsync failover) as a FencedError naming the new
   * master; any other error as it is.
   */
  refusal(err: Error): Error {
    if (!(err instanceof ReplyError)) return err;
    // Raised inside a script, the refusal ends with the script's name and line.
    const rest = (prefix: string) => err.message.slice(prefix.length).replace(/ script: .*$/s, '');
    if (err.message.startsWith(QUEUE_FULL)) return new QueueFullError(this.keys.queue, rest(QUEUE_FULL));
    if (err.message.startsWith(FENCED)) return new FencedError(this.keys.queue, rest(FENCED));
    return err;
  }

  /**
   * Sends commands as one atomic script call on `via` (the client or a pipeline).
   * A full queue rejects the call with a QueueFullError (in a pipeline, that
   * command's result and callback get it).
   */
  send(via: Sender, call: LogCall): Promise<unknown> | ChainableCommander {
    const { commands, as, buffer, callback } = call;
    // Writes sent on their own or in a batch, all logged as sent, take the lean script; the
    // queue's state can still send them on to log-write.lua (a queue marked dirty).
    if (via === this.client && !callback && as !== 'group' && commands.every(isSimple)) {
      const client = this.client;
      const lean = (buffer ? client.qsyncLogSimpleBuffer : client.qsyncLogSimple) as ScriptFn;
      const { meta, log } = call.queue ?? this.keys;
      const sent = call.keys
        ? lean.call(client, 2 + call.keys.length, meta, log, ...call.keys, ...leanArgs(call, this.queueDb))
        : lean.call(client, 2, meta, log, ...leanArgs(call, this.queueDb));
      return this.settled(
        sent.then(
          // A batch whose replies are all OK comes back as one OK.
          (r) => (as === 'batch' && !Array.isArray(r) ? commands.map(() => r) : r),
          (err: Error) => (err instanceof ReplyError && err.message.startsWith(SLOW) ? this.full(via, call) : Promise.reject(err)),
        ),
        commands,
        as,
      );
    }
    return this.full(via, call);
  }

  /** Sends a call to log-write.lua, which logs every write qsync supports. */
  private full(
    via: Sender,
    { db, commands, as, buffer, callback: cb, queue = this.keys, keys: declared }: LogCall,
  ): Promise<unknown> | ChainableCommander {
    // The keys the writes touch follow the queue's: the script records them when the queue is marked dirty.
    const keys: (string | Buffer)[] = [queue.meta, queue.log, queue.dirty];
    if (declared) keys.push(...declared);
    const argv: (string | Buffer)[] = [String(db), this.queueDb, as === 'batch' ? 'b' : as === 'one' ? '1' : '0'];
    for (const c of commands) {
      const spec = commandSpec(c.name);
      if (spec && !declared) for (const i of keyIndexes(spec.keys, c.args)) keys.push(c.args[i]);
      argv.push(...logArgs(c));
    }
    const script = (buffer ? via.qsyncLogWriteBuffer : via.qsyncLogWrite) as (...args: unknown[]) => Promise<unknown> | ChainableCommander;
    const tail = cb
      ? [(err: Error | null, result?: unknown) => cb(err && this.refusal(err), err ? result : exactReplies(commands, as, result, this.replyOptions))]
      : [];
    const sent = script.call(via, keys.length, ...keys, ...argv, ...tail);
    if (!(sent instanceof Promise)) return sent;
    return this.settled(sent, commands, as);
  }

  /**
   * A call's replies with integers past 2^53 made exact; its refusal as a
   * QueueFullError or FencedError, told to the client's listeners once for
   * each write it refused.
   */
  private settled(sent: Promise<unknown>, commands: LoggedCommand[], as: LogCall['as']): Promise<unknown> {
    const writes = as === 'batch' ? commands.length : 1;
    const refused = (err: Error) => {
      const e = this.refusal(err);
      for (let i = 0; i < writes; i++) reportRefusal(this.client, e);
      return Promise.reject(e);
    };
    return mayCarryDigits(commands) ? sent.then((r) => exactReplies(commands, as, r, this.replyOptions), refused) : sent.catch(refused);
  }
}
