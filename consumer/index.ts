export { SyncWorker, ResyncNeeded, type WorkerOptions, type WorkerState } from './drain/worker.js';
export { readStatus, findQueues, formatStatus, type QueueStatus } from './queue/status.js';
export { runResync, ResyncError, type ResyncOptions, type ResyncResult, type ResyncProgress } from './copy/resync.js';
export { runRepair, RepairError, type RepairOptions, type RepairResult, type RepairProgress } from './copy/repair.js';
export { verify, type VerifyOptions } from './verify/verify.js';
export { ClusterConsumer, type ClusterConsumerOptions, type ShardState } from './cluster/consumer.js';
