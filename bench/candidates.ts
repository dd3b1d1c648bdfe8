/**
 * What one candidate costs at a real model's width: one block of a random llama of shape
 * INVARX_BENCH_SHAPE (default 110m; one layer, a small vocabulary: only the block matters)
 * on INVARX_BENCH_TOKENS random input rows (default 512, the calibration rows a
 * time-budgeted 1B run keeps), quantized as the big-model runs are (4 bits, group 128,
 * RTN base with clip search; with INVARX_BENCH_BASE=gptq the GPTQ base, plain and with its
 * codes refined as a GPTQ job's recommended tuning does, then with scales refitted, then
 * asymmetric too, one after the other on the same moves). Prints ms per candidate by move kind and for a full
 * re-evaluation of the block, on one thread (a search worker's), with the rate in the FLOPs
 * search/plan.ts counts per candidate (one block pass over the rows), which is what the
 * time budget's plan assumes.
 */
import { applyTransforms } from '../core/invariance';
import { cloneBlock, type Block } from '../core/model/types';
import { Rng } from '../core/rng';
import { randomModel, syntheticShape } from '../core/model/synthetic';
import { bestBackend } from '../kernels/registry';
import type { BaseMethod, SearchSpec } from '../search/blockQuant';
import { ALL_INVARIANCES, DEFAULT_TUNING, GPTQ_ASYM_SHARE, GPTQ_REFINE_SWEEPS } from '../search/config';
import { candidateBlock } from '../search/evaluator';
import { BlockObjective } from '../search/objective';
import { CANDIDATE_FLOPS_PER_SECOND, tokenFlops } from '../search/plan';
import { attnKindsOn, drawAttnMove, drawFfnMove, type Move } from '../search/proposals';
import { emit, note, type BenchModule } from './emit';

const SEQ_TOKENS = 256;
const REPS = 3;

async function run(): Promise<void> {
  const shapeName = process.env.INVARX_BENCH_SHAPE ?? '110m';
  const rows = Number(process.env.INVARX_BENCH_TOKENS ?? 512);
  const shape = { ...syntheticShape(shapeName), nLayers: 1, vocabSize: 512, headerOnly: false };
  const base = (process.env.INVARX_BENCH_BASE ?? 'rtn') as BaseMethod;
  if (base !== 'rtn' && base !== 'gptq') throw new Error(`INVARX_BENCH_BASE must be rtn or gptq, got ${base}`);
  note(`candidates: one block of shape ${shapeName} on ${rows} rows, 4 bits group 128, ${base.toUpperCase()}`);
  const model = randomModel(shape);
  const cfg = model.config;
  const ops = bestBackend();
  ops.useThreads?.(1);
  const rng = Rng.fromSeed(7);
  const x = new Float32Array(rows * cfg.dim);
  for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  // FP inputs apart from the quantized model's, as asymmetric GPTQ reads them
  const xf = x.map((v) => v + 0.1 * rng.normal());
  const seqStarts: number[] = [];
  for (let s = 0; s < rows; s += SEQ_TOKENS) seqStarts.push(s);
  seqStarts.push(rows);
  const spec: SearchSpec = { bits: 4, group: 128, clip: true, f16Scales: true };
  const cur = cloneBlock(model.blocks[0]);
  const flops = rows * tokenFlops(cfg, SEQ_TOKENS).block;
  const kinds = attnKindsOn(cfg, new Set(ALL_INVARIANCES));
  const attn = Array.from({ length: REPS }, () => drawAttnMove(cfg, rng, kinds, DEFAULT_TUNING));
  const ffn = Array.from({ length: REPS }, () => drawFfnMove(cfg, rng, new Set(ALL_INVARIANCES), DEFAULT_TUNING, spec.group));
  // GPTQ: as published, with refined codes, with refined codes and scales, and asymmetric
  const variants: [number, boolean, number][] = base === 'gptq'
    ? [[0, false, 0], [GPTQ_REFINE_SWEEPS, false, 0], [GPTQ_REFINE_SWEEPS, true, 0], [GPTQ_REFINE_SWEEPS, true, GPTQ_ASYM_SHARE]]
    : [[0, false, 0]];
  for (const [refine, refit, asym] of variants) {
    const s: SearchSpec = { ...spec, ...(refine > 0 ? { gptqRefine: refine } : {}), ...(refit ? { gptqRefitScales: true } : {}), ...(asym ? { gptqAsym: asym } : {}) };
    measure(new BlockObjective(cfg, { x, xf, y: x.slice(), seqStarts }, s, ops, base), cur, attn, ffn, (kind: string, ms: number) =>
      emit({ bench: 'candidates', shape: shapeName, rows, base, refine, refit, asym, kind, ms: +ms.toFixed(1), gflopPerS: +(flops / ms / 1e6).toFixed(1), planGflopPerS: CANDIDATE_FLOPS_PER_SECOND / 1e9 }));
  }
}

/** ms per reset, attention candidate and FFN candidate of `obj` on the given moves. */
function measure(obj: BlockObjective, cur: Block, attn: Move[], ffn: Move[], figure: (kind: string, ms: number) => void): void {
  const cfg = obj.cfg;
  const timed = (f: () => void) => {
    const t0 = performance.now();
    for (let i = 0; i < REPS; i++) f();
    return (performance.now() - t0) / REPS;
  };
  figure('reset', timed(() => obj.reset(cur)));
  const moved = (m: Move) => {
    const nb = candidateBlock(cur, m);
    applyTransforms(cfg, nb, m.transforms);
    return nb;
  };
  let i = 0;
  figure('attention', timed(() => obj.attnMoveLoss(moved(attn[i]), attn[i++].transforms)));
  i = 0;
  figure('ffn', timed(() => obj.ffnMoveLoss(moved(ffn[i]), ffn[i++].units!)));
}

export const candidatesBench: BenchModule = { name: 'candidates', byNameOnly: true, run };
