/**
 * Names of the Redis keys qsync keeps for one queue, built in one place.
 *
 * On the master (in the queue's db): `log` (the list of entries), `meta`
 * (sequence counter and epoch), `lease`, `status`, `dlq`, `dirty`,
 * `repairing` (the dirty keys a repair is copying), `verify` (the last
 * verify's result), `snapshot` (a big key a resync copies in chunks) and
 * `roles` (the queue's role history: promotions and fences, one JSON record
 * each, see consumer/failover/).
 * On the replica (in the queue's db): `applied` (the watermark, written in
 * the same step as the data, with what must move with it: half-applied and
 * parked entries, and the keys held back because the replica lost them before
 * the master did, `held:<db>:<key>`, see shared/lua/includes/held.lua) and
 * `tmp` (a big key being rebuilt by a resync).
 *
 * Several replicas (consumer/replicas/): each attached replica has a name,
 * and the keys that belong to one replica (`lease`, `status`, `dlq`, `verify`
 * on the master, `applied` on the replica) carry it as a suffix, `<type>:<name>`;
 * the name `default` keeps the bare names, so a queue from before names
 * needs no migration. `replicas` on the master records where each attached
 * replica is in the log (shared/lua/includes/replicas.lua).
 * The BullMQ control jobs of every queue live under `jobsPrefix(prefix)`.
 */
export class QueueKeys {
  readonly log: string;
  readonly meta: string;
  readonly lease: string;
  readonly status: string;
  readonly dlq: string;
  readonly dirty: string;
  readonly repairing: string;
  readonly applied: string;
  readonly verify: string;
  readonly snapshot: string;
  readonly tmp: string;
  readonly roles: string;
  readonly replicas: string;

  constructor(
    readonly prefix: string,
    readonly queue: string,
    /** the replica these keys belong to */
    readonly name: string = DEFAULT_NAME,
  ) {
    this.log = this.toKey('log');
    this.meta = this.toKey('meta');
    this.lease = this.replicaKey('lease');
    this.status = this.replicaKey('status');
    this.dlq = this.replicaKey('dlq');
    this.dirty = this.toKey('dirty');
    this.repairing = this.toKey('repairing');
    this.applied = this.replicaKey('applied');
    this.verify = this.replicaKey('verify');
    this.snapshot = this.toKey('resync:snapshot');
    this.tmp = this.toKey('resync:tmp');
    this.roles = this.toKey('roles');
    this.replicas = this.toKey('replicas');
  }

  /** The same queue's keys for another replica. */
  forReplica(name: string): QueueKeys {
    return new QueueKeys(this.prefix, this.queue, name);
  }

  private replicaKey(type: string): string {
    return this.toKey(this.name === DEFAULT_NAME ? type : `${type}:${this.name}`);
  }

  toKey(type: string): string {
    return `${this.prefix}:${this.queue}:${type}`;
  }
}

/** Prefix of the BullMQ queues that carry a prefix's control jobs (`<prefix>-jobs:<queue>:...`). */
export const jobsPrefix = (prefix: string): string => `${prefix}-jobs`;

/** Key prefixes of everything qsync keeps in the queue db: never application data, never copied or compared. */
export const ownKeyPrefixes = (prefix: string): string[] => [`${prefix}:`, `${jobsPrefix(prefix)}:`];

/** Defaults shared by the producer and the consumer, so that both agree with no options. */
export const DEFAULT_PREFIX = 'qsync';
export const DEFAULT_QUEUE = 'default';
export const DEFAULT_QUEUE_DB = 0;
/** The replica name of a consumer given none: the keys of a queue from before names. */
export const DEFAULT_NAME = 'default';
