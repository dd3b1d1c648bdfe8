/**
 * Zero FFN units, so that a model whose hidden size GPTQ loaders cannot pack (e.g.
 * stories260K's 172) can still be exported packed.
 *
 * A unit j with w1[j, :] = 0, w3[j, :] = 0 (and b1[j] = 0) has activation silu(0)·0 = 0
 * (relu(0) = 0 for opt), so w2[:, j] is multiplied by exactly 0: the padded model computes
 * the same function, in full precision and quantized, whatever the padding's w2 codes are.
 *
 * Codes: the padding rows of w1/w3 are all-zero groups (scale 1, zero 0, code 0, RTN's own
 * convention for an all-zero group). The padding columns of w2 join the last, ragged group
 * of each row with that group's code for 0.0 (its zero point), so the real columns keep
 * their grid; groups made only of padding get scale 1, zero 0. Quantizing a group over its
 * real columns only is exactly what core/quant did for the ragged group, so the packed
 * checkpoint dequantizes to the searched model's weights, plus zeros.
 */
import { mapBlocks } from '../model/lazy';
import { numGroups, type Quantized } from '../quant/rtn';
import type { Block, F32, Model } from '../model/types';
import type { BlockQuantized } from './gptq';

/** Hidden size rounded up to a multiple of `multiple`. */
export function paddedHiddenDim(hidden: number, multiple: number): number {
  return Math.ceil(hidden / multiple) * multiple;
}

function padRows(w: F32, rows: number, cols: number, rows2: number): F32 {
  const out = new Float32Array(rows2 * cols);
  out.set(w.subarray(0, rows * cols));
  return out;
}

function padCols(w: F32, rows: number, cols: number, cols2: number): F32 {
  const out = new Float32Array(rows * cols2);
  for (let r = 0; r < rows; r++) out.set(w.subarray(r * cols, (r + 1) * cols), r * cols2);
  return out;
}

function padBlock(b: Block, d: number, H: number, H2: number): Block {
  const out: Block = { ...b, w1: padRows(b.w1, H, d, H2), w2: padCols(b.w2, d, H, H2) };
  if (b.w3) out.w3 = padRows(b.w3, H, d, H2);
  if (b.b1) out.b1 = padRows(b.b1, H, 1, H2);
  return out;
}

/** Codes of w1/w3 with all-zero rows appended. */
function padCodeRows(qz: Quantized, rows2: number): Quantized {
  const nG = numGroups(qz.cols, qz.group);
  const q = new Uint8Array(rows2 * qz.cols);
  q.set(qz.q);
  const scale = new Float32Array(rows2 * nG).fill(1);
  scale.set(qz.scale);
  const zero = new Uint8Array(rows2 * nG);
  zero.set(qz.zero);
  return { ...qz, rows: rows2, q, scale, zero };
}

/** Codes of w2 with padding columns appended (see the header for the grid they get). */
function padCodeCols(qz: Quantized, cols2: number): Quantized {
  const { rows, cols, group } = qz;
  const nG = numGroups(cols, group);
  const nG2 = numGroups(cols2, group);
  const q = new Uint8Array(rows * cols2);
  const scale = new Float32Array(rows * nG2).fill(1);
  const zero = new Uint8Array(rows * nG2);
  for (let r = 0; r < rows; r++) {
    q.set(qz.q.subarray(r * cols, (r + 1) * cols), r * cols2);
    scale.set(qz.scale.subarray(r * nG, (r + 1) * nG), r * nG2);
    zero.set(qz.zero.subarray(r * nG, (r + 1) * nG), r * nG2);
    // Padding inside the last real group takes that group's code for 0.0.
    const lastEnd = Math.min(cols2, nG * group);
    q.fill(qz.zero[r * nG + nG - 1], r * cols2 + cols, r * cols2 + lastEnd);
  }
  return { ...qz, cols: cols2, q, scale, zero };
}

/** `model` with the FFN hidden size padded to H2 > hiddenDim by zero units (a lazy block is padded when read). */
export function padModelHidden(model: Model, H2: number): Model {
  const cfg = model.config;
  if (!(Number.isInteger(H2) && H2 > cfg.hiddenDim)) throw new RangeError(`padded hidden size ${H2} must be an integer above ${cfg.hiddenDim}`);
  return { ...model, config: { ...cfg, hiddenDim: H2 }, blocks: mapBlocks(model.blocks, (b) => padBlock(b, cfg.dim, cfg.hiddenDim, H2)) };
}

/** One block's codes with the FFN hidden size padded to H2 (the codes of padModelHidden's block). */
export function padCodesHidden(bq: BlockQuantized, H2: number): BlockQuantized {
  const out: BlockQuantized = { ...bq };
  if (bq.w1) out.w1 = padCodeRows(bq.w1, H2);
  if (bq.w3) out.w3 = padCodeRows(bq.w3, H2);
  if (bq.w2) out.w2 = padCodeCols(bq.w2, H2);
  return out;
}
