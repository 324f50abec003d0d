#!/usr/bin/env node
/**
 * Runs the ava suite against ioredis 6: `node scripts/ioredis6.mjs [ava args]`
 * (npm run test:ioredis6). The `ioredis6` devDependency (an npm alias of
 * ioredis@6) stands in for `ioredis` in the test processes and in every CLI
 * they spawn, for qsync's imports and bullmq's alike. It checks that the
 * redirection works before it runs the suite. The package test is left out:
 * it installs ioredis 5 and 6 into projects of its own.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const preload = pathToFileURL(fileURLToPath(new URL('ioredis6-preload.mjs', import.meta.url))).href;
const env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${JSON.stringify(preload)}`.trim() };

// Which ioredis an import from qsync and a require from bullmq get, and its version.
const probe = `
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
const versionOf = (file) => {
  for (let dir = path.dirname(file); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'));
      if (pkg.name === 'ioredis') return pkg.version;
    } catch {}
  }
};
const imported = fileURLToPath(import.meta.resolve('ioredis'));
const required = createRequire(createRequire(import.meta.url).resolve('bullmq')).resolve('ioredis');
console.log(JSON.stringify([versionOf(imported), versionOf(required)]));
`;
const check = spawnSync(process.execPath, ['--input-type=module', '-e', probe], { cwd: root, env, encoding: 'utf8' });
const versions = check.status === 0 ? JSON.parse(check.stdout) : [];
if (!versions.length || !versions.every((v) => v?.startsWith('6.'))) {
  console.error(`ioredis6: the redirection to ioredis 6 does not work (got ${JSON.stringify(versions)})\n${check.stderr}`);
  process.exit(1);
}
console.log(`ioredis6: running the suite against ioredis ${versions[0]}`);

// Every test file but the package test, which installs ioredis 5 and 6 into
// projects of its own; unless test files are named.
const args = process.argv.slice(2);
const files = args.some((a) => a.endsWith('.ts'))
  ? []
  : readdirSync(path.join(root, 'test'), { recursive: true })
      .filter((f) => f.endsWith('.test.ts') && f !== 'package.test.ts')
      .map((f) => path.join('test', f));
const ava = path.join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs');
const run = spawnSync(process.execPath, [ava, ...args, ...files], { cwd: root, env, stdio: 'inherit' });
process.exit(run.status ?? 1);
