/**
 * Lua scripts run through the producer are replicated by their effects, as
 * Redis 7 replicates them: each write a script makes is logged in the form
 * the same write sent alone is logged, all of one call's writes as one entry.
 */
import test, { type ExecutionContext } from 'ava';
import { ReplyError } from 'ioredis';
import { QueueFullError, UnsupportedCommandError } from '../producer/index.js';
import { decodeEntry } from '../shared/entry.js';
import { QueueKeys } from '../shared/keys.js';
import { setLimits } from '../consumer/queue/limits.js';
import { producerPair, type ProducerPair } from './support/fixtures.js';

const keys = new QueueKeys('qsync', 'default');

interface Setup extends ProducerPair {
  /** the logged commands of every entry in the log, as strings */
  entries(): Promise<string[][][]>;
}

async function setup(t: ExecutionContext): Promise<Setup> {
  const s = await producerPair(t);
  return {
    ...s,
    async entries() {
      const raw = await s.master.lrangeBuffer(keys.log, 0, -1);
      return raw.map((e) => decodeEntry(e).commands.map((c) => c.map(String)));
    },
  };
}

test('every write of one EVAL is logged as one entry, in the form it has when sent alone, and replays to an equal replica', async (t) => {
  const s = await setup(t);
  const reply = await s.producer.eval(
    `redis.call('SET', KEYS[1], ARGV[1], 'EX', 100)
     redis.call('HSET', KEYS[2], 'n', 1)
     redis.call('HINCRBYFLOAT', KEYS[2], 'f', '0.1')
     local seen = redis.call('GET', KEYS[1])
     redis.call('RPUSH', KEYS[3], seen, 2.5, 7)
     return { seen, redis.call('LLEN', KEYS[3]) }`,
    3,
    's:k',
    's:h',
    's:l',
    'v1',
  );
  t.deepEqual(reply, ['v1', 3]);
  const entries = await s.entries();
  t.is(entries.length, 1, 'one entry for the whole call');
  const [set, hset, hincr, rpush] = entries[0];
  t.is(set[0], 'set');
  t.deepEqual(set.slice(1, 4), ['s:k', 'v1', 'PXAT'], 'a relative expiry is logged as an absolute time');
  t.true(Math.abs(Number(set[4]) - (Date.now() + 100_000)) < 5_000);
  t.deepEqual(hset, ['hset', 's:h', 'n', '1']);
  t.deepEqual(hincr, ['hset', 's:h', 'f', '0.1'], 'a float result is logged as its value');
  t.deepEqual(rpush, ['rpush', 's:l', 'v1', '2.5', '7'], 'Lua numbers are logged as Redis turns them into arguments');
  await s.replicate();
});

test('random picks inside a script are logged as the members picked, and a script that reads only logs nothing', async (t) => {
  const s = await setup(t);
  await s.producer.sadd('r:set', 'a', 'b', 'c', 'd', 'e', 'f');
  const popped = (await s.producer.eval(
    `local m = redis.call('SPOP', KEYS[1], 2)
     local pick = redis.call('SRANDMEMBER', KEYS[1])
     redis.call('SADD', KEYS[2], pick)
     return m`,
    2,
    'r:set',
    'r:picked',
  )) as string[];
  t.is(popped.length, 2);
  const entries = await s.entries();
  t.is(entries.length, 2);
  const [srem, sadd] = entries[1];
  t.deepEqual(srem.slice(0, 2), ['srem', 'r:set']);
  t.deepEqual(srem.slice(2).sort(), [...popped].sort());
  t.is(sadd[0], 'sadd');
  t.is(await s.producer.eval("return redis.call('SCARD', KEYS[1])", 1, 'r:set'), 4);
  t.is((await s.entries()).length, 2, 'a read-only call adds no entry');
  await s.replicate();
});

test('a script that fails halfway keeps and logs the writes it made before the error, and its error reaches the caller', async (t) => {
  const s = await setup(t);
  await s.producer.set('e:text', 'not a number');
  const lua = await t.throwsAsync(s.producer.eval("redis.call('SET', 'e:before', 1)\nerror('boom')", 0));
  t.regex(lua?.message ?? '', /^ERR user_script:2: boom script: /, 'the line is the line in the source');
  const reply = await t.throwsAsync(s.producer.eval("redis.call('INCR', 'e:count')\nreturn redis.call('INCR', 'e:text')", 0));
  t.regex(reply?.message ?? '', /^ERR value is not an integer or out of range/);
  t.is(await s.master.get('e:before'), '1');
  t.is(await s.master.get('e:count'), '1');
  t.deepEqual((await s.entries()).slice(1), [[['set', 'e:before', '1']], [['incr', 'e:count']]]);
  await s.replicate();
});

test('redis.pcall, error_reply, status_reply, setresp(3), early returns and shebang flags keep working', async (t) => {
  const s = await setup(t);
  const p = s.producer;
  await p.set('f:text', 'x');
  t.deepEqual(
    await p.eval("local r = redis.pcall('INCR', KEYS[1]); redis.call('SET', 'f:after', 'y'); return r.err", 1, 'f:text'),
    'ERR value is not an integer or out of range',
  );
  await t.throwsAsync(p.eval("return redis.error_reply('MYERR custom')", 0), { message: 'MYERR custom' });
  t.is(await p.eval("return redis.status_reply('FINE')", 0), 'FINE');
  t.deepEqual(
    await p.eval(
      "if ARGV[1] == 'early' then redis.call('SET', 'f:early', 1) return 'left' end redis.call('SET', 'f:late', 1) return 'end'",
      0,
      'early',
    ),
    'left',
  );
  const resp3 = await p.eval(
    "redis.setresp(3)\nredis.call('ZADD', KEYS[1], 1, 'a', 2, 'b', 3, 'c')\nreturn redis.call('ZPOPMIN', KEYS[1], 2)",
    1,
    'f:z',
  );
  t.deepEqual(resp3, [
    ['a', '1'],
    ['b', '2'],
  ]);
  t.is(await p.eval("#!lua flags=allow-oom\nreturn redis.call('INCRBY', KEYS[1], 5)", 1, 'f:n'), 5);
  t.is(await p.eval("#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])", 1, 'f:text'), 'x');
  t.is(await p.call('EVAL_RO', "return redis.call('GET', KEYS[1])", 1, 'f:text'), 'x', 'EVAL_RO runs as it is');
  await t.throwsAsync(p.call('EVAL_RO', "return redis.call('SET', KEYS[1], 1)", 1, 'f:text'), {
    message: /Write commands are not allowed from read-only scripts/,
  });
  await t.throwsAsync(p.eval("#!lua flags=no-writes\nreturn redis.call('SET', KEYS[1], 1)", 1, 'f:text'), {
    message: /Write commands are not allowed from read-only scripts/,
  });
  const logged = (await s.entries()).flat();
  t.deepEqual(
    logged.map((c) => c.slice(0, 2).join(' ')),
    ['set f:text', 'set f:after', 'set f:early', 'zadd f:z', 'zrem f:z', 'incrby f:n'],
  );
  t.deepEqual(logged[4], ['zrem', 'f:z', 'a', 'b'], 'a RESP3 reply is read for what it popped');
  await s.replicate();
});

test('EVALSHA of a script loaded through the producer, defineCommand scripts and Buffer replies are logged; an unseen SHA is refused', async (t) => {
  const s = await setup(t);
  const p = s.producer;
  const sha = (await p.script('LOAD', "return redis.call('INCRBY', KEYS[1], ARGV[1])")) as string;
  t.is(await p.evalsha(sha, 1, 'd:n', 4), 4);
  t.is(await p.call('EVALSHA', sha, '1', 'd:n', '1'), 5);
  const plain = s.pair.master.client();
  const elsewhere = (await plain.script('LOAD', "return redis.call('SET', KEYS[1], 'x')")) as string;
  const refused = await t.throwsAsync(p.evalsha(elsewhere, 1, 'd:x'), { instanceOf: ReplyError });
  t.regex(refused?.message ?? '', /^NOSCRIPT .*has not seen.*eval\(source, \.\.\.\)/, 'NOSCRIPT, as Redis answers a SHA it does not have');
  t.is(await s.master.exists('d:x'), 0, 'nothing was written');

  p.defineCommand('addTo', { numberOfKeys: 1, lua: "redis.call('SADD', KEYS[1], ARGV[1]) return redis.call('SCARD', KEYS[1])" });
  p.defineCommand('setMany', { lua: "for i, k in ipairs(KEYS) do redis.call('SET', k, ARGV[i]) end return #KEYS" });
  const defined = p as unknown as {
    addTo(k: string, m: string): Promise<number>;
    setMany(n: number, ...a: string[]): Promise<number>;
    addToBuffer(k: string, m: string): Promise<number>;
  };
  t.is(await defined.addTo('d:set', 'a'), 1);
  t.is(await defined.addToBuffer('d:set', 'b'), 2);
  t.is(await defined.setMany(2, 'd:a', 'd:b', '1', '2'), 2);
  t.deepEqual(
    await p.callBuffer('EVAL', "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])", 1, 'd:buf', 'bytes'),
    Buffer.from('bytes'),
  );
  t.is((await s.entries()).length, 6);
  // A server that lost its scripts (restart, SCRIPT FLUSH) gets the wrapper again.
  await plain.script('FLUSH');
  t.is(await defined.addTo('d:set', 'c'), 3);
  t.is(await p.evalsha(sha, 1, 'd:n', 1), 6);
  await s.replicate();
});

test('inside a script, writes to qsync keys, writes qsync cannot replicate and SELECT fail like a refused redis.call', async (t) => {
  const s = await setup(t);
  const p = s.producer;
  await t.throwsAsync(p.eval("redis.call('SET', 'g:ok', 1) return redis.call('SET', 'qsync:default:log', 1)", 0), {
    message: /keys starting with qsync: are qsync's own/,
  });
  await t.throwsAsync(p.eval("redis.call('RPUSH', 'g:list', 'b', 'a') return redis.call('SORT', 'g:list', 'ALPHA', 'STORE', 'qsync:sorted')", 0), {
    message: /SORT on qsync:sorted: keys starting with qsync: are qsync's own/,
  });
  await t.throwsAsync(p.eval("return redis.call('SELECT', 1)", 0), { message: /SELECT inside a script is not supported/ });
  t.is(
    await p.eval("local r = redis.pcall('SELECT', 1) return r.err", 0),
    'ERR qsync: SELECT inside a script is not supported: the writes of one script call are logged as one entry in one db',
  );
  t.is(await s.master.type(keys.log), 'list', "qsync's log is untouched");
  t.deepEqual(await s.entries(), [[['set', 'g:ok', '1']], [['rpush', 'g:list', 'b', 'a']]]);
  await s.replicate();
});

test('scripts in a pipeline are logged one entry each, even when the server lost its script cache', async (t) => {
  const s = await setup(t);
  const p = s.producer;
  await s.pair.master.client().script('FLUSH');
  const results = await p
    .pipeline()
    .set('p:a', '1')
    .eval("return redis.call('INCR', KEYS[1])", 1, 'p:a')
    .eval("return redis.call('GET', KEYS[1])", 1, 'p:a')
    .evalsha('0123456789012345678901234567890123456789', 0)
    .exec()
    .catch((e: Error) => e);
  t.true(results instanceof UnsupportedCommandError, 'an unseen SHA refuses the pipeline whole, like any refused write');
  const piped = await p
    .pipeline()
    .set('p:a', '1')
    .eval("return redis.call('INCR', KEYS[1])", 1, 'p:a')
    .eval("return redis.call('GET', KEYS[1])", 1, 'p:a')
    .exec();
  t.deepEqual(piped, [
    [null, 'OK'],
    [null, 2],
    [null, '2'],
  ]);
  t.is((await s.entries()).length, 2);
  await s.replicate();
});

test('a full queue refuses a script at its first write, and under mark-dirty records the keys it wrote', async (t) => {
  const s = await setup(t);
  const p = s.producer;
  await p.set('q:a', '1');
  await setLimits(s.master, keys, { maxEntries: 1 });
  t.is(await p.eval("return redis.call('GET', KEYS[1])", 1, 'q:a'), '1', 'a script that only reads still runs');
  const full = await t.throwsAsync(p.eval("redis.call('SET', 'q:b', 1) return 1", 0), { instanceOf: QueueFullError });
  t.is(full?.limit, 'max entries 1');
  t.is(await s.master.exists('q:b'), 0);
  await setLimits(s.master, keys, { policy: 'mark-dirty' });
  t.is(await p.eval("redis.call('SET', 'q:c', 1) redis.call('HSET', KEYS[1], 'f', 1) return 1", 1, 'q:h'), 1);
  t.deepEqual((await s.master.smembers(keys.dirty)).sort(), ['0:q:c', '0:q:h']);
  t.is(await s.master.hget(keys.meta, 'state'), 'repair-needed');
});

test("scripts inside multi() run with the group's commands as one atomic call, logged as one entry", async (t) => {
  const s = await setup(t);
  const p = s.producer;
  p.defineCommand('push2', { numberOfKeys: 1, lua: "return redis.call('RPUSH', KEYS[1], ARGV[1], ARGV[2])" });
  p.defineCommand('peek', { numberOfKeys: 1, readOnly: true, lua: "return redis.call('LRANGE', KEYS[1], 0, -1)" });
  const m = p.multi().set('m:a', 'x') as unknown as {
    eval(...a: unknown[]): typeof m;
    push2(k: string, a: string, b: string): typeof m;
    peekBuffer(k: string): typeof m;
    get(k: string): typeof m;
    exec(): Promise<[Error | null, unknown][] | null>;
  };
  const results = await m
    .eval("redis.setresp(3) return redis.call('INCR', KEYS[1])", 1, 'm:n')
    .push2('m:l', 'a', 'b')
    .eval("redis.call('SET', KEYS[1], 'partial') return redis.call('INCR', KEYS[2])", 2, 'm:b', 'm:a')
    .push2('m:l', 'c', 'd')
    .peekBuffer('m:l')
    .get('m:b')
    .exec();
  t.deepEqual(results?.slice(0, 3), [
    [null, 'OK'],
    [null, 1],
    [null, 2],
  ]);
  t.regex(String(results?.[3][0]?.message), /^ERR value is not an integer or out of range/, 'a failing script fails its own place, as in MULTI');
  t.deepEqual(results?.slice(4), [
    [null, 4],
    [null, ['a', 'b', 'c', 'd'].map((x) => Buffer.from(x))],
    [null, 'partial'],
  ]);
  const entries = await s.entries();
  t.is(entries.length, 1);
  t.deepEqual(
    entries[0].map((c) => c.slice(0, 2).join(' ')),
    ['set m:a', 'incr m:n', 'rpush m:l', 'set m:b', 'rpush m:l'],
  );
  await setLimits(s.master, keys, { maxEntries: 1 });
  await t.throwsAsync(p.multi().get('m:a').eval("return redis.call('INCR', KEYS[1])", 1, 'm:n').exec(), { instanceOf: QueueFullError });
  t.is(await s.master.get('m:n'), '1');
  await setLimits(s.master, keys, { clear: true });
  await s.replicate();
});
