/**
 * A Bull Board page for qsync's control jobs: verify, resync and repair runs
 * and schedules, which every `qsync consume` takes from a BullMQ queue on the
 * master named after the qsync queue, under the prefix `qsync-jobs`.
 *
 *   MASTER_URL=redis://127.0.0.1:6379 PORT=3001 npx tsx examples/bull-board/server.ts
 *
 * The board is read-only except for retrying a failed job: jobs are made with
 * the CLI (`qsync verify --job`, `--every`, `qsync resync --job`...).
 */
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Queue } from 'bullmq';
import express from 'express';
import { Redis } from 'ioredis';
// In your own project: import { findQueues } from 'qsync/consumer', and the
// prefix is `${prefix}-jobs` ('qsync-jobs' for the default prefix 'qsync').
import { findQueues } from '../../consumer/index.js';
import { jobsPrefix } from '../../shared/keys.js';

export interface BoardOptions {
  masterUrl: string;
  /** the qsync queues to show; default: every queue found on the master */
  queues?: string[];
  /** prefix of qsync's keys. @default 'qsync' */
  prefix?: string;
  /** db of the queues on the master (`--queue-db`). @default 0 */
  queueDb?: number;
  /** 0 picks a free port. @default 0 */
  port?: number;
  host?: string;
}

export interface Board {
  readonly port: number;
  /** the qsync queues on the board */
  readonly queues: string[];
  close(): Promise<void>;
}

export async function startBoard({ masterUrl, queues, prefix = 'qsync', queueDb = 0, port = 0, host = '127.0.0.1' }: BoardOptions): Promise<Board> {
  // BullMQ wants commands to wait out a reconnection rather than fail.
  const connection = new Redis(masterUrl, { db: queueDb, maxRetriesPerRequest: null });
  const names = queues ?? (await findQueues(connection, prefix));
  if (names.length === 0) names.push('default');
  const jobQueues = names.map((name) => new Queue(name, { connection, prefix: jobsPrefix(prefix) }));

  const serverAdapter = new ExpressAdapter();
  createBullBoard({
    queues: jobQueues.map(
      (queue) => new BullMQAdapter(queue, { readOnlyMode: true, allowRetries: true, description: `qsync control jobs of queue '${queue.name}'` }),
    ),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'qsync control jobs' } },
  });
  const app = express();
  app.use('/', serverAdapter.getRouter());

  const server = app.listen(port, host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  return {
    port: (server.address() as AddressInfo).port,
    queues: names,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.all(jobQueues.map((q) => q.close()));
      await connection.quit();
    },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const board = await startBoard({
    masterUrl: process.env.MASTER_URL ?? 'redis://127.0.0.1:6379',
    queues: process.env.QSYNC_QUEUE ? process.env.QSYNC_QUEUE.split(',') : undefined,
    prefix: process.env.QSYNC_PREFIX ?? 'qsync',
    queueDb: Number(process.env.QSYNC_QUEUE_DB ?? 0),
    port: Number(process.env.PORT ?? 3001),
    host: process.env.HOST ?? '127.0.0.1',
  });
  process.stdout.write(`control jobs of ${board.queues.join(', ')} on http://127.0.0.1:${board.port}/\n`);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void board.close());
}
