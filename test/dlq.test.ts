/**
 * Dead letters: a consumer run with `--on-error park` moves an entry the
 * replica refuses (or bytes in the log that are not an entry) to the
 * dead-letter list on the master and keeps draining; `qsync dlq` lists,
 * retries and drops them. Each entry ends up applied or parked, never lost
 * and never both, and no command of a group is applied twice, whatever is
 * killed when. Real servers, writes through the producer, the CLI as users
 * run it.
 */
import test, { type ExecutionContext } from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { readStatus } from '../consumer/queue/status.js';
import { readDeadLetters } from '../consumer/drain/dead-letter-record.js';
import type { DeadLetterView } from '../consumer/dead-letters/dlq.js';
import type { SyncWorker, WorkerOptions, WorkerState } from '../consumer/drain/worker.js';
import { aclRules } from '../shared/acl.js';
import { ExitCode } from '../shared/errors.js';
import { QueueKeys } from '../shared/keys.js';
import { frameBatch } from '../shared/entry.js';
import { defineScripts } from '../shared/scripts.js';
import { startPair, startWorker, waitForDrain, datasetDiff, type Pair } from './support/fixtures.js';
import { runCli, spawnCli } from './support/cli.js';
import { eventually } from './support/wait.js';

const keys = new QueueKeys('qsync', 'default');

async function pairFor(t: ExecutionContext): Promise<Pair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  return pair;
}

/** An in-process worker that parks, recording its states, closed after the test. */
function parkingWorker(t: ExecutionContext, pair: Pair, options: Partial<WorkerOptions> = {}): SyncWorker & { states: WorkerState[] } {
  const worker = Object.assign(startWorker(pair, { onError: 'park', ...options }), { states: [] as WorkerState[] });
  worker.on('state', (state: WorkerState) => worker.states.push(state));
  t.teardown(() => worker.close());
  return worker;
}

/** `qsync dlq <args>` against the pair. */
function dlq(pair: Pair, ...args: string[]): ReturnType<typeof runCli> {
  const replica = args[0] === 'retry' ? ['--replica', pair.replica.url] : [];
  return runCli(['dlq', ...args, '--master', pair.master.url, ...replica]);
}

async function listed(t: ExecutionContext, pair: Pair): Promise<DeadLetterView[]> {
  const run = await dlq(pair, 'list', '--json');
  t.is(run.code, 0, run.stderr.join('\n'));
  return JSON.parse(run.stdout.join('\n')) as DeadLetterView[];
}

/** Waits until the replica has decided every entry (applied or parked) and the log is empty. */
async function drained(pair: Pair): Promise<void> {
  await waitForDrain(pair.master.client(), pair.replica.client(), { timeoutMs: 20_000 });
  await eventually(async () => (await pair.master.client().llen(keys.log)) === 0, 10_000, 'empty log');
}

test('park keeps draining past an entry the replica refuses; the dead letter names it; after a fix, retry makes the datasets equal', async (t) => {
  const pair = await pairFor(t);
  const worker = parkingWorker(t, pair);
  const replica = pair.replica.client();
  await replica.set('k', 'written on the replica by hand');
  // The master holds k too, written around qsync: a key the master lacked
  // would be deleted on the replica before the write (as the master's view
  // of it says), and the replica would refuse nothing. So in every test below.
  await pair.master.client().rpush('k', 'm');
  const db = createProducer(pair.master.client());
  await db.incr('before');
  await db.lpush('k', 'x');
  for (let i = 0; i < 20; i++) await db.incr('after');

  await drained(pair);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), ['db0 k: value differs'], 'equal but for the refused key');
  t.is(await replica.get('after'), '20');
  t.false(worker.states.includes('halted'));
  const [letter, ...others] = await listed(t, pair);
  t.deepEqual(others, []);
  t.like(letter, { seq: 2, db: 0, commands: ['LPUSH k x'], refused: 1, done: 0 });
  t.regex(letter.error, /^WRONGTYPE/);
  t.true(Date.parse(letter.parkedAt) > Date.now() - 60_000);
  t.is((await readStatus(pair.master.client(), 'qsync', 'default')).deadLetters, 1);
  const text = await dlq(pair, 'list');
  t.regex(text.stdout.join('\n'), /seq 2 {2}db 0 .*\n {2}error +WRONGTYPE.*\n {2}refused +LPUSH k x/);
  const status = await runCli(['status', '--master', pair.master.url]);
  t.regex(status.stdout.join('\n'), /dead letters +1/);

  const refused = await dlq(pair, 'retry', '--seq', '2');
  t.is(refused.code, ExitCode.refused, 'the replica still holds the string');
  t.regex(refused.stderr.join('\n'), /^qsync: kept seq 2: the replica refused command 1 \(LPUSH k x\): WRONGTYPE/);
  t.is((await listed(t, pair)).length, 1);

  await replica.del('k');
  await replica.rpush('k', 'm');
  const retried = await dlq(pair, 'retry', '--seq', '2');
  t.is(retried.code, 0, retried.stderr.join('\n'));
  t.deepEqual(retried.stdout, ['applied seq 2']);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  t.deepEqual(await listed(t, pair), []);
  t.is(await pair.master.client().llen(keys.dlq), 0);
});

test('park moves bytes that are not a qsync entry aside and keeps draining; retry keeps them, drop --garbage removes them', async (t) => {
  const pair = await pairFor(t);
  const master = pair.master.client();
  const db = createProducer(pair.master.client());
  const garbage = Buffer.from([0xc1, 0xff, 0x00, 0x93, 0x01]);
  // Written before the worker starts, so that the garbage sits inside one batch.
  await db.incr('n');
  await master.rpush(keys.log, garbage);
  await db.incr('n');
  parkingWorker(t, pair);

  await drained(pair);
  t.is(await pair.replica.client().get('n'), '2');
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  const letters = await readDeadLetters(master, keys);
  t.is(letters.length, 1);
  t.like(letters[0], { seq: null, error: 'not a qsync entry' });
  t.deepEqual(letters[0].raw, garbage, 'the exact bytes from the log');
  t.like((await listed(t, pair))[0], { seq: null, bytes: garbage.length, commands: [] });

  const retried = await dlq(pair, 'retry', '--all');
  t.is(retried.code, ExitCode.refused);
  t.regex(retried.stderr.join('\n'), /not a qsync entry/);
  const dropped = await dlq(pair, 'drop', '--garbage');
  t.is(dropped.code, 0, dropped.stderr.join('\n'));
  t.is(await master.llen(keys.dlq), 0);
});

test('a group refused part way is parked with the commands already applied; retries run only the rest, even after an interrupted retry', async (t) => {
  const pair = await pairFor(t);
  parkingWorker(t, pair);
  const replica = pair.replica.client();
  await replica.set('k', 'string');
  await replica.set('s', 'string');
  await pair.master.client().rpush('k', 'm');
  await pair.master.client().sadd('s', 'm');
  const db = createProducer(pair.master.client());
  await db.multi().incr('a').lpush('k', 'x').incr('b').sadd('s', 'y').incr('c').exec();
  await db.incr('a');

  await drained(pair);
  t.deepEqual([await replica.get('a'), await replica.get('b'), await replica.get('c')], ['2', null, null]);
  t.like((await listed(t, pair))[0], { seq: 1, refused: 2, done: 1 });

  // Fixed in part: the retry gets further and keeps the letter with its progress.
  await replica.del('k');
  await replica.rpush('k', 'm');
  const partial = await dlq(pair, 'retry', '--all');
  t.is(partial.code, ExitCode.refused);
  t.regex(partial.stderr.join('\n'), /kept seq 1: the replica refused command 4 \(SADD s y\): WRONGTYPE.*; 3 of 5 commands are applied/);
  t.like((await listed(t, pair))[0], { seq: 1, refused: 4, done: 3 });
  t.is(await replica.get('b'), '1');

  // A retry that applied everything but died before removing the letter.
  await replica.del('s');
  await replica.sadd('s', 'm');
  const [stored] = await readDeadLetters(pair.master.client(), keys);
  defineScripts(replica);
  t.deepEqual(await replica.qsyncRetryDead(keys.applied, 0, stored.epoch, stored.done, stored.raw), [0, 2]);

  const retried = await dlq(pair, 'retry', '--seq', '1');
  t.is(retried.code, 0, retried.stderr.join('\n'));
  t.deepEqual([await replica.get('a'), await replica.get('b'), await replica.get('c')], ['2', '1', '1'], 'no command ran twice');
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
  t.is(await pair.master.client().llen(keys.dlq), 0);
  t.deepEqual((await replica.hkeys(keys.applied)).sort(), ['epoch', 'seq', 'ts'], 'no records left on the replica');
});

test('a consumer killed after the replica parked an entry but before the master filed it: the next one files it once and applies nothing twice', async (t) => {
  const pair = await pairFor(t);
  const [master, replica] = [pair.master.client(), pair.replica.client()];
  await replica.set('k', 'string');
  await master.rpush('k', 'm');
  const db = createProducer(pair.master.client());
  await db.incr('n');
  await db.multi().incr('n').lpush('k', 'x').exec();
  await db.incr('n');
  // What a parking worker killed after its apply and before its confirmation leaves behind.
  defineScripts(replica);
  const epoch = (await master.hget(keys.meta, 'epoch'))!;
  const reply = await replica.qsyncApplyBatch(keys.applied, epoch, '0', 'park', ...frameBatch(await master.lrangeBuffer(keys.log, 0, -1)));
  t.like(reply, [0, 3, 2, [[2, 2, 2, 1]]]);
  t.is(await replica.get('n'), '3');
  t.is(await master.llen(keys.log), 3);

  // Even a consumer that halts files what the replica already parked, rather than trim it away.
  const worker = startWorker(pair);
  t.teardown(() => worker.close());
  await db.incr('n');
  await drained(pair);
  t.is(await replica.get('n'), '4', 'no INCR applied twice');
  t.like(await listed(t, pair), [{ seq: 2, refused: 2, done: 1, commands: ['INCR n', 'LPUSH k x'] }]);
  await eventually(async () => (await replica.hkeys(keys.applied)).every((f) => !f.startsWith('parked:')), 5000, 'pending record deleted');
});

test('in one batch, each kind of bytes that is not an entry is parked at its own position and every entry around it applied', async (t) => {
  const pair = await pairFor(t);
  const [master, replica] = [pair.master.client(), pair.replica.client()];
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 5; i++) await db.incr('n');
  const entries = await master.lrangeBuffer(keys.log, 0, -1);
  const notEntries = [
    Buffer.from([0xc1, 0xff]), // not msgpack
    Buffer.from([0xd9, 0xff, 0x61]), // a string header claiming bytes of the entries after it
    Buffer.from([0xa5, 0x68, 0x65, 0x6c, 0x6c, 0x6f]), // msgpack, but a string
    Buffer.alloc(0),
  ];
  const batch = entries.flatMap((e, i) => (i < notEntries.length ? [e, notEntries[i]] : [e]));
  defineScripts(replica);
  const epoch = (await master.hget(keys.meta, 'epoch'))!;
  const reply = (await replica.qsyncApplyBatch(keys.applied, epoch, '0', 'park', ...frameBatch(batch))) as [number, number, number, unknown[][]];
  t.deepEqual(reply.slice(0, 3), [0, 5, 5], 'every entry applied, the watermark at the last');
  t.deepEqual(
    reply[3].map((d) => [d[0], d[1], d[5]]),
    [2, 4, 6, 8].map((pos) => [pos, 0, 'not a qsync entry']),
  );
  t.is(await replica.get('n'), '5');
});

test('dlq drop removes the one letter asked for; an unknown seq or no selection is one line and its own exit code', async (t) => {
  const pair = await pairFor(t);
  parkingWorker(t, pair);
  await pair.replica.client().set('k', 'string');
  await pair.master.client().rpush('k', 'm');
  const db = createProducer(pair.master.client());
  await db.lpush('k', 'a');
  await db.incr('n');
  await db.lpush('k', 'b');
  await drained(pair);
  t.deepEqual(
    (await listed(t, pair)).map((l) => l.seq),
    [1, 3],
  );

  const missing = await dlq(pair, 'drop', '--seq', '2');
  t.is(missing.code, ExitCode.notFound);
  t.deepEqual(missing.stderr, ['qsync: no dead letter with seq 2 in qsync:default:dlq']);
  const none = await dlq(pair, 'drop');
  t.is(none.code, ExitCode.usage);
  t.is(none.stderr.length, 1);
  t.regex(none.stderr[0], /--seq N, --all/);
  const bad = await runCli(['consume', '--master', pair.master.url, '--replica', pair.replica.url, '--on-error', 'skip']);
  t.is(bad.code, ExitCode.usage);
  t.deepEqual(bad.stderr, ["qsync: --on-error must be one of halt, park, got 'skip'"]);

  const dropped = await dlq(pair, 'drop', '--seq', '3');
  t.deepEqual([dropped.code, dropped.stdout], [0, ['dropped 1 dead letters from qsync:default:dlq']]);
  t.deepEqual(
    (await listed(t, pair)).map((l) => l.seq),
    [1],
  );
  t.is((await dlq(pair, 'drop', '--all')).code, 0);
  t.deepEqual(await listed(t, pair), []);
});

test('an error about the replica rather than the entry (no permission) halts even with park', async (t) => {
  const pair = await pairFor(t);
  const rules = aclRules('consumer-replica').filter((r) => r !== '+lpush');
  await pair.replica.client().call('ACL', 'SETUSER', 'consumer', 'on', '>pw', ...rules);
  const worker = parkingWorker(t, pair, { replica: { host: pair.replica.host, port: pair.replica.port, username: 'consumer', password: 'pw' } });
  const db = createProducer(pair.master.client());
  await db.incr('n');
  await db.lpush('l', 'x');
  await eventually(() => worker.state === 'halted', 10_000, 'halted');
  t.is(await pair.master.client().llen(keys.dlq), 0);
  t.is(await pair.replica.client().hget(keys.applied, 'seq'), '1');
});

test('halt stays the default: the CLI without --on-error halts on a refused entry and parks nothing', async (t) => {
  const pair = await pairFor(t);
  await pair.replica.client().set('k', 'string');
  await pair.master.client().rpush('k', 'm');
  await createProducer(pair.master.client()).lpush('k', 'x');
  const cli = spawnCli(['consume', '--master', pair.master.url, '--replica', pair.replica.url, '--lease-ms', '1000']);
  t.teardown(() => cli.kill('SIGKILL'));
  await cli.waitForLog((l) => l.state === 'halted', 20_000, 'halted');
  t.is(await pair.master.client().llen(keys.dlq), 0);
  t.is(await pair.master.client().llen(keys.log), 1);
});

/** Writes until stopped, paced; every third write is a group the replica refuses at its second command. */
function refusedLoad(db: Redis): { stop(): Promise<number> } {
  let running = true;
  let groups = 0;
  const done = (async () => {
    for (let i = 0; running; i++) {
      if (i % 3 === 2) await db.multi().incr('counter').lpush('bad', String(groups++)).incr('after').exec();
      else await db.incr('counter');
      await sleep(2); // enough to park often, without starving the tests running beside this one
    }
    return groups;
  })();
  done.catch(() => {}); // a test that fails early tears the servers down under the loop
  return {
    stop: () => {
      running = false;
      return done;
    },
  };
}

test('consumers SIGKILLed at random moments while parking leave each entry applied or parked exactly once', async (t) => {
  const pair = await pairFor(t);
  const [master, replica] = [pair.master.client(), pair.replica.client()];
  await replica.set('bad', 'string');
  await master.rpush('bad', 'm');
  const load = refusedLoad(createProducer(pair.master.client()));
  // Each consumer starts behind (the previous one is dead while writes go
  // on) and is killed while catching up, with batches applied on the replica
  // but not yet confirmed on the master.
  for (let round = 0; round < 8; round++) {
    const args = ['consume', '--master', pair.master.url, '--replica', pair.replica.url, '--lease-ms', '300', '--batch-size', '4'];
    // Half the rounds choose parking by environment variable.
    const cli = round % 2 ? spawnCli([...args, '--on-error', 'park']) : spawnCli(args, { QSYNC_ON_ERROR: 'park' });
    t.teardown(() => cli.kill('SIGKILL'));
    await cli.waitForLog((l) => l.msg === 'parked an entry the replica refused', 20_000, 'parking');
    await sleep(Math.random() * 100);
    cli.kill('SIGKILL');
    await cli.exited;
  }
  const groups = await load.stop();
  parkingWorker(t, pair);
  await drained(pair);

  const letters = await readDeadLetters(master, keys);
  t.log(`${groups} refused groups, ${await master.hget(keys.meta, 'seq')} entries`);
  t.is(letters.length, groups, 'one dead letter per refused group');
  t.is(new Set(letters.map((l) => l.seq)).size, groups, 'no entry parked twice');
  t.deepEqual(
    letters.map((l) => l.entry!.commands[1][2].toString()).sort((a, b) => Number(a) - Number(b)),
    Array.from({ length: groups }, (_, i) => String(i)),
  );
  t.true(letters.every((l) => l.done === 1 && l.index === 2));
  t.is(await replica.get('counter'), await master.get('counter'), 'every INCR applied once, those before a refusal included');
  t.is(await replica.get('after'), null);

  await replica.del('bad');
  await replica.rpush('bad', 'm');
  const retried = await dlq(pair, 'retry', '--all');
  t.is(retried.code, 0, retried.stderr.join('\n'));
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);
});
