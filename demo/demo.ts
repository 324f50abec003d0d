/**
 * `npm run demo`: qsync end to end on this machine in well under 30 seconds.
 *
 * Starts a master and a replica (real redis-server processes in temp dirs),
 * runs a shop's writes through the producer and a worker in this process,
 * cuts the link to the replica while the shop keeps writing, heals it, and
 * checks both datasets key by key. Then the master dies with writes its
 * replica never got, the replica is promoted and takes the shop's writes,
 * the old master comes back and rejoins without a full copy, and the roles
 * are switched back, each side checked key by key again. Exits 0 when they
 * are equal, 1 when they differ, 70 on any other failure; the servers are
 * removed in every case, Ctrl-C included.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import type { SyncWorker, WorkerState } from '../consumer/drain/worker.js';
import { formatStatus, readStatus } from '../consumer/queue/status.js';
import { runFailover } from '../consumer/failover/failover.js';
import { runPromote } from '../consumer/failover/promote.js';
import { runRejoin } from '../consumer/failover/rejoin.js';
import { QueueKeys } from '../shared/keys.js';
import { ExitCode } from '../shared/errors.js';
import { startProxy, type FaultProxy } from '../test/support/fault-proxy.js';
import { datasetDiff, startPair, startWorker, waitForDrain, type Pair } from '../test/support/fixtures.js';
import { Shop } from './shop.js';

const OUTAGE_MS = 4000;
const SHOPPERS_PER_TICK = 25;
const TICK_MS = 50;
const keys = new QueueKeys('qsync', 'default');

/** A failure the demo explains in its own words. */
class DemoFailure extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

function say(text = ''): void {
  process.stdout.write(`${text}\n`);
}

function step(n: number, title: string): void {
  say();
  say(`[${n}/8] ${title}`);
}

const num = (n: number) => n.toLocaleString('en-US');
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const size = (bytes: number) => (bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} KB`);

/** Keys of the dataset, leaving out qsync's own bookkeeping (`qsync:*`). */
async function datasetKeys(client: Redis): Promise<number> {
  let own = 0;
  let cursor = '0';
  do {
    const [next, found] = await client.scan(cursor, 'MATCH', `${keys.prefix}:*`, 'COUNT', 1000);
    cursor = next;
    own += found.length;
  } while (cursor !== '0');
  return (await client.dbsize()) - own;
}

async function datasetBytes(client: Redis): Promise<number> {
  const info = await client.info('memory');
  return Number(/used_memory_dataset:(\d+)/.exec(info)?.[1] ?? 0);
}

/** Follows the worker's state for the narration; a halted worker ends the demo. */
function watch(worker: SyncWorker): () => string {
  let state: WorkerState = worker.state;
  let detail: Record<string, unknown> = {};
  worker.on('state', (s: WorkerState, d: Record<string, unknown>) => {
    state = s;
    detail = d;
  });
  return () => {
    if (state === 'backing-off') return `backing-off (${detail.side ? `${String(detail.side)} ` : ''}link down, retrying)`;
    if (state === 'halted' || state === 'resync-needed') return `${state} ${JSON.stringify(detail)}`;
    return state;
  };
}

async function drain(pair: Pair, workerState: () => string): Promise<number> {
  try {
    return await waitForDrain(pair.master.client(), pair.replica.client(), { timeoutMs: 15_000 });
  } catch (err) {
    throw new DemoFailure(`the replica did not catch up: ${(err as Error).message} (worker: ${workerState()})`, ExitCode.internal);
  }
}

/** Compares both servers key by key; a difference ends the demo. */
async function compare(from: Pair['master'], to: Pair['master']): Promise<number> {
  const diffs = await datasetDiff(from, to);
  const [keysFrom, keysTo] = [await datasetKeys(from.client()), await datasetKeys(to.client())];
  if (diffs.length > 0) {
    const shown = diffs.slice(0, 10).map((d) => `    ${d}`);
    const more = diffs.length > 10 ? [`    ... and ${num(diffs.length - 10)} more`] : [];
    throw new DemoFailure(
      [`the datasets differ: ${num(diffs.length)} differences (master ${num(keysFrom)} keys, replica ${num(keysTo)})`, ...shown, ...more].join('\n'),
      ExitCode.different,
    );
  }
  return keysFrom;
}

async function run(pair: Pair, proxy: FaultProxy, worker: SyncWorker): Promise<void> {
  const master = pair.master.client();
  const replica = pair.replica.client();
  const workerState = watch(worker);
  const shop = new Shop(createProducer(pair.master.client()), 3000, 60);

  step(1, 'Two Redis servers and the link between them');
  say(`  master   ${pair.master.url}   data centre A: the shop writes here`);
  say(`  replica  ${pair.replica.url}   data centre B: only qsync writes here`);
  say(`  link     ${proxy.url} -> replica: a proxy standing in for the WAN, so the demo can cut it`);
  say('  A qsync worker runs in this process. It reads batches of entries from the queue on the');
  say("  master, applies each batch on the replica together with the replica's position in the");
  say('  queue (its watermark), and only then trims the batch from the master.');

  step(2, 'The shop opens and the replica follows');
  say('  The shop writes through createProducer(client): the usual ioredis API, except that each');
  say(`  write also appends an entry to the list ${keys.log} on the master, in the same atomic step.`);
  const opened = await shop.open();
  for (let i = 0; i < 20; i++) await shop.tick(SHOPPERS_PER_TICK);
  await drain(pair, workerState);
  const total = await datasetKeys(master);
  say(`  ${num(opened)} writes to open: ${shop.products} products (HSET, SET), ${num(shop.users)} customers (HSET) with login sessions`);
  say('  (SET ... EX 1800) and a raffle (SADD); then shoppers: views (INCR), carts (RPUSH), session refreshes');
  say('  (EXPIRE), a popularity ranking (ZINCRBY), raffle draws (SPOP) and orders (one MULTI each).');
  say(`  The replica caught up: ${num(total)} keys on both sides, and LLEN ${keys.log} is ${await master.llen(keys.log)}`);
  say('  because the worker trims entries once the replica has them.');

  step(3, 'The link breaks; the shop keeps selling');
  proxy.cut();
  say('  Cut. The worker cannot reach the replica, so the entries wait in the queue on the master.');
  say(`  This is what \`redis-cli -p ${pair.master.port} LLEN ${keys.log}\` shows meanwhile:`);
  const cutAt = performance.now();
  let nextReport = 500;
  while (performance.now() - cutAt < OUTAGE_MS) {
    await shop.tick(SHOPPERS_PER_TICK);
    await sleep(TICK_MS);
    const elapsed = performance.now() - cutAt;
    if (elapsed >= nextReport) {
      nextReport += 500;
      say(`    after ${seconds(elapsed)}   LLEN = ${String(await master.llen(keys.log)).padStart(5)}   worker: ${workerState()}`);
    }
  }
  const queued = await master.llen(keys.log);
  const queueBytes = Number(await master.call('MEMORY', 'USAGE', keys.log, 'SAMPLES', '0'));
  say(`  And \`npx qsync status --master ${pair.master.url}\`:`);
  for (const line of formatStatus([await readStatus(master, keys.prefix, keys.queue)]).split('\n')) say(`    ${line}`);

  step(4, 'The link is back: catch-up');
  const before = worker.applied;
  const healedAt = performance.now();
  proxy.heal();
  say(`  Healed, with ${num(queued)} entries (${size(queueBytes)}) waiting. The worker reconnects, reads the replica's`);
  say('  watermark and sends only the entries after it.');
  await drain(pair, workerState);
  const replayed = worker.applied - before;
  const catchUp = performance.now() - healedAt;
  const [keysNow, bytesNow] = [await datasetKeys(master), await datasetBytes(master)];
  say(`  Replayed ${num(replayed)} entries in ${seconds(catchUp)}, for a dataset of ${num(keysNow)} keys (${size(bytesNow)}): no full resync.`);
  if (replayed < queued) {
    say(`  (${num(queued - replayed)} of the queued entries had reached the replica just before the cut; its watermark`);
    say('  says so, and they were skipped rather than applied twice.)');
  }
  say('  Native Redis replication resumes only while the missed writes fit in its backlog (1 MB by');
  say('  default); past that, it copies the whole dataset again. The qsync queue keeps every entry');
  say('  until the replica has it, however long the link is down.');

  step(5, 'Are the two datasets the same?');
  say('  Comparing every key on both servers: type and value (DUMP) and absolute expiry (PEXPIRETIME).');
  await compare(pair.master, pair.replica);
  const onReplica = await datasetKeys(replica);
  say(`  ${num(keysNow)} keys on the master, ${num(onReplica)} on the replica, 0 differences. The login sessions expire at the`);
  say('  same millisecond on both: qsync logs expiries as absolute times, never as "N seconds from now".');
}

/** Steps 6 to 8: the master dies, the replica is promoted, the old master rejoins, and the roles switch back. */
async function failBack(pair: Pair, proxy: FaultProxy, worker: SyncWorker, track: (w: SyncWorker) => SyncWorker): Promise<void> {
  const [a, b] = [pair.master, pair.replica];
  const servers = { masterWhere: a.url, replicaWhere: b.url, keys };
  let shop = new Shop(createProducer(a.client()), 3000, 60);

  step(6, 'Data centre A goes dark; the replica is promoted');
  proxy.cut();
  for (let i = 0; i < 10; i++) await shop.tick(SHOPPERS_PER_TICK);
  const tail = await a.client().llen(keys.log);
  await worker.close();
  await a.stop();
  say(`  The link is cut again, the shop writes ${num(tail)} more entries that never cross, and the master stops.`);
  const promoted = await runPromote({ replica: b.client(), replicaWhere: b.url, master: null, masterWhere: a.url, keys });
  say(`  \`qsync promote --replica ${b.url}\`: the replica is a master now, with a log of its own (epoch ${promoted.epoch}),`);
  say(`  recording where it left the old master: entry ${num(promoted.atSeq)} of epoch ${promoted.fromEpoch}. The shop moves to it.`);
  shop = new Shop(createProducer(b.client()), 3000, 60);
  for (let i = 0; i < 10; i++) await shop.tick(SHOPPERS_PER_TICK);

  step(7, 'Data centre A is back: it rejoins without a full copy');
  await a.restart();
  const rejoined = await runRejoin({
    master: b.client(),
    replica: a.client(),
    ...servers,
    masterWhere: b.url,
    replicaWhere: a.url,
    queueDb: 0,
    tail: 'park',
  });
  const total = await datasetKeys(b.client());
  say(`  \`qsync rejoin --master ${b.url} --replica ${a.url}\`: the old master's tail is ${num(rejoined.tailEntries)} entries over`);
  say(`  ${num(rejoined.tailKeys)} keys, parked as dead letters on the new master (\`qsync dlq list\`); ${num(rejoined.repairedKeys)} keys copied`);
  say(`  from it, of ${num(total)}. Native Redis would copy all ${num(total)} (a full resync); the rest is already the same.`);
  const back = track(startWorker({ master: b, replica: a, destroy: pair.destroy }));
  const backState = watch(back);
  for (let i = 0; i < 10; i++) await shop.tick(SHOPPERS_PER_TICK);
  try {
    await waitForDrain(b.client(), a.client(), { timeoutMs: 15_000 });
  } catch (err) {
    throw new DemoFailure(`the old master did not catch up: ${(err as Error).message} (worker: ${backState()})`, ExitCode.internal);
  }
  say(`  A worker streams the new master's log to the old one: ${num(await compare(b, a))} keys on both, 0 differences.`);

  step(8, 'The roles switch back');
  const switched = await runFailover({
    master: b.client(),
    replica: a.client(),
    ...servers,
    masterWhere: b.url,
    replicaWhere: a.url,
    timeoutMs: 10_000,
  });
  await back.close();
  say(`  \`qsync failover --master ${b.url} --replica ${a.url}\`: writes were refused for ${switched.pauseMs} ms while the old master`);
  say('  applied the last entries; writes to B now fail with a FencedError naming A, so the shop moves back.');
  shop = new Shop(createProducer(a.client()), 3000, 60);
  track(startWorker(pair, { replica: { host: '127.0.0.1', port: proxy.port } }));
  proxy.heal();
  for (let i = 0; i < 10; i++) await shop.tick(SHOPPERS_PER_TICK);
  await drain(pair, () => 'streaming');
  say(`  A is the master again and B its replica: ${num(await compare(a, b))} keys on both, 0 differences.`);
}

async function main(): Promise<number> {
  const started = performance.now();
  say('qsync demo: a shop writes to a Redis master in data centre A; qsync keeps a replica in');
  say('data centre B up to date through a queue of logged writes. The demo cuts the link between');
  say('the two, keeps writing, heals it, and checks that the replica matches; then the master dies, the');
  say('replica takes over, and the old master comes back without a full copy.');

  let pair: Pair | undefined;
  let proxy: FaultProxy | undefined;
  let worker: SyncWorker | undefined;
  const workers: SyncWorker[] = [];
  const track = (w: SyncWorker) => {
    workers.push(w);
    return w;
  };
  try {
    // The master keeps its data across a clean stop (an RDB snapshot), as a data centre coming back does.
    pair = await startPair({ persistence: 'rdb' });
    proxy = await startProxy(pair.replica.port);
    worker = startWorker(pair, { replica: { host: '127.0.0.1', port: proxy.port } });
    await run(pair, proxy, worker);
    await failBack(pair, proxy, worker, track);
    say();
    say(`Done in ${seconds(performance.now() - started)}: the replica matches the master. Next: README.md explains the`);
    say('producer API, `npx qsync consume`, `npx qsync status` and the limits; `npm test` runs the test suite.');
    return ExitCode.ok;
  } catch (err) {
    say();
    if (err instanceof DemoFailure) {
      process.stderr.write(`demo failed: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`demo failed: ${(err as Error).stack ?? String(err)}\n`);
    return ExitCode.internal;
  } finally {
    await worker?.close();
    for (const w of workers) await w.close();
    await proxy?.close();
    await pair?.destroy();
  }
}

// The harness behind startPair kills its redis-server processes and removes
// their dirs on these signals (it registered first); this only says so and exits.
for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
] as const) {
  process.once(signal, () => {
    process.stderr.write(`\ndemo interrupted (${signal}): its Redis servers are stopped and their temp dirs removed\n`);
    process.exit(code);
  });
}

// Exit explicitly: a client left reconnecting must not keep the demo alive.
process.exit(await main());
