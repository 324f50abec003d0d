import test from 'ava';
import { createProducer } from '../producer/index.js';
import { decodeEntry } from '../shared/entry.js';
import { startPair, startWorker, waitForDrain, datasetDiff } from './support/fixtures.js';

const LOG = 'qsync:default:log';

test('writes issued in one tick share a script call but each gets its own entry, sequence number and reply', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const master = pair.master.client();
  const db = createProducer(pair.master.client());
  await master.set('s', 'a string');
  // Loads both log scripts (SET k v takes the lean one, SETNX the full one), so that the calls below are all EVALSHA.
  await db.set('warm', '1');
  await db.setnx('warm', '1');
  await master.del(LOG);
  const before = await master.info('commandstats');
  const calls = (info: string) => Number(/cmdstat_evalsha:calls=(\d+)/.exec(info)?.[1] ?? 0);
  const replies = await Promise.allSettled([db.incr('n'), db.lpush('s', 'x'), db.incr('n'), db.setnx('n', 'x'), db.hset('h', 'f', 'v')]);
  t.deepEqual(
    replies.map((r) => (r.status === 'fulfilled' ? r.value : 'error')),
    [1, 'error', 2, 0, 1],
  );
  t.regex(String((replies[1] as PromiseRejectedResult).reason), /WRONGTYPE/);
  t.is(calls(await master.info('commandstats')) - calls(before), 1, 'one script call for the tick');
  const entries = (await master.lrangeBuffer(LOG, 0, -1)).map(decodeEntry);
  t.deepEqual(
    entries.map((e) => e.seq),
    [2, 3, 4],
    'the refused LPUSH and the SETNX that changed nothing log nothing',
  );
  t.deepEqual(
    entries.map((e) => e.commands[0][0].toString()),
    ['incr', 'incr', 'hset'],
  );
  t.is(entries[1].prevTs, entries[0].ts, 'entries link to each other');
});

test('a read issued after writes in the same tick sees them, as on a plain connection', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const db = createProducer(pair.master.client());
  const [, , value, , len] = await Promise.all([db.set('k', '1'), db.incr('k'), db.get('k'), db.rpush('l', 'a', 'b'), db.llen('l')]);
  t.is(value, '2');
  t.is(len, 2);
});

test('many concurrent writers replay to an equal replica through batched calls', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const db = createProducer(pair.master.client());
  const worker = startWorker(pair);
  t.teardown(() => worker.close());
  let i = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (i < 3000) {
        const n = i++;
        if (n % 3 === 0) await db.incr(`c${n % 7}`);
        else if (n % 3 === 1) await db.lpush(`l${n % 5}`, String(n));
        else await db.hincrbyfloat('h', `f${n % 4}`, '0.1');
      }
    }),
  );
  t.is(Number(await waitForDrain(pair.master.client(), pair.replica.client())), 3000);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});
