/**
 * The control job types consumers run. A new type is registered here, so
 * that `qsync consume` runs it and `qsync jobs` describes it.
 */
import { registerJobType } from '../jobs/runner.js';
import { VERIFY_JOB, verifyJob } from '../verify/job.js';
import { RESYNC_JOB, REPAIR_JOB, resyncJob, repairJob } from '../copy/jobs.js';

registerJobType(VERIFY_JOB, verifyJob);
registerJobType(RESYNC_JOB, resyncJob);
registerJobType(REPAIR_JOB, repairJob);
