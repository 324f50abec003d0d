/**
 * The `qsync` command line: consume, status, limit, dlq, verify, jobs, resync, repair, acl, failover, promote, rejoin. Every option can also
 * come from an environment variable (named in --help). Bad input ends with
 * one line naming the bad value and exit code 2; other failures have their
 * own codes (see shared/errors.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { ExitCode, QsyncError } from '../../shared/errors.js';
import { consumeCommand } from './consume.js';
import { statusCommand } from './status.js';
import { dlqCommands } from './dlq.js';
import { limitCommand } from './limit.js';
import { verifyCommand } from './verify.js';
import { jobsCommand } from './jobs.js';
import { copyCommand } from './copy.js';
import { aclCommand } from './acl.js';
import { replicasCommand } from './replicas.js';
import { failoverCommands } from './failover.js';
import { takeExitCode } from './options.js';

/** qsync's own version, from the package.json above this file (in a checkout and in dist/ alike). */
function version(): string {
  for (let dir = new URL('.', import.meta.url); dir.pathname !== '/'; dir = new URL('..', dir)) {
    const file = new URL('package.json', dir);
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'qsync' && pkg.version) return pkg.version;
  }
  return 'unknown';
}

export function buildProgram(): Command {
  const program = new Command('qsync')
    .description('Keep a Redis replica in another data centre in sync through a durable write log.')
    .version(version(), '-V, --version', 'print the version of qsync')
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(text.replace(/^error: /, 'qsync: ')) })
    .showHelpAfterError(false);

  consumeCommand(program);
  statusCommand(program);
  dlqCommands(program);
  limitCommand(program);
  verifyCommand(program);
  jobsCommand(program);
  copyCommand(program, 'resync');
  copyCommand(program, 'repair');
  aclCommand(program);
  replicasCommand(program);
  failoverCommands(program);
  return program;
}

/** Runs the CLI and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    takeExitCode();
    await buildProgram().parseAsync(argv, { from: 'user' });
    return takeExitCode();
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit 0; help shown because no command was given is a usage error.
      return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    if (err instanceof QsyncError) {
      process.stderr.write(`${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`qsync: unexpected error: ${(err as Error).message}\n`);
    return ExitCode.internal;
  }
}
