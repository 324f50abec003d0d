/**
 * Prometheus metrics for a worker, served on /metrics. Queue figures (depth,
 * oldest entry, sequence) are read from the master at scrape time, so they
 * are right even while the worker is backing off; counters come from the
 * worker's events, and control job progress (resync, repair, verify) from
 * the 'progress' events of `jobs` (the consumer's job runner reports there).
 * The Node process figures (CPU, memory, event loop lag, heap, handles) are
 * prom-client's defaults. The server answers /healthz and /readyz too
 * (metrics/health.ts).
 */
import type { EventEmitter } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { Redis } from 'ioredis';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { readStatus, type QueueStatus } from '../queue/status.js';
import { DEFAULT_NAME } from '../../shared/keys.js';
import type { JobProgress } from '../jobs/runner.js';
import type { SyncWorker, WorkerState } from '../drain/worker.js';
import type { QueueState } from '../queue/limits.js';
import type { HealthReport, WorkerHealth } from './health.js';

const STATES: WorkerState[] = ['starting', 'standby', 'streaming', 'idle', 'backing-off', 'halted', 'resync-needed', 'replica-promoted', 'stopped'];
const QUEUE_STATES: QueueState[] = ['ok', 'repair-needed', 'resync-needed'];

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

export function workerMetrics(worker: SyncWorker, master: Redis, prefix: string, queue: string, jobs?: EventEmitter): Registry {
  const registry = new Registry();
  // A replica with a name of its own (consumer/replicas/) labels every series with it; the default one keeps its series as they were.
  const replica = worker.keys.name;
  if (replica !== DEFAULT_NAME) registry.setDefaultLabels({ replica });
  collectDefaultMetrics({ register: registry });
  const labelNames = ['queue'] as const;
  const labels = { queue };
  const errors = new Counter({ name: 'qsync_errors_total', help: 'errors by kind', labelNames: ['queue', 'kind'], registers: [registry] });

  // The queue figures come from one read of the master per scrape, shared by
  // the gauges below (prom-client collects them concurrently). During an
  // outage they keep their last values.
  let pending: { at: number; status: Promise<QueueStatus | undefined> } | undefined;
  const snapshot = (): Promise<QueueStatus | undefined> => {
    if (!pending || Date.now() - pending.at > 500) {
      const status = readStatus(master, prefix, queue, replica).catch(() => {
        errors.inc({ queue, kind: 'metrics-master-unreachable' });
        return undefined;
      });
      pending = { at: Date.now(), status };
    }
    return pending.status;
  };
  const fromStatus = (name: string, help: string, value: (s: QueueStatus) => number | null): Gauge<'queue'> => {
    const gauge: Gauge<'queue'> = new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      async collect() {
        const s = await snapshot();
        const v = s && value(s);
        if (v !== undefined && v !== null) gauge.set(labels, v);
      },
    });
    return gauge;
  };
  fromStatus('qsync_queue_depth', 'entries waiting in the master log', (s) => s.depth);
  fromStatus('qsync_oldest_entry_age_seconds', 'age of the oldest waiting entry', (s) => (s.oldestEntryAgeMs ?? 0) / 1000);
  fromStatus('qsync_master_sequence', 'last sequence number assigned on the master', (s) => s.masterSeq);
  fromStatus('qsync_dead_letters', 'entries parked in the dead-letter list', (s) => s.deadLetters);
  fromStatus('qsync_lag_entries', 'master sequence minus replica watermark', (s) => s.lagEntries);
  fromStatus(
    'qsync_verify_differences',
    'keys that differed at the last qsync verify (in flight not counted)',
    (s) => s.lastVerify?.differences ?? null,
  );
  fromStatus('qsync_verify_last_run_timestamp_seconds', 'when the last qsync verify finished', (s) => (s.lastVerify ? s.lastVerify.at / 1000 : null));
  // Counted by the producers' log-write script in the queue's meta hash: a counter that only the master sees grow.
  const refused: Counter<'queue'> = new Counter({
    name: 'qsync_writes_refused_total',
    help: 'writes refused because the queue was full (policy reject), counted on the master',
    labelNames,
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (!s) return;
      refused.reset();
      refused.inc(labels, s.refusedWrites);
    },
  });
  const queueState: Gauge<'queue' | 'state'> = new Gauge({
    name: 'qsync_queue_state',
    help: "1 for the queue's own state: ok, or repair-needed / resync-needed once writes to a full queue went unqueued (mark-dirty)",
    labelNames: ['queue', 'state'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      if (!s) return;
      for (const name of QUEUE_STATES) queueState.set({ queue, state: name }, name === s.queueState ? 1 : 0);
    },
  });
  const watermark = fromStatus('qsync_replica_watermark', 'last sequence number applied on the replica', (s) => s.replicaWatermark);
  const applied = new Counter({
    name: 'qsync_entries_applied_total',
    help: 'entries applied to the replica by this worker',
    labelNames,
    registers: [registry],
  });
  const expiry = new Counter({
    name: 'qsync_expiry_fixes_total',
    help: "what giving the replica the master's view of expiry took, by kind: keys aligned (deleted, or given the master's expiry), commands held back, keys copied from the master",
    labelNames: ['queue', 'kind'],
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'qsync_batch_apply_seconds',
    help: 'time from sending a batch to the replica to its confirmation',
    labelNames,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const state = new Gauge({ name: 'qsync_state', help: '1 for the state the worker is in', labelNames: ['queue', 'state'], registers: [registry] });

  const setState = (s: WorkerState) => {
    for (const name of STATES) state.set({ queue, state: name }, name === s ? 1 : 0);
  };
  setState(worker.state);
  worker.on('state', (s: WorkerState, detail: { side?: string }) => {
    setState(s);
    if (s === 'backing-off') errors.inc({ queue, kind: `${detail.side ?? 'link'}-unreachable` });
    if (s === 'halted' || s === 'resync-needed' || s === 'replica-promoted') errors.inc({ queue, kind: s });
  });
  const server: Gauge<'queue' | 'side' | 'node'> = new Gauge({
    name: 'qsync_server',
    help: "1 for the server each side's connection is on (for a Sentinel group, its master when connected)",
    labelNames: ['queue', 'side', 'node'],
    registers: [registry],
    collect() {
      server.reset();
      for (const [side, node] of Object.entries(worker.servers)) if (node) server.set({ queue, side, node }, 1);
    },
  });
  const jobLabels = ['queue', 'job'] as const;
  const jobRunning = new Gauge({
    name: 'qsync_job_running',
    help: '1 while this consumer runs a control job of that kind',
    labelNames: jobLabels,
    registers: [registry],
  });
  const jobDone = new Gauge({
    name: 'qsync_job_progress_done',
    help: 'keys copied (resync, repair) or checked (verify) so far by the running or last control job',
    labelNames: jobLabels,
    registers: [registry],
  });
  const jobTotal = new Gauge({
    name: 'qsync_job_progress_total',
    help: 'keys the running or last control job expects to copy or check',
    labelNames: jobLabels,
    registers: [registry],
  });
  jobs?.on('progress', (job: string, p: JobProgress | null) => {
    const l = { queue, job };
    jobRunning.set(l, p ? 1 : 0);
    if (!p) return;
    jobDone.set(l, p.done);
    jobTotal.set(l, p.total);
  });
  worker.on('expiry', (e: { aligned: number; heldBack: number; copied: number }) => {
    expiry.inc({ queue, kind: 'aligned' }, e.aligned);
    expiry.inc({ queue, kind: 'held-back' }, e.heldBack);
    expiry.inc({ queue, kind: 'copied' }, e.copied);
  });
  worker.on('applied', (e: { count: number; watermark: number; seconds: number }) => {
    applied.inc(labels, e.count);
    latency.observe(labels, e.seconds);
    watermark.set(labels, e.watermark);
  });

  return registry;
}

/**
 * Serves a registry on http://host:port/metrics and, given a worker's
 * health, /healthz (live) and /readyz (ready) as JSON, 200 or 503.
 */
export function serveMetrics(
  registry: Registry,
  port: number,
  { host = '0.0.0.0', health }: { host?: string; health?: WorkerHealth } = {},
): Promise<MetricsServer> {
  const checks: Record<string, (() => HealthReport) | undefined> = { '/healthz': health?.live, '/readyz': health?.ready };
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const check = checks[path];
    if (check) {
      const { status, body } = check();
      res.writeHead(status, { 'content-type': 'application/json' }).end(`${JSON.stringify(body)}\n`);
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404).end(`not found; try ${health ? '/metrics, /healthz or /readyz' : '/metrics'}\n`);
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      (err: Error) => res.writeHead(500).end(`${err.message}\n`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const address = server.address();
      resolve({
        port: typeof address === 'object' && address ? address.port : port,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
  });
}
