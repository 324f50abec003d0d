/**
 * The documented least-privilege ACL users on Redis Cluster: the producer,
 * the consumer's users on every source and target node, and the operator's
 * for status; a 3-shard source drained to a 2-shard target through them
 * alone, with no command or key refused on any node (ACL LOG empty).
 */
import test from 'ava';
import type { Redis } from 'ioredis';
import { ClusterConsumer } from '../consumer/cluster/consumer.js';
import { createProducer } from '../producer/index.js';
import { aclRules, type AclRole } from '../shared/acl.js';
import { createLogger } from '../shared/logger.js';
import { runCli } from './support/cli.js';
import { startCluster, type LocalCluster } from './support/redis-cluster.js';
import { eventually } from './support/wait.js';

/** The same user on every node of a cluster (ACLs are per node). */
async function setUser(cluster: LocalCluster, user: string, password: string, rules: string[]): Promise<void> {
  for (const n of [...cluster.masters, ...cluster.replicas]) await n.admin.call('ACL', 'SETUSER', user, 'on', `>${password}`, ...rules);
}

/**
 * What each node refused since the test began, as `port user: reason object`;
 * CONFIG left out: the consumer's user may not run it, and the consumer then
 * says so once and relies on the notifications the operator set (or its sweep).
 */
async function refusals(cluster: LocalCluster): Promise<string[]> {
  const out: string[] = [];
  for (const n of cluster.masters) {
    const entries = (await n.admin.call('ACL', 'LOG')) as unknown[][];
    for (const e of entries) {
      const f = new Map<string, unknown>();
      for (let i = 0; i < e.length; i += 2) f.set(String(e[i]), e[i + 1]);
      if (String(f.get('object')).startsWith('config|')) continue;
      out.push(`${n.server.port} ${f.get('username')}: ${f.get('reason')} ${f.get('object')}`);
    }
  }
  return out;
}

const role = (r: AclRole) => aclRules(r);

test('the documented ACL users drain a 3-shard source to a 2-shard target; no node refuses anything', async (t) => {
  const [source, target] = await Promise.all([startCluster({ masters: 3 }), startCluster({ masters: 2 })]);
  t.teardown(() => Promise.all([source.destroy(), target.destroy()]));
  await setUser(source, 'qsync-consumer', 'm-secret', role('consumer-master'));
  await setUser(target, 'qsync-consumer', 'r-secret', role('consumer-replica'));
  await setUser(source, 'qsync-operator', 'o-secret', role('operator-master'));
  // The application's own rules (its keys, the reads it makes, what an ioredis Cluster client sends) plus the producer role.
  await setUser(source, 'app', 'app-secret', ['~app:*', '+get', '+cluster|slots', ...role('producer')]);
  // The notifications the consumer wakes on, set by the operator: its user may not run CONFIG.
  for (const m of source.masters) await m.admin.config('SET', 'notify-keyspace-events', 'Kl');

  const app = createProducer(source.client({ redisOptions: { username: 'app', password: 'app-secret' } }));
  const consumer = new ClusterConsumer({
    master: { host: '127.0.0.1', port: source.masters[0].server.port, username: 'qsync-consumer', password: 'm-secret' },
    replica: { host: '127.0.0.1', port: target.masters[0].server.port, username: 'qsync-consumer', password: 'r-secret' },
    logger: createLogger(process.env.QSYNC_TEST_LOGS ? 'info' : 'silent'),
    leaseMs: 1000,
    recheckMs: 200,
  });
  t.teardown(() => consumer.close());
  await consumer.start();
  const keys = Array.from({ length: 60 }, (_, i) => `app:${i}`);
  for (const k of keys) {
    await app.set(k, 'v', 'EX', 600);
    await app.multi().incr(`app:{${k}}:n`).hset(`app:{${k}}:h`, 'f', '1').exec();
  }
  await app.get('app:0');
  await eventually(() => consumer.applied >= keys.length * 2 || null, 20_000, 'the consumer applying every write');
  t.is(consumer.applied, keys.length * 2);

  const reader = target.client();
  t.teardown(() => reader.disconnect());
  for (const k of keys.slice(0, 10)) {
    t.is(await reader.get(k), 'v');
    t.is(await reader.get(`app:{${k}}:n`), '1');
  }
  const status = await runCli(['status', '--master', `redis://qsync-operator:o-secret@127.0.0.1:${source.masters[1].server.port}`, '--json']);
  t.is(status.code, 0, status.stderr.join('\n'));
  t.is(JSON.parse(status.stdout.join('\n'))[0].depth, 0);
  t.deepEqual(await refusals(source), []);
  t.deepEqual(await refusals(target), []);
  // The consumer's user still cannot read or write the application's keys on the source.
  const consumerOnSource = source.masters[0].server.client(0, { username: 'qsync-consumer', password: 'm-secret' }) as Redis;
  t.teardown(() => consumerOnSource.disconnect());
  await t.throwsAsync(consumerOnSource.call('KEYS', 'app:*'), { message: /NOPERM/ });
});
