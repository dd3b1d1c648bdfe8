/**
 * Whole-model and per-block quantization with RTN or GPTQ. Every block linear
 * (wq wk wv wo w1 w2 w3) is fake-quantized; the embedding, norms, biases and classifier stay
 * in full precision.
 *
 * GPTQ runs "true-sequentially" (as AutoGPTQ's default and gptq.py's --true-sequential):
 * block by block, and inside a block in four stages, each linear's Hessian being taken from
 * inputs computed with everything before it already quantized:
 *
 *   1. wq wk wv  ← norm(x)               x = block input of the quantized model so far
 *   2. wo        ← attention context     (with quantized wq wk wv)
 *   3. w1 w3     ← norm(h)               h = x + attention (with quantized wo)
 *   4. w2        ← FFN activation        (with quantized w1 w3)
 *
 * so a later layer compensates for the rounding of the earlier ones. The search, which keeps
 * Hessians captured once, uses `captureBlockHessians` + `quantizeBlockLinears` instead.
 */
import { InvarxError } from '../errors';
import { attentionContext, attnSublayer, blockTrace, embed, ffnActivation, ffnSublayer, norm } from '../forward';
import { jsOps, type Ops } from '../ops';
import { blockLinears, cloneBlock, cloneModel, linearShape, type Block, type F32, type LinearName, type Model, type ModelConfig } from '../model/types';
import { accumulateHessian, gptqQuantize, newHessian, type GptqOptions, type HessianState } from './gptq';
import { quantizeRtn, dequantize, validateSpec, type QuantSpec, type Quantized } from './rtn';

export type QuantMethod = 'rtn' | 'gptq';

/** The activation a linear reads; one Hessian per activation serves all linears that read it. */
export type BlockInput = 'xnAttn' | 'ctx' | 'xnFfn' | 'act';

export const LINEAR_INPUT: Readonly<Record<LinearName, BlockInput>> = {
  wq: 'xnAttn', wk: 'xnAttn', wv: 'xnAttn', wo: 'ctx', w1: 'xnFfn', w3: 'xnFfn', w2: 'act',
};

/** Input Hessians of one block, H = 2/N · XᵀX, each [width, width] with width = the linear's `in`. */
export type BlockHessians = Record<BlockInput, Float64Array>;

/** Width of a block input (the `in` of the linears that read it). */
export function inputWidth(cfg: ModelConfig, input: BlockInput): number {
  return input === 'ctx' ? cfg.nHeads * cfg.headDim : input === 'act' ? cfg.hiddenDim : cfg.dim;
}

/** A running Hessian per block input, fed one sequence's activations at a time. */
export class BlockHessianAccumulator {
  readonly H: BlockHessians;
  private state: Record<BlockInput, HessianState>;

  constructor(private cfg: ModelConfig) {
    const mk = (input: BlockInput) => newHessian(inputWidth(cfg, input));
    const a = mk('xnAttn'), c = mk('ctx'), f = mk('xnFfn'), h = mk('act');
    this.H = { xnAttn: a.H, ctx: c.H, xnFfn: f.H, act: h.H };
    this.state = { xnAttn: a.state, ctx: c.state, xnFfn: f.state, act: h.state };
  }

  /** Fold in the activation `x` [T, width] of one block input. */
  add(input: BlockInput, x: F32, T: number): void {
    accumulateHessian(this.H[input], x, T, inputWidth(this.cfg, input), this.state[input]);
  }
}

/**
 * Hessians of every linear input of block `b` run on the block inputs `xs` (one [T, dim]
 * per sequence), all from one trace of `b` as given (not sequential).
 */
export function captureBlockHessians(cfg: ModelConfig, b: Block, xs: F32[], ops: Ops = jsOps): BlockHessians {
  const acc = new BlockHessianAccumulator(cfg);
  for (const x of xs) {
    const T = x.length / cfg.dim;
    const tr = blockTrace(cfg, b, x, T, ops);
    acc.add('xnAttn', tr.xnAttn, T);
    acc.add('ctx', tr.ctx, T);
    acc.add('xnFfn', tr.xnFfn, T);
    acc.add('act', tr.act, T);
  }
  return acc.H;
}

export interface LinearQuantOptions extends GptqOptions {
  method: QuantMethod;
  /** Receives the integer codes of each quantized linear (for packed export). */
  onQuantized?: (name: LinearName, qz: Quantized) => void;
}

/** One linear w [rows, cols] quantized by `method`; GPTQ needs the Hessian H [cols, cols] of its input. */
export function quantizeLinear(
  w: F32, rows: number, cols: number, spec: QuantSpec, method: QuantMethod, H?: Float64Array, gptq: GptqOptions = {},
): { qz: Quantized; deq: F32 } {
  if (method === 'rtn') {
    const qz = quantizeRtn(w, rows, cols, spec);
    return { qz, deq: dequantize(qz) };
  }
  if (!H) throw new InvarxError('bad-config', 'GPTQ needs the Hessian of each linear input (calibration activations)');
  return gptqQuantize(w, rows, cols, H, spec, gptq);
}

/**
 * A copy of block `b` whose linears `names` (default: all of the arch) are fake-quantized,
 * each independently; GPTQ takes their Hessians from `hessians` (LINEAR_INPUT says which).
 * `b` is not changed.
 */
export function quantizeBlockLinears(
  cfg: ModelConfig, b: Block, spec: QuantSpec, opts: LinearQuantOptions & { hessians?: BlockHessians; names?: readonly LinearName[] },
): Block {
  const out = cloneBlock(b);
  for (const name of opts.names ?? blockLinears(cfg)) quantizeLinearInto(cfg, out, name, spec, opts, opts.hessians?.[LINEAR_INPUT[name]]);
  return out;
}

/** Replace linear `name` of `b` (in place) by its quantized version. */
function quantizeLinearInto(
  cfg: ModelConfig, b: Block, name: LinearName, spec: QuantSpec, opts: LinearQuantOptions, H?: Float64Array,
): void {
  const w = b[name];
  if (!w) throw new InvarxError('bad-model', `block has no ${name} weight to quantize`);
  const [rows, cols] = linearShape(cfg, name);
  const { qz, deq } = quantizeLinear(w, rows, cols, spec, opts.method, H, opts);
  opts.onQuantized?.(name, qz);
  b[name] = deq;
}

export interface QuantizeModelOptions extends GptqOptions {
  bits: number;
  group: number;
  method: QuantMethod;
  clip?: boolean | number[];
  /** Scales rounded to fp16 before the codes are chosen (what a packed checkpoint holds). */
  f16Scales?: boolean;
  /** Calibration token sequences (GPTQ only). */
  calib?: number[][];
  ops?: Ops;
  /** Receives the integer codes of each quantized linear (for packed export). */
  onQuantized?: (layer: number, name: LinearName, qz: Quantized) => void;
}

/** A new model with every block linear fake-quantized; `model` is not changed. */
export function quantizeModel(model: Model, opts: QuantizeModelOptions): Model {
  const cfg = model.config;
  const spec: QuantSpec = { bits: opts.bits, group: opts.group, clip: opts.clip, f16Scales: opts.f16Scales };
  for (const name of blockLinears(cfg)) validateSpec(spec, linearShape(cfg, name)[1]);
  const out = cloneModel(model);
  if (opts.method === 'rtn') {
    out.blocks.forEach((b, l) => {
      const lin: LinearQuantOptions = { method: 'rtn', onQuantized: opts.onQuantized && ((n, qz) => opts.onQuantized!(l, n, qz)) };
      for (const name of blockLinears(cfg)) quantizeLinearInto(cfg, b, name, spec, lin);
    });
    return out;
  }
  if (opts.method !== 'gptq') throw new InvarxError('bad-config', `unknown quantization method "${opts.method as string}" (use rtn or gptq)`);
  const calib = checkCalib(model, opts.calib);
  const ops = opts.ops ?? jsOps;
  // Block inputs of the model quantized so far, one [T, dim] per sequence.
  let xs = calib.map((seq) => embed(model, seq));
  for (let l = 0; l < cfg.nLayers; l++) {
    const b = out.blocks[l];
    const lin: LinearQuantOptions = {
      method: 'gptq', dampPercent: opts.dampPercent, blockSize: opts.blockSize,
      onQuantized: opts.onQuantized && ((n, qz) => opts.onQuantized!(l, n, qz)),
    };
    const stage = (names: LinearName[], input: BlockInput, acts: F32[]) => {
      const acc = new BlockHessianAccumulator(cfg);
      for (const a of acts) acc.add(input, a, a.length / inputWidth(cfg, input));
      for (const name of names) if (b[name]) quantizeLinearInto(cfg, b, name, spec, lin, acc.H[input]);
    };
    const Ts = xs.map((x) => x.length / cfg.dim);
    // 1. wq wk wv from norm(x)
    const xnAttn = xs.map((x, s) => {
      const xn = new Float32Array(x.length);
      norm(cfg, xn, x, b.attnNorm, b.attnNormBias, Ts[s]);
      return xn;
    });
    stage(['wq', 'wk', 'wv'], 'xnAttn', xnAttn);
    // 2. wo from the attention context of the quantized q/k/v
    stage(['wo'], 'ctx', xnAttn.map((xn, s) => attentionContext(cfg, b, xn, Ts[s], ops)));
    // 3. w1 w3 from norm(h), h after the quantized attention sublayer
    const hs = xs.map((x, s) => attnSublayer(cfg, b, x, Ts[s], ops));
    const xnFfn = hs.map((h, s) => {
      const xn = new Float32Array(h.length);
      norm(cfg, xn, h, b.ffnNorm, b.ffnNormBias, Ts[s]);
      return xn;
    });
    stage(['w1', 'w3'], 'xnFfn', xnFfn);
    // 4. w2 from the activation of the quantized w1/w3
    stage(['w2'], 'act', xnFfn.map((xn, s) => ffnActivation(cfg, b, xn, Ts[s], ops)));
    // Next block's input: this block fully quantized.
    xs = hs.map((h, s) => ffnSublayer(cfg, b, h, Ts[s], ops));
  }
  return out;
}

function checkCalib(model: Model, calib: number[][] | undefined): number[][] {
  const { vocabSize, seqLen } = model.config;
  if (!calib || calib.length === 0 || calib.every((s) => s.length === 0)) {
    throw new InvarxError('bad-config', 'GPTQ needs calibration token sequences (calib)');
  }
  calib.forEach((seq, i) => {
    if (seq.length > seqLen) throw new InvarxError('bad-tokens', `calibration sequence ${i} has ${seq.length} tokens, more than the model's ${seqLen}`);
    for (const t of seq) {
      if (!(Number.isInteger(t) && t >= 0 && t < vocabSize)) {
        throw new InvarxError('bad-tokens', `calibration sequence ${i} has token id ${t} outside the vocabulary [0, ${vocabSize})`);
      }
    }
  });
  return calib.filter((s) => s.length > 0);
}
