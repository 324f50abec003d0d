#!/usr/bin/env node
// Runs the qsync CLI: from the TypeScript sources (through tsx) in a source
// checkout, so that it never runs a stale build; from the compiled dist/ when
// installed as a package.
import { existsSync } from 'node:fs';

const here = (p) => new URL(p, import.meta.url);

async function load() {
  if (existsSync(here('../consumer/cli/main.ts'))) {
    try {
      const { register } = await import('tsx/esm/api');
      register();
      return await import(here('../consumer/cli/main.ts').href);
    } catch (err) {
      if (err?.code !== 'ERR_MODULE_NOT_FOUND') throw err;
    }
  }
  return import(here('../dist/consumer/cli/main.js').href);
}

const cli = await load();
process.exitCode = await cli.main(process.argv.slice(2));
