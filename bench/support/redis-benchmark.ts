/**
 * redis-benchmark as a yardstick: what a server takes when Node is not in
 * the way (many pipelined clients written in C).
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

/** Next to the redis-server the harness runs (QSYNC_REDIS_SERVER), else from PATH. */
function binary(): string {
  const server = process.env.QSYNC_REDIS_SERVER;
  return server ? path.join(path.dirname(server), 'redis-benchmark') : 'redis-benchmark';
}

/** The `redis-benchmark` arguments, for the docs too. */
export const PIPELINED_SET_ARGS = ['-t', 'set', '-P', '64', '-n', '1000000', '-c', '50', '-q'];

/** SETs/s of `redis-benchmark -p PORT -t set -P 64 -n 1000000 -c 50 -q`. */
export async function pipelinedSetCeiling(port: number): Promise<number> {
  const { stdout } = await promisify(execFile)(binary(), ['-h', '127.0.0.1', '-p', String(port), ...PIPELINED_SET_ARGS]);
  const match = /SET: ([\d.]+) requests per second/.exec(stdout);
  if (!match) throw new Error(`unexpected redis-benchmark output: ${stdout.slice(-200)}`);
  return Number(match[1]);
}
