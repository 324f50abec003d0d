/**
 * `qsync promote`: an emergency promotion, for when the master is gone or
 * cannot be reached. The replica becomes a master of the queue at once
 * (shared/lua/promote-6.lua), recording the old master's epoch and the last
 * entry of its log it applied: what the old master logged after that entry
 * is its tail, which `qsync rejoin` deals with when it comes back. From then
 * on no consumer applies the old master's log to the promoted server.
 *
 * When the old master is given and answers, it is checked (the replica must
 * follow its log) and fenced, naming the new master, so that writers still
 * on it are told where to go instead of adding to its tail.
 */
import type { Redis } from 'ioredis';
import { RoleError } from '../../shared/errors.js';
import type { QueueKeys } from '../../shared/keys.js';
import { assertDistinct } from '../../shared/probe.js';
import { defineScripts } from '../../shared/scripts.js';
import { addRole, fence, promote, readMasterRole, readReplicaRole, readRoles, unfence, type Fence, type Promotion, type RoleEvent } from './roles.js';

export interface PromoteOptions {
  replica: Redis;
  replicaWhere: string;
  /** the old master when it answers; null when it is gone or unreachable */
  master: Redis | null;
  /** how people name the old master; '' when not given */
  masterWhere: string;
  keys: QueueKeys;
}

export interface PromoteResult extends Promotion {
  /** the old master answered and was fenced */
  fencedOldMaster: boolean;
}

export async function runPromote(o: PromoteOptions): Promise<PromoteResult> {
  const { replica, master, keys, replicaWhere: b, masterWhere: a } = o;
  defineScripts(replica);
  const r = await readReplicaRole(replica, keys);
  if (r.promoted)
    throw new RoleError(
      `qsync: promote: --replica ${b} was promoted to master of queue '${keys.queue}' already (epoch ${r.promoted}); nothing changed`,
    );
  if (r.seq === null)
    throw new RoleError(
      `qsync: promote: --replica ${b} is not a replica of queue '${keys.queue}': it holds no watermark (${keys.applied}); nothing changed`,
    );
  let history: RoleEvent[] = [];
  let fenced: { event: RoleEvent; before: Fence } | undefined;
  if (master) {
    await assertDistinct(master, replica, a, b);
    const m = await readMasterRole(master, keys);
    if (m.epoch === null || m.epoch !== r.epoch)
      throw new RoleError(
        `qsync: promote: --replica ${b} is not a replica of queue '${keys.queue}' on --master ${a}: it follows epoch ${r.epoch ?? 'none'}, the master's is ${m.epoch ?? 'none'}; nothing changed`,
      );
    const before = await fence(master, keys, b);
    fenced = { event: { event: 'fenced', server: a, newMaster: b, seq: before.seq ?? 0, epoch: m.epoch, at: Date.now() }, before };
    history = [...(await readRoles(master, keys)), fenced.event];
  }
  let promoted: Promotion;
  try {
    promoted = await promote(replica, keys, { server: `--replica ${b}`, from: a }, 'promote', master ? (r.epoch ?? '') : '', history);
  } catch (err) {
    if (master && fenced) await unfence(master, keys, fenced.before);
    throw err;
  }
  if (master && fenced) await addRole(master, keys, fenced.event);
  return { ...promoted, fencedOldMaster: master !== null };
}
