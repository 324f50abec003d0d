/**
 * Mistakes an operator or an application makes on a bad day, each refused
 * with one line naming it, or said out loud: never a replica that silently
 * differs. The tests that start CLI processes run one at a time: a busy
 * machine starts them slowly.
 */
import test, { type ExecutionContext } from 'ava';
import net, { type AddressInfo } from 'node:net';
import { createProducer, ConfigError, ReservedKeyError, UnsupportedCommandError } from '../producer/index.js';
import { ExitCode } from '../shared/errors.js';
import { QueueKeys } from '../shared/keys.js';
import { aclRules } from '../shared/acl.js';
import { startPair, startWorker, waitForDrain, type Pair } from './support/fixtures.js';
import { freePort, startRedis, type RedisServer, type RedisServerOptions } from './support/redis-server.js';
import { startProxy } from './support/fault-proxy.js';
import { runCli, spawnCli, type CliProcess } from './support/cli.js';
import { eventually } from './support/wait.js';

const keys = new QueueKeys('qsync', 'default');

async function server(t: ExecutionContext, options: RedisServerOptions = {}): Promise<RedisServer> {
  const s = await startRedis(options);
  t.teardown(() => s.destroy());
  return s;
}

async function pairFor(t: ExecutionContext, master: RedisServerOptions = {}, replica: RedisServerOptions = {}): Promise<Pair> {
  const pair = await startPair(master, replica);
  t.teardown(() => pair.destroy());
  return pair;
}

function consumer(t: ExecutionContext, args: string[], env: Record<string, string> = {}): CliProcess {
  const cli = spawnCli(['consume', '--lease-ms', '1000', ...args], env);
  t.teardown(() => cli.kill('SIGKILL'));
  return cli;
}

/** Asserts a run failed with `code` and one stderr line that matches `names`, having started nothing. */
function assertOneLine(
  t: ExecutionContext,
  run: { code: number | null; stdout: string[]; stderr: string[] },
  code: number,
  names: RegExp,
  what = '',
): void {
  t.is(run.code, code, `${what}: ${run.stderr.join('\n')}`);
  t.is(run.stderr.length, 1, `${what}: ${run.stderr.join('\n')}`);
  t.regex(run.stderr[0] ?? '', names, what);
  t.false(
    run.stdout.some((l) => l.includes('starting')),
    `${what}: nothing started`,
  );
}

const warnings = (cli: CliProcess) =>
  cli
    .logs()
    .filter((l) => l.level === 40)
    .map((l) => String(l.msg));

/** The value of a metric line that starts with `name`. */
function metric(body: string, name: string): number | undefined {
  const line = body.split('\n').find((l) => l.startsWith(name));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

/**
 * A TCP relay to a server that passes requests at once and holds every
 * reply for `ms`: a link slower one way than the other, which TIME over
 * the round trip sees as the far clock being behind by half of it.
 */
async function slowReplies(t: ExecutionContext, port: number, ms: number): Promise<string> {
  const relay = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    client.pipe(upstream);
    upstream.on('data', (chunk) => setTimeout(() => client.writable && client.write(chunk), ms));
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', () => setTimeout(end, ms));
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => relay.close(() => resolve())));
  return `redis://127.0.0.1:${(relay.address() as AddressInfo).port}`;
}

test.serial('every command that takes a master and a replica refuses two names of one server: exit 2, one line, nothing written', async (t) => {
  const s = await server(t);
  const db = createProducer(s.client());
  await db.incr('n');
  await s.client().lpush(keys.dlq, 'not an entry');
  const proxy = await startProxy(s.port);
  t.teardown(() => proxy.close());
  const same = ['--master', `redis://127.0.0.1:${s.port}`, '--replica', `redis://localhost:${s.port}`];
  const runs: [string, string[]][] = [
    ['consume', ['consume', ...same]],
    ['consume through a proxy', ['consume', '--master', s.url, '--replica', proxy.url]],
    ['verify', ['verify', ...same]],
    ['resync', ['resync', ...same]],
    ['repair', ['repair', ...same]],
    ['dlq retry', ['dlq', 'retry', ...same, '--all']],
  ];
  for (const [what, args] of runs) {
    assertOneLine(t, await runCli(args), ExitCode.usage, /--master .* and --replica .* are the same Redis server \(run_id [0-9a-f]+\)/, what);
  }
  t.is(await s.client().get('n'), '1', 'the master was neither written to nor flushed');
  t.is(await s.client().hget(keys.applied, 'seq'), null, 'no watermark on the master');
});

test.serial('master and replica swapped after syncing: consume, verify and resync refuse, naming what was found where', async (t) => {
  const pair = await pairFor(t);
  const db = createProducer(pair.master.client());
  for (let i = 0; i < 3; i++) await db.incr('n');
  const worker = startWorker(pair);
  await waitForDrain(pair.master.client(), pair.replica.client());
  await worker.close();

  const swapped = ['--master', pair.replica.url, '--replica', pair.master.url];
  const [consume, verify, resync] = [
    await runCli(['consume', ...swapped]),
    await runCli(['verify', ...swapped]),
    await runCli(['resync', ...swapped]),
  ];
  const names = new RegExp(
    `look swapped: --replica redis://127\\.0\\.0\\.1:${pair.master.port} holds the sequence of queue 'default' \\(qsync:default:meta, seq 3\\) and --master redis://127\\.0\\.0\\.1:${pair.replica.port} holds its watermark \\(qsync:default:applied, seq 3\\)`,
  );
  assertOneLine(t, consume, ExitCode.usage, names, 'consume');
  assertOneLine(t, verify, ExitCode.usage, names, 'verify');
  assertOneLine(t, resync, ExitCode.usage, names, 'resync');
  t.is(await pair.master.client().get('n'), '3', 'the real master was not flushed');

  // The right way round it runs.
  const cli = consumer(t, ['--master', pair.master.url, '--replica', pair.replica.url]);
  await cli.waitForLog((l) => l.state === 'idle', 60_000, 'idle');
});

test.serial('queue and prefix names the CLI refuses are refused by createProducer too, naming the value', async (t) => {
  const s = await server(t);
  for (const bad of ['a:b', 'a{b}', 'a b', '']) {
    for (const option of ['queue', 'prefix'] as const) {
      const err = t.throws(() => createProducer(s.client(), { [option]: bad }), { instanceOf: ConfigError });
      t.is(err?.message, `qsync: the ${option} option must be 1 to 100 letters, digits, '.', '_' or '-', got '${bad}'`);
    }
    const run = await runCli(['status', '--master', s.url, '--queue', bad]);
    t.is(run.code, ExitCode.usage, `the CLI refuses '${bad}' too`);
  }
  t.throws(() => createProducer(s.client(), { queueDb: 20_000 }), { instanceOf: ConfigError, message: /queueDb option .*'20000'/ });
  const ok = createProducer(s.client(), { queue: 'orders-2.eu_west', prefix: 'app-sync' });
  t.is(await ok.set('k', 'v'), 'OK');
  t.is(await s.client().hget('app-sync:orders-2.eu_west:meta', 'seq'), '1');
});

test.serial(
  'a queue db the server does not have: the CLI exits 2 with one line, the producer refuses its first write with a ConfigError',
  async (t) => {
    const pair = await pairFor(t, { args: ['--databases', '4'] }, { args: ['--databases', '4'] });
    const beyond = ['--master', pair.master.url, '--replica', pair.replica.url, '--queue-db', '7'];
    const [consume, status, verify] = [
      await runCli(['consume', ...beyond]),
      await runCli(['status', ...beyond.slice(0, 2), '--queue-db', '7']),
      await runCli(['verify', ...beyond]),
    ];
    const names = new RegExp(`master redis://127\\.0\\.0\\.1:${pair.master.port} has no db 7 .*--queue-db`);
    assertOneLine(t, consume, ExitCode.usage, names, 'consume');
    assertOneLine(t, status, ExitCode.usage, names, 'status');
    assertOneLine(t, verify, ExitCode.usage, names, 'verify');

    const db = createProducer(pair.master.client(), { queueDb: 7 });
    await t.throwsAsync(db.set('k', 'v'), {
      instanceOf: ConfigError,
      message: "qsync: queueDb 7 does not exist on the master (its 'databases' setting is lower); nothing was written",
    });
    await t.throwsAsync(db.multi().incr('n').exec(), { instanceOf: ConfigError });
    t.is(await pair.master.client().exists('k', 'n'), 0, 'nothing was written');
  },
);

test("writes to keys in qsync's own namespace are refused before anything is sent, whole groups with them", async (t) => {
  const s = await server(t);
  const db = createProducer(s.client());
  await db.set('before', '1');
  const seq = await s.client().hget(keys.meta, 'seq');

  const refused: [string, () => Promise<unknown>][] = [
    ['qsync:app:1', () => db.set('qsync:app:1', 'v')],
    ['qsync:default:applied', () => db.hset('qsync:default:applied', 'seq', '0')],
    ['qsync:default:log', () => db.del('qsync:default:log')],
    ['qsync-jobs:default:meta', () => db.call('SET', 'qsync-jobs:default:meta', 'x')],
    ['qsync:bin', () => db.set(Buffer.from('qsync:bin'), 'v')],
    ['qsync:dest', () => db.sunionstore('qsync:dest', 'a', 'b')],
  ];
  for (const [key, write] of refused) {
    const err = await t.throwsAsync(write(), { instanceOf: ReservedKeyError });
    t.is(err?.key, key);
    t.true(err instanceof UnsupportedCommandError);
    t.regex(
      err?.message ?? '',
      new RegExp(`^qsync: [A-Z]+ on key '${key}' is refused: keys under 'qsync(-jobs)?:' in db 0 are qsync's own; .*nothing was written$`),
    );
  }
  const multi = db.multi().incr('n').set('qsync:x', 'v').incr('m');
  await t.throwsAsync(multi.exec(), { instanceOf: ReservedKeyError, message: /'qsync:x'/ });
  const pipeline = db.pipeline().incr('n').lpush('qsync:default:dlq', 'x');
  await t.throwsAsync(pipeline.exec(), { instanceOf: ReservedKeyError, message: /'qsync:default:dlq'/ });
  t.is(await s.client().exists('n', 'm', 'qsync:app:1', 'qsync:x', 'qsync:bin', 'qsync:dest', 'qsync-jobs:default:meta'), 0, 'nothing was written');
  t.is(await s.client().hget(keys.applied, 'seq'), null);
  t.is(await s.client().hget(keys.meta, 'seq'), seq, 'nothing was logged');

  // Reads are fine; so are those names in another db, and under another prefix.
  t.is(await db.hget(keys.meta, 'seq'), seq);
  await db.select(1);
  t.is(await db.set('qsync:app:1', 'v'), 'OK');
  const other = createProducer(s.client(), { prefix: 'sync' });
  t.is(await other.set('qsync:app:2', 'v'), 'OK');
  await t.throwsAsync(other.set('sync:app:2', 'v'), { instanceOf: ReservedKeyError });
});

test('a master that may evict: the producer refuses to write until the app allows it or the policy is fixed; reads keep their order', async (t) => {
  const s = await server(t, { args: ['--maxmemory-policy', 'allkeys-lru'] });
  const db = createProducer(s.client());
  const message =
    /^qsync: the master's maxmemory-policy is allkeys-lru: Redis may evict the queue's log \(qsync:default:log\).*allowEviction: true.*nothing was written$/;
  await t.throwsAsync(db.set('k', 'v'), { instanceOf: ConfigError, message });
  await t.throwsAsync(db.multi().incr('n').exec(), { instanceOf: ConfigError, message });
  await t.throwsAsync(db.pipeline().incr('n').exec(), { instanceOf: ConfigError, message });
  t.is(await s.client().exists('k', 'n', keys.log, keys.meta), 0, 'nothing was written or logged');

  const allowed = createProducer(s.client(), { allowEviction: true });
  t.is(await allowed.set('k', 'v'), 'OK');
  t.is(await s.client().hget(keys.meta, 'seq'), '1');

  await s.client().config('SET', 'maxmemory-policy', 'noeviction');
  await new Promise((r) => setTimeout(r, 1100));
  t.is(await db.incr('n'), 1, 'a fixed policy is seen again without a restart');
  const admin = s.client();
  const calls = async (command: string) => Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(await admin.info('commandstats'))?.[1] ?? 0);
  const [info, evals] = [await calls('info'), await calls('eval')];
  for (let i = 0; i < 20; i++) await db.incr('n');
  t.deepEqual([await calls('info'), await calls('eval')], [info + 2, evals], 'the answer is kept for the connection: no check per write');

  // A read issued after a write, before the first check answered, still sees it.
  const fresh = createProducer(s.client());
  void fresh.set('order', 'written');
  t.is(await fresh.get('order'), 'written');
});

test("the producer's ACL role is enough for the first write's check of the master", async (t) => {
  const s = await server(t);
  await s.client().call('ACL', 'SETUSER', 'app', 'on', '>app-secret', '~app:*', ...aclRules('producer'));
  const db = createProducer(s.client(0, { username: 'app', password: 'app-secret' }));
  t.is(await db.set('app:1', 'v'), 'OK');
  t.is(await s.client().hget(keys.meta, 'seq'), '1');
});

test.serial('a master or replica that may evict: consume warns at start, status and the metrics say so', async (t) => {
  const pair = await pairFor(t, {}, { args: ['--maxmemory-policy', 'volatile-lru'] });
  const port = await freePort();
  const cli = consumer(t, ['--master', pair.master.url, '--replica', pair.replica.url, '--metrics-port', String(port)]);
  await cli.waitForLog((l) => l.state === 'idle', 60_000, 'idle');
  const [warning] = warnings(cli);
  t.regex(warning ?? '', /^replica maxmemory-policy is volatile-lru: .*set noeviction$/);
  const started = cli.logs().findIndex((l) => l.state !== undefined);
  t.true(cli.logs().findIndex((l) => l.msg === warning) < started, 'the warning comes before the worker starts');

  const run = await runCli(['status', '--master', pair.master.url, '--json']);
  t.is(run.code, ExitCode.ok, run.stderr.join('\n'));
  const [row] = JSON.parse(run.stdout.join('\n')) as { warnings: string[]; maxmemoryPolicy: unknown }[];
  t.deepEqual(row.maxmemoryPolicy, { master: 'noeviction', replica: 'volatile-lru' });
  t.deepEqual(row.warnings, [warning]);
  const text = await runCli(['status', '--master', pair.master.url]);
  t.true(text.stdout.includes('  memory policy   master noeviction, replica volatile-lru'), text.stdout.join('\n'));
  t.true(text.stdout.includes(`  warning         ${warning}`), text.stdout.join('\n'));

  const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  t.is(metric(body, 'qsync_eviction_possible{queue="default",side="replica",policy="volatile-lru"}'), 1);
  t.is(metric(body, 'qsync_eviction_possible{queue="default",side="master",policy="noeviction"}'), 0);
});

test.serial('the clock offset is measured over the round trip, shown in status and metrics, and warned about above the bound', async (t) => {
  const pair = await pairFor(t);
  // A slow link both ways is no offset.
  const slow = await startProxy(pair.replica.port);
  t.teardown(() => slow.close());
  slow.latency(150);
  const port = await freePort();
  const even = consumer(t, ['--master', pair.master.url, '--replica', slow.url, '--metrics-port', String(port)]);
  await even.waitForLog((l) => l.state === 'idle', 60_000, 'idle');
  const run = await runCli(['status', '--master', pair.master.url, '--json']);
  const [row] = JSON.parse(run.stdout.join('\n')) as {
    clock: { offsetMs: number; uncertaintyMs: number; maxOffsetMs: number };
    warnings: string[];
  }[];
  t.true(Math.abs(row.clock.offsetMs) < 100, `offset ${row.clock.offsetMs} ms over a 300 ms round trip`);
  t.true(row.clock.uncertaintyMs >= 140, `uncertainty ${row.clock.uncertaintyMs} ms`);
  t.is(row.clock.maxOffsetMs, 1000);
  t.deepEqual(row.warnings, []);
  t.deepEqual(warnings(even), []);
  const offset = metric(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), 'qsync_clock_offset_seconds{queue="default"}');
  t.true(offset !== undefined && Math.abs(offset) < 0.1, String(offset));
  even.kill('SIGTERM');
  await even.exited;

  // Replies 600 ms late and requests on time: the replica's TIME reads about 300 ms behind.
  const late = await slowReplies(t, pair.replica.port, 600);
  const skewed = consumer(t, ['--master', pair.master.url, '--replica', late], { QSYNC_MAX_CLOCK_OFFSET_MS: '100' });
  const logged = await skewed.waitForLog((l) => l.level === 40, 60_000, 'a clock warning');
  t.regex(String(logged.msg), /^replica clock is \d+ ms behind the master's \(more than 100 ms\): expiries/);
  t.true(Number(logged.clockOffsetMs) < -200 && Number(logged.clockOffsetMs) > -400, String(logged.clockOffsetMs));
  const text = await eventually(
    async () => {
      const r = await runCli(['status', '--master', pair.master.url]);
      return r.stdout.some((l) => /^ {2}clock offset {4}replica \d+ ms behind the master \(±\d+ ms\), measured/.test(l)) ? r.stdout : undefined;
    },
    30_000,
    'the offset in status',
  );
  t.true(
    text.some((l) => l.startsWith('  warning         replica clock is')),
    text.join('\n'),
  );
});
