/**
 * The lean log-write script (shared/lua/log-simple.lua): the writes it takes
 * leave entries byte for byte as cmsgpack packs them, with the same commands
 * and views as the full script, and their replies in order.
 */
import test from 'ava';
import { createProducer } from '../producer/index.js';
import { decodeEntry } from '../shared/entry.js';
import { datasetDiff, startPair, startWorker, waitForDrain } from './support/fixtures.js';

const LOG = 'qsync:default:log';

/** Values around each msgpack string header's limits, and binary ones. */
const SIZES = [0, 1, 31, 32, 255, 256, 65_535, 65_536];

test('entries of the lean script are what cmsgpack packs, and replay to an equal replica', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const master = pair.master.client();
  const db = createProducer(pair.master.client());
  await master.set('plain:str', 'a string');
  await master.pexpire('plain:str', 600_000);
  const binary = Buffer.from([0, 255, 128, 10, 13, 0x91, 0xc0]);
  // One tick: a batch mixing command kinds, arities (a table beyond 4 arguments), views and refusals.
  const replies = await Promise.allSettled([
    ...SIZES.map((n) => db.set(`s:${n}`, 'x'.repeat(n))),
    db.set(binary, binary),
    db.incr('n'),
    db.incr('n'),
    db.hset('h', 'f', 'v'),
    db.hset('h', 'f1', 'v1', 'f2', 'v2'),
    db.sadd('s', 'a'),
    db.sadd('s', 'a'),
    db.lpush('plain:str', 'x'),
    db.lpush('l', 'a', 'b', 'c'),
    db.append('plain:str', '!'),
    db.del('s:0', 'nothing'),
    db.set('s:1', 'again'),
  ]);
  t.deepEqual(
    replies.map((r) => (r.status === 'fulfilled' ? r.value : 'error')),
    [...SIZES.map(() => 'OK'), 'OK', 1, 2, 1, 2, 1, 0, 'error', 3, 9, 1, 'OK'],
  );
  const raw = await master.lrangeBuffer(LOG, 0, -1);
  // The SADD that added nothing and the refused LPUSH log nothing.
  t.is(raw.length, SIZES.length + 10);
  for (const entry of raw) {
    const repacked = (await master.callBuffer('EVAL', 'return cmsgpack.pack(cmsgpack.unpack(ARGV[1]))', '0', entry)) as Buffer;
    t.true(repacked.equals(entry), 'packed as cmsgpack packs it');
  }
  const entries = raw.map(decodeEntry);
  t.deepEqual(
    entries.map((e) => e.seq),
    entries.map((_, i) => i + 1),
  );
  t.deepEqual(
    entries.map((e) => e.commands.map((c) => c[0].toString())),
    [...SIZES.map(() => ['set']), ['set'], ['incr'], ['incr'], ['hset'], ['hset'], ['sadd'], ['lpush'], ['append'], ['del'], ['set']],
  );
  t.true(entries[SIZES.length].commands[0][1].equals(binary), 'binary key kept');
  t.is(entries[6].commands[0][2].length, 65_535);
  t.deepEqual(entries[SIZES.length + 1].views, [[2, -2]], 'INCR of an absent key: its view says absent');
  const append = entries[SIZES.length + 7];
  t.is(append.views?.[0][0], 2);
  t.true((append.views?.[0][1] ?? 0) > Date.now(), "APPEND's view carries the key's absolute expiry");
  t.is(entries[1].prevTs, entries[0].ts, 'entries link to each other');

  const worker = startWorker(pair);
  t.teardown(() => worker.close());
  await waitForDrain(master, pair.replica.client());
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

test('a run of one kind of write sends its name once and still replies to each write in order', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const master = pair.master.client();
  const db = createProducer(pair.master.client());
  await master.set('str', 'x');
  const replies = await Promise.allSettled([
    db.hset('h', 'a', '1'),
    db.hset('str', 'b', '2'),
    db.hset('h', 'c', '3'),
    db.callBuffer('set', 'k', 'v'),
  ]);
  t.is(replies[0].status, 'fulfilled');
  t.regex(String((replies[1] as PromiseRejectedResult).reason), /WRONGTYPE/);
  t.deepEqual(
    replies.filter((r) => r.status === 'fulfilled').map((r) => (r as PromiseFulfilledResult<unknown>).value),
    [1, 1, Buffer.from('OK')],
  );
  t.is(await master.llen(LOG), 3);
});
