import test, { type ExecutionContext } from 'ava';
import { createProducer } from '../producer/index.js';
import { ExitCode } from '../shared/errors.js';
import { startPair, waitForDrain, type Pair } from './support/fixtures.js';
import { freePort } from './support/redis-server.js';
import { runCli, spawnCli, type CliProcess } from './support/cli.js';
import { eventually } from './support/wait.js';

function metric(body: string, name: string): number | undefined {
  const line = body.split('\n').find((l) => l.startsWith(name));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

/** A master, a replica and `qsync consume --metrics-port`, all gone after the test. */
async function consumerWithMetrics(t: ExecutionContext): Promise<{ pair: Pair; port: number; worker: CliProcess }> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const port = await freePort();
  const worker = spawnCli([
    'consume',
    '--master',
    pair.master.url,
    '--replica',
    pair.replica.url,
    '--metrics-port',
    String(port),
    '--lease-ms',
    '1000',
  ]);
  t.teardown(() => worker.kill('SIGKILL'));
  return { pair, port, worker };
}

test('consume --metrics-port serves depth, sequence, watermark, applied entries, apply latency and state', async (t) => {
  const { pair, port, worker } = await consumerWithMetrics(t);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 20; i++) await db.incr('n');
  await waitForDrain(pair.master.client(), pair.replica.client());

  const body = await eventually(
    async () => {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      return metric(text, 'qsync_entries_applied_total{queue="default"}') === 20 ? text : undefined;
    },
    10_000,
    'metrics after the drain',
  );
  t.is(metric(body, 'qsync_queue_depth{queue="default"}'), 0);
  t.is(metric(body, 'qsync_master_sequence{queue="default"}'), 20);
  t.is(metric(body, 'qsync_replica_watermark{queue="default"}'), 20);
  t.is(metric(body, 'qsync_lag_entries{queue="default"}'), 0);
  t.true((metric(body, 'qsync_batch_apply_seconds_count{queue="default"}') ?? 0) >= 1);
  t.regex(body, /qsync_state\{queue="default",state="(streaming|idle)"\} 1/);
  t.is((await fetch(`http://127.0.0.1:${port}/nope`)).status, 404);

  worker.kill('SIGTERM');
  t.like(await worker.exited, { code: 0 });
});

test('the metrics show the progress of the control job the consumer runs, and that it ended', async (t) => {
  const { pair, port } = await consumerWithMetrics(t);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 30; i++) await db.set(`k${i}`, String(i));
  await waitForDrain(pair.master.client(), pair.replica.client());

  const run = await runCli(['verify', '--job', '--master', pair.master.url], {}, 60_000);
  t.is(run.code, ExitCode.ok, run.stderr.join('\n'));
  const body = await eventually(
    async () => {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      return metric(text, 'qsync_job_running{queue="default",job="verify"}') === 0 ? text : undefined;
    },
    10_000,
    'the job in the metrics',
  );
  const total = metric(body, 'qsync_job_progress_total{queue="default",job="verify"}');
  t.true((total ?? 0) >= 30, String(total));
  t.is(metric(body, 'qsync_job_progress_done{queue="default",job="verify"}'), total);
});

test('a db in a URL is refused, since entries replay into their own db', async (t) => {
  const run = await runCli(['consume', '--master', 'redis://127.0.0.1:1/3', '--replica', 'redis://127.0.0.1:2']);
  t.is(run.code, ExitCode.usage);
  t.deepEqual(run.stderr.length, 1);
  t.regex(run.stderr[0], /--master 'redis:\/\/127\.0\.0\.1:1\/3' names db 3/);
});
