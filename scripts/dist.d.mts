/** True when dist/ was stamped by `npm run build` after every source last changed. */
export function distIsFresh(): boolean;
