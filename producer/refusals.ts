/**
 * Writes the producer refuses: an UnsupportedCommandError (refused before
 * anything is sent) or a QueueFullError (refused by the master, the queue
 * being full under the `reject` policy). Each is told to the client's
 * listeners as a 'qsync:refused' event, and one refused before anything was
 * sent rejects on a later turn of the event loop, never in the same burst of
 * microtasks: an application that retries at once on error (as BullMQ's
 * worker does) then leaves timers and I/O their turn between tries, instead
 * of spinning on refusals with the event loop starved.
 */
import type { EventEmitter } from 'node:events';
import { QueueFullError, UnsupportedCommandError } from '../shared/errors.js';

/** The event the producer's client emits with each refused write's error. */
export const REFUSED_EVENT = 'qsync:refused';

/** Emits the refused event when err is a refusal of qsync's; returns err. */
export function reportRefusal<E>(client: EventEmitter, err: E): E {
  if (err instanceof UnsupportedCommandError || err instanceof QueueFullError) client.emit(REFUSED_EVENT, err);
  return err;
}

/** A promise that rejects with err on a later turn of the event loop (after timers and I/O had theirs). */
export function rejectLater(err: Error): Promise<never> {
  return new Promise((_resolve, reject) => setImmediate(reject, err));
}

/** A write refused before anything was sent: reported, and rejected on a later turn. */
export function refuseLater(client: EventEmitter, err: Error): Promise<never> {
  return rejectLater(reportRefusal(client, err));
}
