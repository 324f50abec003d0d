/**
 * Which keys a logged command or a whole entry touches, and in which db: the
 * one answer every reader of the log uses (verify's log view, the copy runs'
 * markers), from the command table's key specs.
 */
import { commandSpec, keyIndexes } from './commands.js';
import type { Entry } from './entry.js';

/** A key in a db. */
export interface DbKey {
  db: number;
  key: Buffer;
}

/** A key in a db as one string, for maps and sets: the db, a newline, then the key's bytes as latin1 (one character each). */
export function keyId(db: number, key: Buffer): string {
  return `${db}\n${key.toString('latin1')}`;
}

export function parseKeyId(id: string): DbKey {
  const cut = id.indexOf('\n');
  return { db: Number(id.slice(0, cut)), key: Buffer.from(id.slice(cut + 1), 'latin1') };
}

/**
 * The keys a logged command (name, then arguments) touches when run in db `db`, by its key spec;
 * `COPY src dst DB n` writes dst in db n. Undefined for a command the table does not know.
 */
export function commandKeys(db: number, cmd: Buffer[]): DbKey[] | undefined {
  const name = cmd[0].toString('latin1').toLowerCase();
  const spec = commandSpec(name);
  if (!spec) return undefined;
  const args = cmd.slice(1);
  const keys = keyIndexes(spec.keys, args).map((i) => ({ db, key: args[i] }));
  if (name === 'copy') {
    const at = args.findIndex((a, i) => i >= 2 && a.toString('latin1').toLowerCase() === 'db');
    if (at >= 0 && args[at + 1] && keys[1]) keys[1] = { db: Number(args[at + 1].toString()), key: args[1] };
  }
  return keys;
}

/**
 * The dbs an entry's FLUSHDB or FLUSHALL emptied, whose keys no list can name:
 * 'all', its db, or undefined for an entry without a flush.
 */
export function flushedDbs(entry: Entry): 'all' | number | undefined {
  let flushed: 'all' | number | undefined;
  for (const cmd of entry.commands) {
    const name = cmd[0].toString('latin1').toLowerCase();
    if (name === 'flushall') return 'all';
    if (name === 'flushdb') flushed = entry.db;
  }
  return flushed;
}

/** Every key an entry's commands touch (a command the table does not know counts each argument as a key, to be safe). */
export function entryKeys(entry: Entry): DbKey[] {
  return entry.commands.flatMap((cmd) => commandKeys(entry.db, cmd) ?? cmd.slice(1).map((key) => ({ db: entry.db, key })));
}

/** Keys grouped by db. */
export function byDb(keys: DbKey[]): Map<number, Buffer[]> {
  const out = new Map<number, Buffer[]>();
  for (const { db, key } of keys) {
    const group = out.get(db);
    if (group) group.push(key);
    else out.set(db, [key]);
  }
  return out;
}
