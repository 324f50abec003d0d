/**
 * Faults under load: nothing is lost and nothing is applied twice. Each
 * scenario (soak/scenarios.ts) runs real redis-server processes with the
 * mixed workload writing through the producer while it injects its fault,
 * states what must hold meanwhile, and ends with the replica equal to the
 * master key by key and to the ledger of the writes.
 *
 * QSYNC_FAULT_SECONDS sets how long a cut or blackholed link lasts (default
 * 3); QSYNC_SEED replays a run's random choices (timing still varies).
 */
import test, { type ExecutionContext } from 'ava';
import { createWorkload } from './support/workload.js';
import { startRedis } from './support/redis-server.js';
import { eventually } from './support/wait.js';
import { keys } from '../soak/rig.js';
import {
  runScenario,
  consumerKills,
  linkCut,
  linkBlackhole,
  masterRestart,
  slowReplica,
  twoConsumers,
  windowCrash,
  type Scenario,
  type Size,
} from '../soak/scenarios.js';
import { soak, tables } from '../soak/loop.js';

const FAULT_MS = 1000 * Number(process.env.QSYNC_FAULT_SECONDS ?? 3);
const SEED = Number(process.env.QSYNC_SEED ?? Math.floor(Math.random() * 2 ** 31));

/** Runs the scenario: every expectation it states must hold, and every write must be on the replica once. */
async function intact(t: ExecutionContext, scenario: Scenario, size: Size): Promise<void> {
  t.log(`seed ${SEED}`);
  const outcome = await runScenario(scenario, { seed: SEED, size });
  t.log(JSON.stringify({ faults: outcome.faults, written: outcome.written, ...outcome.notes }));
  t.deepEqual(outcome.violations, []);
  t.true(Object.keys(outcome.faults).length > 0, 'faults were injected');
  t.is(outcome.applied, outcome.written, 'the replica applied every entry written');
  t.is(outcome.lost, 0);
  t.is(outcome.doubled, 0);
  t.deepEqual(outcome.differing, []);
}

test.serial('the ledger finds a write lost and a write applied twice', async (t) => {
  const server = await startRedis();
  t.teardown(() => server.destroy());
  const db = server.client(0);
  const workload = createWorkload({ port: server.port });
  await workload.start();
  await eventually(async () => (await db.llen(keys.log)) >= 300, 10_000, 'writes');
  const ledger = await workload.stop();
  t.deepEqual(await ledger.check(server), { lost: 0, doubled: 0, problems: [] });
  // Writes behind the producer's back stand for what a faulty replay would do.
  const inList = (bag: { sure: Set<string>; popped: Set<string> }) => [...bag.sure].find((v) => !bag.popped.has(v));
  const [id, bag] = [...ledger.lists].find(([id, bag]) => id.startsWith('0 ') && inList(bag))!;
  const [list, value] = [id.slice(2), inList(bag)!];
  await db.lpush(list, value);
  t.like(await ledger.check(server), { lost: 0, doubled: 1 });
  await db.lrem(list, 0, value);
  t.like(await ledger.check(server), { lost: 1, doubled: 0 });
  await db.lpush(list, value);
  await db.incrby('counter:0', 2);
  t.like(await ledger.check(server), { lost: 0, doubled: 2 });
  await db.decrby('counter:0', 5);
  t.like(await ledger.check(server), { lost: 3, doubled: 0 });
});

test.serial('a consumer SIGKILLed at 20 random moments under load loses nothing and applies nothing twice', (t) =>
  intact(t, consumerKills, { faultMs: 0, repeats: 20 }),
);

test.serial('a cut replica link queues the writes; after the heal the worker recovers by itself and applies only what the replica lacks', (t) =>
  intact(t, linkCut, { faultMs: FAULT_MS, repeats: 1 }),
);

test.serial('a blackholed replica link is noticed within the link timeout, and the worker recovers after the heal', (t) =>
  intact(t, linkBlackhole, { faultMs: FAULT_MS, repeats: 1 }),
);

test.serial('a master SIGKILLed and restarted from its AOF keeps its queue, and streaming resumes', (t) =>
  intact(t, masterRestart, { faultMs: 1000, repeats: 1 }),
);

test.serial("a slow or cut replica link does not slow the producer's writes; the queue absorbs the backlog and drains after the heal", (t) =>
  intact(t, slowReplica, { faultMs: 1000, repeats: 2 }),
);

test.serial('of two consumers started at once one applies, and the standby takes over when the active one is SIGKILLed', (t) =>
  intact(t, twoConsumers, { faultMs: 1000, repeats: 1 }),
);

test.serial('a crash, a cut link, or both, with a full window of batches in flight lose nothing and apply nothing twice', (t) =>
  intact(t, windowCrash, { faultMs: 500, repeats: 3 }),
);

test.serial('a short soak of random faults at random moments loses nothing, applies nothing twice and leaves the replica equal', async (t) => {
  t.log(`seed ${SEED}`);
  const outcomes = await soak({ seconds: 20, seed: SEED });
  t.log(`\n${tables(outcomes)}`);
  t.true(outcomes.length > 0);
  for (const o of outcomes) {
    const run = `${o.scenario} (seed ${o.seed})`;
    t.deepEqual(o.violations, [], run);
    t.is(o.applied, o.written, run);
    t.deepEqual([o.lost, o.doubled, o.differing.length], [0, 0, 0], run);
  }
});
