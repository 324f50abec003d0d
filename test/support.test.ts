/**
 * Proves the test harness itself: real redis-server processes and the fault proxy.
 */
import test from 'ava';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { startProxy, type FaultProxy } from './support/fault-proxy.js';
import { startRedis, type RedisServer } from './support/redis-server.js';

/** Resolves to 'timeout' if `promise` has not settled after `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  return Promise.race([promise, sleep(ms, 'timeout' as const)]);
}

async function untilReady(client: Redis): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise((resolve) => client.once('ready', resolve));
}

type Teardown = { teardown(fn: () => Promise<void>): void };

function servers(t: Teardown) {
  return async (opts?: Parameters<typeof startRedis>[0]): Promise<RedisServer> => {
    const server = await startRedis(opts);
    t.teardown(() => server.destroy());
    return server;
  };
}

/** A server behind a proxy. Teardowns run last-in first-out, so the server (and its clients) goes before the proxy. */
async function proxied(t: Teardown): Promise<{ server: RedisServer; proxy: FaultProxy }> {
  const server = await startRedis();
  const proxy = await startProxy(server.port).catch(async (err) => {
    await server.destroy();
    throw err;
  });
  t.teardown(() => proxy.close());
  t.teardown(() => server.destroy());
  return { server, proxy };
}

test('two servers get different ports and answer on their own url', async (t) => {
  const start = servers(t);
  const [a, b] = await Promise.all([start(), start()]);
  t.not(a.port, b.port);
  t.not(a.dir, b.dir);
  t.is(a.url, `redis://127.0.0.1:${a.port}`);
  await a.client().set('k', 'a');
  t.is(await b.client().get('k'), null);
});

test('aof restart keeps data, restart with persistence none loses it', async (t) => {
  const server = await servers(t)({ persistence: 'aof' });
  await server.client().set('kept', '1');
  await server.restart();
  const port = server.port;
  t.is(await server.client().get('kept'), '1');

  await server.restart({ persistence: 'none' });
  t.is(server.port, port);
  t.is(await server.client().get('kept'), null);
});

test('aof survives SIGKILL; rdb survives a clean stop', async (t) => {
  const start = servers(t);
  const [aof, rdb] = await Promise.all([start({ persistence: 'aof' }), start({ persistence: 'rdb' })]);
  await aof.client().set('k', 'aof');
  await rdb.client().set('k', 'rdb');
  await aof.stop('SIGKILL');
  await rdb.stop();
  await Promise.all([aof.restart(), rdb.restart()]);
  t.is(await aof.client().get('k'), 'aof');
  t.is(await rdb.client().get('k'), 'rdb');
});

test('password servers put it in the url and client()', async (t) => {
  const server = await servers(t)({ password: 's3cret/x' });
  t.is(server.url, `redis://:s3cret%2Fx@127.0.0.1:${server.port}`);
  t.is(await server.client().ping(), 'PONG');
});

test('proxy forwards and counts bytes', async (t) => {
  const { server, proxy } = await proxied(t);
  const client = server.client(0, { port: proxy.port });
  await client.set('via', 'proxy');
  t.is(await server.client().get('via'), 'proxy');
  const stats = proxy.stats();
  t.is(stats.connections, 1);
  t.true(stats.bytesUp > 0 && stats.bytesDown > 0);
});

test('cut fails commands until heal, then the client reconnects', async (t) => {
  const { server, proxy } = await proxied(t);
  const client = server.client(0, { port: proxy.port, maxRetriesPerRequest: 0, retryStrategy: () => 20 });
  client.on('error', () => undefined); // resets are the point of this test
  t.is(await client.ping(), 'PONG');

  proxy.cut();
  await t.throwsAsync(client.ping());
  t.is(proxy.stats().connections, 0);

  proxy.heal();
  await untilReady(client);
  t.is(await client.ping(), 'PONG');
});

test('latency(50) adds about 100 ms to a round trip', async (t) => {
  const { server, proxy } = await proxied(t);
  const client = server.client(0, { port: proxy.port });
  await client.ping();

  proxy.latency(50);
  const started = performance.now();
  await client.ping();
  const rtt = performance.now() - started;
  t.true(rtt >= 90, `rtt ${rtt.toFixed(1)} ms`);

  // Pipelined replies must come back in order through the delay queue.
  const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => client.echo(String(i))));
  t.deepEqual(
    replies,
    Array.from({ length: 200 }, (_, i) => String(i)),
  );
});

test('blackhole swallows a PING on an open socket; heal restores', async (t) => {
  const { server, proxy } = await proxied(t);
  const client = server.client(0, { port: proxy.port });
  client.on('error', () => undefined); // heal() resets this connection on purpose
  await client.ping();

  proxy.blackhole();
  const ping = client.ping();
  t.is(await within(ping, 500), 'timeout');
  await sleep(50); // let any (wrong) late reply or socket close show up
  t.is(client.status, 'ready');
  t.is(proxy.stats().connections, 1);

  // The connection lost bytes, so heal resets it and ioredis resends the PING.
  proxy.heal();
  t.is(await within(ping, 2000), 'PONG');
});

test('bandwidth cap slows a large reply', async (t) => {
  const { server, proxy } = await proxied(t);
  await server.client().set('big', 'x'.repeat(50_000));
  const client = server.client(0, { port: proxy.port });
  await client.ping();

  proxy.bandwidth(100_000);
  const started = performance.now();
  t.is((await client.get('big'))?.length, 50_000);
  const elapsed = performance.now() - started;
  // 10 KB burst, then 40 KB at 100 KB/s.
  t.true(elapsed >= 350, `elapsed ${elapsed.toFixed(0)} ms`);
});

test('proxy carries 100k pipelined commands quickly at latency 0', async (t) => {
  const { server, proxy } = await proxied(t);
  const client = server.client(0, { port: proxy.port });
  await client.ping();

  const started = performance.now();
  const pipeline = client.pipeline();
  for (let i = 0; i < 100_000; i++) pipeline.incr('n');
  await pipeline.exec();
  const elapsed = performance.now() - started;
  t.is(await client.get('n'), '100000');
  t.log(`100k INCR via proxy: ${elapsed.toFixed(0)} ms`);
  t.true(elapsed < 5000, `elapsed ${elapsed.toFixed(0)} ms`);
});
