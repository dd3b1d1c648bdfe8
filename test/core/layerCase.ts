/** Random linear layers and their input Hessians for the GPTQ and refinement tests. */
import { Rng } from '../../core/rng';
import { accumulateHessian, newHessian } from '../../core/quant/gptq';

/**
 * A layer's inputs X [n, cols] and weights W [rows, cols].
 *  - 'lowrank': X = Z·A + 0.1·noise with rank ≈ cols/3 and per-column scales e^N(0,1):
 *    strongly ill-conditioned, hard numerics (used against the reference).
 *  - 'mild': X = Z·(I + 0.3·A/√cols) + 0.3·noise, per-column scales e^N(0,0.25): correlated
 *    like normed activations with per-channel gains.
 * A fraction `deadFrac` of columns is always 0.
 */
export function layerCase(seed: number, rows: number, cols: number, n: number, deadFrac: number, mode: 'lowrank' | 'mild' = 'lowrank') {
  const rng = Rng.fromSeed(seed);
  const low = mode === 'lowrank';
  const k = low ? Math.max(1, Math.ceil(cols / 3)) : cols;
  const A = Float64Array.from({ length: k * cols }, (_, i) =>
    low ? rng.normal() : (i % (cols + 1) === 0 ? 1 : 0) + (0.3 * rng.normal()) / Math.sqrt(cols),
  );
  const colScale = Float64Array.from({ length: cols }, () => (rng.float() < deadFrac ? 0 : Math.exp((low ? 1 : 0.5) * rng.normal())));
  const x = new Float32Array(n * cols);
  for (let t = 0; t < n; t++) {
    const z = Array.from({ length: k }, () => rng.normal());
    for (let c = 0; c < cols; c++) {
      let v = (low ? 0.1 : 0.3) * rng.normal();
      for (let j = 0; j < k; j++) v += z[j] * A[j * cols + c];
      x[t * cols + c] = v * colScale[c];
    }
  }
  const w = Float32Array.from({ length: rows * cols }, () => rng.normal() * 0.1);
  return { x, w };
}

export function hessianOf(x: Float32Array, n: number, cols: number): Float64Array {
  const { H, state } = newHessian(cols);
  accumulateHessian(H, x, n, cols, state);
  return H;
}

/** ||X Wᵀ − X Ŵᵀ||² in float64. */
export function outputError(x: Float32Array, n: number, cols: number, w: Float32Array, wq: Float32Array, rows: number): number {
  let s = 0;
  for (let t = 0; t < n; t++) {
    for (let r = 0; r < rows; r++) {
      let d = 0;
      for (let c = 0; c < cols; c++) d += x[t * cols + c] * (w[r * cols + c] - wq[r * cols + c]);
      s += d * d;
    }
  }
  return s;
}
