/**
 * redlock 5's package.json lists its types beside "exports" rather than in
 * it, so NodeNext resolution does not find them: this names them for it.
 */
declare module 'redlock' {
  type Types = typeof import('../../node_modules/redlock/dist/index.js');
  const Redlock: Types['default'];
  type Redlock = InstanceType<Types['default']>;
  export default Redlock;
  export const ExecutionError: Types['ExecutionError'];
}
