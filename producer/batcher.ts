/**
 * Gathers the single writes issued in the same tick into one call of the
 * log-write script, each still logged as its own entry with its own sequence
 * number and reply. A script call costs the master several times a plain
 * command; shared by the writes of a tick (an application with many requests
 * in flight issues dozens), it costs a fraction of one per write.
 *
 * Order on the connection is kept: every other command sent through the
 * producer first flushes the writes waiting here (see producer.ts), so a read
 * issued after a write sees it, as with plain ioredis.
 */
import type { Redis } from 'ioredis';
import { shapeReply, type LoggedCommand } from './calls.js';
import type { WriteLog } from './write-log.js';

/**
 * Most writes in one call. A tick's writes go out in calls of this many, as
 * soon as each is full: the master runs one while the application still
 * prepares the next (a single call per tick would leave each side waiting on
 * the other), and each call stays short on the master.
 */
const MOST = 32;

interface Waiting {
  cmd: LoggedCommand;
  buffer: boolean;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

export class WriteBatcher {
  private waiting: Waiting[] = [];
  private waitingDb = 0;
  private scheduled = false;

  constructor(
    private readonly log: WriteLog,
    private readonly client: Redis,
  ) {}

  /** Queues a write for the end of this tick; resolves with its own reply. */
  add(cmd: LoggedCommand, db: number, buffer: boolean): Promise<unknown> {
    if (this.waiting.length > 0 && db !== this.waitingDb) this.flush();
    this.waitingDb = db;
    return new Promise((resolve, reject) => {
      this.waiting.push({ cmd, buffer, resolve, reject });
      if (this.waiting.length >= MOST) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => {
          this.scheduled = false;
          this.flush();
        });
      }
    });
  }

  /** Sends the waiting writes now. */
  flush(): void {
    const batch = this.waiting;
    if (batch.length === 0) return;
    this.waiting = [];
    if (batch.length === 1) {
      const [w] = batch;
      (this.log.send(this.client, { db: this.waitingDb, commands: [w.cmd], as: 'one', buffer: w.buffer }) as Promise<unknown>).then(
        w.resolve,
        w.reject,
      );
      return;
    }
    const cmds = batch.map((w) => ({ ...w.cmd, replyEncoding: w.buffer ? null : ('utf8' as const) }));
    (this.log.send(this.client, { db: this.waitingDb, commands: cmds, as: 'batch', buffer: true }) as Promise<unknown[]>).then(
      (replies) => {
        replies.forEach((r, i) => {
          if (r instanceof Error) batch[i].reject(this.log.refusal(r));
          else batch[i].resolve(shapeReply(cmds[i], r));
        });
      },
      (err: Error) => {
        for (const w of batch) w.reject(err);
      },
    );
  }
}
