/**
 * The apply script reads the common entry (one command, a view of its first
 * key or none) from its bytes instead of decoding it with cmsgpack
 * (shared/lua/includes/decode.lua, quick_entry), and takes every other entry
 * the full way. Both kinds in one batch apply exactly once, however often
 * the batch is sent; bytes the quick reader takes must mean what cmsgpack
 * says they mean, and bytes it does not take go the full way.
 */
import test, { type ExecutionContext } from 'ava';
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { QueueKeys } from '../shared/keys.js';
import { flatBatch } from '../consumer/drain/flat.js';
import { frameBatch } from '../shared/entry.js';
import { ReplyCode } from '../shared/reply-codes.js';
import { defineScripts, expandLua } from '../shared/scripts.js';
import { datasetDiff, startPair, type Pair } from './support/fixtures.js';
import { startRedis } from './support/redis-server.js';

const keys = new QueueKeys('qsync', 'default');

async function pairFor(t: ExecutionContext): Promise<Pair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  return pair;
}

/** How a batch reaches the apply script: every entry as bytes (a relay), or the common ones read by the worker. */
type Frame = (entries: Buffer[]) => Buffer[] | [Buffer, Buffer, string, string, ...Buffer[]];
const FRAMES: Record<string, Frame> = { bytes: frameBatch, flat: flatBatch };

/** A test run once for each way a batch reaches the apply script. */
function forms(title: string, fn: (t: ExecutionContext, frame: Frame) => Promise<void>): void {
  for (const [name, frame] of Object.entries(FRAMES)) test(`${title} (${name})`, (t) => fn(t, frame));
}

/** The log's entries, and a function applying some of them on the replica as a worker does. */
async function logOf(pair: Pair, frame: Frame, onError: 'halt' | 'park' = 'halt') {
  const master = pair.master.client();
  const replica = pair.replica.client();
  defineScripts(replica);
  const epoch = (await master.hget(keys.meta, 'epoch'))!;
  const entries = await master.lrangeBuffer(keys.log, 0, -1);
  const apply = (batch: Buffer[]) => replica.qsyncApplyBatch(keys.applied, epoch, '0', onError, ...frame(batch));
  return { entries, apply, replica };
}

/** Writes of every kind the apply script meets, common and not, in the order given. */
async function mixedWrites(pair: Pair): Promise<void> {
  const p = createProducer(pair.master.client());
  await p.set('s1', 'a');
  await p.incr('n');
  await p.hset('h', 'f', 'v');
  // Two commands in one entry: the full way.
  await p.multi().incr('n').set('s2', 'b').exec();
  await p.set('long', 'x'.repeat(70_000));
  await p.incrby('n', 5);
  await p.pexpire('s1', 600_000);
  await p.set('s3', 'c', 'PX', 600_000);
  await createProducer(pair.master.client(3)).incr('n');
  await p.del('s2');
  await p.incr('n');
  await p.hset('h', 'g', 'w');
}

forms('common and other entries in one batch apply once; the same batch, or a part of it, sent again changes nothing', async (t, frame) => {
  const pair = await pairFor(t);
  await mixedWrites(pair);
  const { entries, apply, replica } = await logOf(pair, frame);
  t.is(entries.length, 12);
  // Half the batch, then all of it twice: each entry once.
  t.deepEqual(await apply(entries.slice(0, 6)), [ReplyCode.ok, 6, 6]);
  t.deepEqual(await apply(entries), [ReplyCode.ok, 12, 6]);
  t.deepEqual(await apply(entries), [ReplyCode.ok, 12, 0]);
  t.deepEqual(await datasetDiff(pair.master, pair.replica, { ttlToleranceMs: 0 }), []);
  t.is(await replica.get('n'), '8');
});

forms('a common entry whose key the replica holds with another expiry is brought to the master’s view first', async (t, frame) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  await p.set('k', '1');
  await p.incr('k');
  await p.incr('k');
  const { entries, apply, replica } = await logOf(pair, frame);
  t.deepEqual(await apply(entries.slice(0, 2)), [ReplyCode.ok, 2, 2]);
  // The replica's key got an expiry the master's never had.
  await replica.pexpire('k', 600_000);
  const reply = await apply(entries);
  t.is(reply[0], ReplyCode.ok);
  t.is(reply[2], 1);
  t.is(reply[5], 1, 'one key aligned');
  t.is(await replica.pttl('k'), -1);
  t.is(await replica.get('k'), '3');
});

forms('a common entry the replica refuses halts the batch there; the entries before it stay applied, once', async (t, frame) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  await p.set('n', '1');
  await p.incr('a');
  await p.incr('n');
  await p.incr('b');
  const { entries, apply, replica } = await logOf(pair, frame);
  t.deepEqual(await apply(entries.slice(0, 1)), [ReplyCode.ok, 1, 1]);
  // The replica's n is not a number (the same key as the master's otherwise).
  await replica.set('n', 'text');
  const reply = await apply(entries);
  t.is(reply[0], ReplyCode.refused);
  t.deepEqual(reply.slice(1, 4), [2, 3, 1]);
  t.regex(String(reply[4]), /not an integer/);
  t.is(await replica.get('a'), '1');
  t.is(await replica.get('b'), null);
  await replica.set('n', '1');
  t.deepEqual(await apply(entries), [ReplyCode.ok, 4, 2]);
  t.deepEqual([await replica.get('a'), await replica.get('n'), await replica.get('b')], ['1', '2', '1']);
});

forms('under park, a refused common entry is a dead letter and the batch goes on', async (t, frame) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  await p.set('n', '1');
  await p.incr('n');
  await p.incr('b');
  const { entries, apply, replica } = await logOf(pair, frame, 'park');
  t.deepEqual(await apply(entries.slice(0, 1)), [ReplyCode.ok, 1, 1]);
  await replica.set('n', 'text');
  const [code, watermark, applied, dead] = (await apply(entries)) as [number, number, number, unknown[][]];
  t.deepEqual([code, watermark, applied], [ReplyCode.ok, 3, 1]);
  t.deepEqual(
    dead.map((d) => d.slice(0, 4)),
    [[2, 2, 1, 0]],
  );
  t.is(await replica.get('b'), '1');
  // Sent again: the parked entry is reported again from its record, nothing runs twice.
  const again = (await apply(entries)) as [number, number, number, unknown[][]];
  t.deepEqual(again.slice(0, 3), [ReplyCode.ok, 3, 0]);
  t.deepEqual(
    again[3].map((d) => d.slice(0, 4)),
    [[2, 2, 1, 0]],
  );
  t.is(await replica.get('b'), '1');
});

forms('a common entry cut short, or with bytes after it, is not an entry', async (t, frame) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  await p.set('a', '1');
  await p.set('b', '2');
  const { entries, apply, replica } = await logOf(pair, frame);
  const cut = entries[1].subarray(0, entries[1].length - 1);
  t.deepEqual(await apply([entries[0], cut]), [ReplyCode.notAnEntry, 2]);
  t.is(await replica.get('a'), '1');
  const padded = Buffer.concat([entries[1], Buffer.from([0])]);
  t.deepEqual(await apply([entries[0], padded]), [ReplyCode.notAnEntry, 2]);
  t.is(await replica.get('b'), null);
});

/**
 * Runs the quick reader and cmsgpack on each of the given bytes: for each,
 * '' when the reader declines them, 'same' when it reads what cmsgpack
 * decodes, else what differs.
 */
async function compareReaders(client: Redis, samples: Buffer[]): Promise<string[]> {
  const lua = `${expandLua('includes/decode')}
local out = {}
for i = 1, #ARGV do
  local s = ARGV[i]
  local seq, ts, prev, db, cmd, want = quick_entry(s, 1, #s)
  if not seq then
    out[i] = ''
  else
    local ok, e = pcall(cmsgpack.unpack, s)
    local same = ok and is_entry(e) and e[2] == seq and e[3] == ts and e[6] == prev and e[4] == db
      and #e[5] == 1 and #e[5][1] == #cmd
    if same then
      for a = 1, #cmd do same = same and e[5][1][a] == cmd[a] end
      local view = e[7][1]
      if view == 0 then
        same = same and want == nil
      else
        same = same and #view == 2 and view[1] == 2 and (view[2] == -3 and want == nil or view[2] == want)
      end
    end
    out[i] = same and 'same' or ('differs: ' .. tostring(seq))
  end
end
return out`;
  return (await client.eval(lua, 0, ...samples)) as string[];
}

test('the quick reader reads what cmsgpack decodes, and declines whatever it cannot read so', async (t) => {
  const server = await startRedis();
  t.teardown(() => server.destroy());
  const p = createProducer(server.client());
  await p.set('s', 'v');
  await p.set('k'.repeat(40), 'v'.repeat(300));
  await p.incr('n');
  await p.hset('h', 'f', 'v');
  await p.set('e', '1', 'PX', 600_000);
  await p.incr('e');
  await p.del('e');
  await p.incr('e');
  await p.multi().incr('n').incr('m').exec();
  const entries = await server.client().lrangeBuffer(keys.log, 0, -1);
  const whole = await compareReaders(server.client(), entries);
  t.deepEqual(
    whole.filter((r) => r !== ''),
    whole.filter((r) => r === 'same'),
  );
  t.true(whole.filter((r) => r === 'same').length >= 7, whole.join(','));
  // Every byte changed, every length cut: read the same as cmsgpack, or declined.
  const mutated: Buffer[] = [];
  for (const e of entries) {
    for (let i = 0; i < e.length; i++) {
      for (const b of [0x00, 0x7f, 0x91, 0x92, 0xa0, 0xcf, 0xd9, 0xda, 0xfd, 0xff, e[i] ^ 0x01]) {
        const m = Buffer.from(e);
        m[i] = b;
        mutated.push(m);
      }
      mutated.push(e.subarray(0, i));
    }
  }
  for (let i = 0; i < mutated.length; i += 2000) {
    const results = await compareReaders(server.client(), mutated.slice(i, i + 2000));
    t.deepEqual(
      results.filter((r) => r !== '' && r !== 'same'),
      [],
    );
  }
});

forms('a run of plain SETs lands in order with the entries around it, once, however often the batch is sent', async (t, frame) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  await p.set('a', '1');
  await p.set('a', '2');
  await p.set('b', '1');
  await p.incr('a');
  await p.set('c', '1');
  await p.set('a', '9');
  await p.set('d', '1', 'KEEPTTL');
  await createProducer(pair.master.client(2)).set('a', 'db2');
  await p.set('e', '1');
  const { entries, apply, replica } = await logOf(pair, frame);
  t.deepEqual(await apply(entries.slice(0, 3)), [ReplyCode.ok, 3, 3]);
  t.deepEqual(await apply(entries), [ReplyCode.ok, 9, 6]);
  t.deepEqual(await apply(entries), [ReplyCode.ok, 9, 0]);
  t.is(await replica.get('a'), '9');
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

forms('a run of SETs the replica refuses as one MSET is taken again entry by entry, each once', async (t, frame) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  await p.incr('n');
  for (const k of ['a', 'b', 'c']) await p.set(k, k);
  await p.incr('n');
  for (const k of ['d', 'e']) await p.set(k, k);
  const { entries } = await logOf(pair, frame);
  const admin = pair.replica.client();
  await admin.acl('SETUSER', 'nomset', 'on', '>pw', '~*', '&*', '+@all', '-mset');
  const replica = pair.replica.client(0, { username: 'nomset', password: 'pw' });
  defineScripts(replica);
  const epoch = (await pair.master.client().hget(keys.meta, 'epoch'))!;
  const apply = () => replica.qsyncApplyBatch(keys.applied, epoch, '0', 'halt', ...frame(entries));
  t.deepEqual(await apply(), [ReplyCode.ok, 7, 7]);
  t.deepEqual(await apply(), [ReplyCode.ok, 7, 0]);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});

forms('a run of SETs refused as one MSET and entry by entry halts at its first entry, the entries before it applied once', async (t, frame) => {
  const pair = await pairFor(t);
  const p = createProducer(pair.master.client());
  await p.incr('n');
  for (const k of ['a', 'b', 'c']) await p.set(k, k);
  const { entries, apply } = await logOf(pair, frame, 'park');
  const admin = pair.replica.client();
  await admin.acl('SETUSER', 'noset', 'on', '>pw', '~*', '&*', '+@all', '-mset', '-set');
  const replica = pair.replica.client(0, { username: 'noset', password: 'pw' });
  defineScripts(replica);
  const epoch = (await pair.master.client().hget(keys.meta, 'epoch'))!;
  // Refused for want of a permission: about the replica, so it halts even under park.
  const reply = await replica.qsyncApplyBatch(keys.applied, epoch, '0', 'park', ...frame(entries));
  t.deepEqual(reply.slice(0, 4), [ReplyCode.refused, 1, 2, 1]);
  t.regex(String(reply[4]), /permission|can't run/i);
  t.is(await admin.get('n'), '1');
  t.is(await admin.get('a'), null);
  t.deepEqual(await apply(entries), [ReplyCode.ok, 4, 3]);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});
