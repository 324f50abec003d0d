/**
 * Test harness for real local Redis Clusters: `redis-server --cluster-enabled
 * yes` processes on free loopback ports (test/support/redis-server.ts), the
 * slots spread evenly over the masters with CLUSTER ADDSLOTSRANGE (so that
 * one or two masters work too, which `redis-cli --cluster create` refuses),
 * joined with CLUSTER MEET, cluster replicas attached with CLUSTER REPLICATE.
 * Helpers move slots between masters the way `redis-cli --cluster reshard`
 * does (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE) and wait until
 * every node agrees on the slot map.
 */
import { Cluster, type ClusterOptions, type Redis } from 'ioredis';
import { SLOTS } from '../../shared/cluster.js';
import { startRedis, type RedisServer } from './redis-server.js';

export interface ClusterNode {
  server: RedisServer;
  /** the node's cluster ID */
  id: string;
  /** a plain connection to this node, for CLUSTER commands and direct reads */
  admin: Redis;
}

export interface LocalCluster {
  /** masters, in slot order at start: master i owns the i-th share of the slots */
  masters: ClusterNode[];
  /** cluster replicas; replicas[i] replicates masters[i] when replicasPerMaster is 1 */
  replicas: ClusterNode[];
  /** `redis://127.0.0.1:PORT` of the first master: any node's URL reaches the whole cluster */
  url: string;
  /** startup nodes for ioredis Cluster */
  startupNodes: { host: string; port: number }[];
  /** a new ioredis Cluster client, closed by destroy() */
  client(options?: ClusterOptions): Cluster;
  /** the master that owns `slot` now, as the first master sees the map */
  ownerOf(slot: number): Promise<ClusterNode>;
  /**
   * Moves `slots` and their keys from one master to another as redis-cli
   * --cluster reshard does, `batch` keys per MIGRATE; waits until every node
   * agrees. Writes may go on meanwhile (clients get ASK/TRYAGAIN).
   */
  migrate(from: ClusterNode, to: ClusterNode, slots: number[], batch?: number, pace?: MigratePace): Promise<void>;
  /** Promotes a cluster replica with CLUSTER FAILOVER and waits until every node sees it as the master. */
  failover(replica: ClusterNode): Promise<void>;
  /** Waits until every node reports cluster_state:ok and the same owner for every slot. */
  settled(timeoutMs?: number): Promise<void>;
  destroy(): Promise<void>;
}

/** How a migration goes, for tests that write while it runs. */
export interface MigratePace {
  /** keys moved first, in one MIGRATE, before the rest of their slot */
  first?: string[];
  /** a pause after each MIGRATE, ms */
  pauseMs?: number;
}

export interface ClusterSpec {
  /** masters; at least 1. @default 3 */
  masters?: number;
  /** cluster replicas per master (0 or 1). @default 0 */
  replicasPerMaster?: number;
  /** extra redis-server arguments for every node */
  args?: string[];
}

const SETTLE_MS = 20_000;

async function nodeOf(server: RedisServer): Promise<ClusterNode> {
  const admin = server.client();
  const id = String(await admin.call('CLUSTER', 'MYID'));
  return { server, id, admin };
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The slot map a node reports, as one string per master: `start-end:port`, sorted. */
async function slotMap(node: ClusterNode): Promise<string> {
  const ranges = (await node.admin.call('CLUSTER', 'SLOTS')) as [number, number, [string, number, string]][];
  return ranges
    .map(([a, b, [, port]]) => `${a}-${b}:${port}`)
    .sort()
    .join(',');
}

/** Starts a local cluster; every node has its own temp dir and free port. */
export async function startCluster(spec: ClusterSpec = {}): Promise<LocalCluster> {
  const mastersWanted = spec.masters ?? 3;
  const replicasPer = spec.replicasPerMaster ?? 0;
  if (mastersWanted < 1) throw new RangeError(`a cluster needs at least one master, not ${mastersWanted}`);
  const args = [
    '--cluster-enabled',
    'yes',
    '--cluster-config-file',
    'nodes.conf',
    '--cluster-node-timeout',
    '2000',
    '--cluster-announce-ip',
    '127.0.0.1',
    ...(spec.args ?? []),
  ];
  const servers = await Promise.all(Array.from({ length: mastersWanted * (1 + replicasPer) }, () => startRedis({ args })));
  const nodes = await Promise.all(servers.map(nodeOf));
  const masters = nodes.slice(0, mastersWanted);
  const replicas = nodes.slice(mastersWanted);
  const clients: Cluster[] = [];

  const share = Math.floor(SLOTS / mastersWanted);
  await Promise.all(
    masters.map((m, i) => {
      const start = i * share;
      const end = i === mastersWanted - 1 ? SLOTS - 1 : start + share - 1;
      return m.admin.call('CLUSTER', 'ADDSLOTSRANGE', start, end);
    }),
  );
  for (const n of nodes.slice(1)) await n.admin.call('CLUSTER', 'MEET', '127.0.0.1', nodes[0].server.port);
  await waitFor(
    async () => {
      for (const n of nodes) {
        const known = String(await n.admin.call('CLUSTER', 'NODES'))
          .trim()
          .split('\n').length;
        if (known < nodes.length) return false;
      }
      return true;
    },
    SETTLE_MS,
    'every node to know the others',
  );
  for (let i = 0; i < replicas.length; i++) {
    await replicas[i].admin.call('CLUSTER', 'REPLICATE', masters[i % mastersWanted].id);
  }

  const cluster: LocalCluster = {
    masters,
    replicas,
    url: nodes[0].server.url,
    startupNodes: masters.map((m) => ({ host: '127.0.0.1', port: m.server.port })),
    client(options = {}) {
      const c = new Cluster(cluster.startupNodes, { ...options });
      clients.push(c);
      return c;
    },
    async ownerOf(slot) {
      const ranges = (await cluster.masters[0].admin.call('CLUSTER', 'SLOTS')) as [number, number, [string, number, string]][];
      const range = ranges.find(([a, b]) => slot >= a && slot <= b);
      if (!range) throw new Error(`no node owns slot ${slot}`);
      const node = [...masters, ...replicas].find((n) => n.server.port === Number(range[2][1]));
      if (!node) throw new Error(`slot ${slot} is owned by port ${range[2][1]}, not a node of this cluster`);
      return node;
    },
    async migrate(from, to, slots, batch = 100, pace = {}) {
      for (const slot of slots) {
        await to.admin.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id);
        await from.admin.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id);
        let first = pace.first ?? [];
        for (;;) {
          const keys = first.length > 0 ? first : ((await from.admin.call('CLUSTER', 'GETKEYSINSLOT', slot, batch)) as string[]);
          first = [];
          if (keys.length === 0) break;
          await from.admin.call('MIGRATE', '127.0.0.1', to.server.port, '', 0, 10_000, 'REPLACE', 'KEYS', ...keys);
          if (pace.pauseMs) await new Promise((resolve) => setTimeout(resolve, pace.pauseMs));
        }
        // The owner learns first, then the old owner, then everyone (as redis-cli does).
        await to.admin.call('CLUSTER', 'SETSLOT', slot, 'NODE', to.id);
        await from.admin.call('CLUSTER', 'SETSLOT', slot, 'NODE', to.id);
        for (const n of [...masters, ...replicas]) {
          if (n !== from && n !== to) await n.admin.call('CLUSTER', 'SETSLOT', slot, 'NODE', to.id).catch(() => {});
        }
      }
      await cluster.settled();
    },
    async failover(replica) {
      const i = replicas.indexOf(replica);
      if (i < 0) throw new Error(`node ${replica.server.port} is not a replica of this cluster`);
      const info = await replica.admin.info('replication');
      const oldPort = Number(/master_port:(\d+)/.exec(info)?.[1]);
      const j = masters.findIndex((m) => m.server.port === oldPort);
      await replica.admin.call('CLUSTER', 'FAILOVER');
      await waitFor(
        async () => /role:master/.test(await replica.admin.info('replication')),
        SETTLE_MS,
        `node ${replica.server.port} to become master`,
      );
      // The roles swap in the lists too: the old master is now its replica.
      if (j >= 0) [masters[j], replicas[i]] = [replica, masters[j]];
      await cluster.settled();
    },
    async settled(timeoutMs = SETTLE_MS) {
      await waitFor(
        async () => {
          const maps = new Set<string>();
          for (const n of [...masters, ...replicas]) {
            if (!/cluster_state:ok/.test(String(await n.admin.call('CLUSTER', 'INFO')))) return false;
            maps.add(await slotMap(n));
          }
          return maps.size === 1;
        },
        timeoutMs,
        'every node to report cluster_state:ok and the same slot map',
      );
    },
    async destroy() {
      for (const c of clients) c.disconnect();
      await Promise.all([...masters, ...replicas].map((n) => n.server.destroy()));
    },
  };
  await cluster.settled();
  if (replicas.length > 0) {
    await waitFor(
      async () => {
        for (const r of replicas) if (!/master_link_status:up/.test(await r.admin.info('replication'))) return false;
        return true;
      },
      SETTLE_MS,
      'every cluster replica to be in sync with its master',
    );
  }
  return cluster;
}

/**
 * The shard leases of a cluster queue not yet expired by the server's clock,
 * as source master node ID -> consumer ID, read from its `shards` hash
 * (`<consumer id> <expiry ms>` per node).
 */
export async function liveShardLeases(client: Cluster, shardsKey: string): Promise<Map<string, string>> {
  const [seconds, micros] = await client.time();
  const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  const live = new Map<string, string>();
  for (const [node, value] of Object.entries(await client.hgetall(shardsKey))) {
    const space = value.lastIndexOf(' ');
    if (Number(value.slice(space + 1)) > now) live.set(node, value.slice(0, space));
  }
  return live;
}
