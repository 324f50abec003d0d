/**
 * The examples run as their READMEs say (`npx tsx examples/<name>/server.ts`
 * with environment variables), against real redis-server processes and a
 * real `qsync consume`.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import test, { type ExecutionContext } from 'ava';
import { ExitCode } from '../shared/errors.js';
import { runCli, spawnCli } from './support/cli.js';
import { datasetDiff, startPair, waitForDrain, type Pair } from './support/fixtures.js';
import { eventually } from './support/wait.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** Process groups of the examples still running, ended if the test process exits first. */
const running = new Set<number>();
process.on('exit', () => {
  for (const pid of running) killGroup(pid, 'SIGKILL');
});

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // The whole group has exited already.
  }
}

/**
 * Runs `npx tsx <file>` from the checkout's root and resolves with the first
 * URL it prints. It runs in its own process group (npx, tsx and the app),
 * stopped as a whole after the test.
 */
async function runExample(t: ExecutionContext, file: string, env: Record<string, string>): Promise<string> {
  const child = spawn('npx', ['tsx', file], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const pid = child.pid!;
  running.add(pid);
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  t.teardown(async () => {
    killGroup(pid, 'SIGTERM');
    const timer = setTimeout(() => killGroup(pid, 'SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
    running.delete(pid);
  });
  const output: string[] = [];
  for (const stream of [child.stdout, child.stderr]) createInterface({ input: stream }).on('line', (line) => output.push(line));
  const url = await Promise.race([
    eventually(() => output.map((l) => /https?:\/\/\S+/.exec(l)?.[0]).find(Boolean), 30_000, `${file} listening`),
    exited.then((code) => {
      throw new Error(`${file} exited with ${code}: ${output.join('\n')}`);
    }),
  ]);
  return url.replace(/\/$/, '');
}

async function pairWithConsumer(t: ExecutionContext): Promise<Pair> {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const consumer = spawnCli(['consume', '--master', pair.master.url, '--replica', pair.replica.url, '--lease-ms', '1000']);
  t.teardown(() => consumer.kill('SIGKILL'));
  return pair;
}

async function call(method: string, url: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

test('the Express example writes through the producer and the replica gets every write', async (t) => {
  const pair = await pairWithConsumer(t);
  const app = await runExample(t, 'examples/express-app/server.ts', { MASTER_URL: pair.master.url, PORT: '0' });

  t.like(await call('POST', `${app}/counters/visits`), { status: 200, json: { value: 1 } });
  t.like(await call('POST', `${app}/counters/visits?by=10`), { status: 200, json: { value: 11 } });
  t.like(await call('POST', `${app}/counters/visits?by=x`), { status: 400 });
  t.like(await call('PUT', `${app}/carts/ann/items/tea`, { qty: 2 }), { status: 200, json: { items: { tea: 2 } } });
  t.like(await call('PUT', `${app}/carts/ann/items/cake`, { qty: 1 }), { status: 200, json: { items: { tea: 2, cake: 1 } } });
  t.like(await call('PUT', `${app}/carts/ann/items/jam`, { qty: 3 }), { status: 200 });
  t.like(await call('DELETE', `${app}/carts/ann/items/jam`), { status: 200, json: { items: { tea: 2, cake: 1 } } });
  t.like(await call('PUT', `${app}/carts/bob/items/tea`, { qty: 5 }), { status: 200 });
  t.like(await call('POST', `${app}/carts/ann/checkout`), { status: 201, json: { order: 'order:1', items: { tea: 2, cake: 1 } } });
  t.like(await call('POST', `${app}/carts/ann/checkout`), { status: 409 });
  t.like(await call('GET', `${app}/counters/visits`), { status: 200, json: { value: 11 } });

  await waitForDrain(pair.master.client(), pair.replica.client());
  const replica = pair.replica.client();
  t.is(await replica.get('counter:visits'), '11');
  t.deepEqual(await replica.hgetall('order:1'), { user: 'ann', tea: '2', cake: '1' });
  t.deepEqual(await replica.lrange('orders:ann', 0, -1), ['order:1']);
  t.deepEqual([await replica.get('stock:tea'), await replica.get('stock:cake')], ['-2', '-1']);
  t.is(await replica.exists('cart:ann'), 0, 'the checkout emptied the cart on the replica too');
  t.deepEqual(await replica.hgetall('cart:bob'), { tea: '5' });
  t.true((await replica.pttl('cart:bob')) > 6 * 24 * 3600 * 1000, 'the cart expiry reached the replica');
  t.deepEqual(await datasetDiff(pair.master, pair.replica, { dbs: 1 }), []);
});

test('the Bull Board example lists the control-jobs queue and a verify job a consumer ran', async (t) => {
  const pair = await pairWithConsumer(t);
  await pair.master.client().set('k', 'v'); // a key for verify to find missing on the replica
  const verify = await runCli(['verify', '--job', '--master', pair.master.url, '--json'], {}, 60_000);
  t.is(verify.code, ExitCode.different, verify.stderr.join('\n'));

  const board = await runExample(t, 'examples/bull-board/server.ts', { MASTER_URL: pair.master.url, PORT: '0' });
  const page = await fetch(`${board}/`);
  t.is(page.status, 200);
  t.regex(await page.text(), /qsync control jobs/);

  const { json } = await call('GET', `${board}/api/queues?activeQueue=default&status=completed`);
  const queues = json.queues as {
    name: string;
    counts: Record<string, number>;
    readOnlyMode: boolean;
    jobs: { name: string; returnValue: unknown }[];
  }[];
  t.deepEqual(
    queues.map((q) => q.name),
    ['default'],
  );
  const [queue] = queues;
  t.is(queue.counts.completed, 1);
  t.true(queue.readOnlyMode);
  t.is(queue.jobs.length, 1);
  t.is(queue.jobs[0].name, 'verify');
  t.like(queue.jobs[0].returnValue, { differences: 1, byKind: { 'missing-on-replica': 1 } });
});
