/**
 * Resync by copy: the master packs each batch of keys into values the
 * replica takes as one argument each. Real servers.
 */
import { randomBytes } from 'node:crypto';
import test from 'ava';
import { runResync } from '../consumer/copy/resync.js';
import { startPair, datasetDiff } from './support/fixtures.js';

test('a batch of keys bigger than one packed value reaches the replica in several, every key whole and with its expiry', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const master = pair.master.client(1);
  // 80 MB in one batch of 100 keys (random: DUMP compresses), three packed values of about 32 MB at most.
  for (let i = 0; i < 80; i++) await master.set(`blob:${i}`, randomBytes(1024 * 1024), 'PX', 3_600_000);
  for (let i = 0; i < 20; i++) await master.hset(Buffer.from([0xff, i]), 'f', Buffer.from([0x00, 0xfe, i]));
  const result = await runResync({
    master: { host: pair.master.host, port: pair.master.port },
    replica: { host: pair.replica.host, port: pair.replica.port },
    method: 'copy',
    scanCount: 100,
  });
  t.is(result.copied, 100);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});
