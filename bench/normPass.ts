/**
 * What the norm pass's row gains cost (search/normTune.ts), on one block of the shipped
 * model (layer 2, RTN at 3 bits, group 32) over INVARX_BENCH_SEQS sequences of 256 random
 * tokens (default 16: the rows the attention rows are scored on at the default calibration
 * set), on one thread:
 * - ms per attention-row candidate by AttnRowScorer (wq, wk and wv rows in turn), against
 *   a fresh block pass over the same rows, and the ratio;
 * - seconds of one turn of w1's and w3's fits (fitGateGains, fitUnitGains) on the same rows;
 * - seconds of the whole pass on the block, norms alone and with row gains.
 */
import { forward } from '../core/forward';
import { attnRows, blockForwardRows, seqStartsOf } from '../core/forwardRows';
import { readLlama2c } from '../core/model/llama2c';
import { Rng } from '../core/rng';
import { bestBackend } from '../kernels/registry';
import { rtnLinears } from '../search/baseRtn';
import { QKV_LINEARS } from '../search/blockQuant';
import { AttnRowScorer } from '../search/normScorers';
import { tuneNorms } from '../search/normTune';
import { fitGateGains, fitUnitGains } from '../search/rowGains';
import { join } from 'node:path';
import { emit, note, type BenchModule } from './emit';

const LAYER = 2;
const SEQ_TOKENS = 256;
const round = (v: number, d = 3) => Math.round(v * 10 ** d) / 10 ** d;

async function run(): Promise<void> {
  const seqs = Number(process.env.INVARX_BENCH_SEQS ?? 16);
  const m = readLlama2c(join(process.cwd(), 'models', 'stories260K.bin'));
  const cfg = m.config;
  const ops = bestBackend();
  ops.useThreads?.(1);
  note(`normpass: block ${LAYER} of the shipped model, ${seqs} × ${SEQ_TOKENS} random tokens, one thread`);
  const rng = Rng.fromSeed(3);
  const hidden = Array.from({ length: seqs }, () => forward(m, [1, ...Array.from({ length: SEQ_TOKENS - 1 }, () => rng.int(cfg.vocabSize))], { capture: true, ops }).hidden!);
  const cat = (l: number) => {
    const out = new Float32Array(hidden.reduce((s, h) => s + h[l].length, 0));
    hidden.reduce((o, h) => (out.set(h[l], o), o + h[l].length), 0);
    return out;
  };
  const x = cat(LAYER);
  const y = cat(LAYER + 1);
  const seqStarts = seqStartsOf(Array(seqs).fill(SEQ_TOKENS));
  const q = { ...m.blocks[LAYER], ...rtnLinears(cfg, m.blocks[LAYER], { bits: 3, group: 32, clip: true, f16Scales: true }) };
  const w = { ...q, wq: q.wq.slice(), wk: q.wk.slice(), wv: q.wv.slice() };

  const scorer = new AttnRowScorer(cfg, w, x, seqStarts, y, ops);
  const tries = 24;
  let t0 = performance.now();
  for (let i = 0; i < tries; i++) await scorer.loss(QKV_LINEARS[i % 3], i);
  const rowMs = (performance.now() - t0) / tries;
  t0 = performance.now();
  for (let i = 0; i < 4; i++) blockForwardRows(cfg, w, { x, seqStarts }, ops);
  const blockMs = (performance.now() - t0) / 4;
  emit({ figure: 'norm_pass_attn_row_candidate_ms', seqs, scorer: round(rowMs, 2), block_pass: round(blockMs, 2), ratio: round(rowMs / blockMs) });

  const h = attnRows(cfg, w, { x, seqStarts }, ops).h;
  t0 = performance.now();
  fitGateGains(cfg, w, h, y, ops);
  const gate = (performance.now() - t0) / 1000;
  t0 = performance.now();
  fitUnitGains(cfg, w, h, y, ops, 0.1);
  emit({ figure: 'norm_pass_ffn_fit_seconds', seqs, w1_gates: round(gate), w3_units: round((performance.now() - t0) / 1000) });

  const data = { x, y, seqStarts };
  t0 = performance.now();
  await tuneNorms(cfg, q, data, ops, seqs);
  const norms = (performance.now() - t0) / 1000;
  t0 = performance.now();
  await tuneNorms(cfg, q, data, ops, seqs, undefined, true);
  emit({ figure: 'norm_pass_block_seconds', seqs, norms_alone: round(norms, 2), with_row_gains: round((performance.now() - t0) / 1000, 2) });
}

export const normPassBench: BenchModule = { name: 'normpass', run };
