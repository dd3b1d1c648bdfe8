/**
 * How the search quantizes a (transformed) block: the run's base quantizer.
 *  - RTN: each linear on its own (core/quant/rtn.ts); FFN moves then only need the rows
 *    and groups they touch re-quantized (objective.ts does that incrementally).
 *  - GPTQ: true-sequential within the block as in core/quant/model.ts — wq/wk/wv from
 *    norm(x), wo from the context of the quantized q/k/v, w1/w3 from norm(h) after the
 *    quantized attention, w2 from the activation of the quantized w1/w3 — on the block's
 *    inputs in the quantized model, so the search scores exactly the rounding GPTQ would
 *    produce for the transformed weights (issue #5: "the rounding of the transformed block
 *    is recomputed"). Hessians are XᵀX products through the backend's matmul.
 */
import { attentionContext, ffnActivation, norm } from '../core/forward';
import type { Block, F32, LinearName, ModelConfig } from '../core/model/types';
import type { Ops } from '../core/ops';
import { gptqQuantize } from '../core/quant/gptq';
import { quantizeBlockLinears } from '../core/quant/model';
import type { QuantSpec, Quantized } from '../core/quant/rtn';

export type BaseMethod = 'rtn' | 'gptq';

/** Where a quantizer leaves the integer codes of the linears it quantized (for packed export). */
export type CodeSink = Partial<Record<LinearName, Quantized>>;

/** H = 2/N · XᵀX of x [N, cols] (gptq.py's add_batch over all rows), via one matmul. */
export function hessian(x: F32, N: number, cols: number, ops: Ops): Float64Array {
  const xT = new Float32Array(cols * N); // [cols, N]
  for (let n = 0; n < N; n++) for (let c = 0; c < cols; c++) xT[c * N + n] = x[n * cols + c];
  const h32 = new Float32Array(cols * cols);
  ops.matmulT(h32, xT, xT, cols, N, cols);
  const H = new Float64Array(cols * cols);
  for (let i = 0; i < H.length; i++) H[i] = (2 / N) * h32[i];
  return H;
}

function gptqLinear(b: Block, name: LinearName, rows: number, cols: number, H: Float64Array, spec: QuantSpec, codes?: CodeSink): F32 {
  const { qz, deq } = gptqQuantize(b[name]!, rows, cols, H, spec);
  if (codes) codes[name] = qz;
  return deq;
}

/** GPTQ of wq/wk/wv/wo on the block inputs xs (one [T, dim] per sequence). */
export function gptqAttention(cfg: ModelConfig, b: Block, xs: F32[], spec: QuantSpec, ops: Ops, codes?: CodeSink): Partial<Block> {
  const d = cfg.dim;
  const qDim = cfg.nHeads * cfg.headDim;
  const kvDim = cfg.nKvHeads * cfg.headDim;
  const N = xs.reduce((s, x) => s + x.length / d, 0);
  const xn = new Float32Array(N * d);
  let o = 0;
  const xnSeq = xs.map((x) => {
    const T = x.length / d;
    const part = xn.subarray(o * d, (o + T) * d);
    norm(cfg, part, x, b.attnNorm, b.attnNormBias, T);
    o += T;
    return part;
  });
  const Hx = hessian(xn, N, d, ops);
  const q: Block = { ...b };
  q.wq = gptqLinear(b, 'wq', qDim, d, Hx, spec, codes);
  q.wk = gptqLinear(b, 'wk', kvDim, d, Hx, spec, codes);
  q.wv = gptqLinear(b, 'wv', kvDim, d, Hx, spec, codes);
  const ctx = new Float32Array(N * qDim);
  o = 0;
  xnSeq.forEach((part) => {
    const T = part.length / d;
    ctx.set(attentionContext(cfg, q, part, T, ops), o * qDim);
    o += T;
  });
  q.wo = gptqLinear(b, 'wo', d, qDim, hessian(ctx, N, qDim, ops), spec, codes);
  return { wq: q.wq, wk: q.wk, wv: q.wv, wo: q.wo };
}

/** GPTQ of w1/w3 (from norm(h) = xn [N, dim]) then w2 (from the quantized activation). */
export function gptqFfn(cfg: ModelConfig, b: Block, xn: F32, N: number, spec: QuantSpec, ops: Ops, codes?: CodeSink): Partial<Block> {
  const d = cfg.dim;
  const H = cfg.hiddenDim;
  const Hx = hessian(xn, N, d, ops);
  const q: Block = { ...b };
  q.w1 = gptqLinear(b, 'w1', H, d, Hx, spec, codes);
  if (b.w3) q.w3 = gptqLinear(b, 'w3', H, d, Hx, spec, codes);
  const act = ffnActivation(cfg, q, xn, N, ops);
  q.w2 = gptqLinear(b, 'w2', d, H, hessian(act, N, H, ops), spec, codes);
  return b.w3 ? { w1: q.w1, w3: q.w3, w2: q.w2 } : { w1: q.w1, w2: q.w2 };
}

/** RTN of the named linears (all of the block's when omitted). */
export function rtnLinears(cfg: ModelConfig, b: Block, spec: QuantSpec, names?: LinearName[], codes?: CodeSink): Partial<Block> {
  const q = quantizeBlockLinears(cfg, b, spec, { method: 'rtn', names, onQuantized: codes && ((n, qz) => (codes[n] = qz)) });
  const out: Partial<Block> = {};
  for (const n of names ?? (['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as LinearName[])) if (q[n]) out[n] = q[n];
  return out;
}
