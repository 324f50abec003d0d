/**
 * pino JSON logs. Passwords never reach a log line: URLs are logged through
 * redactUrl, and the paths below are censored as a second guard.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function createLogger(level: LevelWithSilent = 'info', destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      name: 'qsync',
      level,
      base: { pid: process.pid },
      redact: {
        paths: ['password', '*.password', '*.*.password', 'options.password', 'url', '*.url', 'auth', '*.auth'],
        censor: '***',
      },
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}
