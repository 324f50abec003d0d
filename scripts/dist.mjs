#!/usr/bin/env node
/**
 * Whether dist/ (the compiled package, `npm run build`) is up to date with the
 * sources, by modification times: `npm run build` ends by stamping dist/.built,
 * and a source newer than the stamp makes dist/ stale.
 *
 *   node scripts/dist.mjs stamp   records a build that just finished (the last step of `npm run build`)
 *   node scripts/dist.mjs         builds when dist/ is stale (before the tests, which run the CLI from dist/)
 *
 * Plain Node with no dependencies.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const stampFile = path.join(root, 'dist', '.built');
/** What `npm run build` reads: the package's sources, their Lua scripts, and the compiler's settings. */
const SOURCES = ['index.ts', 'producer', 'consumer', 'shared', 'tsconfig.json', 'tsconfig.build.json', 'package.json'];

function newestMtimeMs(file) {
  const stat = statSync(file, { throwIfNoEntry: false });
  if (!stat) return 0;
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = stat.mtimeMs; // a file deleted or renamed changes its folder
  for (const entry of readdirSync(file)) newest = Math.max(newest, newestMtimeMs(path.join(file, entry)));
  return newest;
}

/** True when dist/ was stamped after every source last changed. */
export function distIsFresh() {
  const stamp = statSync(stampFile, { throwIfNoEntry: false });
  return stamp !== undefined && SOURCES.every((s) => newestMtimeMs(path.join(root, s)) <= stamp.mtimeMs);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv[2] === 'stamp') {
    writeFileSync(stampFile, `${new Date().toISOString()}\n`);
  } else if (process.argv[2] !== undefined) {
    console.error(`qsync: scripts/dist.mjs takes "stamp" or nothing, not ${JSON.stringify(process.argv[2])}`);
    process.exit(2);
  } else if (!distIsFresh()) {
    const npm = spawnSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
    if (npm.status !== 0) {
      console.error(`qsync: \`npm run build\` failed (exit ${npm.status ?? npm.signal})`);
      process.exit(1);
    }
  }
}
