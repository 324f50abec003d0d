/**
 * Every qsync command that does not serve a Redis Cluster refuses one given
 * as --master or --replica: one line naming the command and the cluster
 * node, exit code 13, and no key changed on either side.
 */
import test from 'ava';
import type { Redis } from 'ioredis';
import { createProducer } from '../producer/index.js';
import { ExitCode } from '../shared/errors.js';
import { runCli } from './support/cli.js';
import { startCluster } from './support/redis-cluster.js';
import { startRedis } from './support/redis-server.js';

/** Every key of a server with its DUMP and TTL, sorted: what a refused command must leave as it was. */
async function snapshot(client: Redis): Promise<string[]> {
  const keys = (await client.keys('*')).sort();
  const rows: string[] = [];
  for (const key of keys) rows.push(`${key} ${(await client.dumpBuffer(key))?.toString('hex')} ${(await client.pttl(key)) >= 0}`);
  return rows;
}

test('commands that do not serve a cluster refuse a cluster node on either side, changing nothing', async (t) => {
  const [cluster, server] = await Promise.all([startCluster({ masters: 1 }), startRedis()]);
  t.teardown(() => Promise.all([cluster.destroy(), server.destroy()]));
  const producer = createProducer(cluster.client());
  for (let i = 0; i < 5; i++) await producer.set(`k:{a}:${i}`, 'v');
  await producer.incr('counter');
  await server.client().set('standalone', 'x');
  const node = cluster.masters[0].admin;
  const [clusterBefore, serverBefore] = [await snapshot(node), await snapshot(server.client())];
  t.true(clusterBefore.length > 6, 'the cluster holds data and a queue');

  const standalone = `redis://127.0.0.1:${server.port}`;
  const runs: [string, string[]][] = [
    ['replicas', ['replicas', '--master', cluster.url]],
    ['replicas detach', ['replicas', 'detach', '--name', 'default', '--master', cluster.url]],
    ['jobs', ['jobs', '--master', cluster.url]],
    ['failover', ['failover', '--master', cluster.url, '--replica', standalone]],
    ['failover', ['failover', '--master', standalone, '--replica', cluster.url]],
    ['promote', ['promote', '--replica', cluster.url]],
    ['promote', ['promote', '--master', cluster.url, '--replica', standalone]],
    ['rejoin', ['rejoin', '--master', standalone, '--replica', cluster.url]],
  ];
  for (const [command, args] of runs) {
    const run = await runCli(args);
    const side = args[args.indexOf(cluster.url) - 1];
    t.is(run.code, ExitCode.clusterMode, args.join(' '));
    t.is(run.stderr.length, 1, args.join(' '));
    t.regex(
      run.stderr[0] ?? '',
      new RegExp(`^qsync: ${command} does not work on a Redis Cluster yet \\(${side} \\S+ is a cluster node\\)`),
      args.join(' '),
    );
  }
  t.deepEqual(await snapshot(node), clusterBefore);
  t.deepEqual(await snapshot(server.client()), serverBefore);
});
