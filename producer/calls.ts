/**
 * How a call on the client becomes a command for the log-write script:
 * method names (`getBuffer`, `call('SET', ...)`), trailing callbacks,
 * arguments flattened exactly as ioredis flattens them, Redis's own arity
 * check, and the replies shaped back as ioredis shapes them.
 */
import { createRequire } from 'node:module';
import { Command, ReplyError, type Redis } from 'ioredis';
import { commandSpec, isUnsupportedWrite, logRule, MAX_ARGS, REFUSED, viewSpec } from '../shared/commands.js';
import { UnsupportedCommandError } from '../shared/errors.js';
import { scripts } from '../shared/scripts.js';

/** A command as the script takes it: lower-case name, flat string/Buffer arguments. */
export interface LoggedCommand {
  name: string;
  args: (string | Buffer)[];
  /** false for a read inside a group: it runs in place and logs nothing */
  write: boolean;
  /** how ioredis would decode the reply: null keeps Buffers */
  replyEncoding: BufferEncoding | null;
}

/**
 * A command as the log-write script takes it (shared/lua/log-write.lua):
 * argument count, log rule and key spec (both empty for a read), name,
 * arguments. The rule and where the keys are travel with the command: the
 * script then needs no table of its own, which it would rebuild on every call.
 */
export function logArgs(c: LoggedCommand): (string | Buffer)[] {
  const spec = commandSpec(c.name);
  return [String(c.args.length + 1), spec ? logRule(c.name, spec, c.args.length) : '', spec ? viewSpec(spec) : '', c.name, ...c.args];
}

/** Commands whose replies ioredis reshapes (HGETALL to an object...), by name. */
const REPLY_TRANSFORMERS = (Command as unknown as { _transformer: { reply: Record<string, unknown> } })._transformer.reply;

/** A reply inside a group, shaped as ioredis shapes it (string decoding, HGETALL to an object). */
export function shapeReply(c: LoggedCommand, reply: unknown): unknown {
  // Most writes reply with a number or a status: no Command to build for them.
  if (typeof reply === 'number' || reply === null) return reply;
  if (Buffer.isBuffer(reply) && !Object.hasOwn(REPLY_TRANSFORMERS, c.name)) return c.replyEncoding ? reply.toString(c.replyEncoding) : reply;
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
  const pairsOf = (v: unknown): unknown[] | undefined => (v instanceof Map ? [...v].flat() : isPlainObject(v) ? Object.entries(v).flat() : undefined);
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

/** Splits an ioredis method name into the command and whether replies stay Buffers. */
export function parseMethod(prop: string): { name: string; buffer: boolean } {
  const buffer = prop.endsWith('Buffer') && prop.length > 6;
  return { name: (buffer ? prop.slice(0, -6) : prop).toLowerCase(), buffer };
}

/**
 * A Lua script the application defined on the client with `defineCommand`
 * (not one of qsync's own), for a method name; else undefined.
 */
export function definedScript(
  client: Redis,
  prop: string,
): { name: string; lua: string; numberOfKeys: number | null; readOnly: boolean } | undefined {
  const name = prop.endsWith('Buffer') ? prop.slice(0, -6) : prop;
  const set = client.scriptsSet as Record<string, { lua: string; numberOfKeys?: number | null; readOnly?: boolean }>;
  if (!Object.hasOwn(set, name) || scripts().some((s) => s.command === name)) return undefined;
  const s = set[name];
  return { name, lua: s.lua, numberOfKeys: typeof s.numberOfKeys === 'number' ? s.numberOfKeys : null, readOnly: s.readOnly === true };
}

/** The error for a write the producer refuses, with its reason. */
export function refusal(name: string): UnsupportedCommandError {
  return new UnsupportedCommandError(name, Object.hasOwn(REFUSED, name) ? REFUSED[name] : undefined);
}

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
  if (!spec && isUnsupportedWrite(lower)) throw refusal(lower);
  const flat = flattenArgs(lower, args);
  if (flat.length + 1 > MAX_ARGS) {
    throw new UnsupportedCommandError(lower, `with ${flat.length} arguments is over qsync's limit of ${MAX_ARGS - 1}; split it into smaller calls`);
  }
  const wrongArity = arityError(lower, flat.length);
  if (wrongArity) throw wrongArity;
  return { name: lower, args: flat, write: spec !== undefined, replyEncoding };
}
