/**
 * The consumer's watch on its two servers: every so often it measures their
 * eviction policies and the clock offset between them (queue/servers.ts),
 * logs a warning when something is wrong (again when it changes), records
 * the report in the queue's status hash for `qsync status`, and keeps the
 * last one for the metrics.
 */
import type { Redis, RedisOptions } from 'ioredis';
import { QueueKeys } from '../../shared/keys.js';
import type { Logger } from '../../shared/logger.js';
import { connect, describeError } from '../drain/connections.js';
import { measureServers, SERVERS_FIELD, type ServerReport } from './servers.js';

/** How often the servers are measured again. */
const EVERY_MS = 30_000;

export interface ServerMonitorOptions {
  master: RedisOptions;
  replica: RedisOptions;
  prefix: string;
  queue: string;
  queueDb: number;
  /** the replica the consumer feeds: its report goes to that replica's status */
  name?: string;
  timeoutMs: number;
  maxClockOffsetMs: number;
  log: Logger;
  /** false while this consumer is a standby: only the active one records its report */
  active: () => boolean;
}

/** Resolves once the connection is ready (commands sent before would fail at once), or after ms. */
function ready(client: Redis, ms: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      client.off('ready', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    client.once('ready', done);
  });
}

export class ServerMonitor {
  /** the last report, undefined until the first measurement */
  latest?: ServerReport;
  private readonly master: Redis;
  private readonly replica: Redis;
  private readonly statusKey: string;
  private timer?: NodeJS.Timeout;
  private warned = '';
  private closed = false;

  constructor(private readonly o: ServerMonitorOptions) {
    const db = { db: o.queueDb };
    this.master = connect({ ...o.master, ...db }, { commandTimeoutMs: o.timeoutMs }, `qsync:${o.queue}:servers`);
    this.replica = connect({ ...o.replica, ...db }, { commandTimeoutMs: o.timeoutMs }, `qsync:${o.queue}:servers`);
    this.statusKey = new QueueKeys(o.prefix, o.queue, o.name).status;
  }

  /** Measures now (its warnings are logged before this resolves), then every 30 s. */
  async start(): Promise<this> {
    await Promise.all([this.master, this.replica].map((c) => ready(c, this.o.timeoutMs)));
    await this.measure();
    const tick = () => {
      if (this.closed) return;
      this.timer = setTimeout(() => void this.measure().finally(tick), EVERY_MS);
      this.timer.unref();
    };
    tick();
    return this;
  }

  /** One measurement; a link down keeps the last report (the worker reports the link). */
  async measure(): Promise<void> {
    try {
      this.take(await measureServers(this.master, this.replica, this.o.maxClockOffsetMs));
      if (this.o.active()) await this.master.hset(this.statusKey, SERVERS_FIELD, JSON.stringify(this.latest));
    } catch (err) {
      this.o.log.debug({ err: describeError(err as Error) }, 'servers not measured');
    }
  }

  private take(report: ServerReport): void {
    this.latest = report;
    const text = report.warnings.join('\n');
    if (text !== this.warned)
      for (const warning of report.warnings)
        this.o.log.warn({ clockOffsetMs: report.clockOffsetMs, maxmemoryPolicy: report.maxmemoryPolicy }, warning);
    this.warned = text;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.master.disconnect();
    this.replica.disconnect();
  }
}
