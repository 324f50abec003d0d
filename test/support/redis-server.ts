/**
 * Test harness that runs real `redis-server` processes on free loopback ports.
 *
 * Every server gets its own data directory, a log file inside it, and is
 * tracked so that a crashed or forgotten test run never leaves processes
 * behind (see the `exit` hook at the bottom of this file).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants as fsConstants, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { Redis, type RedisOptions } from 'ioredis';

/** Options for {@link startRedis}. */
export interface RedisServerOptions {
  /**
   * How the dataset survives a restart:
   * - `'none'` (default): nothing is written to disk.
   * - `'aof'`: append-only file with `appendfsync always`, so even a SIGKILL keeps every acknowledged write.
   * - `'rdb'`: an RDB snapshot is written on a clean (SIGTERM) stop; a SIGKILL loses the data.
   */
  persistence?: 'none' | 'aof' | 'rdb';
  /** Extra `redis-server` arguments, appended last so they override the harness defaults. */
  args?: string[];
  /** Fixed port; by default a free one is picked (and re-picked if another process wins the race for it). */
  port?: number;
  /** Data directory; by default a fresh temp dir under `os.tmpdir()`. Note that {@link RedisServer.destroy} deletes it either way. */
  dir?: string;
  /** Sets `requirepass`; {@link RedisServer.client} and {@link RedisServer.url} include it. */
  password?: string;
  /** Serve TLS only (plain port disabled). The server cert/key are also presented as the client certificate. */
  tls?: { certFile: string; keyFile: string; caFile: string };
}

/** A running (or stopped, restartable) redis-server process. */
export interface RedisServer {
  /** Always `'127.0.0.1'`. */
  readonly host: string;
  /** The TCP (or TLS) port; stays the same across restarts. */
  readonly port: number;
  /** The data directory (holds `redis.log` too). */
  readonly dir: string;
  /** `redis://127.0.0.1:PORT`, `redis://:PASSWORD@...` with a password, `rediss://` with TLS. */
  readonly url: string;
  /**
   * Creates a new ioredis client for this server. The client is tracked and
   * quit/disconnected by {@link RedisServer.stop}, so tests need not clean it up.
   * With TLS the hostname check is skipped (test certificates rarely name 127.0.0.1).
   */
  client(db?: number, opts?: RedisOptions): Redis;
  /**
   * Disconnects tracked clients, signals the process (default SIGTERM) and waits
   * for it to exit. Keeps the directory so {@link RedisServer.restart} can reload it.
   */
  stop(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /**
   * Stops the server if running, then starts it again on the same port and dir.
   * `persistence` defaults to the current mode; `'none'` deletes the dump/AOF
   * files first so the server comes back empty.
   */
  restart(opts?: { persistence?: 'none' | 'aof' | 'rdb' }): Promise<void>;
  /** Stops the server if running, then deletes its directory. */
  destroy(): Promise<void>;
}

const HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 15_000;
const PORT_ATTEMPTS = 5;

/** Children still running, killed on process exit. */
const liveChildren = new Set<ChildProcess>();
/** Temp dirs this module created; removed on process exit unless destroy() already did. */
const ownedDirs = new Set<string>();

/**
 * Returns a port that was free on 127.0.0.1 a moment ago. Another process can
 * grab it before we use it, which is why {@link startRedis} retries on bind errors.
 */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Starts a redis-server and resolves once it answers PING (and the answer comes
 * from our own process, not some other server that won the port race).
 */
export async function startRedis(opts: RedisServerOptions = {}): Promise<RedisServer> {
  const bin = findRedisBinary();
  let dir = opts.dir;
  if (dir === undefined) {
    dir = await mkdtemp(path.join(os.tmpdir(), 'qsync-redis-'));
    ownedDirs.add(dir);
  }
  const server = new LocalRedisServer(bin, dir, opts);
  try {
    await server.start(opts.port, opts.persistence ?? 'none');
  } catch (err) {
    // Keep a caller-supplied dir: it may hold the data they wanted to load.
    if (ownedDirs.delete(dir)) await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    throw err;
  }
  return server;
}

type Persistence = 'none' | 'aof' | 'rdb';

interface Launched {
  child: ChildProcess;
  /** Resolves when the process has exited (or failed to spawn). */
  exited: Promise<void>;
  isRunning(): boolean;
  spawnError?: Error;
}

class LocalRedisServer implements RedisServer {
  readonly host = HOST;
  #port = 0;
  #persistence: Persistence = 'none';
  #proc: Launched | null = null;
  #stopping: Promise<void> | null = null;
  readonly #clients = new Set<Redis>();
  readonly #tlsClientOptions: RedisOptions['tls'];

  constructor(
    private readonly bin: string,
    readonly dir: string,
    private readonly opts: RedisServerOptions,
  ) {
    this.#tlsClientOptions = opts.tls && {
      ca: readFileSync(opts.tls.caFile),
      cert: readFileSync(opts.tls.certFile),
      key: readFileSync(opts.tls.keyFile),
      checkServerIdentity: () => undefined,
    };
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    const scheme = this.opts.tls ? 'rediss' : 'redis';
    const auth = this.opts.password === undefined ? '' : `:${encodeURIComponent(this.opts.password)}@`;
    return `${scheme}://${auth}${HOST}:${this.#port}`;
  }

  client(db = 0, opts: RedisOptions = {}): Redis {
    const client = new Redis({
      host: HOST,
      port: this.#port,
      db,
      password: this.opts.password,
      tls: this.#tlsClientOptions,
      ...opts,
    });
    this.#clients.add(client);
    client.once('end', () => this.#clients.delete(client));
    return client;
  }

  /** Launches the process, retrying with a new port if the picked one was taken in the meantime. */
  async start(fixedPort: number | undefined, persistence: Persistence): Promise<void> {
    this.#persistence = persistence;
    for (let attempt = 1; ; attempt++) {
      const port = fixedPort ?? (await freePort());
      const logOffsets = [fileSize(this.#logFile), fileSize(this.#stdoutFile)] as const;
      const proc = launch(this.bin, this.#args(port, persistence), this.#stdoutFile);
      const outcome = await waitReady(proc, {
        port,
        password: this.opts.password,
        tls: this.#tlsClientOptions,
        pid: proc.child.pid,
      });
      if (outcome.ready) {
        this.#port = port;
        this.#proc = proc;
        return;
      }
      if (proc.isRunning()) {
        proc.child.kill('SIGKILL');
        await proc.exited;
      }
      const log = this.#logSince(logOffsets);
      const portRace = /Address already in use/i.test(log);
      if (portRace && fixedPort === undefined && attempt < PORT_ATTEMPTS) continue;
      throw new Error(
        `redis-server did not become ready on ${HOST}:${port} (${outcome.reason}; dir ${this.dir}).${log.trim() ? `\nLog tail:\n${log}` : ''}`,
      );
    }
  }

  stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    // Concurrent stop() calls share one shutdown instead of racing signals.
    this.#stopping ??= this.#doStop(signal).finally(() => {
      this.#stopping = null;
    });
    return this.#stopping;
  }

  async restart(opts: { persistence?: Persistence } = {}): Promise<void> {
    await this.stop();
    const persistence = opts.persistence ?? this.#persistence;
    if (persistence === 'none') {
      // Redis would happily reload these; 'none' promises an empty dataset.
      for (const name of ['dump.rdb', 'appendonlydir', 'appendonly.aof']) {
        await rm(path.join(this.dir, name), { recursive: true, force: true });
      }
    }
    await this.start(this.#port, persistence);
  }

  async destroy(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true, maxRetries: 3 });
    ownedDirs.delete(this.dir);
  }

  async #doStop(signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    await this.#closeClients();
    const proc = this.#proc;
    this.#proc = null;
    if (!proc?.isRunning()) return;
    // The child is unref'd so a forgotten server cannot keep the test process
    // alive; while we wait for it to exit it must hold the event loop open.
    proc.child.ref();
    proc.child.kill(signal);
    if (!(await settlesWithin(proc.exited, STOP_TIMEOUT_MS))) {
      proc.child.kill('SIGKILL');
      await proc.exited;
    }
  }

  async #closeClients(): Promise<void> {
    const clients = [...this.#clients];
    this.#clients.clear();
    await Promise.all(
      clients.map(async (client) => {
        // Teardown may race with resets (e.g. a fault proxy closing); those errors are noise now.
        client.on('error', () => undefined);
        if (client.status === 'ready') {
          await settlesWithin(
            client.quit().catch(() => undefined),
            500,
          );
        }
        // Also stops any reconnect loop, which would otherwise spin against a dead port.
        client.disconnect();
      }),
    );
  }

  #args(port: number, persistence: Persistence): string[] {
    const portArgs = this.opts.tls
      ? [
          '--port',
          '0',
          '--tls-port',
          String(port),
          '--tls-cert-file',
          this.opts.tls.certFile,
          '--tls-key-file',
          this.opts.tls.keyFile,
          '--tls-ca-cert-file',
          this.opts.tls.caFile,
        ]
      : ['--port', String(port)];
    const persistenceArgs: Record<Persistence, string[]> = {
      none: ['--save', '', '--appendonly', 'no'],
      // fsync before every reply: acknowledged writes survive even SIGKILL.
      aof: ['--save', '', '--appendonly', 'yes', '--appendfsync', 'always'],
      // A save point makes Redis write the RDB on SIGTERM; one hour means no
      // background save fires during a test.
      rdb: ['--save', '3600', '1', '--appendonly', 'no'],
    };
    return [
      ...portArgs,
      '--bind',
      HOST,
      '--dir',
      this.dir,
      ...persistenceArgs[persistence],
      '--daemonize',
      'no',
      '--protected-mode',
      'no',
      '--enable-debug-command',
      'yes',
      '--loglevel',
      'warning',
      '--logfile',
      this.#logFile,
      ...(this.opts.password === undefined ? [] : ['--requirepass', this.opts.password]),
      ...(this.opts.args ?? []),
    ];
  }

  get #logFile(): string {
    return path.join(this.dir, 'redis.log');
  }

  /** Catches what Redis prints before its log file is open (e.g. config errors). */
  get #stdoutFile(): string {
    return path.join(this.dir, 'redis.stdout');
  }

  /** Log lines written since the given offsets, so old failures don't mislead retries. */
  #logSince([logOffset, stdoutOffset]: readonly [number, number]): string {
    return [readTail(this.#stdoutFile, stdoutOffset), readTail(this.#logFile, logOffset)].filter((part) => part.trim()).join('\n');
  }
}

function launch(bin: string, args: string[], stdoutFile: string): Launched {
  const out = openSync(stdoutFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(bin, args, { stdio: ['ignore', out, out] });
  } finally {
    closeSync(out); // the child has its own copy of the descriptor
  }
  let running = true;
  const launched: Launched = { child, exited: Promise.resolve(), isRunning: () => running };
  liveChildren.add(child);
  launched.exited = new Promise<void>((resolve) => {
    const done = () => {
      running = false;
      liveChildren.delete(child);
      resolve();
    };
    child.once('exit', done);
    child.once('error', (err) => {
      // Spawn failure (e.g. EACCES): 'exit' may never come.
      launched.spawnError = err;
      done();
    });
  });
  child.unref();
  return launched;
}

interface ProbeTarget {
  port: number;
  password: string | undefined;
  tls: RedisOptions['tls'];
  pid: number | undefined;
}

/** Polls until the server answers PING from the expected pid, the process dies, or time runs out. */
async function waitReady(proc: Launched, target: ProbeTarget): Promise<{ ready: boolean; reason: string }> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let reason = 'no answer to PING';
  while (Date.now() < deadline) {
    if (!proc.isRunning()) {
      return { ready: false, reason: proc.spawnError ? `spawn failed: ${proc.spawnError.message}` : 'process exited' };
    }
    const result = await probe(target);
    if (result.ok) return { ready: true, reason: 'ok' };
    if (result.reason) reason = result.reason;
    await sleep(25);
  }
  return { ready: false, reason: `${reason} within ${READY_TIMEOUT_MS / 1000}s` };
}

/**
 * One raw RESP round trip: (AUTH,) PING, INFO server. Raw sockets avoid
 * ioredis reconnect noise, and the pid from INFO proves we reached our own child.
 * PING answers -LOADING while a dataset is loading, so "ready" also means loaded.
 */
function probe(target: ProbeTarget): Promise<{ ok: boolean; reason?: string }> {
  return new Promise((resolve) => {
    const socket = target.tls ? tls.connect({ host: HOST, port: target.port, ...target.tls }) : net.connect({ host: HOST, port: target.port });
    let received = '';
    const finish = (result: { ok: boolean; reason?: string }) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ ok: false }), 1000);
    socket.setEncoding('utf8');
    socket.on('error', () => finish({ ok: false }));
    socket.on('close', () => finish({ ok: false }));
    socket.on('data', (data: string) => {
      received += data;
      const error = /^-(.*)\r\n/m.exec(received);
      if (error) return finish({ ok: false, reason: `server replied: -${error[1]}` });
      const pid = /^process_id:(\d+)\r\n/m.exec(received);
      if (!pid || !received.includes('+PONG\r\n')) return;
      if (Number(pid[1]) === target.pid) return finish({ ok: true });
      finish({ ok: false, reason: `port answered by another redis-server (pid ${pid[1]})` });
    });
    const commands = [['PING'], ['INFO', 'server']];
    if (target.password !== undefined) commands.unshift(['AUTH', target.password]);
    socket.write(commands.map(encodeCommand).join(''));
  });
}

function encodeCommand(args: string[]): string {
  return `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`;
}

/** Env QSYNC_REDIS_SERVER wins; otherwise the first `redis-server` on PATH. */
function findRedisBinary(): string {
  const fromEnv = process.env.QSYNC_REDIS_SERVER;
  if (fromEnv) {
    if (!isExecutableFile(fromEnv)) throw new Error(`QSYNC_REDIS_SERVER=${fromEnv} is not an executable file`);
    return fromEnv;
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, 'redis-server');
    if (isExecutableFile(candidate)) return candidate;
  }
  throw new Error('redis-server not found on PATH; run `node scripts/setup.mjs`, install Redis >= 7.0, or set QSYNC_REDIS_SERVER');
}

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, fsConstants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** Last ~30 lines written after byte `offset` (empty if the file doesn't exist). */
function readTail(file: string, offset: number): string {
  try {
    const text = readFileSync(file).subarray(offset).toString('utf8');
    return text.split('\n').slice(-30).join('\n');
  } catch {
    return '';
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** True if `promise` settled within `ms`; the timer is cleared so it never holds the process open. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// A crashed or interrupted test run must not leave servers (or their temp
// dirs) behind. Only synchronous work is possible here.
function killAll(): void {
  for (const child of liveChildren) child.kill('SIGKILL');
  liveChildren.clear();
  if (process.env.QSYNC_KEEP_REDIS_DIRS) return;
  for (const dir of ownedDirs) {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // Best effort: a just-killed child may still be writing.
    }
  }
  ownedDirs.clear();
}

process.on('exit', killAll);
// 'exit' does not run when a signal terminates the process, which is how ava
// ends a worker after a timeout (SIGTERM).
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.once(signal, () => {
    killAll();
    // We only meant to clean up, not to change how the process reacts: with no
    // other handler, re-raise so the default action (termination) still happens.
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  });
}
