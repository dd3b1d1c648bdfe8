/**
 * Writing packed GPTQ checkpoints: the layout AutoGPTQ writes and AutoGPTQ, GPTQModel,
 * transformers' GPTQ integration (optimum), vLLM and ExLlama read (./gptqRead.ts reads it back).
 *
 * For every quantized block linear, under its HF module name M (e.g. model.layers.0.mlp.up_proj):
 *
 *   M.qweight  I32 [in·b/32, out]      codes packed along `in`, little end first (pack.ts)
 *   M.qzeros   I32 [nGroups, out·b/32] stored zero points packed along `out`
 *   M.scales   F16 [nGroups, out]
 *   M.g_idx    I32 [in]                g_idx[i] = floor(i / group)   (desc_act: false)
 *   M.bias     [out]                   only where the layer has a bias (opt, qwen2 q/k/v)
 *
 * and weight(o, i) = scales[g, o] · (code(i, o) − zero(g, o)) with g = g_idx[i]. Everything
 * else (embeddings, norms, positions, an untied lm_head) is written unchanged under its HF
 * name, plus config.json with `quantization_config` and AutoGPTQ's quantize_config.json.
 *
 * Zero points. checkpointFormat 'gptq' (the default, AutoGPTQ's "v1") stores zero − 1 and
 * every v1 loader adds the 1 back; a zero of 0 is therefore not representable (AutoGPTQ's own
 * pack overflows it, GPTQModel clamps it to 1). We keep such groups exact instead: if no code
 * of the group is 2^b − 1 we store codes + 1 with zero 1; otherwise we mirror the group,
 * code' = 2^b − 1 − code, zero' = 2^b − 1, scale' = −scale, which dequantizes to the same
 * numbers ((−code)·(−scale)) under the same linear formula every loader uses.
 * checkpointFormat 'gptq_v2' (GPTQModel) stores zero points as they are.
 *
 * Scales are fp16 in the file. The export equals the fake-quantized model exactly only when
 * the scales it came from are fp16 values already (see `withF16Scales`); otherwise they are
 * rounded and the report counts them.
 *
 * A llama2.c model (interleaved RoPE) is written in HF's half layout: the rows of its wq/wk
 * codes, scales and zeros are permuted like its weights (rows quantize independently, so
 * this is exact).
 *
 * Shapes: GPTQ loaders allocate qweight as [in/32·b, out] and qzeros as [nGroups, out/32·b],
 * and their dequantizers reshape `in` into groups of group_size, so every quantized linear
 * needs in % 32 = 0, out % 32 = 0 and in % group = 0. An FFN hidden size that breaks this
 * (stories260K's 172) is padded with zero units (padHidden.ts: exact, the config says the
 * padded intermediate_size); any other ragged last group (which core/quant allows) is
 * refused with an error naming the layer. One group per row (group ≥ in for every linear)
 * is written as group_size −1.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../errors';
import type { Quantized } from '../quant/rtn';
import { blockLinears, linearShape, type LinearName, type Model, type ModelConfig } from '../model/types';
import { hfConfigOf, hfLayoutOf, hfLinearModule, hfTensors, ropeRowOrder } from '../model/hf';
import { f16BitsToF32, f32ToF16Bits } from '../model/halfFloat';
import { INDEX_FILE, SINGLE_FILE } from '../model/safetensors';
import { type TensorSpec, writeSafetensorsCheckpointStream } from '../model/safetensorsWrite';
import { packQweight, packQzeros } from './pack';
import { padCodesHidden, padModelHidden, paddedHiddenDim } from './padHidden';

/** Integer codes of a block's linears (the ones core/quant hands out through onQuantized). */
export type BlockQuantized = Partial<Record<LinearName, Quantized>>;

export type CheckpointFormat = 'gptq' | 'gptq_v2';
export type FloatDtype = 'F32' | 'F16' | 'BF16';

export const GPTQ_BITS: readonly number[] = [2, 3, 4, 8];

export interface GptqExportOptions {
  /** 'gptq' (AutoGPTQ v1, zero − 1 stored; default) or 'gptq_v2' (GPTQModel, zero stored). */
  checkpointFormat?: CheckpointFormat;
  /**
   * dtype of the tensors that are not packed (embeddings, norms, biases, positions, lm_head).
   * F32 (default) keeps them bit-exact, so reloading gives the fake-quantized model exactly;
   * loaders cast them to the dtype they run in.
   */
  floatDtype?: FloatDtype;
  /** The source checkpoint's config.json, whose non-structural fields are carried over. */
  baseConfig?: Record<string, unknown>;
  /** Shard above this many bytes (default 4 GiB). */
  maxShardBytes?: number;
  /** Pad an FFN hidden size the layout cannot hold with zero units (default true). */
  padHidden?: boolean;
}

export interface GptqExportReport {
  files: string[];
  bits: number;
  /** As written to quantization_config (−1: one group per row). */
  groupSize: number;
  checkpointFormat: CheckpointFormat;
  /** Scales that were not fp16 values and had to be rounded (0 = the export is exact). */
  scalesRounded: number;
  /** Largest |fp16(s) − s| / |s| over the rounded scales. */
  maxScaleRelError: number;
  /** v1 only: groups with zero point 0 stored as codes + 1 / zero 1. */
  zeroShiftedGroups: number;
  /** v1 only: groups with zero point 0 stored mirrored with a negative scale. */
  mirroredGroups: number;
  /** Set when the FFN hidden size was padded with zero units to fit the layout. */
  paddedHidden?: { from: number; to: number };
}

/** A copy of qz whose scales are rounded to fp16 (codes and zeros unchanged): what an export of qz holds. */
export function withF16Scales(qz: Quantized): Quantized {
  return { ...qz, scale: qz.scale.map((s) => f16BitsToF32(f32ToF16Bits(s))) };
}

/** Rows of wq/wk codes (and their scales/zeros) reordered from interleaved to half RoPE layout. */
function halfLayoutCodes(cfg: ModelConfig, bq: BlockQuantized): BlockQuantized {
  const { headDim: hd, nHeads, nKvHeads } = cfg;
  const from = ropeRowOrder(hd, 'half');
  const permute = (qz: Quantized | undefined, heads: number): Quantized | undefined => {
    if (!qz) return qz;
    const nG = qz.scale.length / qz.rows;
    const out: Quantized = { ...qz, q: new Uint8Array(qz.q.length), scale: new Float32Array(qz.scale.length), zero: new Uint8Array(qz.zero.length) };
    for (let h = 0; h < heads; h++) {
      for (let r = 0; r < hd; r++) {
        const src = h * hd + from[r];
        const dst = h * hd + r;
        out.q.set(qz.q.subarray(src * qz.cols, (src + 1) * qz.cols), dst * qz.cols);
        out.scale.set(qz.scale.subarray(src * nG, (src + 1) * nG), dst * nG);
        out.zero.set(qz.zero.subarray(src * nG, (src + 1) * nG), dst * nG);
      }
    }
    return out;
  };
  return { ...bq, wq: permute(bq.wq, nHeads), wk: permute(bq.wk, nKvHeads) };
}

/** Codes of every block: a list, or a function asked for block l's when its tensors are written. */
export type BlockCodes = readonly BlockQuantized[] | ((l: number) => BlockQuantized);

interface Grid {
  bits: number;
  group: number;
}

/**
 * Check block l's codes against the GPTQ layout and against `grid`, the setting every
 * linear shares (the first linear checked sets it when not given); returns the grid.
 */
function checkBlockCodes(cfg: ModelConfig, l: number, bq: BlockQuantized, grid?: Grid): Grid {
  let g = grid;
  for (const name of blockLinears(cfg)) {
    const qz = bq[name];
    const where = `GPTQ export: block ${l} ${name}`;
    if (!qz) return fail('bad-config', `${where} has no quantized codes (every block linear must be quantized)`);
    const [out, inDim] = linearShape(cfg, name);
    if (qz.rows !== out || qz.cols !== inDim) fail('bad-config', `${where}: codes are [${qz.rows}, ${qz.cols}], the weight is [${out}, ${inDim}]`);
    g ??= { bits: qz.bits, group: qz.group };
    const { bits, group } = g;
    if (qz.bits !== bits || qz.group !== group) {
      fail('bad-config', `${where}: ${qz.bits} bits / group ${qz.group} differs from ${bits} bits / group ${group} elsewhere (GPTQ stores one setting)`);
    }
    if (!GPTQ_BITS.includes(bits)) fail('bad-config', `GPTQ export: ${bits}-bit weights cannot be packed (GPTQ loaders take ${GPTQ_BITS.join(', ')} bits)`);
    if (inDim % 32 !== 0 || out % 32 !== 0) {
      fail('bad-config', `${where}: GPTQ loaders need both dimensions of a packed linear divisible by 32, it is [${out}, ${inDim}]`);
    }
    if (group < inDim && inDim % group !== 0) {
      fail('bad-config', `${where}: input dimension ${inDim} is not a multiple of group size ${group}; GPTQ loaders cannot read a ragged last group (choose a group size that divides ${inDim})`);
    }
    const nG = Math.ceil(inDim / group);
    if (qz.q.length !== out * inDim || qz.scale.length !== out * nG || qz.zero.length !== out * nG) {
      fail('bad-config', `${where}: code, scale or zero arrays have the wrong length`);
    }
  }
  return g!;
}

/** group_size as written: −1 when one group spans every linear's row (a group spanning some rows but not all is refused). */
function groupSizeOf(cfg: ModelConfig, group: number): number {
  const linears = blockLinears(cfg);
  if (linears.every((name) => group >= linearShape(cfg, name)[1])) return -1;
  // loaders would reshape the rows a group spans into groups of `group`
  for (const name of linears) {
    const inDim = linearShape(cfg, name)[1];
    if (group > inDim) {
      fail('bad-config', `GPTQ export: group size ${group} exceeds the input dimension ${inDim} of ${name}; GPTQ stores one group size for all layers (choose one that divides every input dimension)`);
    }
  }
  return group;
}

/** The packing counts of the report. */
type PackCounts = Pick<GptqExportReport, 'scalesRounded' | 'maxScaleRelError' | 'zeroShiftedGroups' | 'mirroredGroups'>;

interface PackedLinear {
  qweight: Int32Array;
  qzeros: Int32Array;
  scales: Uint16Array; // fp16 bits
}

function lcm(a: number, b: number): number {
  let [x, y] = [a, b];
  while (y) [x, y] = [y, x % y];
  return (a / x) * b;
}

/** Pack one linear's codes; counts go into `rep`. */
function packLinear(qz: Quantized, format: CheckpointFormat, rep: PackCounts): PackedLinear {
  const { rows: out, cols: inDim, bits } = qz;
  const group = Math.min(qz.group, inDim);
  const nG = inDim / group;
  const maxq = (1 << bits) - 1;
  const q = qz.q.slice();
  const storedZero = new Uint8Array(nG * out); // [nG, out]
  const scales = new Uint16Array(nG * out); // [nG, out]
  for (let o = 0; o < out; o++) {
    for (let g = 0; g < nG; g++) {
      let z = qz.zero[o * nG + g];
      let s = qz.scale[o * nG + g];
      const c0 = o * inDim + g * group;
      if (z > maxq) fail('bad-config', `GPTQ export: zero point ${z} exceeds ${maxq} for ${bits} bits`);
      let stored = z;
      if (format === 'gptq') {
        if (z === 0) {
          let top = 0;
          for (let j = c0; j < c0 + group; j++) if (q[j] > top) top = q[j];
          if (top < maxq) {
            for (let j = c0; j < c0 + group; j++) q[j] += 1; // (q+1 − 1)·s = q·s
            z = 1;
            rep.zeroShiftedGroups++;
          } else {
            for (let j = c0; j < c0 + group; j++) q[j] = maxq - q[j]; // (maxq−q − maxq)·(−s) = q·s
            z = maxq;
            s = -s;
            rep.mirroredGroups++;
          }
        }
        stored = z - 1;
      }
      storedZero[g * out + o] = stored;
      const h = f32ToF16Bits(s);
      const back = f16BitsToF32(h);
      if (!Number.isFinite(back)) fail('bad-config', `GPTQ export: scale ${s} does not fit in fp16`);
      if (back !== s) {
        rep.scalesRounded++;
        rep.maxScaleRelError = Math.max(rep.maxScaleRelError, s === 0 ? 0 : Math.abs(back - s) / Math.abs(s));
      }
      scales[g * out + o] = h;
    }
  }
  for (let j = 0; j < q.length; j++) if (q[j] > maxq) fail('bad-config', `GPTQ export: code ${q[j]} exceeds ${maxq} for ${bits} bits`);
  return { qweight: packQweight(q, out, inDim, bits), qzeros: packQzeros(storedZero, nG, out, bits), scales };
}

/** g_idx of a linear with `inDim` inputs in groups of `group` (≤ inDim): column i is in group floor(i / group). */
function groupIndex(inDim: number, group: number): Int32Array {
  const gIdx = new Int32Array(inDim);
  for (let i = 0; i < inDim; i++) gIdx[i] = Math.floor(i / group);
  return gIdx;
}

/** The quantization_config written into config.json (and as quantize_config.json). */
export function gptqQuantizationConfig(bits: number, groupSize: number, format: CheckpointFormat): Record<string, unknown> {
  return {
    quant_method: 'gptq',
    bits,
    group_size: groupSize,
    desc_act: false,
    sym: false,
    static_groups: false,
    true_sequential: true,
    lm_head: false,
    checkpoint_format: format,
    model_file_base_name: 'model',
    pack_dtype: 'int32',
    meta: { quantizer: ['invarx'] },
  };
}

/** Remove checkpoint files a previous export left in dir (a stale index would shadow a new single file). */
export function clearCheckpointFiles(dir: string): void {
  if (!existsSync(dir)) return;
  for (const f of readdirSync(dir)) {
    if (f === SINGLE_FILE || f === INDEX_FILE || /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)) rmSync(join(dir, f));
  }
}

/**
 * Write `model` (the transformed FP model: its non-linear tensors are written as they are)
 * with every block linear replaced by its packed codes, into `dir`.
 *
 * Written a tensor at a time, so a lazy model and codes given as a function are held one
 * block at a time: block l's codes are asked for (and checked, padded, permuted and packed)
 * when the writer reaches its first packed tensor, and kept until another block's are asked
 * for. The writer takes tensors by element size, then name, so a block's 4-byte tensors come
 * together (one codes computation a block), but its fp16 scales come in a later pass: those
 * are kept from the packing until written (2 bytes a group of weights, 1/128 of the block's
 * bf16 weights at group 128). Block 0's codes are asked for first, to learn the grid. A
 * failure part-way (a later block's codes refused) removes what was written.
 */
export function writeGptqExport(dir: string, model: Model, quant: BlockCodes, opts: GptqExportOptions = {}): GptqExportReport {
  const format = opts.checkpointFormat ?? 'gptq';
  if (format !== 'gptq' && format !== 'gptq_v2') fail('bad-config', `unknown GPTQ checkpoint format ${String(format)} (gptq or gptq_v2)`);
  const floatDtype = opts.floatDtype ?? 'F32';
  const L = model.config.nLayers;
  if (typeof quant !== 'function' && quant.length !== L) fail('bad-config', `GPTQ export: codes for ${quant.length} blocks, the model has ${L}`);
  const given = typeof quant === 'function' ? quant : (l: number) => quant[l];
  let lastBlock = -1;
  let lastCodes: BlockQuantized = {};
  const codesOf = (l: number): BlockQuantized => {
    if (l !== lastBlock) [lastBlock, lastCodes] = [l, given(l)];
    return lastCodes;
  };
  const H = model.config.hiddenDim;
  const group0 = L > 0 ? codesOf(0).w2?.group : undefined;
  let H2 = H;
  if (opts.padHidden !== false && group0 !== undefined) H2 = paddedHiddenDim(H, group0 < H ? lcm(32, group0) : 32);
  if (H2 !== H) model = padModelHidden(model, H2);
  const cfg = model.config;
  const padded = (l: number) => (H2 === H ? codesOf(l) : padCodesHidden(codesOf(l), H2));
  const grid = checkBlockCodes(cfg, 0, padded(0));
  if (typeof quant !== 'function') for (let l = 1; l < L; l++) checkBlockCodes(cfg, l, padded(l), grid);
  const { bits } = grid;
  const groupSize = groupSizeOf(cfg, grid.group);
  // An interleaved-RoPE (llama2.c) model is written in HF's half layout: permute the rows
  // of wq/wk codes exactly as hfTensors permutes the weights (rows quantize independently).
  const interleaved = cfg.arch === 'llama' && cfg.ropeLayout !== 'half';
  const layout = hfLayoutOf(model, opts.baseConfig);
  const rep: GptqExportReport = {
    files: [], bits, groupSize, checkpointFormat: format, scalesRounded: 0, maxScaleRelError: 0, zeroShiftedGroups: 0, mirroredGroups: 0,
    paddedHidden: H2 !== H ? { from: H, to: H2 } : undefined,
  };
  const counted = new Set<number>();
  const scalesToWrite = new Map<string, Uint16Array>();
  let packedBlock = -1;
  let packed: Partial<Record<LinearName, PackedLinear>> = {};
  const packedOf = (l: number, name: LinearName): PackedLinear => {
    if (l !== packedBlock) {
      const bq = padded(l);
      checkBlockCodes(cfg, l, bq, grid);
      const codes = interleaved ? halfLayoutCodes(cfg, bq) : bq;
      const counts: PackCounts = { scalesRounded: 0, maxScaleRelError: 0, zeroShiftedGroups: 0, mirroredGroups: 0 };
      packed = {};
      for (const n of blockLinears(cfg)) packed[n] = packLinear(codes[n]!, format, counts);
      packedBlock = l;
      if (!counted.has(l)) {
        counted.add(l);
        rep.scalesRounded += counts.scalesRounded;
        rep.zeroShiftedGroups += counts.zeroShiftedGroups;
        rep.mirroredGroups += counts.mirroredGroups;
        rep.maxScaleRelError = Math.max(rep.maxScaleRelError, counts.maxScaleRelError);
        for (const n of blockLinears(cfg)) scalesToWrite.set(`${l}.${n}`, packed[n]!.scales);
      }
    }
    return packed[name]!;
  };
  const scalesOf = (l: number, name: LinearName): Uint16Array => {
    const s = scalesToWrite.get(`${l}.${name}`) ?? packedOf(l, name).scales;
    scalesToWrite.delete(`${l}.${name}`);
    return s;
  };
  const tensors: (TensorSpec & { produce: () => ArrayBufferView })[] = [];
  for (const t of hfTensors(model, layout)) {
    if (!t.linear) {
      tensors.push({ name: t.name, dtype: floatDtype, shape: t.shape, produce: t.read });
      continue;
    }
    const { layer, name } = t.linear;
    const M = hfLinearModule(layout, layer, name);
    const [out, inDim] = t.shape;
    const group = Math.min(grid.group, inDim);
    const nG = inDim / group;
    tensors.push(
      { name: `${M}.qweight`, dtype: 'I32', shape: [(inDim * bits) / 32, out], produce: () => packedOf(layer, name).qweight },
      { name: `${M}.qzeros`, dtype: 'I32', shape: [nG, (out * bits) / 32], produce: () => packedOf(layer, name).qzeros },
      { name: `${M}.scales`, dtype: 'F16', shape: [nG, out], produce: () => scalesOf(layer, name) },
      { name: `${M}.g_idx`, dtype: 'I32', shape: [inDim], produce: () => groupIndex(inDim, group) },
    );
  }
  const created = !existsSync(dir);
  mkdirSync(dir, { recursive: true });
  clearCheckpointFiles(dir);
  const qcfg = gptqQuantizationConfig(bits, groupSize, format);
  const config = { ...hfConfigOf(model, layout, 'float16', opts.baseConfig), quantization_config: qcfg };
  let files: string[];
  try {
    // transformers refuses safetensors without metadata {"format": "pt"}.
    files = writeSafetensorsCheckpointStream(dir, tensors, (t) => t.produce(), { metadata: { format: 'pt' }, maxShardBytes: opts.maxShardBytes });
  } catch (e) {
    clearCheckpointFiles(dir);
    if (created) rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  writeFileSync(join(dir, 'quantize_config.json'), JSON.stringify(qcfg, null, 2) + '\n');
  rep.files = [...files, 'config.json', 'quantize_config.json'];
  return rep;
}
