export * from './producer/index.js';
export * from './consumer/index.js';
export { QueueKeys } from './shared/keys.js';
export { COMMANDS, type CommandSpec, type LogRule } from './shared/commands.js';
export { decodeEntry, describeCommand, type Entry } from './shared/entry.js';
export * from './shared/errors.js';
