/**
 * What tuning the quantized model's norm gains could add after a search (not a feature yet:
 * a measurement for the quality work). The norm gains of a block are float in every export,
 * so the quantized model may use other values than the FP one without any cost in size.
 * Block by block, on the quantized model's own inputs (the blocks before it already tuned),
 * each channel of the attention norm and then of the FFN norm is multiplied by the factor of
 * GRID that lowers the block objective ‖block_q(x_q) − block_fp(x_fp)‖² most (or left alone),
 * INVARX_BENCH_SWEEPS times (default 1). Prints each block's objective before and after, and
 * the perplexity on the default held-out set before and after.
 *
 * INVARX_BENCH_QUANTIZED: a run's `--out DIR/quantized-fake.bin` (required);
 * INVARX_BENCH_MODEL: its FP model (default the shipped stories260K);
 * INVARX_BENCH_CALIB_TEMPERATURE: the temperature the run sampled its calibration set at
 * (default 0.7, the recommended one for RTN at 3–4 bits and GPTQ at 2), so that the set here
 * is the run's.
 */
import { join } from 'node:path';
import { embedRows } from '../core/blockPass';
import { DEFAULT_CALIB, defaultHeldOutTokens, sampleSet } from '../core/data';
import { blockForwardRows, type Rows } from '../core/forwardRows';
import { perplexity } from '../core/metrics';
import { loadModel } from '../core/model/load';
import type { Block, ModelConfig } from '../core/model/types';
import type { Ops } from '../core/ops';
import { bestBackend } from '../kernels/registry';
import { emit, note, type BenchModule } from './emit';

const GRID = [0.9, 0.95, 0.98, 1.02, 1.05, 1.1];

function sumSquaredDiff(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return s;
}

/** Tunes block b's norm gains in place on inputs xq against target; returns the objective before and after. */
function tuneNorms(cfg: ModelConfig, b: Block, xq: Rows, target: Float32Array, sweeps: number, ops: Ops): [number, number] {
  const loss = () => sumSquaredDiff(blockForwardRows(cfg, b, xq, ops).x, target);
  const start = loss();
  let best = start;
  for (let s = 0; s < sweeps; s++) {
    for (const g of [b.attnNorm, b.ffnNorm]) {
      for (let c = 0; c < cfg.dim; c++) {
        const g0 = g[c];
        let pick = g0;
        for (const f of GRID) {
          g[c] = g0 * f;
          const l = loss();
          if (l < best) [best, pick] = [l, g[c]];
        }
        g[c] = pick;
      }
    }
  }
  return [start, best];
}

export const normTweakBench: BenchModule = {
  name: 'norm-tweak',
  byNameOnly: true,
  run() {
    const qPath = process.env.INVARX_BENCH_QUANTIZED;
    if (!qPath) throw new Error('INVARX_BENCH_QUANTIZED must name a run export\'s quantized-fake.bin');
    const fpPath = process.env.INVARX_BENCH_MODEL ?? join(process.cwd(), 'models', 'stories260K.bin');
    const temperature = Number(process.env.INVARX_BENCH_CALIB_TEMPERATURE ?? 0.7);
    const sweeps = Number(process.env.INVARX_BENCH_SWEEPS ?? 1);
    const ops = bestBackend();
    const fp = loadModel(fpPath);
    const q = loadModel(qPath);
    const cfg = fp.config;
    note(`norm-tweak: sampling the calibration (T ${temperature}) and held-out sets…`);
    const calib = sampleSet(fp, { ...DEFAULT_CALIB, temperature }, ops);
    const held = defaultHeldOutTokens(fp, ops);
    const base = { bench: 'norm-tweak', model: fpPath, quantized: qPath, calib_temperature: temperature, sweeps };
    const before = perplexity(q, held, { ops }).ppl;
    let xf = embedRows(fp, calib);
    let xq = embedRows(q, calib);
    for (let l = 0; l < cfg.nLayers; l++) {
      const target = blockForwardRows(cfg, fp.blocks[l], xf, ops).x;
      const [start, end] = tuneNorms(cfg, q.blocks[l], xq, target, sweeps, ops);
      emit({ ...base, figure: 'block', block: l, objective_before: start, objective_after: end, ratio: end / start });
      xq = blockForwardRows(cfg, q.blocks[l], xq, ops);
      xf = { x: target, seqStarts: xf.seqStarts };
    }
    const after = perplexity(q, held, { ops }).ppl;
    const fpPpl = perplexity(fp, held, { ops }).ppl;
    emit({ ...base, figure: 'held-out', fp_ppl: fpPpl, ppl_before: before, ppl_after: after, log_gap_removed: (Math.log(before) - Math.log(after)) / (Math.log(before) - Math.log(fpPpl)) });
  },
};
