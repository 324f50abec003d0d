/**
 * A Sentinel-managed group for tests: a master, a native replica of it
 * (`replicaof`), and real `redis-server --sentinel` processes (the same
 * binary) monitoring them with short timers, so that a failover takes a
 * second or two. Each sentinel has its own sentinel.conf in a temp dir
 * (Sentinel rewrites it as the group changes) and is killed when the test
 * process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { freePort, startRedis, type RedisServer } from './redis-server.js';
import { eventually } from './wait.js';

const HOST = '127.0.0.1';
const NAME = 'mymaster';

/** Sentinels still running, killed on process exit. */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** One `redis-server --sentinel` process. */
export interface Sentinel {
  readonly port: number;
  /** a client on the sentinel, disconnected by the group's destroy() */
  client(): Redis;
}

export interface SentinelGroup {
  /** the group's name, as the sentinels know it */
  readonly name: string;
  /** the two data nodes: the first master and its native replica */
  readonly nodes: RedisServer[];
  readonly sentinels: Sentinel[];
  /** `redis+sentinel://[:password@]127.0.0.1:<port>,.../mymaster[?sentinelPassword=...]` */
  readonly url: string;
  /** ioredis options that reach the group's master through the sentinels */
  readonly options: { sentinels: { host: string; port: number }[]; name: string; password?: string; sentinelPassword?: string };
  /** the node the sentinels name as master now */
  master(): Promise<RedisServer>;
  /** the other node */
  replica(): Promise<RedisServer>;
  /**
   * The master crashes (SIGKILL): resolves with the replica once the
   * sentinels have promoted it and it takes writes.
   */
  killMaster(): Promise<RedisServer>;
  /** waits until the sentinels name `node` as master and it takes writes */
  waitForMaster(node: RedisServer, timeoutMs?: number): Promise<void>;
  destroy(): Promise<void>;
}

/** Waits until a replica's link to its master is up and it holds everything the master sent. */
export async function waitInSync(replica: RedisServer, timeoutMs = 10_000): Promise<void> {
  const client = replica.client();
  try {
    await eventually(async () => /master_link_status:up/.test(await client.info('replication')), timeoutMs, `replica ${replica.port} in sync`);
  } finally {
    client.disconnect();
  }
}

/** Timers and passwords of a group. */
interface GroupOptions {
  downAfterMs: number;
  failoverTimeoutMs: number;
  /** the data nodes' requirepass (and masterauth) */
  password?: string;
  /** the sentinels' own requirepass */
  sentinelPassword?: string;
}

async function startSentinel(dir: string, masterPort: number, o: GroupOptions): Promise<Sentinel & { stop(): Promise<void> }> {
  const port = await freePort();
  const conf = path.join(dir, `sentinel-${port}.conf`);
  await writeFile(
    conf,
    [
      `port ${port}`,
      `bind ${HOST}`,
      'protected-mode no',
      'daemonize no',
      `dir ${dir}`,
      `logfile ${path.join(dir, `sentinel-${port}.log`)}`,
      `sentinel monitor ${NAME} ${HOST} ${masterPort} 1`,
      `sentinel down-after-milliseconds ${NAME} ${o.downAfterMs}`,
      `sentinel failover-timeout ${NAME} ${o.failoverTimeoutMs}`,
      `sentinel parallel-syncs ${NAME} 1`,
      ...(o.password === undefined ? [] : [`sentinel auth-pass ${NAME} ${o.password}`]),
      ...(o.sentinelPassword === undefined ? [] : [`requirepass ${o.sentinelPassword}`]),
      '',
    ].join('\n'),
  );
  // The same binary as the harness's servers (test/support/redis-server.ts).
  const child = spawn(process.env.QSYNC_REDIS_SERVER ?? 'redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
  live.add(child);
  child.unref();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => live.delete(child));
  const clients = new Set<Redis>();
  const client = () => {
    const c = new Redis({ host: HOST, port, password: o.sentinelPassword, maxRetriesPerRequest: 1, retryStrategy: () => 100 });
    c.on('error', () => {});
    clients.add(c);
    return c;
  };
  const probe = client();
  await eventually(async () => (await probe.ping().catch(() => null)) === 'PONG', 10_000, `sentinel on port ${port}`);
  return {
    port,
    client,
    stop: async () => {
      for (const c of clients) c.disconnect();
      child.ref();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * Starts a master, its native replica and `sentinels` sentinels (quorum 1)
 * monitoring them, and waits until every sentinel knows the replica.
 */
export async function startSentinelGroup({ sentinels = 1, ...given }: Partial<GroupOptions> & { sentinels?: number } = {}): Promise<SentinelGroup> {
  const o: GroupOptions = { downAfterMs: 500, failoverTimeoutMs: 3000, ...given };
  const auth = o.password === undefined ? [] : ['--masterauth', o.password];
  const first = await startRedis({ password: o.password, args: auth });
  const second = await startRedis({ password: o.password, args: [...auth, '--replicaof', HOST, String(first.port)] });
  const nodes = [first, second];
  await waitInSync(second);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'qsync-sentinel-'));
  const started = await Promise.all(Array.from({ length: sentinels }, () => startSentinel(dir, first.port, o)));
  const addresses = started.map((s) => ({ host: HOST, port: s.port }));
  const ask = started[0].client();
  const masterPort = async (): Promise<number> => Number(((await ask.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', NAME)) as string[])[1]);
  const byPort = (port: number) => nodes.find((n) => n.port === port)!;
  const knowsReplica = async (s: Sentinel) => {
    const c = s.client();
    const replicas = (await c.call('SENTINEL', 'REPLICAS', NAME)) as string[][];
    c.disconnect();
    return replicas.some((r) => {
      const f = Object.fromEntries(r.flatMap((v, i) => (i % 2 === 0 ? [[v, r[i + 1]]] : [])));
      return f.flags === 'slave' && f['master-link-status'] === 'ok';
    });
  };
  await eventually(async () => (await Promise.all(started.map(knowsReplica))).every(Boolean), 15_000, 'sentinels know the replica');

  const group: SentinelGroup = {
    name: NAME,
    nodes,
    sentinels: started,
    url: `redis+sentinel://${o.password === undefined ? '' : `:${encodeURIComponent(o.password)}@`}${addresses.map((a) => `${a.host}:${a.port}`).join(',')}/${NAME}${o.sentinelPassword === undefined ? '' : `?sentinelPassword=${encodeURIComponent(o.sentinelPassword)}`}`,
    options: { sentinels: addresses, name: NAME, password: o.password, sentinelPassword: o.sentinelPassword },
    master: async () => byPort(await masterPort()),
    replica: async () => {
      const port = await masterPort();
      return nodes.find((n) => n.port !== port)!;
    },
    async waitForMaster(node, timeoutMs = 15_000) {
      const c = node.client();
      try {
        await eventually(
          async () => (await masterPort()) === node.port && ((await c.call('ROLE')) as unknown[])[0] === 'master',
          timeoutMs,
          `node ${node.port} named master`,
        );
      } finally {
        c.disconnect();
      }
    },
    async killMaster() {
      const from = byPort(await masterPort());
      const to = nodes.find((n) => n !== from)!;
      await from.stop('SIGKILL');
      await group.waitForMaster(to);
      return to;
    },
    async destroy() {
      ask.disconnect();
      await Promise.all(started.map((s) => s.stop()));
      await Promise.all(nodes.map((n) => n.destroy()));
      await rm(dir, { recursive: true, force: true });
    },
  };
  return group;
}
