/**
 * Sends writes through the log-write script: each call runs its writes on the
 * master and appends their logged form to the queue in one atomic step.
 */
import { Command, type Redis, type ChainableCommander } from 'ioredis';
import { commandSpec, isUnsupportedWrite, keyIndexes, MAX_ARGS } from '../shared/commands.js';
import { UnsupportedCommandError, ConfigError } from '../shared/errors.js';
import { QueueKeys, DEFAULT_PREFIX, DEFAULT_QUEUE, DEFAULT_QUEUE_DB } from '../shared/keys.js';
import { defineScripts } from '../shared/scripts.js';

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
  /** ioredis's view of the command, used to shape the reply like ioredis does */
  command: Command;
}

type Sender = Pick<Redis, 'qsyncLogWrite' | 'qsyncLogWriteBuffer'> | ChainableCommander;

/** Splits an ioredis method name into the command and whether replies stay Buffers. */
export function parseMethod(prop: string): { name: string; buffer: boolean } {
  const buffer = prop.endsWith('Buffer') && prop.length > 6;
  return { name: (buffer ? prop.slice(0, -6) : prop).toLowerCase(), buffer };
}

/**
 * Turns a call into a LoggedCommand, flattening arguments exactly like ioredis
 * (objects and Maps for HSET/MSET, arrays, numbers). Throws for writes qsync
 * cannot replicate.
 */
export function toLoggedCommand(name: string, args: unknown[], replyEncoding: BufferEncoding | null): LoggedCommand {
  const lower = name.toLowerCase();
  const spec = commandSpec(lower);
  if (!spec && isUnsupportedWrite(lower)) throw new UnsupportedCommandError(lower);
  const command = new Command(lower, args as (string | Buffer | number)[], { replyEncoding });
  const flat = command.args as (string | Buffer)[];
  if (flat.length + 1 > MAX_ARGS) {
    throw new UnsupportedCommandError(lower, `with ${flat.length} arguments is over qsync's limit of ${MAX_ARGS - 1}; split it into smaller calls`);
  }
  return { name: lower, args: flat, write: spec !== undefined, command };
}

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
   * Sends commands as one atomic script call on `via` (the client or a pipeline).
   * `single` returns the one reply as it is; otherwise an array of replies.
   */
  send(via: Sender, db: number, commands: LoggedCommand[], single: boolean, buffer: boolean): Promise<unknown> | ChainableCommander {
    const keys: (string | Buffer)[] = [this.keys.meta, this.keys.log];
    const argv: (string | Buffer)[] = [String(db), this.queueDb, single ? '1' : '0'];
    for (const c of commands) {
      const spec = commandSpec(c.name);
      if (spec) for (const i of keyIndexes(spec.keys, c.args.length)) keys.push(c.args[i]);
      argv.push(String(c.args.length + 1), c.name, ...c.args);
    }
    return buffer ? via.qsyncLogWriteBuffer(keys.length, ...keys, ...argv) : via.qsyncLogWrite(keys.length, ...keys, ...argv);
  }
}
