/**
 * Integer replies past 2^53. Writes run inside the log-write script, whose
 * Lua numbers hold integers exactly only up to 2^53: past it, the script
 * returns the digits of the counter's stored value instead (INCR, INCRBY,
 * DECR, DECRBY, HINCRBY: the commands whose integer reply is a stored value),
 * and the producer turns them into what the client's own parser makes of
 * that integer reply: the digits as they are with `stringNumbers: true`,
 * else the number its parser builds digit by digit (ioredis rounds past
 * 2^53 too, in its own way; the producer rounds the same way).
 */
import type { RedisOptions } from 'ioredis';

const COUNTERS = new Set(['incr', 'incrby', 'decr', 'decrby', 'hincrby']);

/** A command as sent: its lower-case name is all this needs. */
type Sent = { name: string };

/** True when a reply of these commands may come back as digits. */
export function mayCarryDigits(commands: Sent[]): boolean {
  return commands.some((c) => COUNTERS.has(c.name));
}

/** The integer reply from its digits, as the client's parser makes it. */
function integerReply(digits: string, options: RedisOptions): number | string {
  if (options.stringNumbers) return digits;
  const negative = digits.startsWith('-');
  // ioredis 5 (redis-parser) adds each digit's value; ioredis 6 (its RESP
  // decoder, which has the replyMapping option) adds the byte, then takes
  // off '0'. Past 2^53 each step rounds, so the order matters.
  const byByte = 'replyMapping' in options;
  let n = 0;
  for (let i = negative ? 1 : 0; i < digits.length; i++) {
    const byte = digits.charCodeAt(i);
    n = byByte ? n * 10 + byte - 48 : n * 10 + (byte - 48);
  }
  return negative ? -n : n;
}

/** One command's reply: digits for a counter become its integer reply; anything else is returned as it is. */
export function exactReply(cmd: Sent | undefined, reply: unknown, options: RedisOptions): unknown {
  if (!cmd || !COUNTERS.has(cmd.name) || !(typeof reply === 'string' || Buffer.isBuffer(reply))) return reply;
  return integerReply(reply.toString(), options);
}

/** The script's reply to a call: one reply (`one`) or an array of them, one a command. */
export function exactReplies(commands: Sent[], as: 'one' | 'group' | 'batch', reply: unknown, options: RedisOptions): unknown {
  if (as === 'one') return exactReply(commands[0], reply, options);
  return Array.isArray(reply) ? reply.map((r: unknown, i) => exactReply(commands[i], r, options)) : reply;
}
