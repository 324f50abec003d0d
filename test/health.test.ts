/**
 * /healthz and /readyz of `qsync consume --metrics-port`, answered from the
 * consumer's state, and the Node process metrics next to qsync's own.
 */
import test, { type ExecutionContext } from 'ava';
import { createProducer } from '../producer/index.js';
import { spawnCli, type CliProcess } from './support/cli.js';
import { startPair, waitForDrain, type Pair } from './support/fixtures.js';
import { eventually } from './support/wait.js';

interface Check {
  status: number;
  body: { ok: boolean; state: string; reason: string | null; detail: Record<string, unknown>; sinceMs: number };
}

/** A master, a replica and `qsync consume --metrics-port 0`; resolves with the base URL it serves. */
async function consumer(t: ExecutionContext): Promise<{ pair: Pair; base: string; cli: CliProcess }> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const cli = spawnCli(['consume', '--master', pair.master.url, '--replica', pair.replica.url, '--metrics-port', '0', '--lease-ms', '1000']);
  t.teardown(() => cli.kill('SIGKILL'));
  const { port } = await cli.waitForLog((l) => typeof l.port === 'number', 15_000, 'the metrics port');
  return { pair, base: `http://127.0.0.1:${port as number}`, cli };
}

async function check(base: string, path: string): Promise<Check> {
  const res = await fetch(`${base}${path}`);
  if (res.headers.get('content-type') !== 'application/json') throw new Error(`${path}: content-type ${res.headers.get('content-type')}`);
  return { status: res.status, body: (await res.json()) as Check['body'] };
}

/** Waits until `path` answers with `status` (and the check matches), and returns the answer. */
function answer(base: string, path: '/healthz' | '/readyz', status: number, state: RegExp): Promise<Check> {
  return eventually(
    async () => {
      const c = await check(base, path);
      if (c.status === status && state.test(c.body.state)) return c;
      throw new Error(`answered ${c.status} ${JSON.stringify(c.body)}`);
    },
    20_000,
    `${path} ${status} in state ${state}`,
  );
}

test('healthz and readyz answer 200 while the consumer streams, and /metrics has the process metrics', async (t) => {
  const { pair, base } = await consumer(t);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 10; i++) await db.incr('n');
  await waitForDrain(pair.master.client(), pair.replica.client());

  const ready = await answer(base, '/readyz', 200, /^(streaming|idle)$/);
  t.like(ready.body, { ok: true, reason: null });
  t.true(ready.body.sinceMs <= Date.now());
  t.like(await check(base, '/healthz'), { status: 200, body: { ok: true } });
  t.like(await check(base, '/readyz?verbose=1'), { status: 200 }, 'a query string is ignored');

  const metrics = await (await fetch(`${base}/metrics`)).text();
  for (const name of [
    'process_cpu_seconds_total',
    'process_resident_memory_bytes',
    'process_start_time_seconds',
    'nodejs_eventloop_lag_seconds',
    'nodejs_heap_size_used_bytes',
    'nodejs_version_info',
  ]) {
    t.regex(metrics, new RegExp(`^${name}(\\{[^}]*\\})? `, 'm'), name);
  }
  t.regex(metrics, /^qsync_queue_state\{queue="default",state="ok"\} 1$/m);
  const missing = await fetch(`${base}/health`);
  t.is(missing.status, 404);
  t.regex(await missing.text(), /\/healthz or \/readyz/);
});

test('readyz answers 503 with the reason once the consumer is halted, and 200 again once the cause is gone; healthz stays 200', async (t) => {
  const { pair, base } = await consumer(t);
  const master = pair.master.client();
  const db = createProducer(pair.master.client());
  await db.incr('n');
  await waitForDrain(master, pair.replica.client());
  const garbage = Buffer.from([0xc1, 0xff, 0x00]);
  await master.rpush('qsync:default:log', garbage);

  const halted = await answer(base, '/readyz', 503, /^halted$/);
  t.like(halted.body, { ok: false, reason: 'an entry in the log is not a qsync entry', detail: { log: 'qsync:default:log', index: 0 } });
  t.like(
    await check(base, '/healthz'),
    { status: 200, body: { ok: true, state: 'halted' } },
    'a halted consumer is alive: it checks again by itself',
  );

  await master.lrem('qsync:default:log', 1, garbage);
  t.like(await answer(base, '/readyz', 200, /^(streaming|idle)$/), { body: { ok: true, reason: null, detail: {} } });
});

test('readyz answers 503 once the consumer needs a resync (master restarted without persistence)', async (t) => {
  const { pair, base } = await consumer(t);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 5; i++) await db.incr('n');
  await waitForDrain(pair.master.client(), pair.replica.client());
  await answer(base, '/readyz', 200, /^(streaming|idle)$/);

  await pair.master.restart({ persistence: 'none' });
  const resync = await answer(base, '/readyz', 503, /^resync-needed$/);
  t.false(resync.body.ok);
  t.regex(String(resync.body.reason), /the master lost its data/);
  t.like(await check(base, '/healthz'), { status: 200, body: { state: 'resync-needed' } });
});
