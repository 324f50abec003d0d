/**
 * Names of the Redis keys qsync keeps for one queue, built in one place.
 *
 * On the master (in the queue's db): `log` (the list of entries), `meta`
 * (sequence counter and epoch), `lease`, `status`, `dlq`, `dirty`, and
 * `repairing` (the dirty keys a repair is copying).
 * On the replica (in the queue's db): `applied` (the watermark).
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

  constructor(
    readonly prefix: string,
    readonly queue: string,
  ) {
    this.log = this.toKey('log');
    this.meta = this.toKey('meta');
    this.lease = this.toKey('lease');
    this.status = this.toKey('status');
    this.dlq = this.toKey('dlq');
    this.dirty = this.toKey('dirty');
    this.repairing = this.toKey('repairing');
    this.applied = this.toKey('applied');
  }

  toKey(type: string): string {
    return `${this.prefix}:${this.queue}:${type}`;
  }
}

/** Defaults shared by the producer and the consumer, so that both agree with no options. */
export const DEFAULT_PREFIX = 'qsync';
export const DEFAULT_QUEUE = 'default';
export const DEFAULT_QUEUE_DB = 0;
