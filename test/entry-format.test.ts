/**
 * Property tests of the log entries: random supported writes with random
 * arguments (binary and large ones too) are either logged exactly in the
 * deterministic form the rules of the command table describe and replay to
 * an equal dataset, or refused without writing or logging anything; and the
 * entry decoder turns any garbage into an EntryFormatError, never anything else.
 */
import test from 'ava';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ReplyError, type Redis } from 'ioredis';
import { COMMANDS, MAX_ARGS, keyIndexes, type CommandSpec, type LogRule } from '../shared/commands.js';
import { decodeEntry, EntryFormatError, VIEW_ANY } from '../shared/entry.js';
import { createProducer, UnsupportedCommandError } from '../producer/index.js';
import { startPair, startWorker, waitForDrain, datasetDiff } from './support/fixtures.js';

type Arg = string | Buffer;
type Reply = null | number | Buffer | Reply[];

const LOG = 'qsync:default:log';
const now = Date.now();

// Few keys, fields and members, so that commands meet each other's keys (and types).
const key = fc.constantFrom('k1', 'k2', 'k3', 'k4');
const field = fc.constantFrom('f1', 'f2', 'f3');
const member = fc.oneof(fc.constantFrom('m1', 'm2', 'm3', 'm4'), fc.uint8Array({ minLength: 1, maxLength: 8 }).map(Buffer.from));
/** 256 KiB of one byte, shown short in counterexamples. */
const large = (byte: number) => Object.assign(Buffer.alloc(256 * 1024, byte), { [fc.toStringMethod]: () => `Buffer.alloc(${256 * 1024}, ${byte})` });
const int = (min: number, max: number) => fc.integer({ min, max }).map(String);
const float = fc.oneof(int(-100, 100), fc.double({ min: -1e6, max: 1e6, noNaN: true }).map(String));
const value = fc.oneof(
  { weight: 6, arbitrary: fc.oneof(fc.string({ maxLength: 12 }), int(-50, 50), float) },
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 32 }).map(Buffer.from) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }).map(large) },
);
// Expiries are long or already past: never so close that a key expires while datasets are compared.
const seconds = fc.oneof(int(-5, 0), int(100, 100_000));
const atSeconds = fc.oneof(
  fc.constant('1'),
  int(100, 100_000).map((s) => String(Math.floor(now / 1000) + Number(s))),
);
const atMs = fc.oneof(
  fc.constant('1'),
  int(100_000, 100_000_000).map((ms) => String(now + Number(ms))),
);

const opt = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });
const args = (...parts: fc.Arbitrary<unknown>[]) =>
  fc.tuple(...parts).map((xs) => (xs.flat(2) as (Arg | undefined)[]).filter((x): x is Arg => x !== undefined));
const some = <T>(arb: fc.Arbitrary<T>, max = 4) => fc.array(arb, { minLength: 1, maxLength: max });
const one = (...words: string[]) => fc.constantFrom(...words);
const flag = opt(one('NX', 'XX', 'GT', 'LT'));
const timeout = one('0.01', '0.02');
/** Keys after their count, as LMPOP takes them. */
const counted = (arb: fc.Arbitrary<Arg>) => some(arb, 3).map((ks) => [String(ks.length), ...ks]);
/** DUMP payloads for RESTORE, read from the master when the test starts. */
const PAYLOADS: Buffer[] = [];
const payload = fc.integer({ min: 0, max: 2 }).map((i) => PAYLOADS[i]);
const lon = fc.double({ min: -180, max: 180, noNaN: true }).map(String);
const lat = fc.double({ min: -85, max: 85, noNaN: true }).map(String);
const count = opt(fc.tuple(fc.constant('COUNT'), int(1, 3)));
/** A destination option, last, as the rules' expected forms read it (storeTarget). */
const store = (...options: string[]) => opt(fc.tuple(one(...options), key));
const bitfieldType = one('u8', 'i8', 'u4', 'i16');
const ttlOption = fc.oneof(
  fc.tuple(fc.constant('EX'), seconds),
  fc.tuple(
    fc.constant('PX'),
    seconds.map((s) => String(Number(s) * 1000)),
  ),
  fc.tuple(fc.constant('EXAT'), atSeconds),
  fc.tuple(fc.constant('PXAT'), atMs),
);

/** Random arguments for every command of the table. */
const ARGS: Record<string, fc.Arbitrary<Arg[]>> = {
  set: args(key, value, opt(fc.oneof(ttlOption, fc.constant(['KEEPTTL']))), opt(one('NX', 'XX')), opt(fc.constant('GET'))),
  setnx: args(key, value),
  setex: args(key, seconds, value),
  psetex: args(
    key,
    seconds.map((s) => String(Number(s) * 1000)),
    value,
  ),
  mset: args(some(fc.tuple(key, value))),
  msetnx: args(some(fc.tuple(key, value))),
  append: args(key, value),
  incr: args(key),
  decr: args(key),
  incrby: args(key, int(-1000, 1000)),
  decrby: args(key, int(-1000, 1000)),
  incrbyfloat: args(key, float),
  setrange: args(key, int(0, 64), value),
  getset: args(key, value),
  getdel: args(key),
  getex: args(key, opt(fc.oneof(ttlOption, fc.constant(['PERSIST'])))),
  setbit: args(key, int(0, 1000), one('0', '1')),
  del: args(some(key)),
  unlink: args(some(key)),
  expire: args(key, seconds, flag),
  pexpire: args(
    key,
    seconds.map((s) => String(Number(s) * 1000)),
    flag,
  ),
  expireat: args(key, atSeconds, flag),
  pexpireat: args(key, atMs, flag),
  persist: args(key),
  rename: args(key, key),
  renamenx: args(key, key),
  copy: args(key, key, opt(fc.tuple(fc.constant('DB'), int(0, 2))), opt(fc.constant('REPLACE'))),
  // whole keys and dbs, stored results, GEOADD and BITFIELD
  move: args(key, int(1, 2)),
  restore: fc.oneof(
    args(key, fc.constant('0'), payload, opt(fc.constant('REPLACE'))),
    args(key, int(1000, 100_000), payload, opt(fc.constant('REPLACE')), opt(fc.tuple(fc.constant('IDLETIME'), int(0, 100)))),
    args(key, atMs, payload, fc.constant('ABSTTL'), opt(fc.constant('REPLACE'))),
  ),
  flushdb: args(opt(one('ASYNC', 'SYNC'))),
  flushall: args(opt(one('ASYNC', 'SYNC'))),
  sort: args(
    key,
    opt(fc.constant(['BY', 'nosort'])),
    opt(fc.tuple(fc.constant('LIMIT'), int(0, 2), int(1, 3))),
    opt(one('ASC', 'DESC')),
    opt(fc.constant('ALPHA')),
    store('STORE'),
  ),
  zunionstore: args(key, counted(key), opt(fc.tuple(fc.constant('AGGREGATE'), one('SUM', 'MIN', 'MAX')))),
  zinterstore: args(key, counted(key), opt(fc.tuple(fc.constant('AGGREGATE'), one('SUM', 'MIN', 'MAX')))),
  zdiffstore: args(key, counted(key)),
  zrangestore: args(key, key, int(-3, 3), int(-3, 3), opt(fc.constant('REV'))),
  geoadd: args(key, opt(one('NX', 'XX')), opt(fc.constant('CH')), some(fc.tuple(lon, lat, member))),
  georadius: args(key, lon, lat, one('100', '20000'), one('km', 'm'), opt(one('ASC', 'DESC')), count, store('STORE', 'STOREDIST')),
  georadiusbymember: args(key, member, one('100', '20000'), fc.constant('km'), count, store('STORE', 'STOREDIST')),
  geosearchstore: args(
    key,
    key,
    fc.oneof(fc.tuple(fc.constant('FROMMEMBER'), member), fc.tuple(fc.constant('FROMLONLAT'), lon, lat)),
    fc.oneof(
      fc.tuple(fc.constant('BYRADIUS'), one('100', '20000'), fc.constant('km')),
      fc.tuple(fc.constant('BYBOX'), one('200', '40000'), one('200', '40000'), fc.constant('km')),
    ),
    opt(one('ASC', 'DESC')),
    count,
    opt(fc.constant('STOREDIST')),
  ),
  bitfield: args(
    key,
    some(
      fc.oneof(
        fc.tuple(fc.constant('GET'), bitfieldType, int(0, 64)),
        fc.tuple(fc.constant('SET'), bitfieldType, int(0, 64), int(-300, 300)),
        fc.tuple(fc.constant('INCRBY'), bitfieldType, int(0, 64), int(-300, 300)),
        fc.tuple(fc.constant('OVERFLOW'), one('WRAP', 'SAT', 'FAIL')),
      ),
    ),
  ),
  bitop: fc.oneof(args(one('AND', 'OR', 'XOR'), key, some(key, 3)), args(fc.constant('NOT'), key, key)),
  pfmerge: args(key, fc.array(key, { maxLength: 3 })),
  hset: args(key, some(fc.tuple(field, value))),
  hsetnx: args(key, field, value),
  hmset: args(key, some(fc.tuple(field, value))),
  hdel: args(key, some(field)),
  hincrby: args(key, field, int(-100, 100)),
  hincrbyfloat: args(key, field, float),
  lpush: args(key, some(member)),
  rpush: args(key, some(member)),
  lpushx: args(key, some(member)),
  rpushx: args(key, some(member)),
  lpop: args(key, opt(int(0, 5))),
  rpop: args(key, opt(int(0, 5))),
  linsert: args(key, one('BEFORE', 'AFTER'), member, member),
  lset: args(key, int(-3, 3), member),
  lrem: args(key, int(-2, 2), member),
  ltrim: args(key, int(-3, 3), int(-3, 3)),
  lmove: args(key, key, one('LEFT', 'RIGHT'), one('LEFT', 'RIGHT')),
  rpoplpush: args(key, key),
  sadd: args(key, some(member)),
  srem: args(key, some(member)),
  spop: args(key, opt(int(0, 5))),
  smove: args(key, key, member),
  sinterstore: args(key, some(key, 3)),
  sunionstore: args(key, some(key, 3)),
  sdiffstore: args(key, some(key, 3)),
  zadd: fc.oneof(
    args(key, opt(one('NX', 'XX')), opt(one('GT', 'LT')), opt(fc.constant('CH')), some(fc.tuple(float, member))),
    args(key, opt(one('NX', 'XX', 'GT', 'LT')), fc.constant('INCR'), float, member),
  ),
  zincrby: args(key, float, member),
  zrem: args(key, some(member)),
  zremrangebyscore: args(key, one('-inf', '(0', '1', '10'), one('+inf', '(5', '20')),
  zremrangebyrank: args(key, int(-3, 3), int(-3, 3)),
  zremrangebylex: args(key, one('-', '[m1', '(m2'), one('+', '[m3', '(m4')),
  zpopmin: args(key, opt(int(1, 5))),
  zpopmax: args(key, opt(int(1, 5))),
  pfadd: args(key, fc.array(member, { maxLength: 4 })),
  pfcount: args(some(key, 2)),
  // Short timeouts: a blocking pop with nothing to pop waits them out.
  blpop: args(some(key, 3), timeout),
  brpop: args(some(key, 3), timeout),
  bzpopmin: args(some(key, 3), timeout),
  bzpopmax: args(some(key, 3), timeout),
  blmove: args(key, key, one('LEFT', 'RIGHT'), one('LEFT', 'RIGHT'), timeout),
  brpoplpush: args(key, key, timeout),
  lmpop: args(counted(key), one('LEFT', 'RIGHT'), opt(fc.tuple(fc.constant('COUNT'), int(1, 5)))),
  blmpop: args(timeout, counted(key), one('LEFT', 'RIGHT'), opt(fc.tuple(fc.constant('COUNT'), int(1, 5)))),
  zmpop: args(counted(key), one('MIN', 'MAX'), opt(fc.tuple(fc.constant('COUNT'), int(1, 5)))),
  bzmpop: args(timeout, counted(key), one('MIN', 'MAX'), opt(fc.tuple(fc.constant('COUNT'), int(1, 5)))),
};

/** Writes the producer must refuse: not replicable, or too many arguments. */
const refusedWrite = fc.oneof(
  args(fc.constant('swapdb'), one('0'), one('1')),
  args(fc.constant('pfdebug'), fc.constant('TODENSE'), key),
  args(fc.constant('fcall'), fc.constant(['myfunc', '0'])),
  args(
    fc.constant('sadd'),
    key,
    fc.constant(
      Object.assign(
        Array.from({ length: MAX_ARGS }, (_, i) => String(i)),
        { [fc.toStringMethod]: () => `${MAX_ARGS} members` },
      ),
    ),
  ),
);
/** Streams have their logged forms and replays checked by test/streams.test.ts: their groups need more than random arguments. */
const STREAM_COMMANDS = new Set(['xadd', 'xtrim', 'xdel', 'xsetid', 'xgroup', 'xreadgroup', 'xack', 'xclaim', 'xautoclaim']);
const write = fc.oneof(
  {
    weight: 20,
    arbitrary: fc
      .constantFrom(...Object.keys(COMMANDS).filter((name) => !STREAM_COMMANDS.has(name)))
      .chain((name) => ARGS[name].map((a) => [name, ...a])),
  },
  { weight: 1, arbitrary: refusedWrite },
);

// A copy: generated Buffers carry a fast-check display method that equality would see.
const buf = (x: Arg | number) => (Buffer.isBuffer(x) ? Buffer.from(x) : Buffer.from(String(x)));
const changed = (r: Reply) => (typeof r === 'number' ? r > 0 : Array.isArray(r) ? r.length > 0 : r !== null);
const chunk = (members: Reply[]) => (members.length ? [members as Buffer[]] : []);

/** The state of a write's first key before it ran, as far as the rules look at it. */
interface Before {
  existed: boolean;
  /** a HyperLogLog whose cached count is stale (top bit of byte 16) */
  staleCount: boolean;
}

/**
 * What the command table's rules say is logged for a write, given its reply,
 * its key before and the key's PEXPIRETIME after it.
 */
/** The key a STORE or STOREDIST option names, last in the generated calls. */
function storeTarget(cmd: Arg[]): Arg | undefined {
  const option = cmd.at(-2)?.toString().toUpperCase();
  return option === 'STORE' || option === 'STOREDIST' ? cmd.at(-1) : undefined;
}

/** GEOADD's members. */
function geoMembers(cmd: Arg[]): Arg[] {
  let at = 2;
  while (['NX', 'XX', 'CH'].includes(cmd[at].toString().toUpperCase())) at++;
  return cmd.slice(at).filter((_, i) => i % 3 === 2);
}

/** What a rule that logs a key's state reads after the write: the sorted set or list stored, GEOADD's members' scores. */
async function stateAfter(master: Redis, rule: LogRule, cmd: Arg[]): Promise<(Buffer | null)[]> {
  const dst = rule === 'zstore' ? cmd[1] : storeTarget(cmd);
  if (rule === 'geoadd') return (await master.callBuffer('ZMSCORE', cmd[1], ...geoMembers(cmd))) as (Buffer | null)[];
  if (!dst) return [];
  if (rule === 'zstore' || rule === 'georadius') return master.zrangeBuffer(dst, 0, -1, 'WITHSCORES');
  if (rule === 'sortstore') return master.lrangeBuffer(dst, 0, -1);
  return [];
}

/** A stored result as the rules log it: DEL, then the members (scores first for a sorted set). */
function stored(dst: Arg, push: string, items: Buffer[]): Arg[][] {
  const members = push === 'zadd' ? items.flatMap((_, i) => (i % 2 === 0 ? [items[i + 1], items[i]] : [])) : items;
  return [['del', dst], ...(members.length ? [[push, dst, ...members]] : [])];
}

function expected(rule: LogRule, cmd: Arg[], reply: Reply, { existed, staleCount }: Before, at: number, after: (Buffer | null)[]): Arg[][] {
  const [name, k] = cmd;
  const stringState = (v: Arg) => (at > 0 ? [['set', k, v, 'PXAT', String(at)]] : at === -1 ? [['set', k, v]] : [['del', k]]);
  const expiryState = () => (at > 0 ? [['pexpireat', k, String(at)]] : at === -1 ? [['persist', k]] : [['del', k]]);
  const options = cmd.slice(3).map((a) => a.toString().toUpperCase());
  switch (rule) {
    case 'always':
      return [cmd];
    case 'changed':
      return changed(reply) ? [cmd] : [];
    case 'set':
      return (options.includes('NX') ? !existed : options.includes('XX') ? existed : true) ? stringState(cmd[2]) : [];
    case 'setex':
      return stringState(cmd[3]);
    case 'setnx':
      return reply === 1 ? [['set', k, cmd[2]]] : [];
    case 'getset':
      return stringState(cmd[2]);
    case 'getdel':
      return reply !== null ? [['del', k]] : [];
    case 'getex':
      return reply !== null && cmd.length > 2 ? expiryState() : [];
    case 'expire':
      return reply === 1 ? expiryState() : [];
    case 'incrbyfloat':
      return stringState(reply as Buffer);
    case 'hincrbyfloat':
      return [['hset', k, cmd[2], reply as Buffer]];
    case 'spop':
      return Buffer.isBuffer(reply) ? [['srem', k, reply]] : chunk((reply as Reply[] | null) ?? []).map((m) => ['srem', k, ...m]);
    case 'zpop':
      return chunk((reply as Buffer[]).filter((_, i) => i % 2 === 0)).map((m) => ['zrem', k, ...m]);
    case 'pfcount':
      return cmd.length === 2 && staleCount ? [cmd] : [];
    case 'move':
      return reply === 1
        ? [
            ['copy', k, k, 'DB', cmd[2], 'REPLACE'],
            ['del', k],
          ]
        : [];
    case 'restore':
      return at > 0 ? [['restore', k, String(at), cmd[3], 'ABSTTL', 'REPLACE']] : at === -1 ? [['restore', k, '0', cmd[3], 'REPLACE']] : [['del', k]];
    case 'flush':
      return [[name]];
    case 'zstore':
      return stored(k, 'zadd', after as Buffer[]);
    case 'georadius':
    case 'sortstore': {
      const dst = storeTarget(cmd);
      return dst ? stored(dst, rule === 'sortstore' ? 'rpush' : 'zadd', after as Buffer[]) : [];
    }
    case 'geoadd': {
      const scored = geoMembers(cmd).flatMap((m, i) => (after[i] ? [after[i] as Buffer, m] : []));
      return scored.length ? [['zadd', k, ...scored]] : [];
    }
    case 'bitfield':
      return cmd.slice(2).some((a) => ['SET', 'INCRBY'].includes(a.toString().toUpperCase())) ? [cmd] : [];
    case 'pop':
      return reply === null
        ? []
        : cmd.length === 2
          ? [[name, k]]
          : (reply as Reply[]).length > 0
            ? [[name, k, String((reply as Reply[]).length)]]
            : [];
  }
  // The pops from the first of several keys: logged on the key the reply names.
  if (reply === null) return [];
  const [popped, ...rest] = reply as Buffer[];
  switch (rule) {
    case 'bpop':
      return [[name.toString() === 'blpop' ? 'lpop' : 'rpop', popped, '1']];
    case 'bzpop':
      return [['zrem', popped, rest[0]]];
    case 'bmove':
      return [[name.toString().slice(1), ...cmd.slice(1, -1)]];
    case 'lmpop': {
      const count = name.toString() === 'blmpop' ? 2 : 1;
      const left = cmd[count + Number(cmd[count]) + 1].toString().toUpperCase() === 'LEFT';
      return [[left ? 'lpop' : 'rpop', popped, String((rest[0] as unknown as Reply[]).length)]];
    }
    case 'zmpop':
      return chunk((rest[0] as unknown as Buffer[][]).map(([m]) => m)).map((m) => ['zrem', popped, ...m]);
    default:
      // Streams' rules are checked by test/streams.test.ts, never generated here.
      throw new Error(`no expected logged form for the rule ${rule}`);
  }
}

/**
 * The views the master records with a write's logged commands: for the first,
 * each key's position and its PEXPIRETIME just before the write (`expiries`),
 * or VIEW_ANY for a key the logged form overwrites; a further command a rule
 * logged on the same key (members popped in chunks) only names it.
 */
function expectedViews(spec: CommandSpec, sent: Arg[], logged: number, expiries: number[], reply: Reply): number[][] {
  // A logged form that names its keys elsewhere (MOVE's COPY k k DB n, a stored result's DEL dst): its view spec.
  if (spec.view === '1w') return Array.from({ length: logged }, () => [2, VIEW_ANY]);
  if (spec.view === '1:2:1l') return Array.from({ length: logged }, (_, j) => (j === 0 ? [2, expiries[0], 3, VIEW_ANY] : [2, VIEW_ANY]));
  const indexes = keyIndexes(spec.keys, sent);
  if (spec.popped) {
    // The logged pop names the key popped from, as its first argument.
    const n = indexes.findIndex((i) => buf(sent[i]).equals((reply as Buffer[])[0]));
    return Array.from({ length: logged }, (_, j) => (j === 0 ? [2, expiries[n]] : [2, VIEW_ANY]));
  }
  const overwritten = (n: number) =>
    spec.overwrites === 'all' || (spec.overwrites === 'first' && n === 0) || (spec.overwrites === 'last' && n === indexes.length - 1);
  const first = indexes.flatMap((i, n) => [i + 2, overwritten(n) ? VIEW_ANY : expiries[n]]);
  return Array.from({ length: logged }, (_, j) => (j === 0 ? first : [2, VIEW_ANY]));
}

test('random writes are logged as the rules say and replay to an equal dataset, or are refused whole', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const master = pair.master.client();
  const replica = pair.replica.client();
  const producer = createProducer(pair.master.client());
  const dbClients = new Map<number, ReturnType<typeof pair.master.client>>();
  const dbClient = (db: number) => dbClients.get(db) ?? dbClients.set(db, pair.master.client(db)).get(db)!;
  let run = 0;
  // RESTORE's payloads: a list, a hash and a string as this server dumps them (written directly, then deleted).
  const dumped = ['payload:list', 'payload:hash', 'payload:string'];
  await master.rpush(dumped[0], 'a', 'b');
  await master.hset(dumped[1], 'f', 'v');
  await master.set(dumped[2], 'v');
  PAYLOADS.push(...((await Promise.all(dumped.map((k) => master.dumpBuffer(k)))) as Buffer[]));
  await master.del(...dumped);

  /** Sends one write and checks what it logged; throws (for fast-check to shrink) when that is wrong. */
  const check = async ([nameArg, ...rest]: Arg[]): Promise<void> => {
    const name = nameArg.toString();
    const spec = COMMANDS[name];
    // Each run writes its own keys, so that a failing run shrinks on a clean slate.
    // Keys named elsewhere (the sources of ZUNIONSTORE, SORT ... STORE dst) are the generated key names.
    const keys = new Set([...(spec ? keyIndexes(spec.keys, rest) : []), ...rest.flatMap((a, i) => (/^k[1-4]$/.test(a.toString()) ? [i] : []))]);
    const sent = rest.map((a, i) => (keys.has(i) ? Buffer.concat([Buffer.from(`r${run}:`), buf(a)]) : a));
    const before: Before = spec
      ? {
          existed: (await master.exists(sent[0])) === 1,
          staleCount: ((await master.getrangeBuffer(sent[0], 15, 15).catch(() => null))?.[0] ?? 0) >= 0x80,
        }
      : { existed: false, staleCount: false };
    // Each key's expiry before the write, in its db (COPY ... DB n writes its destination in db n).
    const copyDb = name === 'copy' ? sent.findIndex((a, i) => i >= 2 && a.toString().toUpperCase() === 'DB') : -1;
    const expiries: number[] = [];
    for (const [n, i] of (spec ? keyIndexes(spec.keys, sent) : []).entries()) {
      const db = copyDb >= 0 && n === 1 ? Number(sent[copyDb + 1]) : 0;
      expiries.push(await (db === 0 ? master : dbClient(db)).pexpiretime(sent[i]));
    }
    const length = await master.llen(LOG);
    let reply: Reply;
    try {
      reply = (await producer.callBuffer(name, ...sent)) as Reply;
    } catch (err) {
      assert.ok(err instanceof UnsupportedCommandError || err instanceof ReplyError, `${name}: ${String(err)}`);
      if (err instanceof UnsupportedCommandError) assert.match(err.message, new RegExp(`^qsync: ${name.toUpperCase()} `));
      assert.equal(await master.llen(LOG), length, `${name} failed and must log nothing`);
      return;
    }
    assert.ok(spec, `${name} is not in the command table and was not refused`);
    const after = await stateAfter(master, spec.log, [name, ...sent]);
    const want = expected(spec.log, [name, ...sent], reply, before, await master.pexpiretime(sent[0] ?? ''), after).map((c) => c.map(buf));
    const entries = (await master.lrangeBuffer(LOG, length, -1)).map(decodeEntry);
    assert.deepStrictEqual(
      entries.map((e) => e.commands),
      want.length ? [want] : [],
      `${name} ${sent.join(' ').slice(0, 200)}`,
    );
    if (want.length) assert.deepStrictEqual(entries[0].views, expectedViews(spec, sent, want.length, expiries, reply), `views of ${name}`);
  };

  await t.notThrowsAsync(
    fc.assert(
      fc.asyncProperty(fc.array(write, { minLength: 1, maxLength: 12 }), async (cmds) => {
        run++;
        for (const cmd of cmds) await check(cmd);
        if (!(await master.exists('qsync:default:meta'))) return; // nothing was ever logged
        const worker = startWorker(pair);
        try {
          await waitForDrain(master, replica);
        } finally {
          await worker.close();
        }
        // Only this run's keys: an earlier failure must not fail the shrunk runs too.
        const diff = (await datasetDiff(pair.master, pair.replica)).filter((d) => d.includes(` r${run}:`));
        assert.deepStrictEqual(diff, []);
      }),
      { numRuns: 60, includeErrorInReport: true },
    ),
  );
});

/** Runs its ARGV as commands, each as: argument count, name, arguments; an error ends none of them. */
const RUN_WRITES = `local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local cmd = {}
  for j = 1, n do cmd[j] = ARGV[i + j] end
  redis.pcall(unpack(cmd))
  i = i + n + 1
end
return 1`;

test('random writes made inside Lua scripts, several to a call, are logged as one entry a call and replay to an equal dataset', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const master = pair.master.client();
  const replica = pair.replica.client();
  const producer = createProducer(pair.master.client());
  let run = 0;
  // RESTORE needs this server's payloads: the other property covers it.
  const inScripts = write.filter(([name]) => name !== 'restore' && Object.hasOwn(COMMANDS, name.toString()));
  await t.notThrowsAsync(
    fc.assert(
      fc.asyncProperty(fc.array(fc.array(inScripts, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 6 }), async (calls) => {
        run++;
        for (const cmds of calls) {
          const argv = cmds.flatMap(([name, ...rest]) => {
            const keys = new Set(keyIndexes(COMMANDS[name.toString()].keys, rest));
            const sent = rest.map((a, i) => (keys.has(i) ? Buffer.concat([Buffer.from(`s${run}:`), buf(a)]) : a));
            return [String(sent.length + 1), name, ...sent];
          });
          const length = await master.llen(LOG);
          await producer.callBuffer('EVAL', RUN_WRITES, '0', ...argv);
          assert.ok((await master.llen(LOG)) - length <= 1, 'one script call logs one entry at most');
        }
        if (!(await master.exists('qsync:default:meta'))) return;
        const worker = startWorker(pair);
        try {
          await waitForDrain(master, replica);
        } finally {
          await worker.close();
        }
        const diff = (await datasetDiff(pair.master, pair.replica)).filter((d) => d.includes(` s${run}:`));
        assert.deepStrictEqual(diff, []);
      }),
      { numRuns: 40, includeErrorInReport: true },
    ),
  );
});

test('every command in the table has an argument generator', (t) => {
  t.deepEqual(
    Object.keys(COMMANDS).filter((name) => !(name in ARGS) && !STREAM_COMMANDS.has(name)),
    [],
  );
});

test('decodeEntry turns garbage into an EntryFormatError and never throws anything else', (t) => {
  // [1, 1, 1, 0, [['set']], 0] as cmsgpack writes it, to cut and corrupt.
  const real = Buffer.from('96010101009191a373657400', 'hex');
  t.deepEqual(decodeEntry(real).commands, [[Buffer.from('set')]]);
  const garbage = fc.oneof(
    fc.uint8Array({ maxLength: 64 }).map(Buffer.from),
    fc.tuple(fc.nat(real.length), fc.uint8Array({ maxLength: 4 })).map(([cut, b]) => Buffer.concat([real.subarray(0, cut), b])),
  );
  t.notThrows(() =>
    fc.assert(
      fc.property(garbage, (raw) => {
        try {
          decodeEntry(raw);
        } catch (err) {
          if (!(err instanceof EntryFormatError)) throw err;
        }
      }),
      { numRuns: 5000, examples: [[Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff])]] },
    ),
  );
  t.throws(() => decodeEntry(Buffer.alloc(100_000, 0x91)), { instanceOf: EntryFormatError }, 'deeply nested arrays');
});
