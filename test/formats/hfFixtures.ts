/**
 * Small random Hugging Face checkpoints written by the tests, and a float64 reference forward
 * pass that reads the HF tensors by their HF names — written from the HF modeling code
 * (modeling_llama / modeling_qwen2 / modeling_opt), independent of core/forward.ts and of
 * core/model/hf.ts's name mapping.
 *
 * Every weight is k · 2^-e with |k| ≤ 255, which fp16, bf16 and fp32 all hold exactly, so one
 * checkpoint written in any dtype is the same model and the reference sees exactly what the
 * loader should produce.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rng } from '../../core/rng';
import { type Dtype } from '../../core/model/safetensors';
import { writeSafetensorsCheckpoint } from '../../core/model/safetensorsWrite';

export type HfKind = 'llama' | 'mistral' | 'qwen2' | 'opt';

export interface HfCheckpoint {
  config: Record<string, unknown>;
  tensors: Map<string, { shape: number[]; values: Float64Array }>;
}

export interface HfDims {
  dim: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  maxPos: number;
  tied: boolean;
}

export const SMALL: HfDims = { dim: 16, hidden: 24, layers: 2, heads: 4, kvHeads: 2, vocab: 40, maxPos: 12, tied: false };

/** n values k · 2^-e, k ~ round(N(0, (std·2^e)²)) clamped to [-255, 255], plus `mean`·2^e·2^-e. */
function exact(rng: Rng, n: number, std: number, e: number, mean = 0): Float64Array {
  const out = new Float64Array(n);
  const s = 2 ** e;
  for (let i = 0; i < n; i++) {
    const k = Math.max(-255, Math.min(255, Math.round((mean + std * rng.normal()) * s)));
    out[i] = k / s;
  }
  return out;
}

/** A random checkpoint of `kind` (config.json fields as HF writes them). */
export function randomHf(kind: HfKind, d: HfDims = SMALL, seed = 1): HfCheckpoint {
  const rng = Rng.fromSeed(seed);
  const tensors = new Map<string, { shape: number[]; values: Float64Array }>();
  const put = (name: string, shape: number[], std: number, e: number, mean = 0) =>
    tensors.set(name, { shape, values: exact(rng, shape.reduce((a, b) => a * b, 1), std, e, mean) });
  const hd = d.dim / d.heads;
  const lin = (name: string, out: number, inp: number) => put(`${name}.weight`, [out, inp], inp ** -0.5, 8);
  const bias = (name: string, out: number) => put(`${name}.bias`, [out], 0.1, 9);
  const norm = (name: string) => put(name, [d.dim], 0.1, 7, 1);
  if (kind === 'opt') {
    const p = 'model.decoder.';
    put(`${p}embed_tokens.weight`, [d.vocab, d.dim], 0.5, 7);
    put(`${p}embed_positions.weight`, [d.maxPos + 2, d.dim], 0.2, 8);
    for (let l = 0; l < d.layers; l++) {
      const L = `${p}layers.${l}.`;
      norm(`${L}self_attn_layer_norm.weight`);
      bias(`${L}self_attn_layer_norm`, d.dim);
      for (const m of ['q_proj', 'k_proj', 'v_proj']) {
        lin(`${L}self_attn.${m}`, d.dim, d.dim);
        bias(`${L}self_attn.${m}`, d.dim);
      }
      lin(`${L}self_attn.out_proj`, d.dim, d.dim);
      bias(`${L}self_attn.out_proj`, d.dim);
      norm(`${L}final_layer_norm.weight`);
      bias(`${L}final_layer_norm`, d.dim);
      lin(`${L}fc1`, d.hidden, d.dim);
      bias(`${L}fc1`, d.hidden);
      lin(`${L}fc2`, d.dim, d.hidden);
      bias(`${L}fc2`, d.dim);
    }
    norm(`${p}final_layer_norm.weight`);
    bias(`${p}final_layer_norm`, d.dim);
    const config = {
      architectures: ['OPTForCausalLM'], model_type: 'opt', hidden_size: d.dim, ffn_dim: d.hidden, num_hidden_layers: d.layers,
      num_attention_heads: d.heads, vocab_size: d.vocab, max_position_embeddings: d.maxPos, do_layer_norm_before: true,
      word_embed_proj_dim: d.dim, activation_function: 'relu', enable_bias: true, layer_norm_elementwise_affine: true,
      bos_token_id: 2, eos_token_id: 2, pad_token_id: 1, torch_dtype: 'float16',
    };
    return { config, tensors };
  }
  put('model.embed_tokens.weight', [d.vocab, d.dim], 0.5, 7);
  for (let l = 0; l < d.layers; l++) {
    const L = `model.layers.${l}.`;
    norm(`${L}input_layernorm.weight`);
    lin(`${L}self_attn.q_proj`, d.heads * hd, d.dim);
    lin(`${L}self_attn.k_proj`, d.kvHeads * hd, d.dim);
    lin(`${L}self_attn.v_proj`, d.kvHeads * hd, d.dim);
    if (kind === 'qwen2') {
      bias(`${L}self_attn.q_proj`, d.heads * hd);
      bias(`${L}self_attn.k_proj`, d.kvHeads * hd);
      bias(`${L}self_attn.v_proj`, d.kvHeads * hd);
    }
    lin(`${L}self_attn.o_proj`, d.dim, d.heads * hd);
    norm(`${L}post_attention_layernorm.weight`);
    lin(`${L}mlp.gate_proj`, d.hidden, d.dim);
    lin(`${L}mlp.up_proj`, d.hidden, d.dim);
    lin(`${L}mlp.down_proj`, d.dim, d.hidden);
  }
  norm('model.norm.weight');
  if (!d.tied) put('lm_head.weight', [d.vocab, d.dim], d.dim ** -0.5, 9);
  const arch = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' }[kind];
  const config: Record<string, unknown> = {
    architectures: [arch], model_type: kind, hidden_size: d.dim, intermediate_size: d.hidden, num_hidden_layers: d.layers,
    num_attention_heads: d.heads, num_key_value_heads: d.kvHeads, vocab_size: d.vocab, max_position_embeddings: d.maxPos,
    rms_norm_eps: 1e-6, rope_theta: kind === 'qwen2' ? 1000000 : 10000, tie_word_embeddings: d.tied, hidden_act: 'silu',
    bos_token_id: 1, eos_token_id: 2, torch_dtype: 'bfloat16', rope_scaling: null,
  };
  if (kind === 'mistral') config.sliding_window = 4096;
  if (kind === 'qwen2') config.use_sliding_window = false;
  return { config, tensors };
}

/** Write ck into dir as `dtype`, one file or shards of at most `maxShardBytes`. */
export function writeHf(dir: string, ck: HfCheckpoint, dtype: Dtype, maxShardBytes?: number): string[] {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(ck.config, null, 2));
  const list = [...ck.tensors].map(([name, t]) => ({ name, dtype, shape: t.shape, data: t.values }));
  return writeSafetensorsCheckpoint(dir, list, { metadata: { format: 'pt' }, maxShardBytes });
}

// ---------------------------------------------------------------------------------------
// float64 reference, by HF names

type V = Float64Array;

function matvec(w: V, x: V, out: number, b?: V): V {
  const n = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b ? b[o] : 0;
    for (let i = 0; i < n; i++) s += w[o * n + i] * x[i];
    y[o] = s;
  }
  return y;
}

function rmsNorm(x: V, w: V, eps: number): V {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * w[i]);
}

function layerNorm(x: V, w: V, b: V): V {
  const n = x.length;
  const mean = x.reduce((a, v) => a + v, 0) / n;
  const variance = x.reduce((a, v) => a + (v - mean) ** 2, 0) / n;
  const inv = 1 / Math.sqrt(variance + 1e-5);
  return x.map((v, i) => (v - mean) * inv * w[i] + b[i]);
}

/** modeling_llama's apply_rotary_pos_emb on one head: x·cos + rotate_half(x)·sin, cos = cat(freqs, freqs). */
function ropeHalf(x: V, pos: number, theta: number): V {
  const hd = x.length;
  const h = hd / 2;
  const out = new Float64Array(hd);
  for (let j = 0; j < hd; j++) {
    const i = j % h;
    const ang = pos / theta ** ((2 * i) / hd);
    const rot = j < h ? -x[j + h] : x[j - h]; // rotate_half = cat(-x2, x1)
    out[j] = x[j] * Math.cos(ang) + rot * Math.sin(ang);
  }
  return out;
}

/** Causal attention for all positions: q [T][nH·hd], k/v [T][nKv·hd] -> context [T][nH·hd]. */
function attend(qs: V[], ks: V[], vs: V[], nH: number, nKv: number, hd: number, scale: number): V[] {
  const rep = nH / nKv; // repeat_kv: q head h reads kv head floor(h / rep)
  return qs.map((q, t) => {
    const ctx = new Float64Array(nH * hd);
    for (let h = 0; h < nH; h++) {
      const g = Math.floor(h / rep);
      const sc: number[] = [];
      for (let s = 0; s <= t; s++) {
        let dot = 0;
        for (let i = 0; i < hd; i++) dot += q[h * hd + i] * ks[s][g * hd + i];
        sc.push(dot * scale);
      }
      const mx = Math.max(...sc);
      const e = sc.map((v) => Math.exp(v - mx));
      const z = e.reduce((a, v) => a + v, 0);
      for (let s = 0; s <= t; s++) for (let i = 0; i < hd; i++) ctx[h * hd + i] += (e[s] / z) * vs[s][g * hd + i];
    }
    return ctx;
  });
}

/** Logits [T][vocab] of `tokens` under checkpoint ck, in float64. */
export function hfReferenceLogits(ck: HfCheckpoint, tokens: number[]): V[] {
  const c = ck.config as Record<string, number & boolean & string>;
  const W = (name: string): V => {
    const t = ck.tensors.get(name);
    if (!t) throw new Error(`reference: no tensor ${name}`);
    return t.values;
  };
  const has = (name: string) => ck.tensors.has(name);
  const dim = c.hidden_size;
  const nH = c.num_attention_heads;
  const hd = dim / nH;
  const vocab = c.vocab_size;
  const row = (w: V, r: number) => w.slice(r * dim, (r + 1) * dim);
  if (c.model_type === 'opt') {
    const p = 'model.decoder.';
    let hs = tokens.map((tok, t) => row(W(`${p}embed_tokens.weight`), tok).map((v, i) => v + W(`${p}embed_positions.weight`)[(t + 2) * dim + i]));
    for (let l = 0; l < c.num_hidden_layers; l++) {
      const L = `${p}layers.${l}.`;
      const xs = hs.map((h) => layerNorm(h, W(`${L}self_attn_layer_norm.weight`), W(`${L}self_attn_layer_norm.bias`)));
      // OPTAttention scales q (after its bias) by head_dim^-0.5.
      const qs = xs.map((x) => matvec(W(`${L}self_attn.q_proj.weight`), x, dim, W(`${L}self_attn.q_proj.bias`)).map((v) => v * hd ** -0.5));
      const ks = xs.map((x) => matvec(W(`${L}self_attn.k_proj.weight`), x, dim, W(`${L}self_attn.k_proj.bias`)));
      const vs = xs.map((x) => matvec(W(`${L}self_attn.v_proj.weight`), x, dim, W(`${L}self_attn.v_proj.bias`)));
      const ctx = attend(qs, ks, vs, nH, nH, hd, 1);
      hs = hs.map((h, t) => {
        const o = matvec(W(`${L}self_attn.out_proj.weight`), ctx[t], dim, W(`${L}self_attn.out_proj.bias`));
        const h1 = h.map((v, i) => v + o[i]);
        const x = layerNorm(h1, W(`${L}final_layer_norm.weight`), W(`${L}final_layer_norm.bias`));
        const a = matvec(W(`${L}fc1.weight`), x, c.ffn_dim, W(`${L}fc1.bias`)).map((v) => Math.max(0, v));
        const f = matvec(W(`${L}fc2.weight`), a, dim, W(`${L}fc2.bias`));
        return h1.map((v, i) => v + f[i]);
      });
    }
    const head = has('lm_head.weight') && c.tie_word_embeddings === false ? W('lm_head.weight') : W(`${p}embed_tokens.weight`);
    return hs.map((h) => matvec(head, layerNorm(h, W(`${p}final_layer_norm.weight`), W(`${p}final_layer_norm.bias`)), vocab));
  }
  const nKv = c.num_key_value_heads;
  const eps = c.rms_norm_eps;
  const theta = c.rope_theta;
  let hs = tokens.map((tok) => row(W('model.embed_tokens.weight'), tok));
  const opt = (name: string) => (has(name) ? W(name) : undefined);
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const L = `model.layers.${l}.`;
    const xs = hs.map((h) => rmsNorm(h, W(`${L}input_layernorm.weight`), eps));
    const perHead = (v: V, n: number, t: number) => {
      const out = new Float64Array(v.length);
      for (let h = 0; h < n; h++) out.set(ropeHalf(v.slice(h * hd, (h + 1) * hd), t, theta), h * hd);
      return out;
    };
    const qs = xs.map((x, t) => perHead(matvec(W(`${L}self_attn.q_proj.weight`), x, nH * hd, opt(`${L}self_attn.q_proj.bias`)), nH, t));
    const ks = xs.map((x, t) => perHead(matvec(W(`${L}self_attn.k_proj.weight`), x, nKv * hd, opt(`${L}self_attn.k_proj.bias`)), nKv, t));
    const vs = xs.map((x) => matvec(W(`${L}self_attn.v_proj.weight`), x, nKv * hd, opt(`${L}self_attn.v_proj.bias`)));
    const ctx = attend(qs, ks, vs, nH, nKv, hd, hd ** -0.5);
    hs = hs.map((h, t) => {
      const o = matvec(W(`${L}self_attn.o_proj.weight`), ctx[t], dim, opt(`${L}self_attn.o_proj.bias`));
      const h1 = h.map((v, i) => v + o[i]);
      const x = rmsNorm(h1, W(`${L}post_attention_layernorm.weight`), eps);
      const g = matvec(W(`${L}mlp.gate_proj.weight`), x, c.intermediate_size);
      const u = matvec(W(`${L}mlp.up_proj.weight`), x, c.intermediate_size);
      const a = g.map((v, j) => (v / (1 + Math.exp(-v))) * u[j]);
      const f = matvec(W(`${L}mlp.down_proj.weight`), a, dim);
      return h1.map((v, i) => v + f[i]);
    });
  }
  const head = c.tie_word_embeddings ? W('model.embed_tokens.weight') : W('lm_head.weight');
  return hs.map((h) => matvec(head, rmsNorm(h, W('model.norm.weight'), eps), vocab));
}

/** max |a − b| over all logits, relative to max(1, max |b|). */
export function relDiff(a: Float32Array, ref: V[]): number {
  let d = 0;
  let m = 1;
  const V = ref[0].length;
  ref.forEach((r, t) => {
    for (let i = 0; i < V; i++) {
      d = Math.max(d, Math.abs(a[t * V + i] - r[i]));
      m = Math.max(m, Math.abs(r[i]));
    }
  });
  return d / m;
}
