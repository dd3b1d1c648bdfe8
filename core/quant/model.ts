/**
 * Whole-model and per-block quantization with RTN or GPTQ. Every block linear
 * (wq wk wv wo w1 w2 w3) is fake-quantized; the embedding, norms, biases and classifier stay
 * in full precision.
 *
 * GPTQ runs "true-sequentially" (as AutoGPTQ's default and gptq.py's --true-sequential),
 * block by block and in four stages inside a block: ./view.ts holds that algorithm, one
 * block at a time, with its Hessians from ./hessian.ts (as the search's GPTQ base).
 * `BlockHessianAccumulator` is the streaming form of the same running average (gptq.py's
 * add_batch, one sequence at a time), which the tests hold ./hessian.ts to, bit for bit.
 */
import { InvarxError } from '../errors';
import { blockTrace } from '../forward';
import { jsOps, type Ops } from '../ops';
import { blockLinears, cloneBlock, linearShape, type Block, type F32, type LinearName, type Model, type ModelConfig } from '../model/types';
import { accumulateHessian, gptqQuantize, newHessian, type GptqOptions, type HessianState } from './gptq';
import { quantizeRtn, dequantize, numGroups, type QuantSpec, type Quantized } from './rtn';
import type { QuantFormat } from './formats';
import { quantizedView } from './view';
import { eagerModel } from '../model/lazy';

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
  /** RTN only: per-group clip codes of each linear ([rows, nGroups], rtn.ts CLIP_AUTO where the spec's search decides). */
  clips?: Partial<Record<LinearName, Uint8Array>>;
  /** RTN without `onQuantized`: a backend whose quantDequant does the rounding (same bits, faster). */
  ops?: Ops;
}

/** One linear w [rows, cols] quantized by `method`; GPTQ needs the Hessian H [cols, cols] of its input. */
export function quantizeLinear(
  w: F32, rows: number, cols: number, spec: QuantSpec, method: QuantMethod, H?: Float64Array, gptq: GptqOptions = {}, clips?: Uint8Array,
): { qz: Quantized; deq: F32 } {
  if (method === 'rtn') {
    const qz = quantizeRtn(w, rows, cols, spec, clips);
    return { qz, deq: dequantize(qz) };
  }
  if (!H) throw new InvarxError('bad-config', 'GPTQ needs the Hessian of each linear input (calibration activations)');
  return gptqQuantize(w, rows, cols, H, spec, gptq);
}

/**
 * RTN's fake-quant weights of w [rows, cols] rounded by the backend's quantDequant (the
 * same bits as dequantize(quantizeRtn(…)), without the integer codes), or null when `ops`
 * has none.
 */
export function backendRtn(w: F32, rows: number, cols: number, spec: QuantSpec, ops?: Ops, clips?: Uint8Array): F32 | null {
  if (!ops?.quantDequant) return null;
  const deq = new Float32Array(rows * cols);
  ops.quantDequant(w, cols, spec, deq, 0, rows, 0, numGroups(cols, spec.group), clips);
  return deq;
}

/**
 * A copy of block `b` whose linears `names` (default: all of the arch) are fake-quantized,
 * each independently; GPTQ takes their Hessians from `hessians` (LINEAR_INPUT says which).
 * `b` is not changed.
 */
export function quantizeBlockLinears(
  cfg: ModelConfig, b: Block, spec: QuantSpec, opts: LinearQuantOptions & { hessians?: BlockHessians; names?: readonly LinearName[] },
): Block {
  const names = opts.names ?? blockLinears(cfg);
  // the linears to quantize are only read (and then replaced): copy the rest alone
  return { ...cloneBlock(b, names), ...quantizeLinears(cfg, b, spec, names, opts) };
}

/** The linears `names` of block `b` fake-quantized, each independently (as quantizeBlockLinears), and nothing else of the block. */
export function quantizeLinears(
  cfg: ModelConfig, b: Block, spec: QuantSpec, names: readonly LinearName[], opts: LinearQuantOptions & { hessians?: BlockHessians },
): Partial<Block> {
  const out: Partial<Block> = {};
  for (const name of names) {
    if (!b[name]) throw new InvarxError('bad-model', `block has no ${name} weight to quantize`);
    out[name] = quantizeOneLinear(cfg, b[name]!, name, spec, opts, opts.hessians?.[LINEAR_INPUT[name]]);
  }
  return out;
}

/** Linear `name` (weights w) fake-quantized, its codes told to opts.onQuantized. */
function quantizeOneLinear(cfg: ModelConfig, w: F32, name: LinearName, spec: QuantSpec, opts: LinearQuantOptions, H?: Float64Array): F32 {
  const [rows, cols] = linearShape(cfg, name);
  const clips = opts.clips?.[name];
  const fast = opts.method === 'rtn' && !opts.onQuantized ? backendRtn(w, rows, cols, spec, opts.ops, clips) : null;
  if (fast) return fast;
  const { qz, deq } = quantizeLinear(w, rows, cols, spec, opts.method, H, opts, clips);
  opts.onQuantized?.(name, qz);
  return deq;
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
  /**
   * GPTQ on the int grid: the share α of the asymmetric correction (./asymmetric.ts) in
   * each linear's target; absent or 0, plain GPTQ.
   */
  asymmetric?: number;
  /** A ggml format whose grid replaces bits and group (quantizedView only). */
  format?: QuantFormat;
  ops?: Ops;
  /** Receives the integer codes of each quantized linear (for packed export). */
  onQuantized?: (layer: number, name: LinearName, qz: Quantized) => void;
}

/**
 * A new model with every block linear fake-quantized; `model` is not changed. This holds
 * the whole quantized model: block-major readers take quantizedView (./view.ts) instead,
 * which makes the same blocks one at a time.
 */
export function quantizeModel(model: Model, opts: QuantizeModelOptions): Model {
  return eagerModel(quantizedView(model, opts));
}
