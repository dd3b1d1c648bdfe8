/**
 * What a finished (or stopped) search hands out: the quality table on the held-out tokens
 * — FP, plain RTN, the base quantizer with and without clip search on the untransformed
 * model, and the searched model — and the export's contents, whose integer codes come from
 * quantizing every searched block again the way the run did (checked to dequantize to the
 * searched weights exactly).
 */
import { Packr } from 'msgpackr';
import type { BlockQuantized } from '../core/export';
import { packTensorRows, toInterleaved, writeLlamaGguf, type LlamaGgufReport, type TensorType } from '../core/gguf';
import { loadTokenizer, tokenizerPathFor } from '../core/tokenizer';
import { collectAtBlockBoundary } from '../core/memory';
import { evaluateModels, gapClosed } from '../core/metrics';
import { blockLinears, type F32, type LinearName, type Model } from '../core/model/types';
import type { Ops } from '../core/ops';
import type { QuantFormat } from '../core/quant/formats';
import { quantizedView } from '../core/quant/view';
import { dequantize, type Quantized } from '../core/quant/rtn';
import { needsFpInputs, refineOptions, specFormat, type CodeSink, type SearchSpec } from './blockQuant';
import type { SearchBlocks } from './blocks';
import type { Boundary } from './boundary';
import type { CalibrationRows } from './calibration';
import type { FinalReport, RunConfig } from './contract';
import type { SearchExport } from './export';
import { BlockObjective } from './objective';
import type { TokenSets } from './tokens';
import type { ReportRow } from './phases';
import { gainedCodes } from './rowGains';

/** What the report and the export read of a run. */
export interface RunResult {
  config: RunConfig;
  spec: SearchSpec;
  tokens: TokenSets;
  ops: Ops;
  blocks: SearchBlocks;
  calib: CalibrationRows;
  b: Boundary;
  candidatesPerSec: number;
}

/**
 * A quantizer on the untransformed model: the base (plain, or with clip search) or plain
 * RTN, as a view (each block quantized when the evaluation reaches it). On a ggml format
 * RTN is ggml's reference quantizer and GPTQ runs on the format's grid, the clip rows with
 * our clip search (core/quant/formats/clip.ts).
 */
function referenceModel(r: RunResult, method: 'rtn' | 'gptq', clip: boolean): Model {
  const c = r.config;
  const fmt = specFormat(r.spec) ?? undefined;
  const gptq = method === 'gptq' ? { ...refineOptions(r.spec, r.ops), actOrder: r.spec.gptqActOrder, asymmetric: r.spec.gptqAsym } : {};
  return quantizedView(r.blocks.fpModel(), { bits: c.bits, group: c.group, method, clip, f16Scales: r.spec.f16Scales, calib: r.tokens.calib, ops: r.ops, format: fmt, ...gptq });
}

/**
 * Seconds the table's plain-RTN row spends quantizing, predicted by timing its first block
 * (read from the checkpoint and rounded, as the row's evaluation does) times the blocks: a
 * fraction of the base pass, which also searches clips and scores every block.
 */
export function rtnRowSeconds(r: RunResult): number {
  const t0 = performance.now();
  void referenceModel(r, 'rtn', false).blocks[0].wq;
  return ((performance.now() - t0) / 1000) * r.blocks.config.nLayers;
}

/**
 * The quality table with the reference rows `rows` (all by default; on an RTN base, plain
 * RTN is the base): a row left out has NaN figures, as has a share it would be measured by.
 */
export function finalReport(r: RunResult, rows: readonly ReportRow[] = ['rtn', 'base', 'baseClip']): FinalReport {
  const { config, b } = r;
  const fp = r.blocks.fpModel();
  const searched = r.blocks.quantizedModel();
  // on an RTN base plain RTN is the base: one model (and one evaluation) serves both rows
  const key = (row: ReportRow | 'searched') => (config.base === 'rtn' && row === 'rtn' ? 'base' : row);
  const models: Record<string, Model> = { searched };
  for (const row of rows) {
    const k = key(row);
    models[k] ??= referenceModel(r, k === 'rtn' ? 'rtn' : config.base, k === 'baseClip');
  }
  const q = evaluateModels(fp, models, r.tokens.eval, { ops: r.ops });
  const row = (k: ReportRow | 'searched') => {
    const m = q.models[key(k)];
    return m ? { ppl: m.ppl, kl: m.kl } : { ppl: NaN, kl: NaN };
  };
  const ppl = (k: ReportRow) => row(k).ppl;
  return {
    fp: { ppl: q.fp.ppl },
    rtn: row('rtn'),
    base: row('base'),
    baseClip: row('baseClip'),
    baseName: baseName(config.base, r.spec),
    searched: row('searched'),
    closes: gapClosed(ppl('rtn'), q.models.searched.ppl, q.fp.ppl),
    closesBase: gapClosed(ppl('base'), q.models.searched.ppl, q.fp.ppl),
    steps: b.step,
    accepted: b.accepted,
    candidatesPerSec: r.candidatesPerSec,
    blocks: b.startLoss.map((s, i) => ({ block: i, startLoss: s, endLoss: b.blockLoss[i] })),
    history: b.history,
    models: { fp, base: models.base ?? models.rtn ?? searched, searched },
  };
}

/** The base quantizer's name in the table: asymmetric GPTQ is GPTAQ, in act order -ao, with refined codes +cd, codes and scales +cds. */
function baseName(base: RunConfig['base'], spec: SearchSpec): string {
  if (base !== 'gptq') return base.toUpperCase();
  return `${spec.gptqAsym ? 'GPTAQ' : 'GPTQ'}${spec.gptqActOrder ? '-ao' : ''}${spec.gptqRefine ? (spec.gptqRefitScales ? '+cds' : '+cd') : ''}`;
}

/** The export of the run: accepted moves and config, transformed FP model, searched model and its codes (or, on a ggml format, its GGUF). */
export function searchExport(r: RunResult): SearchExport {
  const packr = new Packr({ moreTypes: true });
  const fmt = specFormat(r.spec);
  return {
    ...(fmt ? { gguf: { format: fmt.name, write: (path: string) => searchedGguf(r, fmt.name, path) } } : {}),
    // Without the worker count and memory budget, which change only speed and memory: the export is the same for any.
    transforms: packr.pack({ config: { ...r.config, workers: undefined, memoryBudget: undefined }, moves: r.b.moves }),
    transformed: r.blocks.transformedModel(),
    packedFloats: r.blocks.transformedModel(true),
    quantized: r.blocks.quantizedModel(),
    // only the int grid's export asks (gptq/), and there the sink holds integer codes alone
    codesOf: (l) => searchedCodes(r, l) as BlockQuantized,
  };
}

/**
 * Integer codes of block l of the searched model: the block quantized again as the run did,
 * on its inputs in the quantized model without the norm factors tuned after the search,
 * with the quantizers' codes kept and the block's row gains on their scales; checked to
 * dequantize to the searched weights exactly.
 * The inputs come from the calibration rows' cache (kept per block while the quantized
 * blocks below are unchanged, as they are once the search is over), so blocks may be asked
 * for in any order and, without tuned factors, each input is computed at most once: what a
 * walk of the blocks in order would yield, without holding every block's codes. With them,
 * lifting and restoring the factors marks the blocks changed, so each call walks from block
 * 0 again (the pass runs on small models only, within its FLOP limit).
 */
function searchedCodes(r: RunResult, l: number): CodeSink {
  const { blocks } = r;
  const cfg = blocks.config;
  const codes: CodeSink = {};
  collectAtBlockBoundary(cfg);
  const x = blocks.withoutNorms(() => r.calib.inputsOf(l, blocks));
  const obj = new BlockObjective(cfg, r.calib.data(l, x, needsFpInputs(r.spec)), r.spec, r.ops, r.config.base, undefined, undefined, blocks.clips(l));
  const { q } = obj.fullEval(blocks.transformed(l), 'all', codes);
  for (const [name, g] of Object.entries(blocks.norms(l)?.rows ?? {}) as [LinearName, Float64Array][]) {
    const qz = gainedCodes(codes[name] as Quantized, q[name]!, g, r.spec, name);
    codes[name] = qz;
    q[name] = dequantize(qz);
  }
  const searched = blocks.quantized(l);
  for (const name of blockLinears(cfg)) {
    const want = searched[name]!;
    if (!q[name]!.every((v, i) => Object.is(v, want[i]))) throw new Error(`export: block ${l} ${name} re-quantizes differently from the searched model`);
  }
  return codes;
}

/**
 * The searched model as a llama GGUF at `path`: the linears' packed rows — on the RTN
 * base the transformed model's linears packed by the format's reference quantizer (what
 * that base rounds with), on the GPTQ base the rows GPTQ packed when the block is
 * quantized again as the run did (searchedCodes) — each linear checked to dequantize to
 * the searched weights exactly; embedding and classifier by config.embed; norm gains the
 * searched model's. Fallback tensors (f16) are f16 of the transformed weights, as both
 * bases round them.
 */
function searchedGguf(r: RunResult, format: string, path: string): LlamaGgufReport {
  const { blocks, config } = r;
  const cfg = blocks.config;
  const transformed = blocks.transformedModel(true);
  const tokenizer = loadTokenizer(tokenizerPathFor(config.model, config.tokenizer), cfg.vocabSize);
  let codes: { l: number; sink: CodeSink } | undefined;
  const gptqPacked = (l: number, name: LinearName, fmt: QuantFormat, rows: number, cols: number): Uint8Array => {
    if (codes?.l !== l) codes = { l, sink: searchedCodes(r, l) };
    const c = codes.sink[name];
    if (!c || !('packed' in c) || !c.packed || c.format !== fmt) throw new Error(`export: block ${l} ${name} has no packed GPTQ rows in ${fmt.name}`);
    const half = cfg.ropeLayout === 'half' && (name === 'wq' || name === 'wk');
    return half ? toInterleaved(c.packed, name === 'wq' ? cfg.nHeads : cfg.nKvHeads, cfg.headDim, fmt.rowBytes(cols)) : c.packed.subarray(0, rows * fmt.rowBytes(cols));
  };
  const packLinear = (l: number, name: LinearName, w: F32, rows: number, cols: number, type: TensorType): Uint8Array => {
    const fmt = type.format!;
    const bytes = config.base === 'gptq' ? gptqPacked(l, name, fmt, rows, cols) : packTensorRows(w, rows, cols, type);
    let want = blocks.quantized(l)[name]!;
    if (cfg.ropeLayout === 'half' && (name === 'wq' || name === 'wk')) want = toInterleaved(want, name === 'wq' ? cfg.nHeads : cfg.nKvHeads, cfg.headDim, cols);
    const rb = fmt.rowBytes(cols);
    const got = new Float32Array(cols);
    for (let i = 0; i < rows; i++) {
      fmt.dequantizeRow(bytes.subarray(i * rb, (i + 1) * rb), cols, got);
      for (let j = 0; j < cols; j++) {
        if (!Object.is(got[j], want[i * cols + j])) throw new Error(`export: block ${l} ${name} packs differently from the searched model (row ${i})`);
      }
    }
    return bytes;
  };
  return writeLlamaGguf(transformed, tokenizer, path, { format, embed: config.embed, packLinear });
}
