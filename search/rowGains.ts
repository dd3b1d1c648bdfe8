/**
 * Row gains of the RTN base's quantized linears, as the run's quantized model holds them:
 * the linear's integer codes (RTN of its transformed weights, with the block's clip codes)
 * kept, each row's group scales multiplied by its gain (core/quant/rowGains.ts). So the
 * gained weights are exactly what the packed export dequantizes to. And the fit of w3's
 * gains, which the norm pass (normTune.ts) makes in closed form.
 */
import { ffnActivation } from '../core/forward';
import { ffnInput, ffnResidual } from '../core/forwardRows';
import { linearShape, type Block, type F32, type LinearName, type ModelConfig } from '../core/model/types';
import type { Ops } from '../core/ops';
import { gainRows } from '../core/quant/rowGains';
import { dequantize, quantizeRtn, type Quantized, type QuantSpec } from '../core/quant/rtn';

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

/**
 * Gains of a llama FFN's units (rows of w3) for the block objective on the attention output
 * h [N, dim] against the target y: unit u's gain 1 + δ_u scales its activation a_u, so the
 * output moves by δ_u · a_u ⊗ w2[:, u] and the loss is exactly quadratic in δ,
 *   L(δ) = ‖E‖² + 2 Σ_u δ_u c_u + Σ_uv δ_u δ_v (AᵀA)_uv (w2ᵀw2)_uv,
 * with E the output error and c_u = Σ_n a_nu (E w2)_nu. One sweep of coordinate descent,
 * each δ_u clamped to ±maxStep; float64 throughout, in unit order.
 */
export function fitUnitGains(cfg: ModelConfig, w: Block, h: F32, y: F32, ops: Ops, maxStep: number): Float64Array {
  const { dim: d, hiddenDim: H } = cfg;
  const N = h.length / d;
  const act = ffnActivation(cfg, w, ffnInput(cfg, w, h, N), N, ops);
  const out = ffnResidual(cfg, h, act, w, ops);
  const w2 = w.w2;
  const grad = new Float64Array(H);
  const e = new Float64Array(d);
  for (let n = 0; n < N; n++) {
    for (let i = 0; i < d; i++) e[i] = out[n * d + i] - y[n * d + i];
    for (let u = 0; u < H; u++) {
      const a = act[n * H + u];
      if (a === 0) continue;
      let p = 0;
      for (let i = 0; i < d; i++) p += e[i] * w2[i * H + u];
      grad[u] += a * p;
    }
  }
  const AtA = new Float64Array(H * H);
  for (let n = 0; n < N; n++) {
    for (let u = 0; u < H; u++) {
      const a = act[n * H + u];
      if (a === 0) continue;
      for (let v = 0; v < H; v++) AtA[u * H + v] += a * act[n * H + v];
    }
  }
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
