/**
 * Verification as a control job: a consumer runs it with its own master and
 * replica, reports progress on the job, and keeps the result with the job and
 * as the queue's last verification.
 */
import type { JobContext, JobType } from '../jobs/runner.js';
import { verify, verifySettings } from './verify.js';
import { describeVerify, type VerifyResult } from './result.js';

export const VERIFY_JOB = 'verify';

export const verifyJob: JobType = {
  run: (data: Record<string, unknown>, ctx: JobContext) =>
    verify({
      ...verifySettings(data),
      master: ctx.master,
      replica: ctx.replica,
      prefix: ctx.prefix,
      queue: ctx.queue,
      queueDb: ctx.queueDb,
      name: ctx.name,
      timeoutMs: ctx.timeoutMs,
      signal: ctx.signal,
      source: `job ${ctx.jobId}`,
      onProgress: (p) => ctx.progress({ done: p.scanned, total: p.total, checked: p.checked, differences: p.differences }),
      onWaiting: (w) => ctx.log.info(w, 'verify: keys differ while entries touching them wait in the queue; waiting for the consumer'),
    }),
  describe: (result) => describeVerify(result as VerifyResult),
};
