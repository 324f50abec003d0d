/**
 * What every command of the CLI shares: the flags every command has
 * (--master, --prefix, --queue-db, TLS, --log-level), connections checked
 * before use (a master and a replica also as a pair), and the exit code a
 * command's action sets.
 */
import { Option, type Command } from 'commander';
import type { Redis, RedisOptions } from 'ioredis';
import { isSentinel, redisOptionsFromUrl, redactUrl, nameOption, queueDbOption, type TlsFiles } from '../../shared/config.js';
import { ConfigError, ExitCode } from '../../shared/errors.js';
import { DEFAULT_NAME, DEFAULT_PREFIX, DEFAULT_QUEUE } from '../../shared/keys.js';
import { defineScripts } from '../../shared/scripts.js';
import { connectedNode, probe } from '../../shared/probe.js';
import { checkPair } from '../queue/servers.js';

export interface CommonOpts {
  master?: string;
  prefix: string;
  queue?: string;
  queueDb?: string;
  /** the replica, among those the log feeds (commands that take --name) */
  name?: string;
  logLevel: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsInsecure?: boolean;
}

export function required(value: string | undefined, flag: string, env: string): string {
  if (!value) throw new ConfigError(`qsync: ${flag} is required (or set ${env})`);
  return value;
}

/** Entries carry their own db, and --queue-db places qsync's keys: a db in a URL would be ignored, so it is refused. */
export function withoutDb(options: RedisOptions, flag: string, url: string): RedisOptions {
  if (options.db)
    throw new ConfigError(
      `qsync: ${flag} '${redactUrl(url)}' names db ${options.db}; writes replay into the db they were made in, and --queue-db sets where qsync keeps its keys`,
    );
  return options;
}

export function tlsFiles(o: CommonOpts): TlsFiles {
  return { ca: o.tlsCa, cert: o.tlsCert, key: o.tlsKey, insecure: o.tlsInsecure };
}

export function common(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--master <url>', 'master URL, redis://[user:password@]host:port or redis+sentinel://host:26379,host:26380/mymaster').env(
        'QSYNC_MASTER',
      ),
    )
    .addOption(new Option('--prefix <name>', "prefix of qsync's keys").env('QSYNC_PREFIX').default(DEFAULT_PREFIX))
    .addOption(new Option('--queue-db <n>', 'db of the queue on the master and of the watermark on the replica').env('QSYNC_QUEUE_DB'))
    .addOption(new Option('--tls-ca <file>', 'CA bundle (PEM) to verify rediss:// servers').env('QSYNC_TLS_CA'))
    .addOption(new Option('--tls-cert <file>', 'client certificate (PEM) for rediss://').env('QSYNC_TLS_CERT'))
    .addOption(new Option('--tls-key <file>', 'client key (PEM) for rediss://').env('QSYNC_TLS_KEY'))
    .addOption(new Option('--tls-insecure', 'do not verify server certificates (testing only)'))
    .addOption(new Option('--log-level <level>', 'log level').env('QSYNC_LOG_LEVEL').default('info'));
}

/** Connection options for --master or --replica, checked. */
export function sideOptions(o: CommonOpts & { replica?: string }, side: 'master' | 'replica'): RedisOptions {
  const url = required(o[side], `--${side}`, `QSYNC_${side.toUpperCase()}`);
  return withoutDb(redisOptionsFromUrl(url, `--${side}`, tlsFiles(o)), `--${side}`, url);
}

/** One checked connection to the master or the replica, in the queue db (which must exist), for a command that runs once. */
export async function open(o: CommonOpts & { replica?: string }, side: 'master' | 'replica', timeoutMs?: number): Promise<Redis> {
  const options = sideOptions(o, side);
  const client = await probe({ ...options, db: queueDbOption(o.queueDb, '--queue-db') }, side, redactUrl(o[side]!), timeoutMs);
  defineScripts(client);
  return client;
}

/**
 * Both servers of a command that takes --master and --replica, each checked
 * as by open(), then as a pair (queue/servers.ts): two different servers, not
 * swapped. Every such command goes through here before it touches either.
 */
export async function openPair(o: CommonOpts & { replica?: string }, timeoutMs?: number): Promise<{ master: Redis; replica: Redis; close(): void }> {
  const place = queuePlace(o);
  const clients: Redis[] = [];
  const close = () => {
    for (const c of clients) c.disconnect();
  };
  try {
    const master = await open(o, 'master', timeoutMs);
    clients.push(master);
    const replica = await open(o, 'replica', timeoutMs);
    clients.push(replica);
    await checkPair(master, replica, { ...place, masterWhere: where(o.master!, master), replicaWhere: where(o.replica!, replica) });
    return { master, replica, close };
  } catch (err) {
    close();
    throw err;
  }
}

/** A server for messages: its URL without secrets, and for a Sentinel group the node it reached. */
function where(url: string, client: Redis): string {
  const node = isSentinel(client.options) ? connectedNode(client) : undefined;
  return node ? `${redactUrl(url)} (master ${node})` : redactUrl(url);
}

/** Where a queue lives: its prefix, name and db, from the flags; and which of its replicas (--name). */
export interface QueuePlace {
  prefix: string;
  queue: string;
  queueDb: number;
  name: string;
}

export function queuePlace(o: CommonOpts): QueuePlace {
  return {
    prefix: nameOption(o.prefix, '--prefix', DEFAULT_PREFIX),
    queue: nameOption(o.queue, '--queue', DEFAULT_QUEUE),
    queueDb: queueDbOption(o.queueDb, '--queue-db'),
    name: nameOption(o.name, '--name', DEFAULT_NAME),
  };
}

/** `--queue <name>` with its environment variable and default. */
export function queueOption(description = 'queue'): Option {
  return new Option('--queue <name>', description).env('QSYNC_QUEUE').default(DEFAULT_QUEUE);
}

/** The exit code of the command that ran: its action sets it, main() returns it. */
let exitCode: number = ExitCode.ok;

export function setExitCode(code: number): void {
  exitCode = code;
}

export function takeExitCode(): number {
  const code = exitCode;
  exitCode = ExitCode.ok;
  return code;
}
