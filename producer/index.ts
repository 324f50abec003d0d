export { createProducer, type ProducerOptions } from './producer.js';
export { UnsupportedCommandError, ReservedKeyError, QueueFullError, FencedError, ConfigError } from '../shared/errors.js';
