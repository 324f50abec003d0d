/**
 * A master whose log holds N entries written through the producer, a replica,
 * and ways to time draining that log: by a SyncWorker, or by sending the same
 * writes to the replica as plain pipelined commands (the baseline).
 *
 * The log is filled once; every sample restores it from a DUMP: the same
 * entries, without the seconds of refilling between samples.
 */
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { SyncWorker, type WorkerOptions } from '../../consumer/drain/worker.js';
import { createProducer } from '../../producer/index.js';
import { decodeEntry } from '../../shared/entry.js';
import { QueueKeys, DEFAULT_PREFIX, DEFAULT_QUEUE } from '../../shared/keys.js';
import { createLogger } from '../../shared/logger.js';
import type { RedisServer } from '../../test/support/redis-server.js';
import { eventually } from '../../test/support/wait.js';
import { commandUsec, nodeCpu, SCRIPT_COMMANDS, usecOf } from './server-time.js';
import { connected, within, writeSets } from './workload.js';

const keys = new QueueKeys(DEFAULT_PREFIX, DEFAULT_QUEUE);
const DRAIN_TIMEOUT_MS = 120_000;

/** A timed drain: its rate and the CPU each process spent per entry. */
export interface DrainSample {
  perSecond: number;
  /** CPU microseconds per entry: scripts on the master and on the replica, and this Node process */
  cpuUsPerEntry: { master: number; replica: number; node: number };
}

export class DrainRig {
  private constructor(
    readonly master: RedisServer,
    readonly replica: RedisServer,
    readonly entries: number,
    private readonly masterClient: Redis,
    private readonly replicaClient: Redis,
    private readonly log: Buffer,
    private readonly meta: Buffer,
    private readonly commands: Buffer[][],
  ) {}

  /** Writes `entries` SETs through the producer (no worker running) and keeps the resulting log. */
  static async fill(master: RedisServer, replica: RedisServer, entries: number): Promise<DrainRig> {
    const masterClient = await connected(master.client());
    const replicaClient = await connected(replica.client());
    const producer = createProducer(await connected(master.client()));
    await writeSets(producer, entries, 64);
    producer.disconnect();
    const raw = await masterClient.lrangeBuffer(keys.log, 0, -1);
    const commands = raw.flatMap((e) => decodeEntry(e).commands);
    const [log, meta] = await Promise.all([masterClient.dumpBuffer(keys.log), masterClient.dumpBuffer(keys.meta)]);
    if (!log || !meta || raw.length !== entries) throw new Error(`expected ${entries} entries in the log, found ${raw.length}`);
    return new DrainRig(master, replica, entries, masterClient, replicaClient, log, meta, commands);
  }

  /** An empty replica and a master without queue state (the replica's place in the log included), between samples. */
  private async reset(): Promise<void> {
    await this.replicaClient.flushall();
    await this.masterClient.del(keys.log, keys.meta, keys.replicas, keys.lease, keys.status);
    await Promise.all([this.masterClient.config('RESETSTAT'), this.replicaClient.config('RESETSTAT')]);
  }

  private async expectReplicaKeys(extra: number): Promise<void> {
    const size = await this.replicaClient.dbsize();
    if (size !== this.entries + extra) throw new Error(`the replica holds ${size} keys after ${this.entries} writes`);
  }

  /**
   * The same writes as the log holds, sent to the replica as plain commands
   * in sequential pipelines of `batch`. Resolves to writes/s.
   */
  async pipelined(batch: number): Promise<DrainSample> {
    await this.reset();
    const cpu = nodeCpu();
    const start = performance.now();
    for (let i = 0; i < this.commands.length; i += batch) {
      const pipe = this.replicaClient.pipeline();
      for (const [name, ...args] of this.commands.slice(i, i + batch)) pipe.call(name.toString(), ...args);
      await pipe.exec();
    }
    const seconds = (performance.now() - start) / 1000;
    const node = cpu();
    const replica = await commandUsec(this.replicaClient);
    await this.expectReplicaKeys(0);
    return {
      perSecond: this.entries / seconds,
      cpuUsPerEntry: { master: 0, replica: usecOf(replica, ['set']) / this.entries, node: node / this.entries },
    };
  }

  /**
   * Starts a worker on an empty queue, waits until it blocks for new entries,
   * then restores the filled log and times until the replica's watermark
   * reaches the last entry. Connecting is not timed; waking up is.
   * `replicaPort` routes the worker's replica link (e.g. through a proxy).
   */
  async drain(options: Partial<WorkerOptions>, replicaPort = this.replica.port): Promise<DrainSample> {
    await this.reset();
    const worker = benchWorker(this.master, replicaPort, options);
    try {
      const drained = new Promise<void>((resolve, reject) => {
        worker.on('applied', ({ watermark }: { watermark: number }) => watermark >= this.entries && resolve());
        worker.on('state', (state: string, detail: unknown) => {
          if (state === 'halted' || state === 'resync-needed') reject(new Error(`worker ${state}: ${JSON.stringify(detail)}`));
        });
      });
      worker.start();
      await untilWorkerWaits(this.masterClient);
      const cpu = nodeCpu();
      await this.masterClient.multi().restore(keys.log, 0, this.log).restore(keys.meta, 0, this.meta).exec();
      const start = performance.now();
      await within(drained, DRAIN_TIMEOUT_MS, 'the drain');
      const seconds = (performance.now() - start) / 1000;
      const node = cpu();
      const [master, replica] = await Promise.all([commandUsec(this.masterClient), commandUsec(this.replicaClient)]);
      await this.expectReplicaKeys(1);
      return {
        perSecond: this.entries / seconds,
        cpuUsPerEntry: {
          master: usecOf(master, SCRIPT_COMMANDS) / this.entries,
          replica: usecOf(replica, SCRIPT_COMMANDS) / this.entries,
          node: node / this.entries,
        },
      };
    } finally {
      await worker.close();
    }
  }
}

/** A SyncWorker (not started) with the product's defaults and silent logs, unless `options` say otherwise. */
export function benchWorker(master: RedisServer, replicaPort: number, options: Partial<WorkerOptions> = {}): SyncWorker {
  return new SyncWorker({
    master: { host: master.host, port: master.port },
    replica: { host: '127.0.0.1', port: replicaPort },
    logger: createLogger('silent'),
    ...options,
  });
}

/**
 * Polls the master until the worker's blocking connection waits in BLMOVE on
 * the empty log, i.e. the worker is connected, holds the lease and is idle.
 */
export async function untilWorkerWaits(master: Redis): Promise<void> {
  const name = `name=${keys.toKey('wait')} `;
  const waiting = (line: string) => line.includes(name) && / flags=\S*b/.test(line) && line.includes(' cmd=blmove');
  await eventually(async () => ((await master.client('LIST')) as string).split('\n').some(waiting), 10_000, 'the worker waiting for entries', 10);
}
