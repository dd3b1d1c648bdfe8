/**
 * The attention sublayer on packed calibration rows, head by head: core's own forward pass
 * over packed sequences (core/forwardRows.ts), which an attention move recomputes for the
 * heads it touches only (objective.ts).
 */
export { attnInput, attnResidual, context, headProjection, qkv, range, scatterHeads, type Qkv } from '../core/forwardRows';
