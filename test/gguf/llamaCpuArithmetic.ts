/**
 * llama.cpp's CPU matmuls as our Ops, for comparing log-probabilities with llama.cpp: a
 * weight of a quantized type multiplies activations that llama.cpp first quantizes to its
 * "vec_dot" type (q8_0 for q4_0 q5_0 q8_0, q8_1 for q4_1 q5_1 — the same values —, q8_K for
 * the k-quants, f16 for f16 weights); f32 weights and attention use plain float32. Written
 * here from ggml's activation quantizers; the products are then ordinary float32 matmuls.
 */
import { readGgufHeader } from '../../core/gguf';
import { GGML_LINEAR_NAMES } from '../../core/gguf/llama';
import { f16Round } from '../../core/model/halfFloat';
import { blockLinears, type F32, type Model } from '../../core/model/types';
import { jsOps, type Ops } from '../../core/ops';

function q8Blocks32(x: F32, out: F32): void {
  for (let b = 0; b < x.length; b += 32) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b + j]));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(127 / amax) : 0;
    const dh = f16Round(d);
    for (let j = 0; j < 32; j++) out[b + j] = Math.round(Math.fround(x[b + j] * id)) * dh;
  }
}

function q8K(x: F32, out: F32): void {
  for (let b = 0; b < x.length; b += 256) {
    let amax = 0, max = 0;
    for (let j = 0; j < 256; j++) {
      if (Math.abs(x[b + j]) > amax) {
        amax = Math.abs(x[b + j]);
        max = x[b + j];
      }
    }
    if (!amax) {
      out.fill(0, b, b + 256);
      continue;
    }
    const iscale = Math.fround(-127 / max);
    const d = Math.fround(1 / iscale);
    for (let j = 0; j < 256; j++) {
      const v = Math.fround(iscale * x[b + j]);
      const q = Math.min(127, v - Math.floor(v) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v));
      out[b + j] = Math.fround(d * q);
    }
  }
}

function activationQuantizer(type: string): ((x: F32, out: F32) => void) | null {
  if (type === 'f32') return null;
  if (type === 'f16') return (x, out) => { for (let i = 0; i < x.length; i++) out[i] = f16Round(x[i]); };
  if (type.endsWith('_k')) return q8K;
  return q8Blocks32;
}

/**
 * Ops that treat each weight of `model` (read back from the GGUF at `path`) as llama.cpp's
 * CPU backend does; the float32 products are `base`'s (a faster backend for large models:
 * only the summation order differs).
 */
export function llamaCpuOps(model: Model, path: string, base: Ops = jsOps): Ops {
  const typeOf = new Map<string, string>();
  const names: Record<number, string> = { 0: 'f32', 1: 'f16', 2: 'q4_0', 3: 'q4_1', 6: 'q5_0', 7: 'q5_1', 8: 'q8_0', 10: 'q2_k', 11: 'q3_k', 12: 'q4_k', 13: 'q5_k', 14: 'q6_k' };
  for (const t of readGgufHeader(path).tensors) typeOf.set(t.name, names[t.type]);
  const quantizer = new Map<F32, (x: F32, out: F32) => void>();
  const put = (w: F32, tensor: string) => {
    const q = activationQuantizer(typeOf.get(tensor)!);
    if (q) quantizer.set(w, q);
  };
  put(model.classifier, model.config.sharedClassifier ? 'token_embd.weight' : 'output.weight');
  model.blocks.forEach((b, l) => {
    for (const name of blockLinears(model.config)) put(b[name]!, `blk.${l}.${GGML_LINEAR_NAMES[name]}.weight`);
  });
  return {
    ...base,
    name: 'llama.cpp-cpu',
    matmulT(y, x, w, n, inDim, outDim, accumulate) {
      const q = quantizer.get(w);
      if (!q) return base.matmulT(y, x, w, n, inDim, outDim, accumulate);
      const xq = new Float32Array(n * inDim);
      for (let r = 0; r < n; r++) q(x.subarray(r * inDim, (r + 1) * inDim), xq.subarray(r * inDim, (r + 1) * inDim));
      return base.matmulT(y, xq, w, n, inDim, outDim, accumulate);
    },
  };
}
