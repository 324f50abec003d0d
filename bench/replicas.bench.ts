/**
 * Several replicas and chains: what waiting for a replica costs a writer,
 * what each attached replica costs the master, how fast each of four
 * replicas drains, and the lag a chain adds over a direct replica.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import type { SyncWorker } from '../consumer/drain/worker.js';
import { QueueKeys, DEFAULT_PREFIX, DEFAULT_QUEUE } from '../shared/keys.js';
import { startRedis, type RedisServer } from '../test/support/redis-server.js';
import { eventually } from '../test/support/wait.js';
import { benchWorker } from './support/drain-rig.js';
import type { Scenario } from './support/result.js';
import { commandUsec, SCRIPT_COMMANDS, usecOf } from './support/server-time.js';
import { measured, percentile, ratio } from './support/stats.js';
import { connected, key, value, within, writeSets } from './support/workload.js';

const keys = new QueueKeys(DEFAULT_PREFIX, DEFAULT_QUEUE);
/** Writes whose waitReplicated(1) is timed, one after the other. */
const WAITS = 300;
/** Entries written for the master's CPU and memory per write, and for the drain of four replicas. */
const WRITES = 20_000;
const FANOUT = [1, 2, 4];
/** Writes per second and seconds of the chain's lag. */
const RATE = 1000;
const SECONDS = 5;

/** The workers of replicas `names`, one on each of `replicas`, started; attached to the log once this resolves. */
async function attach(master: RedisServer, replicas: RedisServer[], names: string[]): Promise<SyncWorker[]> {
  const workers = names.map((name, i) => benchWorker(master, replicas[i].port, { name }).start());
  const client = master.client();
  await eventually(async () => (await client.hlen(keys.replicas)) === names.length, 10_000, 'the replicas attached', 10);
  return workers;
}

async function drained(master: Redis, replica: Redis, name: string): Promise<void> {
  const applied = keys.forReplica(name).applied;
  await eventually(async () => (await master.hget(keys.meta, 'seq')) === (await replica.hget(applied, 'seq')), 120_000, `replica ${name} drained`, 2);
}

/** The producer's own round trip of a write, and the time until waitReplicated(1) resolves after it, in ms. */
async function waits(producer: ReturnType<typeof createProducer>): Promise<{ write: number[]; replicated: number[] }> {
  const write: number[] = [];
  const replicated: number[] = [];
  for (let i = 0; i < WAITS; i++) {
    const start = performance.now();
    await producer.set(key(i), value(i));
    write.push(performance.now() - start);
    await producer.waitReplicated(1, 0);
    replicated.push(performance.now() - start);
  }
  return { write: write.sort((a, b) => a - b), replicated: replicated.sort((a, b) => a - b) };
}

/** With `n` replicas attached and draining: master script CPU per write (µs), and memory per queued entry (bytes) with them stopped. */
async function fanout(master: RedisServer, replicas: RedisServer[], n: number): Promise<{ cpu: number; memory: number }> {
  const client = await connected(master.client());
  await client.flushall();
  await Promise.all(replicas.map((r) => r.client().flushall()));
  const names = Array.from({ length: n }, (_, i) => `r${i}`);
  const workers = await attach(master, replicas, names);
  const producer = createProducer(await connected(master.client()));
  try {
    await client.config('RESETSTAT');
    await writeSets(producer, WRITES, 64);
    await Promise.all(names.map((name, i) => drained(client, replicas[i].client(), name)));
    const cpu = usecOf(await commandUsec(client), SCRIPT_COMMANDS) / WRITES;
    await Promise.all(workers.map((w) => w.close()));
    const before = Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]);
    await writeSets(producer, WRITES, 64);
    const after = Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]);
    return { cpu, memory: (after - before) / WRITES };
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    producer.disconnect();
  }
}

/** Four replicas drain a log of WRITES entries at once: entries per second each. */
async function fourDrain(master: RedisServer, replicas: RedisServer[]): Promise<number[]> {
  const client = await connected(master.client());
  await client.flushall();
  await Promise.all(replicas.map((r) => r.client().flushall()));
  const names = ['r0', 'r1', 'r2', 'r3'];
  // Attached first, then stopped: the log keeps every entry for each of them.
  await Promise.all((await attach(master, replicas, names)).map((w) => w.close()));
  const producer = createProducer(await connected(master.client()));
  await writeSets(producer, WRITES, 64);
  producer.disconnect();
  const start = performance.now();
  const workers = names.map((name, i) => benchWorker(master, replicas[i].port, { name }).start());
  try {
    return await Promise.all(
      names.map(async (name, i) => {
        await drained(client, replicas[i].client(), name);
        return WRITES / ((performance.now() - start) / 1000);
      }),
    );
  } finally {
    await Promise.all(workers.map((w) => w.close()));
  }
}

/** Writes at RATE for SECONDS; the lag (ms) from each write until `replica`'s watermark `applied` covers it, sorted. */
async function lags(producer: Redis, master: Redis, replica: Redis, applied: string): Promise<number[]> {
  const from = Number((await master.hget(keys.meta, 'seq')) ?? 0);
  const total = RATE * SECONDS;
  const sent = new Float64Array(total);
  const seen = new Float64Array(total);
  const watching = (async () => {
    let covered = 0;
    while (covered < total) {
      const seq = Number((await replica.hget(applied, 'seq')) ?? 0);
      const now = performance.now();
      for (; covered < Math.min(total, seq - from); covered++) seen[covered] = now;
      await sleep(1);
    }
  })();
  const start = performance.now();
  for (let n = 0; n < total; ) {
    const due = Math.min(total, Math.floor(((performance.now() - start) * RATE) / 1000));
    for (; n < due; n++) {
      sent[n] = performance.now();
      void producer.set(key(n), value(n));
    }
    await sleep(1);
  }
  await within(watching, 60_000, 'the replica catching up');
  return Array.from(seen, (t, i) => t - sent[i]).sort((a, b) => a - b);
}

export const scenario: Scenario = {
  name: 'replicas',
  title: 'Several replicas and chains',
  method:
    `waitReplicated: ${WAITS} SETs one after the other through the producer with one replica streaming, each followed by waitReplicated(1, 0); ` +
    "the time from sending the write until it resolves, against the write's own round trip. " +
    `Fan-out: ${WRITES} SETs (64 at a time) with 1, 2 and 4 replicas attached and draining: the master's script CPU per write (INFO commandstats, ` +
    `writes and the consumers' reads and confirmations together), then ${WRITES} more with the consumers stopped: used_memory per queued entry; ratios to one replica. ` +
    `Drain: four replicas attached to a log of ${WRITES} entries start at once; entries/s each. ` +
    `Chain: ${RATE} SETs/s for ${SECONDS} s, lag from each write until the watermark covers it (polled every ms), ` +
    'for a replica fed by a relay (A -> B --relay -> C) against a direct replica of A, run one after the other. ' +
    'Every server, worker and writer shares the one host.',
  rounds: 3,
  async run(rounds) {
    const [master, ...replicas] = await Promise.all(Array.from({ length: 5 }, () => startRedis()));
    try {
      const wait = { write: [] as number[], replicated: [] as number[], p99: [] as number[], writeP99: [] as number[] };
      const cpu: number[][] = FANOUT.map(() => []);
      const memory: number[][] = FANOUT.map(() => []);
      const drain: number[] = [];
      const chain = { relayed: [] as number[], direct: [] as number[] };
      for (let r = 0; r < rounds; r++) {
        // waitReplicated
        await master.client().flushall();
        await Promise.all(replicas.map((x) => x.client().flushall()));
        const [one] = await attach(master, replicas, ['r0']);
        const producer = createProducer(await connected(master.client()));
        const w = await waits(producer);
        wait.write.push(percentile(w.write, 50));
        wait.replicated.push(percentile(w.replicated, 50));
        wait.writeP99.push(percentile(w.write, 99));
        wait.p99.push(percentile(w.replicated, 99));
        await one.close();
        producer.disconnect();
        // fan-out
        for (const [i, n] of FANOUT.entries()) {
          const f = await fanout(master, replicas, n);
          cpu[i].push(f.cpu);
          memory[i].push(f.memory);
        }
        // four replicas draining
        drain.push(...(await fourDrain(master, replicas)));
        // chain against direct: A -> B (relay) -> C, A -> D
        const [b, c, d] = replicas;
        await Promise.all([master, b, c, d].map((x) => x.client().flushall()));
        const relay = benchWorker(master, b.port, { name: 'b', relay: true }).start();
        const next = benchWorker(b, c.port, { name: 'c' }).start();
        const direct = benchWorker(master, d.port, { name: 'd' }).start();
        try {
          const m = await connected(master.client());
          await eventually(async () => (await m.hlen(keys.replicas)) === 2 && (await b.client().hlen(keys.replicas)) === 1, 10_000, 'attached', 10);
          const p = createProducer(await connected(master.client()));
          chain.relayed.push(percentile(await lags(p, m, c.client(), keys.forReplica('c').applied), 99));
          chain.direct.push(percentile(await lags(p, m, d.client(), keys.forReplica('d').applied), 99));
          p.disconnect();
        } finally {
          await Promise.all([relay.close(), next.close(), direct.close()]);
        }
      }
      return {
        rows: [
          measured('write round trip p50 (baseline)', 'ms', wait.write),
          measured('write + waitReplicated(1) p50', 'ms', wait.replicated),
          measured('write round trip p99 (baseline)', 'ms', wait.writeP99),
          measured('write + waitReplicated(1) p99', 'ms', wait.p99),
          measured('master script CPU per write, 1 replica', 'µs', cpu[0]),
          ratio('master script CPU per write, 2 replicas / 1', cpu[1], cpu[0]),
          ratio('master script CPU per write, 4 replicas / 1', cpu[2], cpu[0]),
          measured('memory per queued entry, 1 replica', 'B', memory[0]),
          ratio('memory per queued entry, 2 replicas / 1', memory[1], memory[0]),
          ratio('memory per queued entry, 4 replicas / 1', memory[2], memory[0]),
          measured('drain rate per replica, 4 attached', 'entries/s', drain),
          measured('lag p99, direct replica', 'ms', chain.direct),
          measured('lag p99, replica behind a relay', 'ms', chain.relayed),
          ratio('lag p99, chain / direct', chain.relayed, chain.direct),
        ],
        headline: 'write + waitReplicated(1) p50',
        details: { waits: WAITS, writes: WRITES, rate: RATE, seconds: SECONDS },
      };
    } finally {
      await Promise.all([master, ...replicas].map((s) => s.destroy()));
    }
  },
};
