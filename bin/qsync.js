#!/usr/bin/env node
// Runs the qsync CLI: from the compiled dist/ when installed as a package,
// from the TypeScript sources (through tsx) in a source checkout.
import { existsSync } from 'node:fs';

const here = (p) => new URL(p, import.meta.url);
let cli;
if (existsSync(here('../consumer/cli.ts')) && !existsSync(here('../dist/consumer/cli.js'))) {
  const { register } = await import('tsx/esm/api');
  register();
  cli = await import(here('../consumer/cli.ts').href);
} else {
  cli = await import(here('../dist/consumer/cli.js').href);
}
process.exitCode = await cli.main(process.argv.slice(2));
