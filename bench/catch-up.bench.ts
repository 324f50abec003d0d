/**
 * Catching up after an outage: a replica in sync with a 2M-key master loses
 * its link while 100k writes go through the producer; once the link heals,
 * the time until the replica's watermark reaches the master's sequence,
 * against the time Redis's own full synchronisation takes to copy the same
 * dataset onto an empty server. The first round is also drawn, queue depth
 * and lag every 100 ms, as docs/catch-up.svg.
 */
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import type { SyncWorker } from '../consumer/drain/worker.js';
import { createProducer } from '../producer/index.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE, QueueKeys } from '../shared/keys.js';
import { startProxy, type FaultProxy } from '../test/support/fault-proxy.js';
import { startRedis, type RedisServer } from '../test/support/redis-server.js';
import { benchWorker, untilWorkerWaits } from './support/drain-rig.js';
import { fullSync } from './support/full-sync.js';
import type { Scenario } from './support/result.js';
import { measured, median, ratio, type Row } from './support/stats.js';
import { renderChart } from './support/svg-chart.js';
import { connected, runConcurrent, value, within } from './support/workload.js';

const KEYS = 2_000_000;
/** 2M keys of 100 B take about 350 MB, the size of the reference measurement in the project's notes */
const VALUE_BYTES = 100;
const WRITES = 100_000;
const CONCURRENCY = 64;
/** counters for INCR and hashes for HSET, created next to the populated strings */
const COUNTERS = 1000;
const HASHES = 1000;
const HASH_FIELDS = 10;
const SAMPLE_MS = 100;
const TIMEOUT_MS = 300_000;
const CHART = fileURLToPath(new URL('../docs/catch-up.svg', import.meta.url));
const keys = new QueueKeys(DEFAULT_PREFIX, DEFAULT_QUEUE);

/** The servers and connections every round uses. */
interface Rig {
  master: RedisServer;
  /** the master, for the scenario's own reads and settings */
  m: Redis;
  /** the replica, read directly (not through the proxy) */
  r: Redis;
  /** an empty server for the native full syncs */
  fresh: Redis;
  producer: Redis;
  proxy: FaultProxy;
  worker: SyncWorker;
}

/** Counters and hashes for the write mix, created before the replica copies the master. */
async function seedMixKeys(m: Redis): Promise<void> {
  const pipe = m.pipeline();
  for (let i = 0; i < COUNTERS; i++) pipe.set(`counter:${i}`, 0);
  for (let i = 0; i < HASHES; i++) pipe.hset(`hash:${i}`, Object.fromEntries(Array.from({ length: HASH_FIELDS }, (_, f) => [`f${f}`, value(f)])));
  await pipe.exec();
}

/** Write `i` of round `round`: SET on a populated string, INCR on a counter or HSET on a hash, by turns. */
function mixWrite(producer: Redis, round: number, i: number): Promise<unknown> {
  const spread = (i * 7919 + round * 104_729) % KEYS;
  if (i % 3 === 0) return producer.set(`key:${spread}`, value(round * WRITES + i, VALUE_BYTES));
  if (i % 3 === 1) return producer.incr(`counter:${spread % COUNTERS}`);
  return producer.hset(`hash:${spread % HASHES}`, `f${i % HASH_FIELDS}`, value(i));
}

/** Fails unless the replica holds the master's counters and hashes. */
async function expectMixKeysEqual(m: Redis, r: Redis): Promise<void> {
  const read = async (c: Redis) => {
    const pipe = c.pipeline().mget(...Array.from({ length: COUNTERS }, (_, i) => `counter:${i}`));
    for (let i = 0; i < HASHES; i++) pipe.hgetall(`hash:${i}`);
    return JSON.stringify((await pipe.exec())!.map(([, v]) => v));
  };
  if ((await read(m)) !== (await read(r))) throw new Error('the replica caught up but its counters or hashes differ from the master');
}

interface Sample {
  t: number;
  depth: number;
  lag: number;
}

/** Polls queue depth and lag every SAMPLE_MS on connections of its own; t in seconds since it started. */
function startSampling(master: RedisServer, r: Redis) {
  const m = master.client();
  const t0 = performance.now();
  const samples: Sample[] = [];
  // One sample at a time; stop() waits for the one in flight before closing its connection.
  let pending: Promise<void> | undefined;
  const sample = async () => {
    const t = (performance.now() - t0) / 1000;
    const [[, depth], [, seq]] = (await m.multi().llen(keys.log).hget(keys.meta, 'seq').exec()) as [[null, number], [null, string | null]];
    const applied = await r.hget(keys.applied, 'seq');
    samples.push({ t, depth, lag: Number(seq ?? 0) - Number(applied ?? 0) });
  };
  const timer = setInterval(() => {
    pending ??= sample().finally(() => (pending = undefined));
  }, SAMPLE_MS);
  return {
    now: () => (performance.now() - t0) / 1000,
    async stop(): Promise<Sample[]> {
      clearInterval(timer);
      await pending;
      m.disconnect();
      return samples;
    },
  };
}

interface CatchUp {
  /** heal to the replica's watermark at the master's sequence */
  seconds: number;
  /** heal to the first batch applied */
  firstSeconds: number;
  /** producer writes/s while the link was cut */
  writesPerSecond: number;
  /** moments in seconds on `clock`, when given */
  marks?: { cut: number; heal: number; zeroLag: number };
}

/** Cuts the replica link, writes the mix, heals and times until zero lag. */
async function catchUp(rig: Rig, round: number, clock?: () => number): Promise<CatchUp> {
  const cut = clock?.();
  rig.proxy.cut();
  const writesPerSecond = await runConcurrent(WRITES, CONCURRENCY, (i) => mixWrite(rig.producer, round, i));
  const target = Number(await rig.m.hget(keys.meta, 'seq'));
  let first = 0;
  const caughtUp = new Promise<number>((resolve, reject) => {
    const onApplied = ({ watermark }: { watermark: number }) => {
      first ||= performance.now();
      if (watermark < target) return;
      rig.worker.off('applied', onApplied).off('state', onState);
      resolve(performance.now());
    };
    const onState = (state: string, detail: unknown) => {
      if (state === 'halted' || state === 'resync-needed') reject(new Error(`worker ${state}: ${JSON.stringify(detail)}`));
    };
    rig.worker.on('applied', onApplied).on('state', onState);
  });
  const heal = clock?.();
  const healed = performance.now();
  rig.proxy.heal();
  const done = await within(caughtUp, TIMEOUT_MS, 'catching up');
  await expectMixKeysEqual(rig.m, rig.r);
  return {
    seconds: (done - healed) / 1000,
    firstSeconds: (first - healed) / 1000,
    writesPerSecond,
    ...(clock && { marks: { cut: cut!, heal: heal!, zeroLag: heal! + (done - healed) / 1000 } }),
  };
}

/** The first round again, drawn: depth and lag from a second before the cut to a second after zero lag. */
async function chartedCatchUp(rig: Rig, round: number): Promise<CatchUp> {
  const sampling = startSampling(rig.master, rig.r);
  await sleep(1000);
  const result = await catchUp(rig, round, sampling.now);
  await sleep(1000);
  const samples = await sampling.stop();
  const { cut, heal, zeroLag } = result.marks!;
  writeFileSync(
    CHART,
    renderChart({
      title: `${WRITES / 1000}k writes while the replica link is cut (${KEYS / 1e6}M-key dataset)`,
      xLabel: 'time (s)',
      yLabel: 'entries',
      series: [
        { name: `queue depth (LLEN ${keys.log})`, color: '#1f77b4', points: samples.map((s) => [s.t, s.depth]) },
        { name: 'lag (master seq − replica watermark)', color: '#d62728', dashed: true, points: samples.map((s) => [s.t, s.lag]) },
      ],
      marks: [
        { label: 'cut', x: cut },
        { label: 'heal', x: heal },
        { label: 'zero lag', x: zeroLag },
      ],
    }),
  );
  return result;
}

/** Native full sync onto the empty server with the master's repl-diskless-sync-delay at `delay`; empties it again. */
async function nativeSync(rig: Rig, delay: number): Promise<number> {
  await rig.m.config('SET', 'repl-diskless-sync-delay', String(delay));
  const seconds = await within(fullSync(rig.master, rig.fresh, await rig.m.dbsize()), TIMEOUT_MS, 'full sync');
  await rig.fresh.flushall();
  return seconds;
}

export const scenario: Scenario = {
  name: 'catch-up',
  title: 'Catching up after an outage against a native full sync',
  method:
    `A master with ${KEYS / 1e6}M string keys of ${VALUE_BYTES} B (DEBUG POPULATE) plus ${COUNTERS} counters and ${HASHES} hashes, ` +
    'and a replica in sync with it, made the same way (never a replica of anything, so it keeps no replication backlog; a ' +
    'replica with replicas of its own spends about 1 µs more per applied write feeding its backlog); the queue starts empty. A SyncWorker ' +
    "(defaults) reaches the replica through the test suite's fault proxy, " +
    `in the same Node process. Each round cuts that link, writes ${WRITES / 1000}k commands through the producer ` +
    `(${CONCURRENCY} in flight; SET on populated keys, INCR on counters, HSET on hashes, by turns), heals it and times until the ` +
    "replica's watermark equals the master's sequence (the counters and hashes are then compared on both sides). The baseline " +
    'is REPLICAOF of the same master onto an empty server, timed until the link is up and the copy loaded, once with the ' +
    "master's default repl-diskless-sync-delay and once with 0; the ratio is against the faster of the two. The chart is a " +
    `separate cut and heal after the rounds, sampled every ${SAMPLE_MS} ms (samples can come late while Node is busy writing).`,
  rounds: 5,
  async run(rounds) {
    const [master, replica, fresh] = await Promise.all([startRedis(), startRedis(), startRedis()]);
    let rig: Rig | undefined;
    try {
      const m = await connected(master.client());
      const r = await connected(replica.client());
      // The same dataset on both sides, made the same way (DEBUG POPULATE is
      // deterministic): a replica in sync that was never anyone's replica, so
      // it keeps no replication backlog to feed on every write.
      for (const c of [m, r]) {
        await within(c.call('DEBUG', 'POPULATE', KEYS, 'key', VALUE_BYTES), TIMEOUT_MS, 'DEBUG POPULATE');
        await seedMixKeys(c);
      }
      const datasetMB = Math.round(Number(/used_memory_dataset:(\d+)/.exec(await m.info('memory'))![1]) / 1e6);
      const defaultDelay = Number(((await m.config('GET', 'repl-diskless-sync-delay')) as string[])[1]);
      await m.config('SET', 'repl-diskless-sync-delay', '0');
      const proxy = await startProxy(replica.port);
      const worker = benchWorker(master, proxy.port);
      rig = { master, m, r, fresh: await connected(fresh.client()), producer: createProducer(await connected(master.client())), proxy, worker };
      worker.start();
      await untilWorkerWaits(m);

      const catchUps: CatchUp[] = [];
      const byDefault: number[] = [];
      const byZero: number[] = [];
      for (let round = 0; round < rounds; round++) {
        byDefault.push(await nativeSync(rig, defaultDelay));
        byZero.push(await nativeSync(rig, 0));
        catchUps.push(await catchUp(rig, round));
      }
      const charted = await chartedCatchUp(rig, rounds);
      await m.config('SET', 'repl-diskless-sync-delay', String(defaultDelay));

      const seconds = catchUps.map((c) => c.seconds);
      const zeroFaster = median(byZero) <= median(byDefault);
      const faster = zeroFaster ? byZero : byDefault;
      const defaultLabel = `native full sync, server defaults (repl-diskless-sync-delay ${defaultDelay})`;
      const zeroLabel = 'native full sync, repl-diskless-sync-delay 0';
      const headline = `catch-up ÷ ${zeroFaster ? zeroLabel : defaultLabel}`;
      const rows: Row[] = [
        measured(`catch-up: heal to zero lag, ${WRITES / 1000}k writes behind`, 's', seconds),
        measured(
          'catch-up: heal to first batch applied',
          's',
          catchUps.map((c) => c.firstSeconds),
        ),
        measured(`${defaultLabel}: ${KEYS / 1e6}M keys`, 's', byDefault),
        measured(`${zeroLabel}: ${KEYS / 1e6}M keys`, 's', byZero),
        ratio(headline, seconds, faster, { op: '<=', value: 0.05 }),
        measured(
          'producer writes per second during the outage',
          'writes/s',
          catchUps.map((c) => c.writesPerSecond),
        ),
      ];
      return {
        rows,
        headline,
        notes: [`The charted cut and heal caught up in ${charted.seconds.toFixed(2)} s.`],
        details: { keys: KEYS, valueBytes: VALUE_BYTES, datasetMB, writes: WRITES, concurrency: CONCURRENCY, defaultDelay, charted },
      };
    } finally {
      await rig?.worker.close();
      await rig?.proxy.close();
      await Promise.all([master.destroy(), replica.destroy(), fresh.destroy()]);
    }
  },
};
