/**
 * Sends writes through the log-write script: each call runs its writes on the
 * master and appends their logged form to the queue in one atomic step.
 */
import { createRequire } from 'node:module';
import { Command, ReplyError, type Redis, type ChainableCommander } from 'ioredis';
import { commandSpec, isUnsupportedWrite, keyIndexes, logRule, viewSpec, MAX_ARGS } from '../shared/commands.js';
import { UnsupportedCommandError, ConfigError, QueueFullError } from '../shared/errors.js';
import { QueueKeys, DEFAULT_PREFIX, DEFAULT_QUEUE, DEFAULT_QUEUE_DB } from '../shared/keys.js';
import { defineScripts, scripts } from '../shared/scripts.js';
import { exactReplies, mayCarryDigits } from './exact-integers.js';
import { reportRefusal } from './refusals.js';
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

/** A command as the script takes it: lower-case name, flat string/Buffer arguments. */
export interface LoggedCommand {
  name: string;
  args: (string | Buffer)[];
  /** false for a read inside a group: it runs in place and logs nothing */
  write: boolean;
  /** how ioredis would decode the reply: null keeps Buffers */
  replyEncoding: BufferEncoding | null;
}

/** A reply inside a group, shaped as ioredis shapes it (string decoding, HGETALL to an object). */
export function shapeReply(c: LoggedCommand, reply: unknown): unknown {
  return new Command(c.name, [], { replyEncoding: c.replyEncoding }).transformReply(reply as Buffer);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Buffer.isBuffer(v) && !Array.isArray(v) && !(v instanceof Map);
}

/**
 * Flattens arguments exactly as ioredis does (one level of arrays, an object
 * or Map for HSET/HMSET/MSET/MSETNX, numbers and the like to strings), without
 * building an ioredis Command, which costs a Promise on every write.
 */
export function flattenArgs(name: string, args: unknown[]): (string | Buffer)[] {
  let list = args.flat() as unknown[];
  const pairsOf = (v: unknown): unknown[] | undefined =>
    v instanceof Map ? [...v].flat() : isPlainObject(v) ? Object.entries(v).flat() : undefined;
  if ((name === 'hset' || name === 'hmset') && list.length === 2) {
    const pairs = pairsOf(list[1]);
    if (pairs) list = [list[0], ...pairs];
  } else if ((name === 'mset' || name === 'msetnx') && list.length === 1) {
    list = pairsOf(list[0]) ?? list;
  }
  return list.map((a) => (typeof a === 'string' || Buffer.isBuffer(a) ? a : a === null || a === undefined ? '' : String(a)));
}

/** A node-style callback, as ioredis methods take one last. */
export type Callback = (err: Error | null, result?: unknown) => void;

/** Takes a trailing callback off the arguments, as ioredis methods accept one. */
export function takeCallback(args: unknown[]): Callback | undefined {
  return args.length > 0 && typeof args[args.length - 1] === 'function' ? (args.pop() as Callback) : undefined;
}

type Sender = Pick<Redis, 'qsyncLogWrite' | 'qsyncLogWriteBuffer'> | ChainableCommander;

/** Splits an ioredis method name into the command and whether replies stay Buffers. */
export function parseMethod(prop: string): { name: string; buffer: boolean } {
  const buffer = prop.endsWith('Buffer') && prop.length > 6;
  return { name: (buffer ? prop.slice(0, -6) : prop).toLowerCase(), buffer };
}

/**
 * A Lua script the application defined on the client with `defineCommand`
 * (not one of qsync's own), for a method name; else undefined. Calling one is
 * an EVALSHA, whose writes cannot be logged.
 */
export function definedScript(client: Redis, prop: string): { name: string; readOnly: boolean } | undefined {
  const name = prop.endsWith('Buffer') ? prop.slice(0, -6) : prop;
  const set = client.scriptsSet as Record<string, { readOnly?: boolean }>;
  if (!Object.prototype.hasOwnProperty.call(set, name) || scripts().some((s) => s.command === name)) return undefined;
  return { name, readOnly: set[name].readOnly === true };
}

/** Why a script that may write is refused. */
export const SCRIPT_REFUSED = 'is a Lua script whose writes qsync cannot log (define it with readOnly: true if it only reads)';

const METADATA = createRequire(import.meta.url)('@ioredis/commands/built/commands.json') as Record<string, { arity: number }>;

/**
 * The error Redis gives a call with the wrong number of arguments (it runs
 * nothing), or undefined. Checked before sending, because inside the script
 * Redis would give a different message ("Wrong number of args calling Redis
 * command from script") than the one ioredis users get.
 */
export function arityError(name: string, argCount: number): Error | undefined {
  const arity = METADATA[name]?.arity;
  const n = argCount + 1;
  if (arity === undefined || (arity >= 0 ? n === arity : n >= -arity)) return undefined;
  return new ReplyError(`ERR wrong number of arguments for '${name}' command`) as Error;
}

/**
 * Turns a call into a LoggedCommand, flattening arguments exactly like ioredis
 * (objects and Maps for HSET/MSET, arrays, numbers). Throws an
 * UnsupportedCommandError for writes qsync cannot replicate, and Redis's own
 * ReplyError for a wrong number of arguments.
 */
export function toLoggedCommand(name: string, args: unknown[], replyEncoding: BufferEncoding | null): LoggedCommand {
  const lower = name.toLowerCase();
  const spec = commandSpec(lower);
  if (!spec && isUnsupportedWrite(lower)) throw new UnsupportedCommandError(lower);
  const flat = flattenArgs(lower, args);
  if (flat.length + 1 > MAX_ARGS) {
    throw new UnsupportedCommandError(lower, `with ${flat.length} arguments is over qsync's limit of ${MAX_ARGS - 1}; split it into smaller calls`);
  }
  const wrongArity = arityError(lower, flat.length);
  if (wrongArity) throw wrongArity;
  return { name: lower, args: flat, write: spec !== undefined, replyEncoding };
}

/** How the log-write script's error reply for a full queue starts; the cap follows. */
const QUEUE_FULL = 'QSYNCFULL ';

export class WriteLog {
  readonly keys: QueueKeys;
  readonly queueDb: string;

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
    defineScripts(client);
  }

  /** True for a command that must go through the log: a supported or a refused write. */
  isLogged(name: string): boolean {
    return commandSpec(name) !== undefined || isUnsupportedWrite(name);
  }

  /**
   * The script's refusal of a write because the queue is full (policy
   * `reject`) as a QueueFullError naming the queue and the cap; any other
   * error as it is.
   */
  refusal(err: Error): Error {
    return err instanceof ReplyError && err.message.startsWith(QUEUE_FULL) ? new QueueFullError(this.keys.queue, err.message.slice(QUEUE_FULL.length)) : err;
  }

  /**
   * Sends commands as one atomic script call on `via` (the client or a pipeline).
   * `single` returns the one reply as it is; otherwise an array of replies,
   * and the commands make one entry, or with `'batch'` an entry each.
   * A full queue rejects the call with a QueueFullError (in a pipeline, that
   * command's result and callback get it).
   */
  send(via: Sender, db: number, commands: LoggedCommand[], single: boolean | 'batch', buffer: boolean, cb?: Callback): Promise<unknown> | ChainableCommander {
    // The keys the writes touch follow the queue's: the script records them when the queue is marked dirty.
    const keys: (string | Buffer)[] = [this.keys.meta, this.keys.log, this.keys.dirty];
    const argv: (string | Buffer)[] = [String(db), this.queueDb, single === 'batch' ? 'b' : single ? '1' : '0'];
    for (const c of commands) {
      const spec = commandSpec(c.name);
      if (spec) for (const i of keyIndexes(spec.keys, c.args.length)) keys.push(c.args[i]);
      // The rule and where the keys are travel with the command: the script
      // then needs no table of its own, which it would rebuild on every call.
      argv.push(String(c.args.length + 1), spec ? logRule(c.name, spec, c.args.length) : '', spec ? viewSpec(spec) : '', c.name, ...c.args);
    }
    const script = (buffer ? via.qsyncLogWriteBuffer : via.qsyncLogWrite) as (...args: unknown[]) => Promise<unknown> | ChainableCommander;
    const tail = cb ? [(err: Error | null, result?: unknown) => cb(err && this.refusal(err), err ? result : exactReplies(commands, single, result, this.client.options))] : [];
    const sent = script.call(via, keys.length, ...keys, ...argv, ...tail);
    if (!(sent instanceof Promise)) return sent;
    // A full queue refuses every write of the call: each is told to the client's listeners.
    const writes = single === 'batch' ? commands.length : 1;
    const refused = (err: Error) => {
      const e = this.refusal(err);
      for (let i = 0; i < writes; i++) reportRefusal(this.client, e);
      return Promise.reject(e);
    };
    return mayCarryDigits(commands) ? sent.then((r) => exactReplies(commands, single, r, this.client.options), refused) : sent.catch(refused);
  }
}
