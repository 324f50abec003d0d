/**
 * Errors users see. Each kind has its own class, a one-line message naming the
 * bad value, and the exit code the CLI uses for it.
 */

export const ExitCode = {
  ok: 0,
  /** verify: the datasets differ */
  different: 1,
  /** bad flags, URLs or values */
  usage: 2,
  /** a server could not be reached */
  unreachable: 3,
  /** authentication or authorisation failed */
  auth: 4,
  /** TLS handshake or certificate problem */
  tls: 5,
  /** the replica cannot be brought up to date from the queue */
  resyncNeeded: 6,
  /** an entry was refused by the replica and the worker halted */
  halted: 7,
  /** dlq: no dead letter with that sequence number */
  notFound: 8,
  /** dlq retry: the replica refused a dead letter again; it was kept */
  refused: 9,
  /** status: writes went unqueued (a full queue under mark-dirty); the keys in the dirty set need a repair */
  repairNeeded: 10,
  /** failover, promote, rejoin: a server does not have the role the command needs (not a replica of the queue, roles reversed); nothing changed */
  wrongRole: 11,
  /** failover: the replica did not apply everything within the timeout; the master was unfenced and nothing changed */
  notCaughtUp: 12,
  /** a command that does not serve a Redis Cluster yet was given one; nothing changed */
  clusterMode: 13,
  /** anything unexpected */
  internal: 70,
} as const;

export class QsyncError extends Error {
  readonly exitCode: number = ExitCode.internal;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A bad option, flag, URL or value. */
export class ConfigError extends QsyncError {
  override readonly exitCode = ExitCode.usage;
}

/** A write command the producer cannot replicate. Nothing was written. */
export class UnsupportedCommandError extends QsyncError {
  constructor(
    readonly command: string,
    reason?: string,
  ) {
    super(
      reason
        ? `qsync: ${command.toUpperCase()} ${reason}; nothing was written`
        : `qsync: ${command.toUpperCase()} is a write qsync cannot replicate; nothing was written (supported commands are listed in the README)`,
    );
  }
}

/**
 * A write to a key inside qsync's own namespace (`<prefix>:` or
 * `<prefix>-jobs:` in the queue's db): it would mix with the queue's own keys
 * (a write to the watermark would destroy it), and resync and verify leave
 * those keys out. Nothing was written.
 */
export class ReservedKeyError extends UnsupportedCommandError {
  constructor(
    command: string,
    readonly key: string,
    namespace: string,
    db: number,
  ) {
    super(
      command,
      `on key '${key}' is refused: keys under '${namespace}' in db ${db} are qsync's own; use another key name (or another queueDb for qsync)`,
    );
  }
}

/** The queue reached its cap under the `reject` policy. Nothing was written. */
export class QueueFullError extends QsyncError {
  constructor(
    readonly queue: string,
    readonly limit: string,
  ) {
    super(`qsync: queue '${queue}' is full (${limit}); the write was refused and nothing was written`);
  }
}

/**
 * The master of the queue is fenced (qsync failover): its role is moving, or
 * moved, to another server, and it refuses every write. Nothing was written:
 * send the write to the new master named here.
 */
export class FencedError extends QsyncError {
  constructor(
    readonly queue: string,
    readonly newMaster: string,
  ) {
    super(`qsync: queue '${queue}' is fenced here: its new master is ${newMaster}; the write was refused and nothing was written`);
  }
}

/** A server does not have the role a failover, promote or rejoin needs (not a replica of the queue, roles reversed). Nothing changed. */
export class RoleError extends QsyncError {
  override readonly exitCode = ExitCode.wrongRole;
}

/** failover: the replica did not apply everything in time. The master was unfenced; nothing changed. */
export class NotCaughtUpError extends QsyncError {
  override readonly exitCode = ExitCode.notCaughtUp;
}

/** A command that serves standalone queues only was pointed at a Redis Cluster node. Nothing changed. */
export class ClusterModeError extends QsyncError {
  override readonly exitCode = ExitCode.clusterMode;
}

/** A server could not be reached. */
export class UnreachableError extends QsyncError {
  override readonly exitCode = ExitCode.unreachable;
}

/** Wrong password, missing ACL permission. */
export class AuthError extends QsyncError {
  override readonly exitCode = ExitCode.auth;
}

/** The thing asked for (a dead letter) does not exist. */
export class NotFoundError extends QsyncError {
  override readonly exitCode = ExitCode.notFound;
}

/** TLS handshake or certificate failure. */
export class TlsError extends QsyncError {
  override readonly exitCode = ExitCode.tls;
}
