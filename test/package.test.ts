/**
 * The published package as an application gets it: `npm pack`, installed
 * into a project of its own beside ioredis 5 or 6, its types checked with
 * `strict` and `skipLibCheck: false`, its entry points loaded by import and
 * by require, its CLI run. Only the public entry points are used, never
 * paths inside the package.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

/** The environment of an application's processes: no hooks or preloads of this test run. */
const { NODE_OPTIONS: _preloads, ...ENV } = process.env;

/** Runs a command; a failure throws with everything it printed. */
function run(command: string, args: string[], cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd, env: ENV, maxBuffer: 16 * 1024 * 1024, timeout: 240_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`\`${command} ${args.join(' ')}\` failed in ${cwd}: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout + stderr);
    });
  });
}

async function versionIn(dir: string): Promise<string> {
  const manifest = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8')) as { version: string };
  return manifest.version;
}
const installedVersion = (name: string) => versionIn(path.join(ROOT, 'node_modules', name));
const version = versionIn(ROOT);

const work = await mkdtemp(path.join(os.tmpdir(), 'qsync-package-'));
test.after.always(() => rm(work, { recursive: true, force: true }));

/**
 * `npm pack` of dist/ as `npm test` left it (built when older than the
 * sources); once for the file. Not through the `prepare` script, which would
 * rebuild dist/ while other test files run their CLI processes from it.
 */
async function pack(): Promise<string> {
  const dir = path.join(work, 'pack');
  await mkdir(dir);
  await run(process.execPath, ['scripts/dist.mjs'], ROOT);
  await run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir, '--silent'], ROOT);
  const [file] = (await readdir(dir)).filter((f) => f.endsWith('.tgz'));
  if (!file) throw new Error(`npm pack left no tarball in ${dir}`);
  return path.join(dir, file);
}
let packed: Promise<string> | undefined;
const tarball = () => (packed ??= pack());

const APP = `import { Redis } from 'ioredis';
import * as qsync from 'qsync';
import { createProducer, QueueFullError, UnsupportedCommandError, type ProducerOptions } from 'qsync/producer';
import { SyncWorker, readStatus, type QueueStatus, type WorkerOptions } from 'qsync/consumer';

const options: ProducerOptions = { queue: 'orders', prefix: 'qsync', queueDb: 0 };
const master = new Redis({ lazyConnect: true });
const db: Redis = createProducer(master, options);
const again: Redis = qsync.createProducer(new Redis({ lazyConnect: true }));

export async function write(): Promise<string | null> {
  await db.set('user:1', 'Zhangsan', 'EX', 3600);
  await db.multi().incr('visits').lpush('recent', 'u1').exec();
  await again.pipeline().hset('h', { f: '1' }).exec();
  return db.get('user:1');
}

export function refused(err: unknown): boolean {
  return err instanceof QueueFullError || err instanceof UnsupportedCommandError;
}

const workerOptions: WorkerOptions = { master: { host: 'master.example' }, replica: { host: 'replica.example' }, queue: 'orders' };
export const worker = (): SyncWorker => new SyncWorker(workerOptions);
export const status = (): Promise<QueueStatus> => readStatus(master, 'qsync', 'orders');
`;

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    lib: ['ES2022'],
    types: ['node'],
    strict: true,
    skipLibCheck: false,
    noEmit: true,
  },
  files: ['app.ts'],
};

const LOAD_ESM = "await import('qsync'); await import('qsync/producer'); await import('qsync/consumer'); console.log('imported');";
const LOAD_CJS = "require('qsync'); require('qsync/producer'); require('qsync/consumer'); console.log('required');";

for (const [ioredis, alias] of [
  ['5', 'ioredis'],
  ['6', 'ioredis6'],
] as const) {
  test(`the packed package type-checks under strict without skipLibCheck, loads by import and require and runs its CLI, beside ioredis ${ioredis}`, async (t) => {
    t.timeout(300_000, 'a build, an install from the npm cache and a type-check');
    const app = path.join(work, `app-ioredis${ioredis}`);
    await mkdir(app);
    await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: `app-ioredis${ioredis}`, private: true, type: 'module' }));
    await writeFile(path.join(app, 'tsconfig.json'), JSON.stringify(TSCONFIG));
    await writeFile(path.join(app, 'app.ts'), APP);
    // Exact versions this checkout already installed, so the npm cache has them.
    const versions = { ioredis: await installedVersion(alias), types: await installedVersion('@types/node') };
    const packages = [await tarball(), `ioredis@${versions.ioredis}`, `@types/node@${versions.types}`];
    await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', ...packages], app);

    await run(process.execPath, [TSC, '-p', app], app);
    t.is((await run(process.execPath, ['--input-type=module', '-e', LOAD_ESM], app)).trim(), 'imported');
    t.regex(await run(process.execPath, ['-e', LOAD_CJS], app), /^required$/m);
    // The CLI as installed: bin/qsync.js runs the compiled dist/.
    t.is((await run(path.join(app, 'node_modules', '.bin', 'qsync'), ['--version'], app)).trim(), await version);
  });
}
