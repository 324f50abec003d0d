/**
 * Draining a Redis Cluster: a source cluster of 1, 2 and 3 masters drained
 * by one ClusterConsumer onto a target cluster of the same size. Drain rate
 * and CPU per entry of every process (each redis-server, the consumer's
 * Node process), as ratios to one shard; from the per-entry costs, what a
 * deployment with one core per process would reach, and which process every
 * shard shares.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { ClusterConsumer } from '../consumer/cluster/consumer.js';
import { createProducer } from '../producer/index.js';
import { SLOTS, slotKeys } from '../shared/cluster.js';
import { createLogger } from '../shared/logger.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE } from '../shared/keys.js';
import { startCluster, type LocalCluster } from '../test/support/redis-cluster.js';
import type { Scenario } from './support/result.js';
import { measured, median, ratio, type Row } from './support/stats.js';
import { runConcurrent, value, within } from './support/workload.js';

const ENTRIES = 100_000;
const CONCURRENCY = 64;
const SHARDS = [1, 2, 3];
const TIMEOUT_MS = 300_000;
const TICKS_PER_SECOND = 100;

/** CPU milliseconds a process has used (user + system), from /proc. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
}

async function pidOf(client: Redis): Promise<number> {
  return Number(/process_id:(\d+)/.exec(await client.info('server'))![1]);
}

/** Entries left in every slot's log of a source cluster, one pipeline per master. */
async function depth(cluster: LocalCluster): Promise<number> {
  let total = 0;
  for (const m of cluster.masters) {
    const owned = (await m.admin.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][];
    const pipe = m.admin.pipeline();
    for (const [a, b, [, port]] of owned) {
      if (port !== m.server.port) continue;
      for (let s = a; s <= b; s++) pipe.llen(slotKeys(DEFAULT_PREFIX, DEFAULT_QUEUE, s).log);
    }
    for (const [, n] of (await pipe.exec()) ?? []) total += Number(n);
  }
  return total;
}

interface Sample {
  perSecond: number;
  /** CPU µs per entry: the source's redis-servers, the target's, the consumer's Node process */
  us: { source: number; target: number; node: number };
}

/** Fills the source's per-slot logs with ENTRIES SETs (keys spread over every slot), then times one consumer draining them. */
async function drainOnce(source: LocalCluster, target: LocalCluster, round: number): Promise<Sample> {
  const writer = createProducer(source.client());
  await runConcurrent(ENTRIES, CONCURRENCY, (i) => writer.set(`key:${round}:${i}`, value(i)));
  writer.disconnect();
  const sourcePids = await Promise.all(source.masters.map((m) => pidOf(m.admin)));
  const targetPids = await Promise.all(target.masters.map((m) => pidOf(m.admin)));
  const consumer = new ClusterConsumer({
    master: { host: '127.0.0.1', port: source.masters[0].server.port },
    replica: { host: '127.0.0.1', port: target.masters[0].server.port },
    logger: createLogger('silent'),
  });
  const cpu0 = { source: sourcePids.map(cpuMs), target: targetPids.map(cpuMs), node: process.cpuUsage() };
  const t0 = performance.now();
  await consumer.start();
  await within(
    (async () => {
      while (consumer.applied < ENTRIES) await sleep(2);
    })(),
    TIMEOUT_MS,
    'the consumer draining the cluster',
  );
  const seconds = (performance.now() - t0) / 1000;
  const node = process.cpuUsage(cpu0.node);
  const sum = (pids: number[], before: number[]) => pids.reduce((s, p, i) => s + cpuMs(p) - before[i], 0);
  const us = {
    source: (sum(sourcePids, cpu0.source) * 1000) / ENTRIES,
    target: (sum(targetPids, cpu0.target) * 1000) / ENTRIES,
    node: (node.user + node.system) / ENTRIES,
  };
  await consumer.close();
  const left = await depth(source);
  if (left !== 0) throw new Error(`${left} entries still in the source's logs after the consumer applied ${ENTRIES}`);
  return { perSecond: ENTRIES / seconds, us };
}

export const scenario: Scenario = {
  name: 'cluster',
  title: 'Draining a Redis Cluster: 1, 2 and 3 source shards',
  method:
    `For 1, 2 and 3 source masters (slots spread evenly), a target cluster of the same size; each round writes ${ENTRIES / 1000}k ` +
    `SETs of 32 B through the cluster producer (${CONCURRENCY} in flight, keys over every slot) while no consumer runs, ` +
    "then one ClusterConsumer (defaults, in the bench's process) starts and is timed until it applied them all (its log " +
    'is then checked empty on every master). CPU per entry: every redis-server of each side from /proc, the Node process ' +
    'from process.cpuUsage() (the writes are not in it). One core per process is estimated from those costs: each shard ' +
    "of a side takes its share of the entries; the consumer's cost falls on one qsync consume process, or is split between one " +
    'process per source shard (the shards shared through their leases).',
  rounds: 3,
  async run(rounds) {
    const byShards = new Map<number, Sample[]>();
    for (const n of SHARDS) {
      const [source, target] = await Promise.all([startCluster({ masters: n }), startCluster({ masters: n })]);
      try {
        // One unmeasured round first: the first seconds of a process run code not yet optimised.
        await drainOnce(source, target, -1);
        const samples: Sample[] = [];
        for (let r = 0; r < rounds; r++) samples.push(await drainOnce(source, target, r));
        byShards.set(n, samples);
      } finally {
        await Promise.all([source.destroy(), target.destroy()]);
      }
    }
    const rate = (n: number) => byShards.get(n)!.map((s) => s.perSecond);
    const us = (n: number, side: keyof Sample['us']) => median(byShards.get(n)!.map((s) => s.us[side]));
    const total = (n: number) => byShards.get(n)!.map((s) => s.us.source + s.us.target + s.us.node);
    const rows: Row[] = [
      ...SHARDS.map((n) => measured(`drain, ${n} source shard${n > 1 ? 's' : ''}`, 'entries/s', rate(n))),
      ...SHARDS.filter((n) => n > 1).map((n) => ratio(`drain, ${n} shards ÷ 1 shard`, rate(n), rate(1))),
      ...SHARDS.map((n) => measured(`CPU per entry, all processes, ${n} shard${n > 1 ? 's' : ''}`, 'µs', total(n))),
      ...SHARDS.filter((n) => n > 1).map((n) => ratio(`CPU per entry, ${n} shards ÷ 1 shard`, total(n), total(1))),
    ];
    // One core per process: a side's n redis-servers share the entries; the
    // consumer's per-entry cost falls on one process, or is shared by `processes`
    // qsync consume processes holding the shards between them.
    const limits = (n: number, processes: number) => ({
      'the consumer process': (processes * 1e6) / us(n, 'node'),
      'the source shards': (n * 1e6) / us(n, 'source'),
      'the target shards': (n * 1e6) / us(n, 'target'),
    });
    const estimate = (n: number, processes: number) => {
      const [by, rate] = Object.entries(limits(n, processes)).sort((a, b) => a[1] - b[1])[0];
      return `about ${Math.round(rate).toLocaleString('en')} entries/s, bound by ${processes > 1 && by === 'the consumer process' ? 'the consumer processes' : by}`;
    };
    const notes = [
      ...SHARDS.map(
        (n) =>
          `${n} shard${n > 1 ? 's' : ''}: CPU per entry (medians) ${us(n, 'source').toFixed(2)} µs on the source's servers, ` +
          `${us(n, 'target').toFixed(2)} µs on the target's, ${us(n, 'node').toFixed(2)} µs in the consumer's process; with one core ` +
          `per process ${estimate(n, 1)} with one qsync consume process` +
          (n > 1 ? `, ${estimate(n, n)} with ${n} (one per shard).` : '.'),
      ),
      "This host has 2 cores for every process of the run, so the measured rates cannot grow with shards; the per-entry costs show where the work goes. Shared by every shard: the consumer's Node process (one per `qsync consume`; several processes share the shards through their leases, each adding a core) and the lease hash of the queue, touched a few times per lease period, never per entry.",
    ];
    return { rows, notes, details: { slots: SLOTS } };
  },
};
