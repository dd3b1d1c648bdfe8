/**
 * Row gains of a quantized linear: row r's dequantized values multiplied by g[r] at no cost
 * in size, because the packed format stores a float scale per group. The codes and zero
 * points stay; each scale of the row becomes fround(scale · g[r]), rounded to fp16 as the
 * quantizer rounds its scales when they are fp16, so the gained weights are exactly what
 * the packed export dequantizes to.
 */
import { f16Round } from '../model/halfFloat';
import { F16_MAX, numGroups, type Quantized } from './rtn';

/** `qz` with the scales of each row r multiplied by gains[r] (a row whose gain is 1 keeps its scales); codes and zeros shared. */
export function gainRows(qz: Quantized, gains: Float64Array, f16 = false): Quantized {
  if (gains.length !== qz.rows) throw new RangeError(`gainRows: ${gains.length} gains for ${qz.rows} rows`);
  const nG = numGroups(qz.cols, qz.group);
  const scale = qz.scale.slice();
  for (let r = 0; r < qz.rows; r++) {
    const g = gains[r];
    if (g === 1) continue;
    if (!(g > 0 && Number.isFinite(g))) throw new RangeError(`gainRows: row ${r}'s gain ${g} is not a positive number`);
    for (let k = r * nG; k < (r + 1) * nG; k++) {
      const s = Math.fround(scale[k] * g);
      scale[k] = f16 ? Math.min(f16Round(s), F16_MAX) : s;
    }
  }
  return { ...qz, scale };
}
