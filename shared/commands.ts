/**
 * The command table: every write qsync replicates, where its keys are, and how
 * the producer turns it into the deterministic form that is logged.
 *
 * This is the only place that decides what is supported. The producer routes
 * calls with it, the Lua scripts receive it as a generated Lua table (see
 * `scripts.ts`), and the README's command list is checked against it by a test.
 */
import { hasFlag, exists } from '@ioredis/commands';

/**
 * How a command is written to the log after it ran on the master.
 *
 * - `always`: as sent, whenever it succeeded.
 * - `changed`: as sent, only when the reply says something changed
 *   (an integer above 0, a non-nil bulk, a non-empty array, OK).
 * - `xadd`, `xtrim`, `xgroup`, `xreadgroup`, `xclaim`, `xautoclaim`: streams,
 *   logged as Redis propagates them (the ID an XADD got, trims as the exact
 *   length left, `$` resolved, a group's changes as XCLAIM ... TIME <abs>
 *   RETRYCOUNT n FORCE JUSTID, XACK and XGROUP SETID ... ENTRIESREAD); see
 *   shared/lua/includes/stream-rules.lua.
 * - `set`: SET with any options. Logged as `SET k v [PXAT abs]` from the key's
 *   absolute expiry after the write, or `DEL k` when it was set already expired;
 *   nothing when NX/XX prevented it.
 * - `setex`: SETEX / PSETEX, value in the third argument, logged like `set`.
 * - `setnx`: SETNX, logged as `SET k v` when it set.
 * - `getset`: GETSET, logged as `SET k v` (it clears the TTL).
 * - `getdel`: GETDEL, logged as `DEL k` when the key existed.
 * - `getex`: GETEX with an option, logged as `PEXPIREAT k abs`, `PERSIST k` or `DEL k`.
 * - `move`, `restore`, `flush`, `zstore`, `georadius`, `sortstore`, `geoadd`,
 *   `bitfield`: whole keys and dbs, stored results, GEOADD and BITFIELD: MOVE
 *   as `COPY k k DB n REPLACE` + `DEL k`, RESTORE with its absolute expiry,
 *   FLUSHDB / FLUSHALL keeping qsync's own keys, a stored result as `DEL dst`
 *   + `ZADD` / `RPUSH dst` of what was stored, GEOADD as ZADD of the scores;
 *   see shared/lua/includes/keyspace-rules.lua.
 * - `expire`: EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT, logged as
 *   `PEXPIREAT k abs` (or `DEL k` when the time had passed) when it applied.
 * - `incrbyfloat`: logged as `SET k <result> [PXAT abs]`, the key's state after
 *   the write (an absolute expiry, as for `set`).
 * - `hincrbyfloat`: logged as `HSET k f <result>`.
 * - `spop`: logged as `SREM k <members popped>`.
 * - `zpop`: ZPOPMIN / ZPOPMAX, logged as `ZREM k <members popped>`.
 * - `pop`: LPOP / RPOP, logged with the count actually popped.
 * - `pfcount`: PFCOUNT of one key, logged as sent when it rewrote the
 *   HyperLogLog's cached count (stale after PFADD); Redis propagates it then too.
 * - `bpop`: BLPOP / BRPOP, logged as `LPOP k 1` / `RPOP k 1` of the key popped from.
 * - `bzpop`: BZPOPMIN / BZPOPMAX, logged as `ZREM k <member popped>`.
 * - `bmove`: BLMOVE / BRPOPLPUSH, logged as LMOVE / RPOPLPUSH, when it moved.
 * - `lmpop`: LMPOP / BLMPOP, logged as `LPOP k <count popped>` (or RPOP) of the key popped from.
 * - `zmpop`: ZMPOP / BZMPOP, logged as `ZREM k <members popped>` of the key popped from.
 */
export type LogRule =
  | 'always'
  | 'changed'
  | 'xadd'
  | 'xtrim'
  | 'xgroup'
  | 'xreadgroup'
  | 'xclaim'
  | 'xautoclaim'
  | 'set'
  | 'setex'
  | 'setnx'
  | 'getset'
  | 'getdel'
  | 'getex'
  | 'move'
  | 'restore'
  | 'flush'
  | 'zstore'
  | 'georadius'
  | 'sortstore'
  | 'geoadd'
  | 'bitfield'
  | 'expire'
  | 'incrbyfloat'
  | 'hincrbyfloat'
  | 'spop'
  | 'zpop'
  | 'pop'
  | 'pfcount'
  | 'bpop'
  | 'bzpop'
  | 'bmove'
  | 'lmpop'
  | 'zmpop';

/**
 * Where the keys are among a command's arguments (1-based, the command name
 * not counted), as in Redis's legacy key specs: `first`, `last` (negative
 * counts from the end), `step`; or, for a command that says how many keys it
 * has (LMPOP 2 k1 k2 LEFT), `numkeys`: the position of that count, the keys
 * following it; or, for XREADGROUP ... STREAMS k1 k2 id1 id2, `streams`: the
 * position from which STREAMS is looked for, the keys the first half of the
 * arguments after it.
 */
export type KeySpec = { first: number; last: number; step: number } | { numkeys: number } | { streams: number };

/**
 * Which keys the logged form overwrites whatever they held (their state before
 * the write does not matter to it): `all` of them (SET, DEL, MSET... and every
 * rule logged as SET or DEL), the `first` (the destination of SINTERSTORE...)
 * or the `last` (RENAME's destination). The master records, with each logged
 * command, the expiry of every other key just before it ran; see `viewSpec`.
 */
export type Overwrites = 'all' | 'first' | 'last';

export interface CommandSpec {
  keys: KeySpec;
  log: LogRule;
  overwrites?: Overwrites;
  /**
   * The view spec (see `viewSpec`) of a command whose logged form names its
   * keys elsewhere than the command does: MOVE k n, logged as
   * `COPY k k DB n REPLACE` + `DEL k`, is `1:2:1l` (k, then k in db n,
   * overwritten); SORT ... STORE dst, logged as `DEL dst` + `RPUSH dst ...`,
   * is `1w`.
   */
  view?: string;
  /**
   * The options that make the command a write (SORT ... STORE dst, BITFIELD
   * ... SET): called without any of them it is a read, sent as it is.
   */
  writesWith?: readonly string[];
  /**
   * The logged form names only the key popped from, which Redis picks as it
   * runs: the first of the keys that exists (BLPOP k1 k2 0, logged as
   * `LPOP k2 1`). The view is of that key, as the logged form's first argument.
   */
  popped?: true;
  /**
   * A blocking command, and where its timeout is (`first` or `last`
   * argument, in seconds; or the `BLOCK` option, in ms, as XREADGROUP's): the
   * producer waits until it pops or the timeout passes (producer/blocking.ts).
   */
  timeout?: 'first' | 'last' | 'BLOCK';
}

const one: KeySpec = { first: 1, last: 1, step: 1 };
const two: KeySpec = { first: 1, last: 2, step: 1 };
const all: KeySpec = { first: 1, last: -1, step: 1 };
const pairs: KeySpec = { first: 1, last: -1, step: 2 };
const none: KeySpec = { first: 1, last: 0, step: 1 };
const allButLast: KeySpec = { first: 1, last: -2, step: 1 };

/** The supported writes, by lower-case command name. */
export const COMMANDS: Readonly<Record<string, CommandSpec>> = Object.freeze({
  // strings
  set: { keys: one, log: 'set', overwrites: 'all' },
  setnx: { keys: one, log: 'setnx', overwrites: 'all' },
  setex: { keys: one, log: 'setex', overwrites: 'all' },
  psetex: { keys: one, log: 'setex', overwrites: 'all' },
  mset: { keys: pairs, log: 'always', overwrites: 'all' },
  msetnx: { keys: pairs, log: 'changed' },
  append: { keys: one, log: 'always' },
  incr: { keys: one, log: 'always' },
  decr: { keys: one, log: 'always' },
  incrby: { keys: one, log: 'always' },
  decrby: { keys: one, log: 'always' },
  incrbyfloat: { keys: one, log: 'incrbyfloat', overwrites: 'all' },
  setrange: { keys: one, log: 'always' },
  getset: { keys: one, log: 'getset', overwrites: 'all' },
  getdel: { keys: one, log: 'getdel', overwrites: 'all' },
  getex: { keys: one, log: 'getex' },
  setbit: { keys: one, log: 'always' },
  // keys
  del: { keys: all, log: 'changed', overwrites: 'all' },
  unlink: { keys: all, log: 'changed', overwrites: 'all' },
  expire: { keys: one, log: 'expire' },
  pexpire: { keys: one, log: 'expire' },
  expireat: { keys: one, log: 'expire' },
  pexpireat: { keys: one, log: 'expire' },
  persist: { keys: one, log: 'changed' },
  rename: { keys: two, log: 'always', overwrites: 'last' },
  renamenx: { keys: two, log: 'changed' },
  copy: { keys: two, log: 'changed' },
  // whole keys and dbs, stored results, GEOADD and BITFIELD (rules in shared/lua/includes/keyspace-rules.lua)
  move: { keys: one, log: 'move', view: '1:2:1l' },
  restore: { keys: one, log: 'restore', overwrites: 'all' },
  flushdb: { keys: none, log: 'flush' },
  flushall: { keys: none, log: 'flush' },
  sort: { keys: one, log: 'sortstore', view: '1w', writesWith: ['STORE'] },
  zunionstore: { keys: one, log: 'zstore', overwrites: 'all' },
  zinterstore: { keys: one, log: 'zstore', overwrites: 'all' },
  zdiffstore: { keys: one, log: 'zstore', overwrites: 'all' },
  zrangestore: { keys: two, log: 'always', overwrites: 'first' },
  geoadd: { keys: one, log: 'geoadd' },
  georadius: { keys: one, log: 'georadius', view: '1w', writesWith: ['STORE', 'STOREDIST'] },
  georadiusbymember: { keys: one, log: 'georadius', view: '1w', writesWith: ['STORE', 'STOREDIST'] },
  geosearchstore: { keys: one, log: 'zstore', overwrites: 'all' },
  bitfield: { keys: one, log: 'bitfield', writesWith: ['SET', 'INCRBY'] },
  bitop: { keys: { first: 2, last: -1, step: 1 }, log: 'always', overwrites: 'first' },
  pfmerge: { keys: all, log: 'always' },
  // hashes
  hset: { keys: one, log: 'always' },
  hsetnx: { keys: one, log: 'changed' },
  hmset: { keys: one, log: 'always' },
  hdel: { keys: one, log: 'changed' },
  hincrby: { keys: one, log: 'always' },
  hincrbyfloat: { keys: one, log: 'hincrbyfloat' },
  // lists
  lpush: { keys: one, log: 'always' },
  rpush: { keys: one, log: 'always' },
  lpushx: { keys: one, log: 'changed' },
  rpushx: { keys: one, log: 'changed' },
  lpop: { keys: one, log: 'pop' },
  rpop: { keys: one, log: 'pop' },
  linsert: { keys: one, log: 'changed' },
  lset: { keys: one, log: 'always' },
  lrem: { keys: one, log: 'changed' },
  ltrim: { keys: one, log: 'always' },
  lmove: { keys: two, log: 'changed' },
  rpoplpush: { keys: two, log: 'changed' },
  // streams (rules in shared/lua/includes/stream-rules.lua)
  xadd: { keys: one, log: 'xadd' },
  xtrim: { keys: one, log: 'xtrim' },
  xdel: { keys: one, log: 'changed' },
  xsetid: { keys: one, log: 'always' },
  // a container command: the subcommand first, then the key
  xgroup: { keys: { first: 2, last: 2, step: 1 }, log: 'xgroup' },
  xreadgroup: { keys: { streams: 4 }, log: 'xreadgroup', timeout: 'BLOCK' },
  xack: { keys: one, log: 'changed' },
  xclaim: { keys: one, log: 'xclaim' },
  xautoclaim: { keys: one, log: 'xautoclaim' },
  // sets
  sadd: { keys: one, log: 'changed' },
  srem: { keys: one, log: 'changed' },
  spop: { keys: one, log: 'spop' },
  smove: { keys: two, log: 'changed' },
  sinterstore: { keys: all, log: 'always', overwrites: 'first' },
  sunionstore: { keys: all, log: 'always', overwrites: 'first' },
  sdiffstore: { keys: all, log: 'always', overwrites: 'first' },
  // sorted sets
  zadd: { keys: one, log: 'always' },
  zincrby: { keys: one, log: 'always' },
  zrem: { keys: one, log: 'changed' },
  zremrangebyscore: { keys: one, log: 'changed' },
  zremrangebyrank: { keys: one, log: 'changed' },
  zremrangebylex: { keys: one, log: 'changed' },
  zpopmin: { keys: one, log: 'zpop' },
  zpopmax: { keys: one, log: 'zpop' },
  // others
  pfadd: { keys: one, log: 'changed' },
  // a read that writes: it caches the count inside the value
  pfcount: { keys: all, log: 'pfcount' },
  // pops from the first of several keys that has something, blocking or not
  blpop: { keys: allButLast, log: 'bpop', popped: true, timeout: 'last' },
  brpop: { keys: allButLast, log: 'bpop', popped: true, timeout: 'last' },
  bzpopmin: { keys: allButLast, log: 'bzpop', popped: true, timeout: 'last' },
  bzpopmax: { keys: allButLast, log: 'bzpop', popped: true, timeout: 'last' },
  blmove: { keys: two, log: 'bmove', timeout: 'last' },
  brpoplpush: { keys: two, log: 'bmove', timeout: 'last' },
  lmpop: { keys: { numkeys: 1 }, log: 'lmpop', popped: true },
  blmpop: { keys: { numkeys: 2 }, log: 'lmpop', popped: true, timeout: 'first' },
  zmpop: { keys: { numkeys: 1 }, log: 'zmpop', popped: true },
  bzmpop: { keys: { numkeys: 2 }, log: 'zmpop', popped: true, timeout: 'first' },
});

/** Why a write is refused when it has no reason of its own in REFUSED. */
export const DEFAULT_REFUSAL = 'is a write qsync cannot replicate';

/**
 * Writes the producer refuses, with the reason users are told (the README's
 * table lists them). Besides the commands Redis flags as writes, some change
 * data without the flag (functions), or have semantics a logged write cannot keep.
 */
export const REFUSED: Readonly<Record<string, string>> = Object.freeze({
  fcall: 'runs a function library stored on the server, whose code the producer cannot wrap; use EVAL, EVALSHA or defineCommand',
  function: 'loads or changes function libraries stored on the server, whose code the producer cannot wrap; use EVAL, EVALSHA or defineCommand',
  watch: 'cannot be kept: a write logged through qsync is not a plain command the server can watch; use multi() alone',
  unwatch: 'cannot be kept: a write logged through qsync is not a plain command the server can watch; use multi() alone',
  discard: "is not a command of its own on a producer: a producer's multi() is sent whole by exec(), or dropped",
  exec: "is not a command of its own on a producer: call exec() on the producer's multi()",
  swapdb:
    "swaps two whole dbs: the log names keys by db, so entries queued before the swap would replay into the wrong db, and the queue db's swap would move qsync's own keys; copy or rename the keys instead",
  migrate: 'moves keys to another Redis server, outside what qsync replicates; DUMP them and RESTORE them through a producer instead',
  'restore-asking': "is Redis Cluster's internal form of RESTORE, which qsync does not replicate; use RESTORE",
  pfdebug: "is a debugging command whose TODENSE converts a HyperLogLog's encoding; PFADD, PFMERGE and PFCOUNT are replicated",
});

/**
 * True for a call of a supported command without any of the options that
 * make it a write (SORT without STORE, BITFIELD with GET alone): a read. An
 * option's name given as an argument of another (SORT k BY store) makes the
 * call a write, which the log-write script then logs exactly as what it did.
 */
export function isReadCall(spec: CommandSpec, args: readonly (string | Buffer)[]): boolean {
  const options = spec.writesWith;
  return options !== undefined && !args.some((a, i) => i > 0 && options.includes(a.toString().toUpperCase()));
}

/**
 * The argument indexes (as `keyIndexes`) of the keys a call writes or reads:
 * its key spec's, and the destination after a STORE or STOREDIST option of
 * a command that writes with it (SORT ... STORE dst).
 */
export function callKeyIndexes(spec: CommandSpec, args: readonly (string | Buffer)[]): number[] {
  const indexes = keyIndexes(spec.keys, args);
  if (!spec.writesWith?.includes('STORE')) return indexes;
  for (let i = 1; i < args.length - 1; i++) {
    const option = args[i].toString().toUpperCase();
    if (option === 'STORE' || option === 'STOREDIST') indexes.push(i + 1);
  }
  return indexes;
}

/** The spec of a supported write, or undefined for anything else. */
export function commandSpec(name: string): CommandSpec | undefined {
  return Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
}

/**
 * The rule for one call: the table's, except where the arguments make a
 * cheaper rule exact. A plain `SET k v` always applies and clears the TTL, so
 * it is logged as sent, without the expiry lookup the `set` rule makes.
 */
export function logRule(name: string, spec: CommandSpec, argCount: number): LogRule {
  return name === 'set' && argCount === 2 ? 'always' : spec.log;
}

/** True for a Redis command that writes data but is not in the table. */
export function isUnsupportedWrite(name: string): boolean {
  if (commandSpec(name)) return false;
  if (Object.hasOwn(REFUSED, name)) return true;
  return exists(name) && hasFlag(name, 'write');
}

/** Why a write is refused, as the UnsupportedCommandError says it after the command's name. */
export function refusalReason(name: string): string {
  return Object.hasOwn(REFUSED, name) ? REFUSED[name] : DEFAULT_REFUSAL;
}

/**
 * The argument indexes (0-based, into `args`, the arguments without the
 * command name) that hold keys. A key count that is not a positive integer
 * (which Redis refuses) gives no keys.
 */
export function keyIndexes(spec: KeySpec, args: ArrayLike<unknown>): number[] {
  const argCount = args.length;
  let first: number;
  let last: number;
  let step = 1;
  if ('numkeys' in spec) {
    const count = Number(String(args[spec.numkeys - 1]));
    first = spec.numkeys;
    last = Number.isSafeInteger(count) && count > 0 ? spec.numkeys - 1 + count : -1;
  } else if ('streams' in spec) {
    const at = Array.prototype.findIndex.call(args, (a, i) => i >= spec.streams - 1 && String(a).toUpperCase() === 'STREAMS');
    first = at + 1;
    last = at < 0 ? -1 : at + Math.floor((argCount - at - 1) / 2);
  } else {
    first = spec.first - 1;
    last = spec.last < 0 ? argCount + spec.last : spec.last - 1;
    step = spec.step;
  }
  const out: number[] = [];
  for (let i = first; i <= last && i < argCount; i += step) out.push(i);
  return out;
}

/**
 * Where a command's keys are, in the compact form the log-write script takes
 * with each command (shared/lua/log-write.lua): `<first>:<last>:<step>`, or
 * `<first>` for one key, or `@<n>` for the keys after STREAMS (see
 * `KeySpec`; the script finds them in the arguments), then `w` when the
 * logged form overwrites every key, `f` its first, `l` its last (see `Overwrites`), `p` when it names only the
 * key popped from (see `CommandSpec.popped`: the view is of the first of
 * the keys that exists; keys counted by an argument, as LMPOP's, are sent
 * as the range from the first to the last argument, whose first existing
 * key is a real one whenever there is one). Positions count the
 * arguments from 1, the command name not counted; a negative last counts
 * from the end. The script records, with the logged command, the master's
 * expiry of each key just before the write (PEXPIRETIME), or 'any' for a key
 * overwritten, so that the replica can first bring its keys to that view.
 */
export function viewSpec(spec: CommandSpec): string {
  if (spec.view !== undefined) return spec.view;
  let view = VIEW_SPECS.get(spec);
  if (view === undefined) {
    const keys = spec.keys;
    const flag = spec.popped ? 'p' : spec.overwrites === 'all' ? 'w' : spec.overwrites === 'first' ? 'f' : spec.overwrites === 'last' ? 'l' : '';
    if ('streams' in keys) view = `@${keys.streams}`;
    else {
      const { first, last, step } = 'numkeys' in keys ? { first: keys.numkeys + 1, last: -1, step: 1 } : keys;
      view = (first === last ? String(first) : `${first}:${last}:${step}`) + flag;
    }
    VIEW_SPECS.set(spec, view);
  }
  return view;
}

/** viewSpec's answers, built once per command (it runs on every write). */
const VIEW_SPECS = new Map<CommandSpec, string>();

/**
 * Most arguments one command may have. Commands run inside Lua scripts on
 * both sides, and Lua 5.1 cannot pass more than about 8000 values to a call.
 */
export const MAX_ARGS = 7000;

/**
 * The value of XREADGROUP's BLOCK option (among the options, before
 * STREAMS), or undefined when it has none.
 */
export function blockOption(args: readonly unknown[]): string | undefined {
  for (let i = 0; i < args.length; ) {
    const opt = String(args[i]).toUpperCase();
    if (opt === 'STREAMS') break;
    if (opt === 'BLOCK') return args[i + 1] === undefined ? undefined : String(args[i + 1]);
    i += opt === 'GROUP' ? 3 : opt === 'COUNT' ? 2 : 1;
  }
  return undefined;
}
