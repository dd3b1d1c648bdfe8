/**
 * A quantized model as a view of the FP model: each block is quantized when a block-major
 * pass (core/blockPass.ts) reads it, and dropped after, so quantizing and evaluating a model
 * holds one block of quantized weights, never a second copy of the model.
 *
 * RTN blocks depend only on their FP block. GPTQ blocks are made in order (core/model/lazy.ts
 * sequentialBlocks), "true-sequentially" as quantizeModel does it: the calibration rows run
 * through the blocks quantized so far, and inside a block in four stages, each linear's
 * Hessian taken from inputs computed with everything before it already quantized:
 *
 *   1. wq wk wv  ← norm(x)               2. wo     ← attention context
 *   3. w1 w3     ← norm(h)               4. w2     ← FFN activation
 *
 * The Hessians are accumulated sequence by sequence, in order (./hessian.ts, the one
 * builder the search's GPTQ base uses too), so the view gives the same bits as
 * quantizeModel (tested). Asymmetric GPTQ (`asymmetric`, ./asymmetric.ts) also runs the FP
 * block on the FP model's rows beside it, and aims each stage's linears at reproducing the
 * FP linear on those.
 *
 * With `format` (a ggml format) the grid is the format's: RTN is its reference quantizer
 * (formatView; with clip, our clip search), GPTQ runs on the format's grid (./gptqFormat.ts).
 */
import { InvarxError } from '../errors';
import { embedRows } from '../blockPass';
import { ffnActivation } from '../forward';
import { attnInput, attnResidual, attnRows, context, ffnInput, ffnResidual, qkv, type Rows } from '../forwardRows';
import { sequentialBlocks, BlockCache, lazyBlocks, type BlockKey } from '../model/lazy';
import { blockLinears, cloneBlock, linearShape, type Block, type F32, type LinearName, type Model, type ModelConfig } from '../model/types';
import { jsOps, type Ops } from '../ops';
import { backendRtn, inputWidth, quantizeLinear, type BlockInput, type QuantizeModelOptions } from './model';
import { validateSpec, type QuantSpec } from './rtn';
import { clippedFormat, formatForRow, type QuantFormat } from './formats';
import { gptqQuantizeRows, type GptqFactor } from './gptq';
import { asymmetricTargets, inputFactor } from './asymmetric';
import { gptqFormatRows } from './gptqFormat';
import { f16Round } from '../model/halfFloat';

/** The quantized model as a lazy view of `model` (see the header); `model` is not changed. */
export function quantizedView(model: Model, opts: QuantizeModelOptions): Model {
  const cfg = model.config;
  const spec: QuantSpec = { bits: opts.bits, group: opts.group, clip: opts.clip, f16Scales: opts.f16Scales };
  if (opts.format && opts.method === 'rtn') return formatView(model, (opts.clip && clippedFormat(opts.format)) || opts.format);
  if (!opts.format) for (const name of blockLinears(cfg)) validateSpec(spec, linearShape(cfg, name)[1]);
  const keys = Object.keys(model.blocks[0]) as BlockKey[];
  if (opts.method === 'rtn') {
    const cache = new BlockCache((l) => {
      const b = cloneBlock(model.blocks[l]);
      for (const name of blockLinears(cfg)) quantizeInto(cfg, b, name, spec, opts, l);
      return b;
    }, 1);
    return { ...model, blocks: lazyBlocks(cfg.nLayers, keys, cache) };
  }
  if (opts.method !== 'gptq') throw new InvarxError('bad-config', `unknown quantization method "${opts.method as string}" (use rtn or gptq)`);
  const calib = checkCalib(model, opts.calib);
  const ops = opts.ops ?? jsOps;
  const alpha = opts.asymmetric ?? 0;
  if (alpha !== 0 && opts.format) throw new InvarxError('bad-config', 'asymmetric GPTQ runs on the int grid only, not on a ggml format');
  const { blocks } = sequentialBlocks<GptqRows>(
    cfg.nLayers, keys, () => {
      const x = embedRows(model, calib);
      return alpha ? { ...x, xf: x.x } : x;
    }, (l, x) => gptqBlock(cfg, model.blocks[l], x, spec, opts, ops, l),
  );
  return { ...model, blocks };
}

/** A GPTQ block's calibration inputs in the quantized model and, for asymmetric GPTQ, in the FP model (`xf`). */
type GptqRows = Rows & { xf?: F32 };

/** Block `fp` quantized by GPTQ on its calibration inputs x, and the quantized block's outputs (the next block's inputs). */
function gptqBlock(cfg: ModelConfig, fp: Block, x: GptqRows, spec: QuantSpec, opts: QuantizeModelOptions, ops: Ops, l: number): { block: Block; state: GptqRows } {
  const b = cloneBlock(fp);
  const N = x.x.length / cfg.dim;
  const alpha = opts.asymmetric ?? 0;
  const fpTrace = x.xf ? fpBlockTrace(cfg, fp, { x: x.xf, seqStarts: x.seqStarts }, ops) : undefined;
  const stage = (names: LinearName[], input: BlockInput, acts: F32) => {
    const cols = inputWidth(cfg, input);
    // one factor for the linears that share the input (an O(cols³) step: at 2048 columns, seconds)
    const { factor, MT } = inputFactor(acts, fpTrace?.[input], N, cols, x.seqStarts, { ...opts, ops });
    for (const name of names) if (b[name]) quantizeInto(cfg, b, name, spec, opts, l, factor, MT && asymmetricTargets(b[name]!, cols, MT, alpha, ops));
  };
  const xa = attnInput(cfg, b, x.x, N);
  stage(['wq', 'wk', 'wv'], 'xnAttn', xa);
  const ctx = new Float32Array(N * cfg.nHeads * cfg.headDim);
  context(cfg, qkv(cfg, b, xa, x.seqStarts, ops), x.seqStarts, null, ops, ctx);
  stage(['wo'], 'ctx', ctx);
  const h = attnResidual(cfg, x.x, ctx, b.wo, b.bo, ops);
  const xn = ffnInput(cfg, b, h, N);
  stage(['w1', 'w3'], 'xnFfn', xn);
  const act = ffnActivation(cfg, b, xn, N, ops);
  stage(['w2'], 'act', act);
  const next = { x: ffnResidual(cfg, h, act, b, ops), seqStarts: x.seqStarts };
  return { block: b, state: fpTrace ? { ...next, xf: fpTrace.y } : next };
}

/** The FP block's linear inputs on its FP inputs x, and its output y (core's forward pieces, as blockForwardRows). */
function fpBlockTrace(cfg: ModelConfig, b: Block, x: Rows, ops: Ops): Record<BlockInput, F32> & { y: F32 } {
  const N = x.x.length / cfg.dim;
  const { xnAttn, ctx, h } = attnRows(cfg, b, x, ops);
  const xnFfn = ffnInput(cfg, b, h, N);
  const act = ffnActivation(cfg, b, xnFfn, N, ops);
  return { xnAttn, ctx, xnFfn, act, y: ffnResidual(cfg, h, act, b, ops) };
}

/** Replace linear `name` of `b` (in place) by its quantized version, reporting the codes. */
function quantizeInto(cfg: ModelConfig, b: Block, name: LinearName, spec: QuantSpec, opts: QuantizeModelOptions, l: number, factor?: GptqFactor, target?: F32): void {
  const [rows, cols] = linearShape(cfg, name);
  if (target) b[name] = target;
  if (factor && opts.format) {
    b[name] = gptqFormatRows(b[name]!, cols, factor, opts.format, { ...opts, clip: opts.clip === true }).deq;
    return;
  }
  const fast = !factor && !opts.onQuantized ? backendRtn(b[name]!, rows, cols, spec, opts.ops) : null;
  if (fast) {
    b[name] = fast;
    return;
  }
  const { qz, deq } = factor ? gptqQuantizeRows(b[name]!, cols, factor, spec, opts) : quantizeLinear(b[name]!, rows, cols, spec, 'rtn');
  opts.onQuantized?.(l, name, qz);
  b[name] = deq;
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

/**
 * The model with every linear quantized by `format`'s reference quantizer (ggml's
 * `quantize_row_*_ref` for llama.cpp's formats) and dequantized exactly, row by row, as a
 * lazy view like quantizedView's RTN: a linear whose rows the format cannot hold falls back
 * as llama-quantize does (a k-quant's 32-block fallback, else f16), so the view holds the
 * same weights as the linears of a GGUF written in that format. Embedding, classifier and
 * norms stay as they are.
 */
export function formatView(model: Model, format: QuantFormat): Model {
  const cfg = model.config;
  const keys = Object.keys(model.blocks[0]) as BlockKey[];
  const cache = new BlockCache((l) => {
    const b = cloneBlock(model.blocks[l]);
    for (const name of blockLinears(cfg)) {
      const [rows, cols] = linearShape(cfg, name);
      const w = b[name]!;
      const fmt = formatForRow(format, cols);
      const out = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) {
        const row = w.subarray(r * cols, (r + 1) * cols);
        const dst = out.subarray(r * cols, (r + 1) * cols);
        if (fmt) fmt.dequantizeRow(fmt.quantizeRow(row), cols, dst);
        else for (let j = 0; j < cols; j++) dst[j] = f16Round(row[j]);
      }
      b[name] = out;
    }
    return b;
  }, 1);
  return { ...model, blocks: lazyBlocks(cfg.nLayers, keys, cache) };
}
