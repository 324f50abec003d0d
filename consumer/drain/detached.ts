/**
 * A replica detached from the log (`qsync replicas detach`, or the cap's
 * policy `detach-slowest`): the log no longer keeps what it has not applied,
 * so its consumer reports resync-needed, for this replica only.
 */
import type { Redis } from 'ioredis';
import type { QueueKeys } from '../../shared/keys.js';

export class Detached extends Error {}

/** The replica's entry in the replicas hash ('detached:<ms>:<why>') in words. */
export function describeDetached(value: string | null, name: string): string {
  const m = /^detached:(\d+):(.*)$/s.exec(value ?? '');
  const when = m ? ` at ${new Date(Number(m[1])).toISOString()}` : '';
  const why = m?.[2] ? ` (${m[2]})` : '';
  return `replica '${name}' was detached from the master's log${when}${why}; rebuild it with qsync resync --name ${name}`;
}

/** Why this replica is detached, read from the master. */
export async function detachedReason(master: Redis, keys: QueueKeys): Promise<string> {
  return describeDetached(await master.hget(keys.replicas, keys.name), keys.name);
}
