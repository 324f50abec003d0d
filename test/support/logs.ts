import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../shared/logger.js';

/** A debug logger whose records the test can read, one parsed JSON object per line. */
export function capturedLogs(): { lines: Record<string, unknown>[]; logger: Logger } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { lines, logger: createLogger('debug', sink) };
}
