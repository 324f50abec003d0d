/**
 * Runs the qsync CLI as a child process, the way users run it, and records
 * what it prints: the compiled package (dist/, as installed) when it is up to
 * date with the sources (`npm test` builds it first), else `node
 * bin/qsync.js`, which runs the sources through tsx.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { distIsFresh } from '../../scripts/dist.mjs';
import { eventually } from './wait.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = fileURLToPath(new URL(distIsFresh() ? './qsync-dist.mjs' : '../../bin/qsync.js', import.meta.url));

export interface Exit {
  /** exit code, null when a signal ended the process */
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A running CLI process. */
export interface CliProcess {
  readonly pid: number;
  /** stdout lines so far */
  readonly stdout: string[];
  /** stderr lines so far */
  readonly stderr: string[];
  /** resolves when the process has ended and its output is read */
  readonly exited: Promise<Exit>;
  /** stdout lines that are JSON log records, parsed */
  logs(): Record<string, unknown>[];
  /** waits for a log record that matches, and returns it */
  waitForLog(match: (log: Record<string, unknown>) => boolean, timeoutMs?: number, what?: string): Promise<Record<string, unknown>>;
  kill(signal?: NodeJS.Signals): void;
}

/** Processes still running, killed when the test process exits. */
const live = new Set<ChildProcess>();
const killLive = () => {
  for (const child of live) child.kill('SIGKILL');
};
process.on('exit', killLive);
// ava ends a timed-out worker with SIGTERM, which skips 'exit' (see redis-server.ts).
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.once(signal, () => {
    killLive();
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  });
}

function parse(line: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(line);
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Starts `qsync <args>`. The environment is the test's own minus any QSYNC_
 * variables, plus `env`.
 */
export function spawnCli(args: string[], env: Record<string, string> = {}): CliProcess {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('QSYNC_')));
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: { ...base, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  const stdout: string[] = [];
  const stderr: string[] = [];
  const outDone = new Promise<void>((resolve) =>
    createInterface({ input: child.stdout! })
      .on('line', (l) => stdout.push(l))
      .on('close', resolve),
  );
  const errDone = new Promise<void>((resolve) =>
    createInterface({ input: child.stderr! })
      .on('line', (l) => stderr.push(l))
      .on('close', resolve),
  );
  const exited = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      void Promise.all([outDone, errDone]).then(() => resolve({ code, signal }));
    });
  });
  const logs = () => stdout.map(parse).filter((l): l is Record<string, unknown> => l !== undefined);
  return {
    pid: child.pid!,
    stdout,
    stderr,
    exited,
    logs,
    waitForLog: (match, timeoutMs = 15_000, what = 'log line') =>
      eventually(() => logs().find(match), timeoutMs, `${what} (stdout so far: ${stdout.slice(-5).join(' | ')}; stderr: ${stderr.join(' | ')})`),
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}

/** Runs `qsync <args>` to the end (killed after timeoutMs) and returns its exit and output. */
export async function runCli(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 30_000,
): Promise<Exit & { stdout: string[]; stderr: string[] }> {
  const cli = spawnCli(args, env);
  const timer = setTimeout(() => cli.kill('SIGKILL'), timeoutMs);
  try {
    const exit = await cli.exited;
    return { ...exit, stdout: cli.stdout, stderr: cli.stderr };
  } finally {
    clearTimeout(timer);
  }
}
