/**
 * What the producer checks before a write leaves for the master:
 * - its keys are not in qsync's own namespace (`<prefix>:` and
 *   `<prefix>-jobs:` in the queue's db), checked on every write, at once;
 * - the master cannot evict keys (unless the application allowed it) and
 *   has the queue's db, checked once per connection, at its first write.
 *
 * While that check is out, every command sent through the producer waits
 * for it in the order it was issued, so that a read still sees the writes
 * issued before it.
 */
import type { Redis } from 'ioredis';
import { callKeyIndexes, commandSpec } from '../shared/commands.js';
import { ConfigError, ReservedKeyError } from '../shared/errors.js';
import { ownKeyPrefixes, type QueueKeys } from '../shared/keys.js';
import { canEvict, evictionPolicy } from '../shared/probe.js';
import type { LoggedCommand } from './calls.js';
import { rejectLater } from './refusals.js';

/** A master found unfit is asked again at a write after this long, so that fixing it needs no restart. */
const RECHECK_MS = 1000;

/** Selects a db inside a script, which leaves the connection's own db alone. */
const SELECT_DB = "return redis.pcall('SELECT', ARGV[1])";

type Waiting = (err: Error | undefined) => void;

export class WriteGuard {
  private readonly prefixes: { text: string; bytes: Buffer }[];
  protected fit = false;
  private refusal?: { err: ConfigError; at: number };
  private checking = false;
  private waiting: Waiting[] = [];

  constructor(
    protected readonly client: Redis,
    private readonly keys: QueueKeys,
    private readonly queueDb: number,
    protected readonly allowEviction: boolean,
  ) {
    this.prefixes = ownKeyPrefixes(keys.prefix).map((text) => ({ text, bytes: Buffer.from(text) }));
    // A new connection may reach another server (after a failover): check it again.
    client.on('close', () => {
      this.fit = false;
    });
  }

  /** Throws a ReservedKeyError for a write to a key in qsync's own namespace. */
  refuseOwnKeys(cmd: LoggedCommand, db: number): void {
    if (db !== this.queueDb || !cmd.write) return;
    const spec = commandSpec(cmd.name);
    if (!spec) return;
    for (const i of callKeyIndexes(spec, cmd.args)) {
      const key = cmd.args[i];
      for (const p of this.prefixes) {
        const inside =
          typeof key === 'string' ? key.startsWith(p.text) : key.length >= p.bytes.length && p.bytes.equals(key.subarray(0, p.bytes.length));
        if (inside) throw new ReservedKeyError(cmd.name, key.toString(), p.text, db);
      }
    }
  }

  /**
   * Sends a write (`write`) or any other command in order: at once once the
   * master is known fit (or for a command other than a write while no check
   * is out), else after the check, which a write starts. A write rejects
   * with the check's error; other commands run whatever it found.
   */
  run<T>(write: boolean, send: () => Promise<T>): Promise<T> {
    if (!this.checking) {
      if (!write || this.fit) return send();
      // On a later turn, like every refusal (producer/refusals.ts): an app retrying at once must not spin.
      if (this.refusal && Date.now() - this.refusal.at < RECHECK_MS) return rejectLater(this.refusal.err);
      this.checking = true;
      this.check().then(
        () => this.settle(undefined),
        (err: Error) => this.settle(err),
      );
    }
    return new Promise<T>((resolve, reject) => {
      this.waiting.push((err) => {
        if (write && err) reject(err);
        else {
          try {
            resolve(send());
          } catch (e) {
            reject(e as Error);
          }
        }
      });
    });
  }

  /** Records what the check found and sends what waited for it, in order. */
  private settle(err: Error | undefined): void {
    this.fit = err === undefined;
    this.refusal = err instanceof ConfigError ? { err, at: Date.now() } : undefined;
    const waiting = this.waiting;
    this.waiting = [];
    this.checking = false;
    for (const w of waiting) w(err);
  }

  /** Rejects with a ConfigError when the master may evict keys or lacks the queue's db; other errors (the link) as they are. */
  protected async check(): Promise<void> {
    const [selected, policy] = await Promise.all([
      this.client.eval(SELECT_DB, 0, this.queueDb).then(
        () => undefined,
        (err: Error) => err,
      ),
      this.allowEviction ? undefined : evictionPolicy(this.client),
    ]);
    if (selected && /DB index is out of range/i.test(selected.message)) {
      throw new ConfigError(`qsync: queueDb ${this.queueDb} does not exist on the master (its 'databases' setting is lower); nothing was written`);
    }
    if (selected) throw selected;
    if (policy !== undefined) this.refuseEviction(policy, "the master's", this.keys.log);
  }

  /** Throws a ConfigError when a master (`whose`: "the master's") may evict keys, or its policy cannot be read. */
  protected refuseEviction(policy: string | null, whose: string, log: string): void {
    if (policy === null) {
      throw new ConfigError(
        `qsync: cannot read ${whose} maxmemory-policy (INFO and CONFIG GET were refused); grant the producer's user +info, or pass allowEviction: true to createProducer; nothing was written`,
      );
    }
    if (canEvict(policy)) {
      throw new ConfigError(
        `qsync: ${whose} maxmemory-policy is ${policy}: Redis may evict the queue's log (${log}) or keys whose writes were logged, and the replica would silently differ; set maxmemory-policy noeviction, or pass allowEviction: true to createProducer; nothing was written`,
      );
    }
  }
}
