/**
 * Row gains of the RTN base's quantized linears, as the run's quantized model holds them:
 * the linear's integer codes (RTN of its transformed weights, with the block's clip codes)
 * kept, each row's group scales multiplied by its gain (core/quant/rowGains.ts). So the
 * gained weights are exactly what the packed export dequantizes to. And the norm pass's
 * (normTune.ts) fits of the FFN's row gains: w3's in closed form, w1's by exact line search.
 */
import { ffnActivation } from '../core/forward';
import { ffnInput, ffnResidual } from '../core/forwardRows';
import { linearShape, type Block, type F32, type LinearName, type ModelConfig } from '../core/model/types';
import { siluMul, type Ops } from '../core/ops';
import { gainRows } from '../core/quant/rowGains';
import { dequantize, quantizeRtn, type Quantized, type QuantSpec } from '../core/quant/rtn';
import { bestOfThree } from './parabola';

/**
 * Linear `name` of a quantized block with row gains `g`: RTN's codes of `transformed`'s
 * weights (checked to dequantize to `current`, the block's quantized weights without gains),
 * their scales gained.
 */
export function gainedLinear(cfg: ModelConfig, transformed: Block, name: LinearName, current: F32, spec: QuantSpec, clips: Uint8Array | undefined, g: Float64Array): F32 {
  const [rows, cols] = linearShape(cfg, name);
  const qz = quantizeRtn(transformed[name]!, rows, cols, spec, clips);
  return dequantize(gainedCodes(qz, current, g, spec, name));
}

/** Codes `qz` of linear `name` (checked to dequantize to `current`) with the scales of row gains `g`. */
export function gainedCodes(qz: Quantized, current: F32, g: Float64Array, spec: QuantSpec, name: string): Quantized {
  const deq = dequantize(qz);
  for (let i = 0; i < deq.length; i++) {
    if (!Object.is(deq[i], current[i])) throw new Error(`row gains: ${name} is not the RTN of its transformed weights (weight ${i})`);
  }
  return gainRows(qz, g, spec.f16Scales ?? false);
}

/** m [rows, cols] transposed, as float64 [cols, rows]. */
function transposed(m: F32, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = m[r * cols + c];
  return t;
}

/**
 * Gains of a llama FFN's units (rows of w3) for the block objective on the attention output
 * h [N, dim] against the target y: unit u's gain 1 + δ_u scales its activation a_u, so the
 * output moves by δ_u · a_u ⊗ w2[:, u] and the loss is exactly quadratic in δ,
 *   L(δ) = ‖E‖² + 2 Σ_u δ_u c_u + Σ_uv δ_u δ_v (AᵀA)_uv (w2ᵀw2)_uv,
 * with E the output error and c_u = Σ_n a_nu (E w2)_nu. One sweep of coordinate descent,
 * each δ_u clamped to ±maxStep, in unit order; E w2 and AᵀA are the backend's float32
 * products, the rest float64.
 */
export function fitUnitGains(cfg: ModelConfig, w: Block, h: F32, y: F32, ops: Ops, maxStep: number): Float64Array {
  const { dim: d, hiddenDim: H } = cfg;
  const N = h.length / d;
  const act = ffnActivation(cfg, w, ffnInput(cfg, w, h, N), N, ops);
  const E = ffnResidual(cfg, h, act, w, ops).slice();
  for (let i = 0; i < E.length; i++) E[i] -= y[i];
  const w2 = w.w2;
  const Ew2 = new Float32Array(N * H);
  ops.matmulT(Ew2, E, Float32Array.from(transposed(w2, d, H)), N, d, H);
  const grad = new Float64Array(H);
  for (let n = 0; n < N; n++) for (let u = 0; u < H; u++) grad[u] += act[n * H + u] * Ew2[n * H + u];
  const actT = Float32Array.from(transposed(act, N, H));
  const AtA = new Float32Array(H * H);
  ops.matmulT(AtA, actT, actT, H, N, H);
  const G = new Float64Array(H * H);
  for (let u = 0; u < H; u++) {
    for (let v = u; v < H; v++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += w2[i * H + u] * w2[i * H + v];
      G[u * H + v] = G[v * H + u] = s;
    }
  }
  const delta = new Float64Array(H);
  for (let u = 0; u < H; u++) {
    const curv = AtA[u * H + u] * G[u * H + u];
    if (!(curv > 0)) continue;
    const step = Math.min(maxStep, Math.max(-maxStep, -grad[u] / curv));
    if (step === 0) continue;
    delta[u] = step;
    for (let v = 0; v < H; v++) grad[v] += step * AtA[u * H + v] * G[u * H + v];
  }
  return delta.map((x) => 1 + x);
}

/** Units fitted together by fitGateGains between its updates of the error. */
const GATE_CHUNK = 16;

/**
 * Gains of a llama FFN's gate rows (rows of w1): unit u's gain g scales its gate's input,
 * so its activation becomes silu(g·p_u)·r_u and the output moves by Δ_u ⊗ w2[:, u]: the
 * loss changes by Σ_n 2Δ_nu c_nu + Δ_nu² ‖w2[:, u]‖² with c = E w2, exactly, for each g
 * tried (bestOfThree). Units in order, each seeing the kept gains before it: within a chunk
 * of GATE_CHUNK units through w2's Gram matrix, between chunks through the error E, both
 * updated by the backend's float32 products; the tries in float64.
 */
export function fitGateGains(cfg: ModelConfig, w: Block, h: F32, y: F32, ops: Ops): Float64Array {
  const { dim: d, hiddenDim: H } = cfg;
  const N = h.length / d;
  const xn = ffnInput(cfg, w, h, N);
  // w1's and w3's outputs, kept unit by unit before the gate turns them into the activation (as ffnActivation does)
  const act = new Float32Array(N * H);
  const gate = new Float32Array(N * H);
  ops.matmulT(act, xn, w.w1, N, d, H);
  ops.matmulT(gate, xn, w.w3!, N, d, H);
  const p = transposed(act, N, H);
  const r = transposed(gate, N, H);
  siluMul(ops, act, gate, N * H);
  const E = ffnResidual(cfg, h, act, w, ops).slice();
  for (let i = 0; i < E.length; i++) E[i] -= y[i];
  const w2T = Float32Array.from(transposed(w.w2, d, H)); // [H, d]
  const gains = new Float64Array(H).fill(1);
  const a0 = new Float64Array(N);
  const silu = (z: number) => z / (1 + Math.exp(-z));
  for (let u0 = 0; u0 < H; u0 += GATE_CHUNK) {
    const B = Math.min(GATE_CHUNK, H - u0);
    const cols = w2T.subarray(u0 * d, (u0 + B) * d); // [B, d]
    const c = new Float32Array(N * B);
    ops.matmulT(c, E, cols, N, d, B);
    const C = transposed(c, N, B); // [B, N]: unit u0 + b's c in row b
    const dA = new Float64Array(B * N);
    for (let b = 0; b < B; b++) {
      const u = u0 + b;
      const pu = p.subarray(u * N, (u + 1) * N);
      const ru = r.subarray(u * N, (u + 1) * N);
      const cu = C.subarray(b * N, (b + 1) * N);
      const gram = (b2: number) => {
        let s = 0;
        for (let i = 0; i < d; i++) s += cols[b * d + i] * cols[b2 * d + i];
        return s;
      };
      const s = gram(b);
      for (let n = 0; n < N; n++) a0[n] = silu(pu[n]) * ru[n];
      const tried = bestOfThree((g) => {
        let dl = 0;
        for (let n = 0; n < N; n++) {
          const da = silu(g * pu[n]) * ru[n] - a0[n];
          dl += da * (2 * cu[n] + da * s);
        }
        return dl;
      }, 0);
      if (!tried) continue;
      gains[u] = tried.pick;
      const du = dA.subarray(b * N, (b + 1) * N);
      for (let n = 0; n < N; n++) du[n] = silu(tried.pick * pu[n]) * ru[n] - a0[n];
      for (let b2 = b + 1; b2 < B; b2++) {
        const g = gram(b2);
        const c2 = C.subarray(b2 * N, (b2 + 1) * N);
        for (let n = 0; n < N; n++) c2[n] += du[n] * g;
      }
    }
    // E += ΔA · w2[:, chunk]ᵀ
    ops.matmulT(E, Float32Array.from(transposed(Float32Array.from(dA), B, N)), Float32Array.from(transposed(cols, B, d)), N, B, d, true);
  }
  return gains;
}
