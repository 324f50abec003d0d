/**
 * The `qsync` command line as users run it: one clear line and a distinct
 * exit code for each kind of failure, `status` that matches what Redis holds,
 * and no password in any output.
 */
import test, { type ExecutionContext } from 'ava';
import { createProducer } from '../producer/index.js';
import { ExitCode } from '../shared/errors.js';
import { QueueKeys } from '../shared/keys.js';
import { startPair, startWorker, waitForDrain, type Pair } from './support/fixtures.js';
import { freePort, startRedis, type RedisServerOptions } from './support/redis-server.js';
import { runCli, spawnCli } from './support/cli.js';
import { eventually } from './support/wait.js';

const keys = new QueueKeys('qsync', 'default');

async function pairFor(t: ExecutionContext, master: RedisServerOptions = {}, replica: RedisServerOptions = {}): Promise<Pair> {
  const pair = await startPair(master, replica);
  t.teardown(() => pair.destroy());
  return pair;
}

/** Asserts a run failed with `code` and a single stderr line that matches `names`. */
function assertOneLine(t: ExecutionContext, run: { code: number | null; stdout: string[]; stderr: string[] }, code: number, names: RegExp): void {
  t.is(run.code, code, run.stderr.join('\n'));
  t.is(run.stderr.length, 1, run.stderr.join('\n'));
  t.regex(run.stderr[0] ?? '', names);
  t.notRegex(run.stderr[0] ?? '', /\n|\s+at\s.+:\d+/, 'no stack trace');
  t.deepEqual(run.stdout, []);
}

test('bad flags, URLs and values each give one line naming the value and exit code 2', async (t) => {
  const port = await freePort();
  const ok = ['--master', `redis://127.0.0.1:${port}`, '--replica', `redis://127.0.0.1:${port}`];
  const cases: [string[], RegExp][] = [
    [['consume', ...ok, '--bogus'], /--bogus/],
    [['consume', '--master', 'http://127.0.0.1:6379', '--replica', `redis://127.0.0.1:${port}`], /--master 'http:\/\/127\.0\.0\.1:6379'/],
    [['consume', ...ok, '--batch-size', '0'], /--batch-size .*'0'/],
    [['consume', ...ok, '--window', 'abc'], /--window .*'abc'/],
    [['consume', '--master', `redis://127.0.0.1:${port}`], /--replica/],
    [['status'], /--master/],
    [['status', '--master', `redis://:p%zz@127.0.0.1:${port}`], /--master 'redis:\/\/:\*\*\*@127\.0\.0\.1:\d+' has a bad %-escape/],
  ];
  const [noCommand, ...runs] = await Promise.all([runCli([]), ...cases.map(([args]) => runCli(args))]);
  runs.forEach((run, i) => {
    assertOneLine(t, run, ExitCode.usage, cases[i][1]);
  });
  t.is(noCommand.code, ExitCode.usage, 'no command is a usage error, not a success');
});

test('status on an unreachable master: one line, exit 3', async (t) => {
  const port = await freePort();
  const run = await runCli(['status', '--master', `redis://127.0.0.1:${port}`]);
  assertOneLine(t, run, ExitCode.unreachable, new RegExp(`cannot reach master redis://127\\.0\\.0\\.1:${port}`));
});

test('status with a wrong or missing password: one line, exit 4, the password not shown', async (t) => {
  const server = await startRedis({ password: 'the-right-one' });
  t.teardown(() => server.destroy());
  const wrong = await runCli(['status', '--master', `redis://:not-it-at-all@127.0.0.1:${server.port}`]);
  assertOneLine(t, wrong, ExitCode.auth, /refused the credentials/);
  t.false(wrong.stderr[0].includes('not-it-at-all'));
  const missing = await runCli(['status', '--master', `redis://127.0.0.1:${server.port}`]);
  assertOneLine(t, missing, ExitCode.auth, /refused the credentials/);
});

test('status --json shows depth, age, sequence, watermark, lag, consumer and state; depth is LLEN of the log', async (t) => {
  const pair = await pairFor(t);
  const worker = startWorker(pair, { leaseMs: 5000 });
  t.teardown(() => worker.close());
  const master = pair.master.client();
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 5; i++) await db.incr('n');
  await waitForDrain(master, pair.replica.client());
  // An entry the replica refuses keeps it and everything after it in the log.
  // (The master holds k too, written around qsync: a key the master lacked
  // would be deleted on the replica before the LPUSH.)
  await pair.replica.client().set('k', 'a string');
  await master.rpush('k', 'm');
  await db.lpush('k', 'x');
  await db.incr('n');
  await db.incr('n');
  await eventually(async () => (await master.hget(keys.status, 'state')) === 'halted', 10_000, 'halted');

  const run = await runCli(['status', '--master', pair.master.url, '--json']);
  t.is(run.code, ExitCode.halted, 'status exits with the worst state, for use as a check');
  const [row] = JSON.parse(run.stdout.join('\n')) as Record<string, unknown>[];
  t.is(row.depth, await master.llen(keys.log), 'depth is LLEN of the log');
  t.like(row, { queue: 'default', depth: 3, masterSeq: 8, replicaWatermark: 5, lagEntries: 3, state: 'halted' });
  t.like(row.consumer, { id: worker.id });
  t.true(typeof row.oldestEntryAgeMs === 'number' && Number(row.oldestEntryAgeMs) >= 0, String(row.oldestEntryAgeMs));
  t.like(row.detail, { seq: 6, command: 'LPUSH k x' });
  t.is(row.logKey, keys.log);
});

test('consume with passwords in both URLs and debug logs never prints a password', async (t) => {
  const [mPass, rPass] = ['m4ster-Secret-x1', 'rep1ica-Secret-y2'];
  const pair = await pairFor(t, { password: mPass }, { password: rPass, persistence: 'aof' });
  const cli = spawnCli(['consume', '--master', pair.master.url, '--replica', pair.replica.url, '--log-level', 'debug', '--lease-ms', '1000']);
  t.teardown(() => cli.kill('SIGKILL'));
  await cli.waitForLog((l) => l.state === 'idle', 20_000, 'idle');
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 10; i++) await db.incr('n');
  await waitForDrain(pair.master.client(), pair.replica.client());
  // A broken link puts URLs and errors in the logs too.
  await pair.replica.stop();
  await db.incr('n');
  await cli.waitForLog((l) => l.state === 'backing-off', 10_000, 'backing-off');
  await pair.replica.restart();
  await waitForDrain(pair.master.client(), pair.replica.client(), { timeoutMs: 40_000 });
  cli.kill('SIGTERM');
  t.is((await cli.exited).code, 0);

  const wrong = await runCli(['consume', '--master', `redis://:${mPass}-wrong@127.0.0.1:${pair.master.port}`, '--replica', pair.replica.url]);
  t.is(wrong.code, ExitCode.auth, wrong.stderr.join('\n'));

  const output = [...cli.stdout, ...cli.stderr, ...wrong.stdout, ...wrong.stderr];
  t.true(cli.stdout.length > 5, 'the consumer logged');
  for (const secret of [mPass, rPass]) {
    t.deepEqual(
      output.filter((line) => line.includes(secret)),
      [],
      `no line contains ${secret}`,
    );
  }
});
