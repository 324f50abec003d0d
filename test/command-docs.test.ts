/**
 * The command table against a running redis-server: every command the
 * server says writes (COMMAND INFO, subcommands included) is either
 * replicated, with a round trip in test/commands.test.ts, or refused with
 * its reason; and the README's command tables are the generator's output.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { COMMANDS, REFUSED } from '../shared/commands.js';
import { UnsupportedCommandError } from '../shared/errors.js';
import { createProducer } from '../producer/index.js';
import { commandsTable, END, README, START } from '../scripts/commands-table.js';
import { startRedis, type RedisServer } from './support/redis-server.js';

/** Replicated by their effects, outside the command table (producer/user-scripts.ts). */
const BY_EFFECTS = new Set(['eval', 'evalsha']);

/** Key spec flags that say a command changes its keys, whatever its own flags say (PFCOUNT rewrites its cache). */
const WRITES_KEYS = new Set(['OW', 'RW', 'RM', 'INSERT', 'DELETE', 'UPDATE']);

/** One reply of COMMAND INFO: name, arity, flags, first, last, step, ACL categories, tips, key specs, subcommands. */
type Info = [string, number, string[], number, number, number, string[], unknown[], unknown[][], Info[]];

/** Whether a key spec (a flat list of names and values) has a flag in WRITES_KEYS. */
function specWrites(spec: unknown[]): boolean {
  const at = spec.indexOf('flags');
  return at >= 0 && (spec[at + 1] as string[]).some((f) => WRITES_KEYS.has(f));
}

/** The commands that write, by the name the producer sees (a subcommand's container: `xgroup|create` is `xgroup`), with the names that made them so. */
async function serverWrites(server: RedisServer): Promise<Map<string, string[]>> {
  const info = (await server.client().command('INFO')) as Info[];
  const writes = new Map<string, string[]>();
  const walk = (c: Info) => {
    const [name, , flags] = c;
    if (flags.includes('write') || (c[8] ?? []).some(specWrites)) {
      const top = name.split('|')[0];
      writes.set(top, [...(writes.get(top) ?? []), name]);
    }
    for (const sub of c[9] ?? []) walk(sub);
  };
  for (const c of info) walk(c);
  return writes;
}

let server: RedisServer;
test.before(async () => {
  server = await startRedis();
});
test.after.always(() => server?.destroy());

test('every write the server knows is replicated (with a round trip) or refused with its reason', async (t) => {
  const writes = await serverWrites(server);
  t.true(writes.has('set') && writes.has('xgroup') && writes.has('pfcount') && writes.has('eval'), 'the server was read');
  const scenarios = readFileSync(new URL('./commands.test.ts', import.meta.url), 'utf8');
  const neither = [...writes].filter(([name]) => !Object.hasOwn(COMMANDS, name) && !Object.hasOwn(REFUSED, name) && !BY_EFFECTS.has(name));
  t.deepEqual(
    neither.map(([name, from]) => `${name} (${from.join(', ')})`),
    [],
    'writes neither replicated nor refused with a reason',
  );
  const untried = Object.keys(COMMANDS).filter((name) => !new RegExp(`^  '?${name}'?: async`, 'm').test(scenarios));
  t.deepEqual(untried, [], 'replicated commands without a scenario in test/commands.test.ts');
});

test('the table names only commands the server has, none both replicated and refused', async (t) => {
  const names = new Set(((await server.client().command('INFO')) as Info[]).map((c) => c[0]));
  t.deepEqual(
    [...Object.keys(COMMANDS), ...Object.keys(REFUSED)].filter((name) => !names.has(name)),
    [],
  );
  t.deepEqual(
    Object.keys(REFUSED).filter((name) => Object.hasOwn(COMMANDS, name) || BY_EFFECTS.has(name)),
    [],
  );
});

test("a refused command is refused before it is sent, and the error says the table's reason", async (t) => {
  const producer = createProducer(server.client());
  for (const [name, reason] of Object.entries(REFUSED)) {
    const err = await t.throwsAsync(producer.call(name, 'k', '1'), { instanceOf: UnsupportedCommandError }, name);
    t.is(err?.message, `qsync: ${name.toUpperCase()} ${reason}; nothing was written`);
  }
  t.is(await server.client().dbsize(), 0, 'nothing reached the server');
});

test('the README holds the command tables as npm run docs:commands writes them', (t) => {
  const readme = readFileSync(README, 'utf8');
  const from = readme.indexOf(START);
  const to = readme.indexOf(END);
  t.true(from >= 0 && to > from, 'the README has the markers');
  t.is(readme.slice(from, to + END.length), commandsTable(), 'run npm run docs:commands');
});
