/**
 * The drain loop's options, their documentation and their defaults in one
 * place, so that a `@default` cannot drift from the value the code uses.
 * The CLI's `qsync consume` flags take their defaults from here too.
 */
import type { RedisOptions } from 'ioredis';
import type { Logger } from '../../shared/logger.js';
import type { BackoffOptions } from './backoff.js';
import type { OnError } from './confirm.js';
import { DEFAULT_NAME, DEFAULT_PREFIX, DEFAULT_QUEUE, DEFAULT_QUEUE_DB } from '../../shared/keys.js';

export const WORKER_DEFAULTS = {
  batchSize: 1000,
  batchBytes: 1024 * 1024,
  window: 32,
  leaseMs: 10_000,
  timeoutMs: 15_000,
  recheckMs: 5000,
  onError: 'halt',
  relay: false,
} as const;

export interface WorkerOptions {
  /** the master: where the log is read and trimmed */
  master: RedisOptions;
  /** the replica: where entries are applied, with the watermark */
  replica: RedisOptions;
  /** @default 'default' (shared/keys.ts DEFAULT_QUEUE) */
  queue?: string;
  /** @default 'qsync' (shared/keys.ts DEFAULT_PREFIX) */
  prefix?: string;
  /**
   * the replica's name: each name has its own lease, position in the log
   * and watermark, so that several replicas drain one log side by side
   * (consumer/replicas/). @default 'default' (shared/keys.ts DEFAULT_NAME)
   */
  name?: string;
  /**
   * the replica logs what it applies in its own queue, in the same step as
   * the apply, so that it can feed replicas of its own (a chain). @default false
   */
  relay?: boolean;
  /** db of the queue on the master and of the watermark on the replica. @default 0 */
  queueDb?: number;
  /** most entries per batch. @default 1000 */
  batchSize?: number;
  /** most bytes of entries per batch (a single larger entry still goes alone). @default 1048576 (1 MiB) */
  batchBytes?: number;
  /** batches in flight to the replica at once; a moderate backlog is shared out over them. @default 32 */
  window?: number;
  /** lease time: a standby takes over this long after the active worker died. @default 10000 */
  leaseMs?: number;
  /** a link with no answer for this long is reset (catches blackholes). @default 15000 */
  timeoutMs?: number;
  /** how often halted and resync-needed states are checked again. @default 5000 */
  recheckMs?: number;
  /**
   * what to do with an entry the replica refuses, or bytes in the log that
   * are not an entry: halt until someone fixes it, or park it in the
   * dead-letter list on the master and go on. @default 'halt'
   */
  onError?: OnError;
  /** reconnect delays (drain/backoff.ts): quick for the first seconds of an outage, then exponential with jitter */
  backoff?: BackoffOptions;
  /**
   * entries the replica keeps a record of (their seq, time and keys), so that
   * a master that lost writes the replica applied (a failover to a replica
   * that lagged) can say which keys diverged and `qsync repair` can copy
   * them; 0 keeps none. @default 10000 when the master is a Sentinel group, else 0
   */
  keepApplied?: number;
  /** pino logger. @default a new one at level info */
  logger?: Logger;
  /** identifies this worker in the lease and status. @default a random UUID */
  id?: string;
}

/** The options given (those undefined left out) over the defaults. */
export function withDefaults(options: Partial<WorkerOptions>) {
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<WorkerOptions>;
  return {
    ...WORKER_DEFAULTS,
    queue: DEFAULT_QUEUE,
    prefix: DEFAULT_PREFIX,
    queueDb: DEFAULT_QUEUE_DB,
    name: DEFAULT_NAME,
    backoff: {} as BackoffOptions,
    ...given,
  };
}
