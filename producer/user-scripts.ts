/**
 * The application's Lua scripts, replicated by their effects as Redis 7
 * replicates them: `eval`, `evalsha` of a script the producer has seen, and
 * scripts defined with ioredis `defineCommand` run inside a wrapper
 * (shared/lua/wrap/script-effects.lua) that logs every write they make, as
 * one entry, in the same atomic step. Scripts that declare `no-writes`, and
 * EVAL_RO / EVALSHA_RO, run as they are.
 */
import { createHash } from 'node:crypto';
import { list } from '@ioredis/commands';
import { ReplyError, type ChainableCommander, type Redis } from 'ioredis';
import { definedScript, flattenArgs, parseMethod } from './calls.js';
import { COMMANDS, isUnsupportedWrite, refusalReason, viewSpec } from '../shared/commands.js';
import { ownKeyPrefixes, type QueueKeys } from '../shared/keys.js';
import { expandLua } from '../shared/scripts.js';

const sha1 = (text: string): string => createHash('sha1').update(text).digest('hex');

/** Sources of the scripts producers have seen, by SHA1, for EVALSHA: shared by every producer of the process. */
const SOURCES = new Map<string, string>();

/** Remembers a script's source (SCRIPT LOAD, EVAL, defineCommand) and returns its SHA1. */
export function rememberScript(source: string | Buffer): string {
  const text = String(source);
  const sha = sha1(text);
  SOURCES.set(sha, text);
  return sha;
}

/** The source of a script the producers have seen, or undefined. */
export function scriptSource(sha: string | Buffer): string | undefined {
  return SOURCES.get(String(sha).toLowerCase());
}

/** Why a bare EVALSHA is refused. */
export const UNKNOWN_SCRIPT =
  "runs a script this producer has not seen, so its writes cannot be logged; send it with eval(source, ...), load it through the producer (script('LOAD', source)) or define it with defineCommand";

/**
 * EVALSHA of a script the producer has not seen, refused before anything is
 * sent. A NOSCRIPT error, as Redis answers a SHA it does not have: callers
 * that then send the source with EVAL (ioredis's defined commands, redlock)
 * go on, and that EVAL is logged.
 */
export class UnknownScriptError extends ReplyError {
  constructor(readonly sha: string) {
    super(`NOSCRIPT No matching script: qsync: EVALSHA ${sha} ${UNKNOWN_SCRIPT}`);
  }
}

/**
 * True for a script that declares it never writes (`#!lua flags=no-writes`):
 * Redis refuses any write it tries, so it runs as it is.
 */
export function readOnlyScript(source: string): boolean {
  const shebang = /^#!\S*(.*)/.exec(source);
  const flags = shebang && /\bflags=(\S*)/.exec(shebang[1]);
  return flags ? flags[1].split(',').includes('no-writes') : false;
}

/**
 * The command table as the wrapper reads it: two Lua strings searched by
 * name, cheaper than tables, which a script would build again on every call.
 * WRITES holds `|name rule viewspec|` for each supported write; REFUSED
 * `|name|` for each write qsync cannot replicate, its reason after it.
 */
function commandTables(): string {
  const writes = Object.entries(COMMANDS).map(([name, spec]) => `${name} ${spec.log} ${viewSpec(spec)}`);
  const refused = list.filter(isUnsupportedWrite).map((name) => `${name}|${refusalReason(name).replace(/[\\'|\n]/g, ' ')}`);
  return `local WRITES = '|${writes.join('|')}|'\nlocal REFUSED = '|${refused.join('|')}|'`;
}

/**
 * Declared on the same line as the first script's first line of code, so
 * that its line numbers (in Redis's error messages) stay those of its
 * source; the locals shadow KEYS, ARGV and redis for every reference in the
 * script's code. Each further script of a group gets locals of its own.
 */
const PROLOGUE =
  'local qsync_keys, qsync_argv, qsync_redis = KEYS, ARGV, redis local qsync_shadow, qsync_fns = {}, {} local KEYS, ARGV, redis = {}, {}, qsync_shadow local function qsync_user() ';
const NEXT_PROLOGUE = 'local KEYS, ARGV, redis = {}, {}, qsync_shadow local function qsync_user() ';
const epilogue = (index: number): string => `\nend qsync_fns[${index}] = { qsync_user, KEYS, ARGV }\n`;

let machinery: string | undefined;

/** Scripts wrapped to log their effects, with the SHA1 Redis knows the wrapper by. */
export interface WrappedScript {
  lua: string;
  sha: string;
}

/** Wrappers by their scripts; an app that builds scripts on the fly must not grow it without end. */
const WRAPPED = new Map<string, WrappedScript>();
const MAX_WRAPPED = 1000;
/** Most distinct scripts in one multi(): each takes Lua locals, of which a chunk has 200. */
export const MAX_GROUP_SCRIPTS = 40;

/**
 * The wrapper of scripts' sources, each run by its place in `sources` (1 for
 * the first). A single script keeps its shebang line first, with its flags;
 * in a group, where one set of flags cannot speak for all, shebangs are left
 * out (their lines stay, empty).
 */
export function wrapScripts(sources: string[], single: boolean): WrappedScript {
  const id = `${single ? 1 : 0}\0${sources.join('\0')}`;
  let wrapped = WRAPPED.get(id);
  if (wrapped) return wrapped;
  machinery ??= expandLua('wrap/script-effects').replace('--- @commands', commandTables());
  let lua = '';
  sources.forEach((source, i) => {
    const shebang = source.startsWith('#!') ? source.slice(0, source.indexOf('\n') + 1 || source.length) : '';
    const head = single ? shebang + (shebang && !shebang.endsWith('\n') ? '\n' : '') : shebang ? '\n' : '';
    lua += head + (i === 0 ? PROLOGUE : NEXT_PROLOGUE) + source.slice(shebang.length) + epilogue(i + 1);
  });
  lua += machinery;
  wrapped = { lua, sha: sha1(lua) };
  if (WRAPPED.size >= MAX_WRAPPED) WRAPPED.delete(WRAPPED.keys().next().value as string);
  WRAPPED.set(id, wrapped);
  return wrapped;
}

/** A script call: its source, and its key count, keys and arguments flattened. */
export interface ScriptCall {
  source: string;
  flat: (string | Buffer)[];
  buffer: boolean;
}

/** True for a method that runs a script that may write: eval, evalsha, a script defined without readOnly. */
export function isScriptMethod(client: Redis, prop: string): boolean {
  const defined = definedScript(client, prop);
  if (defined) return !defined.readOnly;
  const { name } = parseMethod(prop);
  return name === 'eval' || name === 'evalsha';
}

/**
 * The script a call of a script method runs (see isScriptMethod). Throws an
 * UnknownScriptError for EVALSHA of a script the producer has not seen.
 */
export function scriptCall(client: Redis, prop: string, args: unknown[]): ScriptCall {
  const { name, buffer } = parseMethod(prop);
  const defined = definedScript(client, prop);
  if (defined) {
    rememberScript(defined.lua);
    return { source: defined.lua, flat: flattenArgs('evalsha', defined.numberOfKeys === null ? args : [defined.numberOfKeys, ...args]), buffer };
  }
  const [first, ...flat] = flattenArgs(name, args);
  const source = name === 'eval' ? String(first ?? '') : scriptSource(first ?? '');
  if (source === undefined) throw new UnknownScriptError(String(first ?? ''));
  if (name === 'eval') rememberScript(source);
  return { source, flat, buffer };
}

/**
 * A script call as a wrapper's item: its place among the wrapper's scripts,
 * then its keys and arguments, split at its key count as Redis checks it.
 */
export function scriptItem(index: number, flat: (string | Buffer)[]): (string | Buffer)[] {
  const [numKeys, ...rest] = flat;
  const text = String(numKeys);
  if (!/^-?\d+$/.test(text)) throw new ReplyError('ERR value is not an integer or out of range') as Error;
  const n = Number(text);
  if (n < 0) throw new ReplyError("ERR Number of keys can't be negative") as Error;
  if (n > rest.length) throw new ReplyError("ERR Number of keys can't be greater than number of args") as Error;
  return ['s', String(index), String(n), String(rest.length - n), ...rest];
}

/** Where a wrapped script runs: the client, or a pipeline or transaction of it. */
type Sender = Redis | ChainableCommander;
type AnyFn = (...args: unknown[]) => unknown;

/**
 * Sends scripts wrapped: the queue's keys and the script's own, in the
 * wrapper's layout (see its header).
 */
export class ScriptSender {
  private readonly own: string[];

  constructor(
    private readonly keys: QueueKeys,
    private readonly queueDb: string,
  ) {
    this.own = ownKeyPrefixes(keys.prefix);
  }

  /**
   * EVALSHA's arguments for a wrapper (see its header): `single` for one
   * script, whose reply and error are the call's; else a group's replies.
   */
  args(db: number, single: boolean, items: (string | Buffer)[]): (string | Buffer)[] {
    return [...this.declared(items), String(db), this.queueDb, single ? '1' : '0', String(this.own.length), ...this.own, ...items];
  }

  /** The key count and the keys the wrapper is called with: the queue's meta, log and dirty set. */
  protected declared(_items: (string | Buffer)[]): (string | Buffer)[] {
    const k = this.keys;
    return ['3', k.meta, k.log, k.dirty];
  }

  /**
   * Runs a wrapped script on the client: EVALSHA, and EVAL once when the
   * server does not have it (a restart or SCRIPT FLUSH empties its cache).
   */
  async run(client: Redis, wrapped: WrappedScript, args: (string | Buffer)[], buffer: boolean): Promise<unknown> {
    const c = client as unknown as Record<string, AnyFn>;
    try {
      return await (c[buffer ? 'evalshaBuffer' : 'evalsha'].call(client, wrapped.sha, ...args) as Promise<unknown>);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return c[buffer ? 'evalBuffer' : 'eval'].call(client, wrapped.lua, ...args) as Promise<unknown>;
    }
  }

  /** Queues a wrapped script on a pipeline; the script must be loaded on the server first (see `load`). */
  queue(via: Sender, wrapped: WrappedScript, args: (string | Buffer)[], buffer: boolean, cb?: (err: Error | null, result?: unknown) => void): void {
    const v = via as unknown as Record<string, AnyFn>;
    v[buffer ? 'evalshaBuffer' : 'evalsha'].call(via, wrapped.sha, ...args, ...(cb ? [cb] : []));
  }

  /** Loads the wrappers the server does not have yet, before a pipeline that calls them by SHA1. */
  async load(client: Redis, wrapped: WrappedScript[]): Promise<void> {
    if (wrapped.length === 0) return;
    const have = (await client.script('EXISTS', ...wrapped.map((w) => w.sha))) as number[];
    await Promise.all(wrapped.filter((_, i) => have[i] !== 1).map((w) => client.script('LOAD', w.lua)));
  }
}
