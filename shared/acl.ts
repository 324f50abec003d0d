/**
 * Least-privilege ACL rules for qsync's users, derived from what the scripts
 * and connections actually run (ACLs apply to commands inside scripts too).
 */
import { COMMANDS } from './commands.js';

export type AclRole = 'consumer-master' | 'consumer-replica' | 'producer' | 'operator-master' | 'operator-replica' | 'app-reader';
export const ACL_ROLES: readonly AclRole[] = ['consumer-master', 'consumer-replica', 'producer', 'operator-master', 'operator-replica', 'app-reader'];

/** What every ioredis connection sends: AUTH/HELLO, CLIENT SETNAME, SELECT, INFO (ready check). */
const CONNECT = ['+ping', '+auth', '+hello', '+quit', '+select', '+client|setname', '+info'];
const SCRIPTS = ['+evalsha', '+eval'];
/**
 * What a client of a Redis Cluster sends besides: the slot map (CLUSTER
 * SLOTS, SHARDS, MYID), the ready check of an ioredis Cluster (CLUSTER INFO)
 * and ASKING before a command redirected while a slot moves. Read-only.
 */
const CLUSTER_CLIENT = ['+cluster|slots', '+cluster|shards', '+cluster|myid', '+cluster|info', '+asking'];

/** How a resync on a Redis Cluster finds a hash slot's keys (CLUSTER COUNTKEYSINSLOT, GETKEYSINSLOT). Read-only. */
const SLOT_KEYS = ['+cluster|countkeysinslot', '+cluster|getkeysinslot'];

const CONSUMER_MASTER = [
  // lease-2, release-1: take, renew and give up the lease
  '+get',
  '+set',
  '+del',
  '+pttl',
  '+time',
  // read-batch-2, trim-4, status; attach-2 and the trim read and move each
  // attached replica's place in the replicas hash
  '+hmget',
  '+hset',
  '+hget',
  '+hgetall',
  '+llen',
  '+lrange',
  '+lindex',
  '+ltrim',
  // waiting for entries
  '+blmove',
  // park-5 files dead letters; qsync dlq lists, retries and drops them
  '+rpush',
  '+lrem',
  '+lpos',
  '+lset',
];

/** What resync-copy-1 runs on the keys it copies: read-only, application keys included. */
const HELD_COPY = '(%R~* +type +pexpiretime +dump +strlen +llen +scard +zcard +hlen +memory|usage)';

/** What each of qsync's own users starts from: its keys, no channels, no command but connecting and running qsync's scripts. */
const base = (keys: string): string[] => ['resetkeys', keys, 'resetchannels', '-@all', ...CONNECT, ...CLUSTER_CLIENT, ...SCRIPTS];

/** The rules after `ACL SETUSER name on >password`, as one string per rule. */
export function aclRules(role: AclRole, prefix = 'qsync'): string[] {
  const own = `~${prefix}:*`;
  switch (role) {
    case 'consumer-master':
      // The selector gives the control jobs (BullMQ, under '<prefix>-jobs:')
      // what BullMQ's own scripts need, on those keys only.
      // A second selector lets resync-copy-1 read, and only read, a key the
      // replica lost before the master did (it expired there first), to copy it.
      return [
        ...base(own),
        ...CONSUMER_MASTER,
        // wake-ups on the log's writes while the log holds entries for other
        // replicas (CLIENT TRACKING redirected to a subscriber, shared/wake-ups.ts)
        '+client|id',
        '+client|tracking',
        '+subscribe',
        '&__redis__:invalidate',
        // on a Redis Cluster: the shard leases' registry of consumers, and the
        // keyspace notifications of the slots' logs that wake a shard's worker
        '+zadd',
        '+zrangebyscore',
        '+zremrangebyscore',
        '+zrem',
        '+psubscribe',
        `&__keyspace@0__:${prefix}:{*}:*`,
        `(~${prefix}-jobs:* +@all -@dangerous)`,
        HELD_COPY,
      ];
    case 'consumer-replica':
      // The replica applies every supported write, on any key, plus the
      // watermark; it brings keys to the master's view of their expiry first
      // (PEXPIRETIME, TIME), keeps the keys it holds back in the watermark's
      // hash (HGET, HKEYS, HSCAN) and restores their copies (RESTORE). A
      // flush keeps qsync's own keys (KEYS, DUMP, RESTORE).
      return [
        ...base('~*'),
        '+hmget',
        '+hset',
        '+hdel',
        '+hget',
        '+hkeys',
        '+hscan',
        '+pexpiretime',
        '+time',
        '+restore',
        '+keys',
        '+dump',
        // a Sentinel group as the replica: its own replicas hold a batch
        // before it leaves the log; the record of the entries applied last,
        // read when a master lost some (drain/divergence.ts)
        '+wait',
        '+zrangebyscore',
        ...Object.keys(COMMANDS).map((c) => `+${c}`),
      ];
    case 'operator-master':
      // qsync resync, repair and verify: read every key; resync snapshots big
      // keys under the prefix (COPY) and reads the log; repair turns the dirty
      // set into its repair set (RENAME, SUNIONSTORE), adds to it the keys of
      // entries a master lost (SADD), and clears the queue's state; control
      // jobs use BullMQ's keys under '<prefix>-jobs:', all covered by ~*;
      // status reads a cluster's slots in transactions (MULTI, EXEC); a
      // resync on a cluster counts and lists each slot's keys.
      return [
        ...base('~*'),
        ...CONSUMER_MASTER,
        '+@read',
        '+copy',
        '+memory|usage',
        '+rename',
        '+sunionstore',
        '+sadd',
        '+hdel',
        '+multi',
        '+exec',
        ...SLOT_KEYS,
      ];
    case 'operator-replica':
      // qsync resync rebuilds the replica: FLUSHALL, RESTORE, RENAME, and every
      // replicated write; on a cluster, each slot's keys are listed and deleted.
      return [...aclRules('consumer-replica', prefix), '+@read', '+flushall', '+restore', '+rename', '+del', '+multi', '+exec', ...SLOT_KEYS];
    case 'app-reader':
      // An application reading a replica (the seeds' slave-read-only): every
      // read command, on read-only keys, so that no write gets through, not
      // even from a read-only script; the consumer applies as its own user.
      return ['resetkeys', '%R~*', 'resetchannels', '-@all', ...CONNECT, '+@read', '+eval_ro', '+evalsha_ro', '+fcall_ro'];
    case 'producer':
      // Added to the application's own rules: the log-write script and what it
      // runs; INFO for the check of the master's maxmemory-policy at a
      // connection's first write; the wake-ups of blocking pops (CLIENT
      // TRACKING redirected to a subscriber, shared/wake-ups.ts).
      return [
        own,
        ...SCRIPTS,
        // an ioredis Cluster client: its slot map, ready check and redirects, its connections' names
        ...CLUSTER_CLIENT,
        '+client|setname',
        '+info',
        '+client|id',
        '+client|tracking',
        '+subscribe',
        '&__redis__:invalidate',
        '+hincrby',
        '+hset',
        '+hmget',
        '+llen',
        '+scard',
        '+smismember',
        '+sadd',
        '+rpush',
        '+time',
        '+exists',
        // a stream group's state around a group command, a stream's length after a trim (stream-rules.lua)
        '+xinfo',
        '+xpending',
        '+xlen',
        '+pexpiretime',
        '+getrange',
        '+select',
        // a stored result logged as it was stored; a flush that keeps qsync's
        // keys, the control jobs' too, which it copies and writes back
        '+zcard',
        '+zrange',
        '+zmscore',
        '+lrange',
        '+keys',
        '+dump',
        `(~${prefix}-jobs:* +dump +restore +pexpiretime)`,
        ...Object.keys(COMMANDS).map((c) => `+${c}`),
      ];
  }
}
