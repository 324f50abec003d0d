import test from 'ava';
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { startRedis } from './support/redis-server.js';
import { startPair, startWorker, waitForDrain, datasetDiff } from './support/fixtures.js';
import { makeCertificates } from './support/tls.js';
import { createProducer } from '../producer/index.js';
import { aclRules } from '../shared/acl.js';
import { redisOptionsFromUrl } from '../shared/config.js';
import { ExitCode } from '../shared/errors.js';

const run = promisify(execFile);

async function qsync(...args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    const { stderr } = await run('node', ['bin/qsync.js', ...args], { timeout: 30_000 });
    return { code: 0, stderr };
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
}

test('the documented least-privilege ACL users are enough to replicate, and no more', async (t) => {
  const pair = await startPair();
  t.teardown(() => pair.destroy());
  const admin = { m: pair.master.client(), r: pair.replica.client() };
  await admin.m.call('ACL', 'SETUSER', 'qsync-consumer', 'on', '>m-secret', ...aclRules('consumer-master'));
  await admin.r.call('ACL', 'SETUSER', 'qsync-consumer', 'on', '>r-secret', ...aclRules('consumer-replica'));
  await admin.m.call('ACL', 'SETUSER', 'app', 'on', '>app-secret', '~app:*', '+get', '+info', ...aclRules('producer'));

  const app = createProducer(pair.master.client(0, { username: 'app', password: 'app-secret' }));
  await app.set('app:name', 'x', 'EX', 100);
  await app.multi().incr('app:visits').lpush('app:recent', 'u1').hset('app:h', 'f', '1').exec();
  await app.spop('app:none');
  const worker = startWorker(pair, {
    master: { host: pair.master.host, port: pair.master.port, username: 'qsync-consumer', password: 'm-secret' },
    replica: { host: pair.replica.host, port: pair.replica.port, username: 'qsync-consumer', password: 'r-secret' },
  });
  t.teardown(() => worker.close());
  await waitForDrain(admin.m, admin.r);
  t.deepEqual(await datasetDiff(pair.master, pair.replica), []);

  const consumerOnMaster = pair.master.client(0, { username: 'qsync-consumer', password: 'm-secret' });
  await t.throwsAsync(consumerOnMaster.get('app:name'), { message: /NOPERM/ });
  await t.throwsAsync(consumerOnMaster.call('FLUSHALL'), { message: /NOPERM/ });
});

test('TLS on both links: verified with the CA, refused without it (exit 5)', async (t) => {
  const certs = makeCertificates();
  t.teardown(() => rmSync(certs.dir, { recursive: true, force: true }));
  const tls = { ...certs, args: ['--tls-auth-clients', 'optional'] };
  const [m, r] = await Promise.all([startRedis({ tls: certs, args: tls.args }), startRedis({ tls: certs, args: tls.args })]);
  const pair = { master: m, replica: r, destroy: async () => void (await Promise.all([m.destroy(), r.destroy()])) };
  t.teardown(() => pair.destroy());

  const masterOpts = redisOptionsFromUrl(`rediss://127.0.0.1:${m.port}`, '--master', { ca: certs.caFile });
  const replicaOpts = redisOptionsFromUrl(`rediss://127.0.0.1:${r.port}`, '--replica', { ca: certs.caFile });
  const app = createProducer(m.client());
  await app.set('k', 'v');
  await app.incrbyfloat('f', '1.5');
  const worker = startWorker(pair, { master: masterOpts, replica: replicaOpts });
  t.teardown(() => worker.close());
  await waitForDrain(m.client(), r.client());
  t.deepEqual(await datasetDiff(m, r), []);

  const noCa = await qsync('status', '--master', `rediss://127.0.0.1:${m.port}`);
  t.is(noCa.code, ExitCode.tls);
  t.regex(noCa.stderr.trim(), /^qsync: TLS with master .* failed/);
  t.is(noCa.stderr.trim().split('\n').length, 1);

  const plainToTls = await qsync('status', '--master', `redis://127.0.0.1:${m.port}`);
  t.not(plainToTls.code, 0);
  const withCa = await qsync('status', '--master', `rediss://127.0.0.1:${m.port}`, '--tls-ca', certs.caFile, '--json');
  t.is(withCa.code, 0, withCa.stderr);
});
