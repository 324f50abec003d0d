/**
 * The producer behaves like the ioredis client it wraps, and every write it
 * lets through is logged atomically with it; everything else is refused whole.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { Command, ReplyError, type ChainableCommander, type Redis } from 'ioredis';
import { createProducer, UnsupportedCommandError, ConfigError } from '../producer/index.js';
import { MAX_ARGS } from '../shared/commands.js';
import { decodeEntry } from '../shared/entry.js';
import { startRedis } from './support/redis-server.js';
import { producerPair, type ProducerPair } from './support/fixtures.js';

const LOG = 'qsync:default:log';

interface Setup extends ProducerPair {
  /** entries in the log */
  logged(): Promise<number>;
}

async function setup(t: ExecutionContext): Promise<Setup> {
  const s = await producerPair(t);
  return { ...s, logged: () => s.master.llen(LOG) };
}

/** A plain ioredis client on a server of its own, to compare answers with. */
async function plainClient(t: ExecutionContext): Promise<Redis> {
  const server = await startRedis();
  t.teardown(() => server.destroy());
  return server.client();
}

/**
 * What a call settled to, errors included, so that two clients can be compared: an error by its name and message
 * (ioredis 6 gives plain commands' errors a ReplyError subclass of its own, whose name is still ReplyError).
 */
const outcome = (p: Promise<unknown>) => p.catch((e: Error) => ({ error: e.name, message: e.message, reply: e instanceof ReplyError }));

test('a producer answers every call exactly like a plain ioredis client', async (t) => {
  const [{ producer }, plain] = await Promise.all([setup(t), plainClient(t)]);
  const script = async (c: Redis) => [
    await c.set('s', 'v'),
    await c.get('s'),
    await c.set('s', 'w', 'EX', 100, 'GET'),
    await c.ttl('s'),
    await c.mset({ a: '1', b: 2 }),
    await c.mget('a', 'b', 'missing'),
    await c.msetnx('b', '3', 'c', '4'),
    await c.hset('h', { f: '1', g: '2' }),
    await c.hgetall('h'),
    await c.hincrbyfloat('h', 'f', '1.5'),
    await c.incr('n'),
    await c.incrby('n', 10),
    await c.incrbyfloat('fl', '2.5'),
    await c.getdel('a'),
    await c.rpush('l', 'a', 'b', 'c'),
    await c.lpop('l', 2),
    await c.lrange('l', 0, -1),
    await c.lpop('empty'),
    await c.zadd('z', 1, 'a', 2, 'b'),
    await c.zrange('z', 0, -1, 'WITHSCORES'),
    await c.zpopmin('z'),
    await c.sadd('ints', 1, 2, 3),
    await c.smembers('ints'),
    await c.spop('ints', 3),
    await c.spop('ints'),
    await c.setnx('s', 'x'),
    await c.del('b', 'missing'),
    await c.call('set', 'c', '9'),
    await c.call('get', 'c'),
    await outcome(c.lpush('s', 'x')),
    await outcome(c.incr('h')),
    await outcome(c.call('set', 'onlykey')),
  ];
  t.deepEqual(await script(producer), await script(plain));
});

test('Buffer variants return Buffers, as ioredis does', async (t) => {
  const [{ producer }, plain] = await Promise.all([setup(t), plainClient(t)]);
  const script = async (c: Redis) => {
    await c.sadd('s', 'only');
    await c.rpush('l', 'x', 'y');
    await c.set('k', 'v0');
    return [
      await c.setBuffer('k', 'v', 'GET'),
      await c.setBuffer('k', 'v2', 'GET'),
      await c.getBuffer('k'),
      await c.spopBuffer('s'),
      await c.lpopBuffer('l'),
      await c.rpopBuffer('l', 1),
      await c.callBuffer('incrbyfloat', 'f', '1'),
      await c.callBuffer('getset', 'k', 'w'),
    ];
  };
  const results = await script(producer);
  t.deepEqual(results, await script(plain));
  t.true(results.every((r) => Buffer.isBuffer(r) || (Array.isArray(r) && r.every((x) => Buffer.isBuffer(x)))));
});

test('node-style callbacks get results and errors, on writes, reads and exec', async (t) => {
  const { producer } = await setup(t);
  const viaCallback = (call: (cb: (err?: Error | null, r?: unknown) => void) => void) =>
    new Promise((resolve) => call((err, r) => resolve(err ? `error: ${err.message}` : r)));
  t.is(await viaCallback((cb) => producer.set('k', '1', cb)), 'OK');
  t.is(await viaCallback((cb) => producer.get('k', cb)), '1');
  t.is(await viaCallback((cb) => producer.hincrby('k', 'f', 1, cb)), 'error: WRONGTYPE Operation against a key holding the wrong kind of value');
  t.regex(String(await viaCallback((cb) => producer.swapdb(0, 1, cb))), /^error: qsync: SWAPDB .*nothing was written$/);
  t.deepEqual(await viaCallback((cb) => producer.multi().incr('k').exec(cb)), [[null, 2]]);
  t.deepEqual(await viaCallback((cb) => producer.pipeline().incr('k').exec(cb)), [[null, 3]]);
  t.is(await viaCallback((cb) => void producer.pipeline().incr('k', cb).exec()), 4);
  t.is(await viaCallback((cb) => void producer.multi().incr('k', cb).exec()), 'QUEUED');
});

test('call() writes are logged; reads, by method or call(), are not', async (t) => {
  const { producer, logged } = await setup(t);
  await producer.call('set', 'k', 'v');
  await producer.call('HSET', 'h', 'f', 'v');
  await producer.pipeline().call('set', 'p', 'v').callBuffer('get', 'p').exec();
  t.deepEqual(await producer.multi().call('incr', 'n').call('get', 'n').exec(), [
    [null, 1],
    [null, '1'],
  ]);
  t.is(await logged(), 4);
  await producer.get('k');
  await producer.hgetall('h');
  await producer.call('get', 'k');
  await producer.scan(0);
  await producer.exists('k');
  t.is(await logged(), 4);
});

test('a failed write changes nothing, logs nothing and fails with the error ioredis gives', async (t) => {
  const [{ producer, master, logged }, plain] = await Promise.all([setup(t), plainClient(t)]);
  const failing = async (c: Redis) => {
    await c.set('str', 'text');
    await c.sadd('set', 'm');
    return [
      await outcome(c.lpush('str', 'x')),
      await outcome(c.incr('str')),
      await outcome(c.hincrbyfloat('set', 'f', '1')),
      await outcome(c.set('str', 'v', 'EX', 0)),
      await outcome(c.call('expire', 'str', 10, 'NX', 'XX')),
      await outcome(c.rename('missing', 'x')),
    ];
  };
  const before = await logged();
  t.deepEqual(await failing(producer), await failing(plain));
  t.is(await logged(), before + 2, 'only the setup writes are logged');
  t.is(await master.get('str'), 'text');
  t.is(await master.pttl('str'), -1);
});

test('a write that changes nothing logs nothing', async (t) => {
  const { producer, logged } = await setup(t);
  await producer.mset('k', 'v', 'other', 'v');
  await producer.expire('other', 100);
  await producer.sadd('s', 'm');
  await producer.rpush('l', 'a');
  await producer.hset('h', 'f', 'v');
  const before = await logged();
  await producer.setnx('k', 'x');
  await producer.set('k', 'x', 'NX');
  await producer.set('missing', 'x', 'XX', 'GET');
  await producer.del('missing');
  await producer.srem('s', 'missing');
  await producer.spop('missing');
  await producer.expire('missing', 10);
  await producer.expire('other', 10, 'NX');
  await producer.persist('k');
  await producer.hdel('h', 'missing');
  await producer.lpop('missing');
  await producer.lrem('l', 0, 'missing');
  await producer.linsert('l', 'BEFORE', 'missing', 'x');
  await producer.lpushx('missing', 'x');
  await producer.getdel('missing');
  await producer.getex('k');
  await producer.zpopmin('missing');
  await producer.renamenx('k', 'other');
  await producer.copy('k', 'other');
  await producer.msetnx('k', 'x', 'fresh', 'x');
  t.is(await logged(), before);
});

/** Asserts a call is refused as an UnsupportedCommandError naming the command. */
async function refused(t: ExecutionContext, call: Promise<unknown>, command: string): Promise<void> {
  const err = await t.throwsAsync(call, { instanceOf: UnsupportedCommandError });
  t.is(err?.command, command);
  t.true(err?.message.includes(command.toUpperCase()), err?.message);
}

test('unsupported writes are refused by name and write nothing on the master', async (t) => {
  const { producer, master, logged } = await setup(t);
  await master.set('plain', 'kept');
  await master.rpush('list', 'b', 'a');
  await refused(t, producer.fcall('myfunc', 1, 'plain'), 'fcall');
  await refused(t, producer.call('FUNCTION', 'LOAD', "#!lua name=lib\nredis.register_function('f', function() return 1 end)"), 'function');
  await refused(t, producer.callBuffer('swapdb', 0, 1), 'swapdb');
  producer.defineCommand('myRead', { numberOfKeys: 1, readOnly: true, lua: "return redis.call('GET', KEYS[1])" });
  t.is(await (producer as unknown as Record<string, (k: string) => Promise<unknown>>).myRead('plain'), 'kept', 'a read-only script runs');
  t.deepEqual((await master.keys('*')).sort(), ['list', 'plain']);
  t.deepEqual(await master.lrange('list', 0, -1), ['b', 'a']);
  t.is(await logged(), 0);
});

test('an unsupported write inside multi() or pipeline() fails exec() before anything is sent', async (t) => {
  const { producer, master, logged } = await setup(t);
  await refused(t, producer.multi().set('a', '1').fcall('myfunc', 0).incr('n').exec(), 'fcall');
  await refused(t, producer.pipeline().set('a', '1').call('FUNCTION', 'FLUSH').exec(), 'function');
  await refused(t, producer.multi().set('a', '1').select(2).set('b', '1').exec(), 'select');
  const pipeline = producer.pipeline() as unknown as { multi(): ChainableCommander };
  await refused(t, pipeline.multi().set('a', '1').exec(), 'multi');
  t.is(await master.dbsize(), 0);
  t.is(await logged(), 0);
});

test('multi() is atomic on the master, logged as one entry, and replays to an equal dataset', async (t) => {
  const { producer, master, logged, replicate } = await setup(t);
  const results = await producer.multi().set('a', '1').incr('n').hset('h', { f: 'v' }).lpush('l', 'x').get('a').incr('a').exec();
  t.deepEqual(
    results?.map(([err, r]) => (err ? err.message : r)),
    ['OK', 1, 1, 1, '1', 2],
  );
  const [raw] = await master.lrangeBuffer(LOG, 0, -1);
  t.is(await logged(), 1);
  t.deepEqual(
    decodeEntry(raw).commands.map(([name]) => name.toString()),
    ['set', 'incr', 'hset', 'lpush', 'incr'],
  );

  // A reader never sees one half of a group without the other.
  const groups = Array.from({ length: 100 }, () => producer.multi().incr('x').incr('y').exec());
  const reads: string[][] = [];
  while (reads.length < 100) reads.push((await master.mget('x', 'y')) as string[]);
  await Promise.all(groups);
  t.true(
    reads.every(([x, y]) => x === y),
    'x and y always move together',
  );
  await replicate();
});

test('a command that fails inside multi() leaves the others applied and logged, like MULTI', async (t) => {
  const [{ producer, master, replicate }, plain] = await Promise.all([setup(t), plainClient(t)]);
  const group = (c: Redis) => c.multi().set('s', 'text').incr('s').rpush('l', 'a').exec();
  const shape = (r: [Error | null, unknown][] | null) => r?.map(([err, v]) => (err ? err.message : v));
  t.deepEqual(shape(await group(producer)), shape(await group(plain)));
  t.deepEqual(
    decodeEntry((await master.lrangeBuffer(LOG, 0, 0))[0]).commands.map(([n]) => n.toString()),
    ['set', 'rpush'],
  );
  await replicate();
});

test('a command with the wrong number of arguments aborts a multi() and fails alone in a pipeline(), like ioredis', async (t) => {
  const [{ producer, master, logged }, plain] = await Promise.all([setup(t), plainClient(t)]);
  const transaction = (c: Redis) => outcome(c.multi().set('a', '1').call('set', 'b').exec());
  t.deepEqual(await transaction(producer), await transaction(plain));
  t.is(await master.exists('a'), 0);
  const pipe = (c: Redis) => c.pipeline().set('a', '1').call('set', 'b').incr('a').exec();
  t.deepEqual(await pipe(producer), await pipe(plain));
  t.is(await logged(), 2);
});

test('reads inside multi() answer like ioredis, hgetall as an object and Buffers for Buffer variants', async (t) => {
  const [{ producer }, plain] = await Promise.all([setup(t), plainClient(t)]);
  const group = (c: Redis) =>
    c.multi().hset('h', { a: '1', b: '2' }).hgetall('h').getBuffer('missing').set('k', 'v').getBuffer('k').lrange('none', 0, -1).exists('k').exec();
  const results = await group(producer);
  t.deepEqual(results, await group(plain));
  t.deepEqual(results?.[1], [null, { a: '1', b: '2' }]);
});

test('pipeline() logs each write as an entry of its own and answers like ioredis', async (t) => {
  const [{ producer, master, logged, replicate }, plain] = await Promise.all([setup(t), plainClient(t)]);
  const pipe = (c: Redis) => c.pipeline().set('a', '1').get('a').incr('a').hset('h', 'f', 'v').hgetall('h').exec();
  t.deepEqual(await pipe(producer), await pipe(plain));
  t.is(await logged(), 3);
  const entries = (await master.lrangeBuffer(LOG, 0, -1)).map(decodeEntry);
  t.deepEqual(
    entries.map((e) => e.commands.length),
    [1, 1, 1],
  );
  await replicate();
});

test('multi([...]) and pipeline([...]) run the commands given up front', async (t) => {
  const { producer, master, logged, replicate } = await setup(t);
  t.deepEqual(
    await producer
      .multi([
        ['set', 'a', '1'],
        ['incr', 'a'],
        ['get', 'a'],
      ])
      .exec(),
    [
      [null, 'OK'],
      [null, 2],
      [null, '2'],
    ],
  );
  t.deepEqual(
    await producer
      .pipeline([
        ['set', 'b', '1'],
        ['get', 'b'],
      ])
      .exec(),
    [
      [null, 'OK'],
      [null, '1'],
    ],
  );
  t.is(await master.get('a'), '2');
  t.is(await logged(), 2);
  await replicate();
});

test('writes land in the same db on the replica: after select(), call("select"), a pipeline select, and on a db 5 client', async (t) => {
  const { pair, producer, replicate } = await setup(t);
  await producer.set('k', 'db0');
  await producer.select(3);
  await producer.set('k', 'db3');
  await createProducer(pair.master.client(5)).set('k', 'db5');
  await producer.call('select', 7);
  await producer.set('k', 'db7');
  await producer.pipeline().select(9).set('k', 'db9').exec();
  await producer.incr('n');
  await replicate();
  for (const db of [0, 3, 5, 7, 9]) t.is(await pair.replica.client(db).get('k'), `db${db}`);
  t.is(await pair.replica.client(9).get('n'), '1');
});

test('writes sent through duplicate() or sendCommand() are logged too', async (t) => {
  const { producer, logged, replicate } = await setup(t);
  const duplicate = producer.duplicate();
  t.teardown(() => duplicate.disconnect());
  await duplicate.set('dup', '1');
  t.is(await producer.sendCommand(new Command('set', ['sent', '1'], { replyEncoding: 'utf8' })), 'OK');
  t.is(await logged(), 2);
  await replicate();
});

test('binary keys and values round-trip byte for byte', async (t) => {
  const { pair, producer, replicate } = await setup(t);
  const bytes = (...b: number[]) => Buffer.concat([Buffer.from(b), randomBytes(16)]);
  const [key, value, field, member] = [bytes(0, 0xff, 0xc3, 0x28), bytes(0), bytes(0xfe, 0), bytes(0xed, 0xa0, 0x80)];
  await producer.set(key, value, 'EX', 1000);
  await producer.hset(Buffer.concat([key, Buffer.from('h')]), field, value);
  await producer.rpush(Buffer.concat([key, Buffer.from('l')]), value, member);
  await producer.zadd(Buffer.concat([key, Buffer.from('z')]), 1, member);
  await producer.sadd(Buffer.concat([key, Buffer.from('s')]), member, value);
  await replicate();
  t.deepEqual(await pair.replica.client().getBuffer(key), value);
});

test('1 MB values round-trip', async (t) => {
  const { pair, producer, replicate } = await setup(t);
  const big = randomBytes(1024 * 1024);
  await producer.set('big', big);
  await producer.hset('bighash', 'f', big);
  await producer.append('big', big);
  await producer.multi().rpush('biglist', big).set('big2', big).exec();
  await replicate();
  t.is(await pair.replica.client().strlen('big'), 2 * big.length);
});

test('a command over MAX_ARGS arguments is refused with a clear error and writes nothing', async (t) => {
  const { producer, master, logged } = await setup(t);
  const members = (n: number) => Array.from({ length: n }, (_, i) => `m${i}`);
  const err = await t.throwsAsync(producer.sadd('s', ...members(MAX_ARGS)), { instanceOf: UnsupportedCommandError });
  t.regex(err?.message ?? '', new RegExp(`SADD with ${MAX_ARGS + 1} arguments is over qsync's limit of ${MAX_ARGS - 1}; split it`));
  await t.throwsAsync(
    producer
      .multi()
      .set('a', '1')
      .mset(...members(MAX_ARGS))
      .exec(),
    { instanceOf: UnsupportedCommandError },
  );
  t.is(await master.dbsize(), 0);
  t.is(await logged(), 0);
  t.is(await producer.sadd('s', ...members(MAX_ARGS - 2)), MAX_ARGS - 2, 'the largest command allowed goes through');
});

test('a client with a keyPrefix is refused with a ConfigError', async (t) => {
  const server = await startRedis();
  t.teardown(() => server.destroy());
  const err = t.throws(() => createProducer(server.client(0, { keyPrefix: 'app:' })), { instanceOf: ConfigError });
  t.regex(err?.message ?? '', /keyPrefix \('app:'\)/);
});
