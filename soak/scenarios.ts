/**
 * Fault scenarios: each injects one kind of fault while the mixed workload
 * writes, states what must hold meanwhile, and leaves a consumer running so
 * that the rig can check at the end that nothing was lost or applied twice.
 * The tests run each once with fixed sizes; the soak runs them in a loop with
 * random sizes and timing.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { readStatus } from '../consumer/queue/status.js';
import { WORKER_DEFAULTS } from '../consumer/drain/worker.js';
import { median } from '../bench/support/stats.js';
import { eventually } from '../test/support/wait.js';
import type { CliProcess } from '../test/support/cli.js';
import { Rig, stateIs, keys, type Outcome, type RigOptions } from './rig.js';

/** How big a run is: how long each fault lasts, and how many times it comes. */
export interface Size {
  faultMs: number;
  repeats: number;
}

export interface Scenario {
  name: string;
  rig?: Pick<RigOptions, 'master' | 'workload'>;
  /** a size for a soak run */
  randomSize(r: () => number): Size;
  run(rig: Rig, size: Size): Promise<void>;
}

const pick = (r: () => number, min: number, max: number) => Math.round(min + r() * (max - min));

/** Runs a scenario on a fresh rig and reports what it found; a failed expectation or an error is a violation, not a throw. */
export async function runScenario(scenario: Scenario, o: { seed: number; size: Size }): Promise<Outcome> {
  const rig = await Rig.start({ seed: o.seed, ...scenario.rig });
  try {
    try {
      await scenario.run(rig, o.size);
    } catch (err) {
      rig.expect(false, `${scenario.name}: ${(err as Error).message}`);
    }
    return await rig.finish(scenario.name);
  } finally {
    await rig.destroy();
  }
}

/** Entries the replica applied whose batch was not confirmed may stay in the log; nothing else may be missing from it. */
async function expectLogCovers(rig: Rig, when: string): Promise<number> {
  const untrimmed = await rig.untrimmed();
  rig.expect(untrimmed >= 0, `${when}: the log holds every entry the replica has not applied (watermark - trimmed = ${untrimmed})`);
  return untrimmed;
}

export const consumerKills: Scenario = {
  name: 'consumer SIGKILLed',
  randomSize: (r) => ({ faultMs: 0, repeats: pick(r, 3, 8) }),
  async run(rig, { repeats }) {
    let next = rig.consumer('--batch-size', '50');
    for (let i = 0; i < repeats; i++) {
      const current = next;
      await current.waitForLog(stateIs('streaming'), 20_000, 'consumer streaming');
      // The next one waits as a standby and takes over once the lease runs out.
      next = rig.consumer('--batch-size', '50');
      await sleep(rig.between(50, 400));
      current.kill('SIGKILL');
      rig.fault('consumer SIGKILL');
      await current.exited;
      await expectLogCovers(rig, `after kill ${i + 1}`);
    }
  },
};

export const linkCut: Scenario = {
  name: 'replica link cut',
  randomSize: (r) => ({ faultMs: pick(r, 300, 5000), repeats: 1 }),
  async run(rig, { faultMs }) {
    const worker = rig.worker();
    await rig.reached(worker, ['streaming']);
    const atCut = await rig.queue();
    const cut = performance.now();
    rig.proxy.cut();
    rig.fault('replica link cut');
    await rig.reached(worker, ['backing-off'], cut);
    const master = rig.pair.master.client();
    const status = await eventually(
      async () => {
        const s = await readStatus(master, keys.prefix, keys.queue);
        return s.state === 'backing-off' ? s : undefined;
      },
      10_000,
      'status backing-off',
    );
    rig.expect(status.detail.side === 'replica', `the status names the replica as the broken side (${JSON.stringify(status.detail)})`);
    await sleep(Math.max(0, faultMs - (performance.now() - cut)));

    const atHeal = await rig.queue();
    const watermark = await rig.watermark();
    const appliedBefore = worker.applied;
    rig.expect(atHeal.depth > atCut.depth, `the queue grew while the link was cut (${atCut.depth} → ${atHeal.depth})`);
    const untrimmed = await expectLogCovers(rig, 'at the heal');
    rig.expect(
      untrimmed <= WORKER_DEFAULTS.window * WORKER_DEFAULTS.batchSize,
      `only batches in flight at the cut are applied but still in the log (${untrimmed})`,
    );
    const healed = performance.now();
    rig.proxy.heal();
    await rig.reached(worker, ['streaming'], healed);
    Object.assign(rig.notes, { depthAtCut: atCut.depth, depthAtHeal: atHeal.depth, recoveredMs: Math.round(performance.now() - healed) });

    const lacked = (await rig.drain()) - watermark;
    // The worker counts a batch once it confirmed it, just after the log shrank.
    const exact = await eventually(() => worker.applied - appliedBefore === lacked, 5000).then(
      () => true,
      () => false,
    );
    rig.expect(
      exact,
      `after the heal the worker applied just the entries the replica lacked (applied ${worker.applied - appliedBefore}, lacked ${lacked})`,
    );
  },
};

export const linkBlackhole: Scenario = {
  name: 'replica link blackholed',
  randomSize: (r) => ({ faultMs: pick(r, 1500, 5000), repeats: 1 }),
  async run(rig, { faultMs }) {
    const timeoutMs = 1000;
    const worker = rig.worker({ timeoutMs });
    await rig.reached(worker, ['streaming']);
    const start = performance.now();
    rig.proxy.blackhole();
    rig.fault('replica link blackholed');
    const noticedMs = (await rig.reached(worker, ['backing-off'], start)) - start;
    rig.notes.noticedMs = Math.round(noticedMs);
    // The link's timeout runs from the last unanswered command; allow for a busy machine.
    rig.expect(noticedMs < timeoutMs + 1000, `the worker noticed the dead link after ${Math.round(noticedMs)} ms (timeout ${timeoutMs} ms)`);
    await sleep(Math.max(0, faultMs - (performance.now() - start)));
    const healed = performance.now();
    rig.proxy.heal();
    await rig.reached(worker, ['streaming'], healed);
    rig.notes.recoveredMs = Math.round(performance.now() - healed);
  },
};

export const masterRestart: Scenario = {
  name: 'master SIGKILLed, restarted from AOF',
  rig: { master: { persistence: 'aof' } },
  randomSize: (r) => ({ faultMs: pick(r, 100, 1500), repeats: pick(r, 1, 3) }),
  async run(rig, { faultMs, repeats }) {
    const worker = rig.worker();
    await rig.reached(worker, ['streaming']);
    for (let i = 0; i < repeats; i++) {
      await sleep(rig.between(200, 800));
      const before = await rig.queue();
      const killed = performance.now();
      await rig.pair.master.stop('SIGKILL');
      rig.fault('master SIGKILL + restart');
      await rig.reached(worker, ['backing-off'], killed);
      await sleep(faultMs);
      await rig.pair.master.restart();
      const after = await rig.queue();
      rig.expect(after.seq >= before.seq, `the log's sequence survived the restart (${before.seq} before, ${after.seq} after)`);
      await expectLogCovers(rig, `after restart ${i + 1}`);
      await rig.reached(worker, ['streaming'], killed);
    }
    rig.expect(
      !worker.history.some((h) => h.state === 'resync-needed' || h.state === 'halted'),
      `the worker never stopped (${worker.history.map((h) => h.state).join(' → ')})`,
    );
  },
};

/** The link states the producer's latency is compared across. */
const LINK_STATES = ['normal', 'slow', 'cut'] as const;

export const slowReplica: Scenario = {
  name: 'slow replica link',
  // Large list values, so that the workload writes more bytes a second than the slow link carries.
  rig: { workload: { payloadBytes: 1000 } },
  randomSize: (r) => ({ faultMs: pick(r, 500, 2000), repeats: pick(r, 1, 3) }),
  async run(rig, { faultMs, repeats }) {
    const worker = rig.worker();
    await rig.reached(worker, ['streaming']);
    const samples: Record<(typeof LINK_STATES)[number], number[]> = { normal: [], slow: [], cut: [] };
    let growth = 0;
    // The states alternate, so that the machine's load drifting over time weighs on all alike.
    for (let round = 0; round < repeats; round++) {
      for (const state of LINK_STATES) {
        rig.proxy.heal();
        if (state === 'slow') rig.proxy.bandwidth(200 * 1024);
        if (state === 'cut') rig.proxy.cut();
        if (state !== 'normal') rig.fault(`replica link ${state}`);
        const before = await rig.queue();
        rig.workload.takeLatencies();
        await sleep(faultMs);
        samples[state].push(...rig.workload.takeLatencies());
        if (state === 'slow') growth = Math.max(growth, (await rig.queue()).depth - before.depth);
      }
    }
    rig.proxy.heal();
    const p50 = Object.fromEntries(LINK_STATES.map((s) => [s, median(samples[s])])) as Record<(typeof LINK_STATES)[number], number>;
    Object.assign(rig.notes, {
      p50NormalMs: p50.normal.toFixed(3),
      p50SlowMs: p50.slow.toFixed(3),
      p50CutMs: p50.cut.toFixed(3),
      depthGrowth: growth,
    });
    rig.expect(growth > 0, `the queue absorbed the writes the slow link could not carry (grew by ${growth})`);
    // A write that waited on the replica would take the link's delay (a cut link: forever); a busy
    // machine moves sub-millisecond medians by a millisecond or two, hence the slack.
    for (const state of ['slow', 'cut'] as const) {
      rig.expect(
        p50[state] < Math.max(2 * p50.normal, p50.normal + 5),
        `writes do not wait on a ${state} replica link (p50 ${p50[state].toFixed(3)} ms, ${p50.normal.toFixed(3)} ms on a normal link)`,
      );
    }
    rig.expect(rig.workload.ledger.failed === 0, `no write failed (${rig.workload.ledger.failed})`);
  },
};

/** The worker id a consumer logs with its states. */
async function idOf(cli: CliProcess): Promise<string> {
  return String((await cli.waitForLog((l) => typeof l.worker === 'string' && stateIs('standby', 'streaming', 'idle')(l), 20_000, 'a state')).worker);
}

export const twoConsumers: Scenario = {
  name: 'two consumers, active SIGKILLed',
  randomSize: (r) => ({ faultMs: pick(r, 300, 1500), repeats: pick(r, 1, 3) }),
  async run(rig, { faultMs, repeats }) {
    const master = rig.pair.master.client();
    let clis = [rig.consumer(), rig.consumer()];
    for (let i = 0; i < repeats; i++) {
      const ids = await Promise.all(clis.map(idOf));
      const holder = await eventually(
        async () => {
          const lease = await master.get(keys.lease);
          return lease !== null && ids.includes(lease) ? lease : undefined;
        },
        20_000,
        'a lease holder',
      );
      const a = ids.indexOf(holder);
      const [active, standby] = [clis[a], clis[1 - a]];
      await active.waitForLog(stateIs('streaming'), 20_000, 'active streaming');
      await sleep(faultMs);
      const status = await readStatus(master, keys.prefix, keys.queue);
      rig.expect(status.consumer?.id === holder, `the status names the lease holder as the consumer (${status.consumer?.id})`);
      rig.expect(
        !standby.logs().some((l) => l.worker === ids[1 - a] && stateIs('streaming', 'idle')(l)),
        'the standby applied nothing while the other held the lease',
      );
      active.kill('SIGKILL');
      rig.fault('active consumer SIGKILL');
      await standby.waitForLog((l) => l.worker === ids[1 - a] && l.state === 'streaming', 20_000, 'standby streaming');
      rig.expect((await master.get(keys.lease)) === ids[1 - a], 'the standby holds the lease after the takeover');
      clis = [standby, rig.consumer()];
    }
  },
};

const WINDOW = 8;
const BATCH = 50;

export const windowCrash: Scenario = {
  name: 'crash or cut with a full window',
  randomSize: (r) => ({ faultMs: pick(r, 200, 1500), repeats: pick(r, 3, 5) }),
  async run(rig, { faultMs, repeats }) {
    const kinds = ['cut + SIGKILL', 'SIGKILL', 'cut'] as const;
    // The link's round trip keeps each batch in flight a while, so the window stays full.
    const latency = 100;
    const first = Math.floor(rig.random() * kinds.length);
    const untrimmed: [string, number][] = [];
    for (let i = 0; i < repeats; i++) {
      const kind = kinds[(first + i) % kinds.length];
      rig.proxy.latency(latency);
      // A backlog of several windows, so that the window is full when the fault comes.
      await eventually(async () => (await rig.queue()).depth >= 6 * WINDOW * BATCH, 30_000, 'a backlog');
      const cli = rig.consumer('--window', String(WINDOW), '--batch-size', String(BATCH));
      await cli.waitForLog(stateIs('streaming'), 20_000, 'streaming');
      await sleep(rig.between(10, 100));
      const { depth } = await rig.queue();
      // The worker keeps its window full while the log holds more than a window.
      rig.expect(depth >= 2 * WINDOW * BATCH, `${kind}: the fault came with a full window in flight (backlog ${depth})`);
      if (kind !== 'SIGKILL') rig.proxy.cut();
      if (kind !== 'cut') {
        cli.kill('SIGKILL');
        await cli.exited;
      }
      rig.fault(`${kind}, window full`);
      untrimmed.push([kind, await expectLogCovers(rig, kind)]);
      await sleep(faultMs);
      const healed = performance.now();
      rig.proxy.heal();
      if (kind === 'cut') {
        // It recovers by itself; a graceful stop confirms what it applied and leaves.
        const streaming = cli.logs().filter(stateIs('streaming')).length;
        await eventually(() => cli.logs().filter(stateIs('streaming')).length > streaming, 20_000, 'streaming after the heal');
        rig.notes.cutRecoveredMs = Math.round(performance.now() - healed);
        cli.kill('SIGTERM');
        rig.expect((await cli.exited).code === 0, 'the consumer stops cleanly after recovering');
      }
    }
    // Entries applied whose confirmation the fault lost: several batches of the window.
    rig.notes.untrimmed = untrimmed.map(([kind, n]) => `${kind}: ${n}`).join(', ');
    rig.consumer('--window', String(WINDOW), '--batch-size', String(BATCH));
  },
};

export const SCENARIOS: Scenario[] = [consumerKills, linkCut, linkBlackhole, masterRestart, slowReplica, twoConsumers, windowCrash];
