// Loaded with `node --import` by scripts/ioredis6.mjs: every `ioredis` the
// process loads, by import or by require (bullmq requires it), is the
// `ioredis6` alias devDependency, as in an application on ioredis 6.
import Module, { register } from 'node:module';

const rename = (specifier) => (specifier === 'ioredis' || specifier.startsWith('ioredis/') ? `ioredis6${specifier.slice(7)}` : specifier);

// import: a resolve hook, which runs in a module of its own.
const hooks = `const rename = ${rename};
export const resolve = (specifier, context, next) => next(rename(specifier), context);`;
register(`data:text/javascript,${encodeURIComponent(hooks)}`);

// require: the CommonJS resolver.
const resolveFilename = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  return resolveFilename.call(this, rename(request), ...rest);
};
