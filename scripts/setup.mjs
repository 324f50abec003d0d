#!/usr/bin/env node
/**
 * Developer/CI setup for qsync: `node scripts/setup.mjs`.
 *
 * 1. Installs npm dependencies: `npm ci` (exactly the lock) when node_modules
 *    is missing, as on a fresh clone; `npm install` when it is older than
 *    package.json / package-lock.json, which keeps the lock in step with an
 *    edited package.json and leaves node_modules in place.
 * 2. Makes sure a redis-server >= 7.0 exists (the tests run real servers),
 *    installing it with apt-get when running as root on Debian/Ubuntu.
 *
 * Plain Node with no dependencies: it runs before `npm install`.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, statSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MIN_REDIS = [7, 0];
const NOT_FOUND =
  'qsync: redis-server not found; install it (Debian/Ubuntu: sudo apt-get install redis-server, macOS: brew install redis) or set QSYNC_REDIS_SERVER';

function fail(message) {
  console.error(message);
  process.exit(1);
}

function mtimeMs(file) {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return null;
  }
}

/** Runs a command with inherited stdio; exits with its status if it fails. */
function run(command, args, env = process.env) {
  const result = spawnSync(command, args, {
    cwd: root,
    env,
    stdio: 'inherit',
    shell: process.platform === 'win32', // npm is npm.cmd there
  });
  if (result.error) fail(`qsync: could not run ${command}: ${result.error.message}`);
  if (result.status !== 0) fail(`qsync: \`${command} ${args.join(' ')}\` failed (exit ${result.status ?? result.signal})`);
}

function installDependencies() {
  // npm writes node_modules/.package-lock.json when it installs, so its mtime
  // tells when node_modules last matched the manifests.
  const marker = path.join(root, 'node_modules', '.package-lock.json');
  const lockFile = path.join(root, 'package-lock.json');
  const installedAt = mtimeMs(marker);
  const newest = Math.max(mtimeMs(path.join(root, 'package.json')) ?? 0, mtimeMs(lockFile) ?? 0);
  if (installedAt !== null && installedAt >= newest) return false;

  const fresh = installedAt === null && mtimeMs(lockFile) !== null;
  run('npm', [fresh ? 'ci' : 'install', '--no-audit', '--no-fund']);
  // npm may leave the marker untouched when nothing changed; touch it so the
  // next run doesn't reinstall for a mere package.json edit.
  const now = new Date();
  try {
    utimesSync(marker, now, now);
  } catch {
    // No marker (no dependencies at all): the next run simply checks again.
  }
  return true;
}

function isExecutableFile(file) {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

function onPath(name) {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && isExecutableFile(path.join(dir, name))) return path.join(dir, name);
  }
  return null;
}

function findRedis() {
  const fromEnv = process.env.QSYNC_REDIS_SERVER;
  if (fromEnv) {
    if (!isExecutableFile(fromEnv)) fail(`qsync: QSYNC_REDIS_SERVER=${fromEnv} is not an executable file`);
    return fromEnv;
  }
  return onPath('redis-server');
}

/** apt-get route, only where it can work unattended: as root with apt-get present. */
function installRedis() {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot || !onPath('apt-get')) return false;
  console.log('qsync: redis-server not found; installing it with apt-get');
  run('apt-get', ['update']);
  // No need to stop a service the package may start: the tests run their own
  // servers on free ports.
  run('apt-get', ['install', '-y', 'redis-server'], { ...process.env, DEBIAN_FRONTEND: 'noninteractive' });
  return true;
}

function redisVersion(bin) {
  const result = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  const match = /v=(\d+)\.(\d+)\.(\d+)/.exec(result.stdout ?? '');
  if (result.error || !match) fail(`qsync: could not read the version of ${bin} (\`${bin} --version\` failed)`);
  return match.slice(1).map(Number);
}

const installed = installDependencies();

let redis = findRedis();
if (!redis && installRedis()) redis = findRedis();
if (!redis) fail(NOT_FOUND);

const version = redisVersion(redis);
const [major, minor] = version;
if (major < MIN_REDIS[0] || (major === MIN_REDIS[0] && minor < MIN_REDIS[1])) {
  fail(
    `qsync: ${redis} is Redis ${version.join('.')}, but ${MIN_REDIS.join('.')} or newer is required ` +
      '(install a newer one, e.g. from packages.redis.io, or set QSYNC_REDIS_SERVER)',
  );
}

console.log(`qsync: ready (redis-server ${version.join('.')}${installed ? ', dependencies installed' : ''})`);
