/**
 * Where the time goes: CPU spent by redis-server per command (INFO
 * commandstats, since the last CONFIG RESETSTAT) and by this Node process.
 */
import type { Redis } from 'ioredis';

/** Script calls as clients send them; their usec include the commands the scripts run. */
export const SCRIPT_COMMANDS = ['evalsha', 'eval'];

/** Microseconds spent in each command since the last CONFIG RESETSTAT. */
export async function commandUsec(client: Redis): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const m of (await client.info('commandstats')).matchAll(/^cmdstat_(\S+):calls=\d+,usec=(\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

/** Sum over `commands` of a commandUsec() answer. */
export function usecOf(stats: Record<string, number>, commands: string[]): number {
  return commands.reduce((sum, c) => sum + (stats[c] ?? 0), 0);
}

/** Starts a measure of this process's CPU; the function it returns gives the microseconds since. */
export function nodeCpu(): () => number {
  const start = process.cpuUsage();
  return () => {
    const used = process.cpuUsage(start);
    return used.user + used.system;
  };
}
