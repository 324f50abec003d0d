export { createProducer, type ProducerOptions } from './producer.js';
export { UnsupportedCommandError, ReservedKeyError, QueueFullError, ConfigError } from '../shared/errors.js';
