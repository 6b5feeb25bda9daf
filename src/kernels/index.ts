// The public ops: thin launchers that validate inputs, then record one or more dispatches.
export { silu, gelu, quickGelu, scale } from './unary.js';
