export { SyncWorker, ResyncNeeded, type WorkerOptions, type WorkerState } from './worker.js';
export { readStatus, findQueues, formatStatus, type QueueStatus } from './status.js';
export { main } from './cli.js';
export { runResync, ResyncError, type ResyncOptions, type ResyncResult, type ResyncProgress } from './resync.js';
export { runRepair, RepairError, type RepairOptions, type RepairResult, type RepairProgress } from './repair.js';
export { verify, type VerifyOptions } from './verify.js';
