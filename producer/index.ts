export { createProducer, type ProducerOptions } from './producer.js';
export { UnsupportedCommandError, QueueFullError, ConfigError } from '../shared/errors.js';
