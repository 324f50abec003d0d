/**
 * The rig every fault scenario runs on: a master and a replica (real
 * redis-server processes), a fault proxy on the consumer's link to the
 * replica, the mixed workload writing through the producer, and consumers
 * (in-process workers or `qsync consume` processes). It counts the faults a
 * scenario injects and, at the end, checks that nothing was lost or applied
 * twice: the replica equals the master key by key, and the ledger of the
 * writes.
 */
import { performance } from 'node:perf_hooks';
import { startPair, startWorker, waitForDrain, datasetDiff, type Pair } from '../test/support/fixtures.js';
import { startProxy, type FaultProxy } from '../test/support/fault-proxy.js';
import { spawnCli, type CliProcess } from '../test/support/cli.js';
import { eventually } from '../test/support/wait.js';
import { createWorkload, prng, type Workload, type WorkloadOptions } from '../test/support/workload.js';
import type { RedisServerOptions } from '../test/support/redis-server.js';
import type { SyncWorker, WorkerOptions, WorkerState } from '../consumer/drain/worker.js';
import { QueueKeys } from '../shared/keys.js';

/** What one scenario run did and found. */
export interface Outcome {
  scenario: string;
  seed: number;
  /** faults injected, by kind */
  faults: Record<string, number>;
  /** entries the producer logged (the master's sequence) */
  written: number;
  /** entries the replica applied (its watermark) */
  applied: number;
  /** acknowledged writes missing on the replica, per the ledger */
  lost: number;
  /** writes found applied twice on the replica, per the ledger */
  doubled: number;
  /** keys whose value or expiry differs between master and replica */
  differing: string[];
  /** expectations checked */
  checked: number;
  /** expectations that did not hold, and errors that ended the run */
  violations: string[];
  /** figures worth reading in a test log */
  notes: Record<string, number | string>;
}

export interface RigOptions {
  seed: number;
  master?: RedisServerOptions;
  workload?: Partial<WorkloadOptions>;
}

/** A worker whose state changes are kept with the time they happened. */
export type TrackedWorker = SyncWorker & { history: { state: WorkerState; at: number }[] };

export const keys = new QueueKeys('qsync', 'default');

/** Matches a CLI log record of a change to one of these states. */
export const stateIs =
  (...states: string[]) =>
  (l: Record<string, unknown>) =>
    typeof l.state === 'string' && states.includes(l.state) && l.from !== undefined;

export class Rig {
  readonly random: () => number;
  readonly faults: Record<string, number> = {};
  readonly notes: Record<string, number | string> = {};
  readonly violations: string[] = [];
  private checked = 0;
  private readonly workers: SyncWorker[] = [];
  private readonly clis: CliProcess[] = [];

  private constructor(
    readonly seed: number,
    readonly pair: Pair,
    readonly proxy: FaultProxy,
    readonly workload: Workload,
  ) {
    this.random = prng(seed);
  }

  static async start(o: RigOptions): Promise<Rig> {
    const pair = await startPair(o.master);
    const proxy = await startProxy(pair.replica.port);
    const workload = createWorkload({ port: pair.master.port, seed: o.seed, ...o.workload });
    await workload.start();
    return new Rig(o.seed, pair, proxy, workload);
  }

  /** Records an expectation; one that does not hold is a violation in the outcome. */
  expect(ok: boolean, what: string): void {
    this.checked++;
    if (!ok) this.violations.push(what);
  }

  fault(kind: string): void {
    this.faults[kind] = (this.faults[kind] ?? 0) + 1;
  }

  /** A random whole number of ms in [min, max]. */
  between(min: number, max: number): number {
    return Math.round(min + this.random() * (max - min));
  }

  /** An in-process worker draining to the replica through the proxy. */
  worker(options: Partial<WorkerOptions> = {}): TrackedWorker {
    const worker = Object.assign(startWorker(this.pair, { replica: { host: '127.0.0.1', port: this.proxy.port }, ...options }), {
      history: [] as { state: WorkerState; at: number }[],
    });
    worker.on('state', (state: WorkerState) => worker.history.push({ state, at: performance.now() }));
    this.workers.push(worker);
    return worker;
  }

  /** Waits until the worker changed to one of the states at or after `since` (performance.now()); resolves to when. */
  async reached(worker: TrackedWorker, states: WorkerState[], since = 0, timeoutMs = 20_000): Promise<number> {
    const found = () => worker.history.find((h) => h.at >= since && states.includes(h.state))?.at;
    return eventually(found, timeoutMs, `worker ${states.join(' or ')}`).catch((err: Error) => {
      throw new Error(`${err.message}; states: ${worker.history.map((h) => h.state).join(' → ')}`);
    });
  }

  /** `qsync consume` draining to the replica through the proxy. */
  consumer(...extra: string[]): CliProcess {
    const cli = spawnCli([
      'consume',
      '--master',
      this.pair.master.url,
      '--replica',
      this.proxy.url,
      '--lease-ms',
      '500',
      '--timeout-ms',
      '2000',
      ...extra,
    ]);
    this.clis.push(cli);
    return cli;
  }

  /** The master's sequence and log length, read in one step. */
  async queue(): Promise<{ seq: number; depth: number }> {
    const client = this.pair.master.client();
    try {
      const [[, seq], [, depth]] = (await client.multi().hget(keys.meta, 'seq').llen(keys.log).exec()) as [[null, string | null], [null, number]];
      return { seq: Number(seq ?? 0), depth };
    } finally {
      client.disconnect();
    }
  }

  /** The replica's watermark, read directly (not through the proxy). */
  async watermark(): Promise<number> {
    const client = this.pair.replica.client();
    try {
      return Number((await client.hget(keys.applied, 'seq')) ?? 0);
    } finally {
      client.disconnect();
    }
  }

  /**
   * Entries the replica applied that are still in the log (their batch was
   * not confirmed yet). The master is read first: the trimmed count can only
   * grow after the watermark did, so read in this order it never exceeds it.
   */
  async untrimmed(): Promise<number> {
    const { seq, depth } = await this.queue();
    return (await this.watermark()) - (seq - depth);
  }

  /**
   * Stops the writes and waits until the replica has applied the whole log
   * and the consumer confirmed it (the log is empty); resolves to the
   * master's sequence.
   */
  async drain(timeoutMs = 60_000): Promise<number> {
    await this.workload.stop();
    const seq = await waitForDrain(this.pair.master.client(), this.pair.replica.client(), { timeoutMs });
    await eventually(async () => (await this.queue()).depth === 0, timeoutMs, 'an empty log');
    return seq;
  }

  /** Drains (some consumer must be running), compares the replica with the master and the ledger, and reports. */
  async finish(scenario: string): Promise<Outcome> {
    let written = 0;
    let differing: string[] = [];
    const counts = { lost: 0, doubled: 0 };
    try {
      written = await this.drain();
      // The consumer's job queue (qsync-jobs:) lives on the master only, like the qsync: keys datasetDiff leaves out.
      differing = (await datasetDiff(this.pair.master, this.pair.replica)).filter((d) => !/^db\d+ qsync-jobs:/.test(d));
      this.expect(differing.length === 0, `the replica equals the master (${differing.slice(0, 5).join('; ')})`);
      const ledger = this.workload.ledger;
      const onMaster = await ledger.check(this.pair.master);
      this.expect(onMaster.problems.length === 0, `the master holds every acknowledged write once (${onMaster.problems.slice(0, 5).join('; ')})`);
      const onReplica = await ledger.check(this.pair.replica);
      Object.assign(counts, { lost: onReplica.lost, doubled: onReplica.doubled });
      this.expect(onReplica.lost === 0, `no acknowledged write is missing on the replica (${onReplica.problems.slice(0, 5).join('; ')})`);
      this.expect(onReplica.doubled === 0, `no write is applied twice on the replica (${onReplica.problems.slice(0, 5).join('; ')})`);
      Object.assign(this.notes, { acknowledged: ledger.acknowledged, failedWrites: ledger.failed, unknownFate: ledger.unknown });
    } catch (err) {
      this.expect(false, `the run ended: ${(err as Error).message}`);
      // Not drained: what the replica lacks counts as lost.
      const { seq } = await this.queue().catch(() => ({ seq: 0 }));
      written = seq;
      counts.lost += Math.max(0, seq - (await this.watermark().catch(() => 0)));
    }
    const applied = await this.watermark().catch(() => 0);
    return {
      scenario,
      seed: this.seed,
      faults: this.faults,
      written,
      applied,
      ...counts,
      differing,
      checked: this.checked,
      violations: this.violations,
      notes: this.notes,
    };
  }

  async destroy(): Promise<void> {
    for (const cli of this.clis) cli.kill('SIGKILL');
    await Promise.all([this.workload.stop(), ...this.workers.map((w) => w.close()), ...this.clis.map((c) => c.exited)]);
    // Lets the closed consumers' connections finish closing: the proxy resets
    // what is left, and a reset socket still closing stays open for good.
    await eventually(() => this.proxy.stats().connections === 0, 5000, 'proxied connections closed').catch(() => {});
    await this.proxy.close();
    await this.pair.destroy();
  }
}
