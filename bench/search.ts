/**
 * Search throughput on the shipped model: candidates/s on 1 and 2 worker threads (FFN
 * moves only, and all invariances), and the speed-up of incremental candidate evaluation
 * (FFN and attention moves) over a full re-evaluation of the same candidates, on the RTN
 * and GPTQ bases.
 */
import { join } from 'node:path';
import { forward } from '../core/forward';
import { applyTransforms } from '../core/invariance';
import { loadModel } from '../core/model/load';
import { cloneBlock } from '../core/model/types';
import { Rng } from '../core/rng';
import { DEFAULT_CALIB, sampleSet } from '../core/data';
import { bestBackend } from '../kernels/registry';
import { ALL_INVARIANCES, DEFAULT_CONFIG, DEFAULT_TUNING } from '../search/config';
import type { Invariance } from '../search/contract';
import { candidateBlock } from '../search/evaluator';
import type { BaseMethod } from '../search/blockQuant';
import { BlockObjective } from '../search/objective';
import { attnKindsOn, drawAttnMove, drawFfnMove, type Move } from '../search/proposals';
import { createSearchJob } from '../search/run';
import { emit, note, type BenchModule } from './emit';

const MODEL = join(process.cwd(), 'models', 'stories260K.bin');
const FFN: Invariance[] = ['ffn-perm', 'ffn-scale', 'ffn-rot'];

async function candidatesPerSec(workers: number, invariances: Invariance[], steps: number, candidates: number): Promise<number> {
  const job = await createSearchJob(
    { ...DEFAULT_CONFIG, model: MODEL, bits: 3, group: 32, steps, patience: 0, workers, invariances, candidates },
    { tuning: { scaleInit: false } },
  );
  while (!job.done) await job.step();
  const cps = job.progress().candidatesPerSec;
  await job.close();
  return cps;
}

async function throughput(): Promise<void> {
  for (const candidates of [DEFAULT_CONFIG.candidates, 8]) {
    for (const [label, inv, steps] of [['ffn', FFN, 100], ['all', ALL_INVARIANCES, 50]] as const) {
      const one = await candidatesPerSec(1, [...inv], steps, candidates);
      const two = await candidatesPerSec(2, [...inv], steps, candidates);
      emit({ bench: 'search', figure: 'candidates_per_s', invariances: label, candidates, workers1: +one.toFixed(2), workers2: +two.toFixed(2), scaling: +(two / one).toFixed(2) });
    }
  }
}

function incremental(method: BaseMethod): void {
  const model = loadModel(MODEL);
  const ops = bestBackend();
  const calib = sampleSet(model, DEFAULT_CALIB, ops);
  const layer = 2;
  const hidden = calib.map((s) => forward(model, s, { ops, capture: true }).hidden!);
  const cat = (l: number) => {
    const parts = hidden.map((h) => h[l]);
    const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) (out.set(p, o), (o += p.length));
    return out;
  };
  const seqStarts = [0];
  for (const s of calib) seqStarts.push(seqStarts[seqStarts.length - 1] + s.length);
  const spec = { bits: 3, group: 32, clip: true, f16Scales: true };
  const obj = new BlockObjective(model.config, { x: cat(layer), y: cat(layer + 1), seqStarts }, spec, ops, method);
  const cur = cloneBlock(model.blocks[layer]);
  obj.reset(cur);
  const rng = Rng.fromSeed(1);
  const time = (blocks: unknown[], f: (i: number) => void) => {
    f(0); // warm-up
    const t0 = performance.now();
    blocks.forEach((_, i) => f(i));
    return (performance.now() - t0) / blocks.length;
  };
  const drawn = (draw: () => Move) => {
    const moves = Array.from({ length: 20 }, draw);
    const blocks = moves.map((m) => {
      const nb = candidateBlock(cur, m);
      applyTransforms(model.config, nb, m.transforms);
      return nb;
    });
    return { moves, blocks };
  };
  // FFN moves: incremental vs redoing the FFN side and vs the whole block.
  const f = drawn(() => drawFfnMove(model.config, rng, new Set(FFN), DEFAULT_TUNING, 32));
  const inc = time(f.blocks, (i) => obj.ffnMoveLoss(f.blocks[i], f.moves[i].units!));
  const ffnFull = time(f.blocks, (i) => obj.fullEval(f.blocks[i], 'ffn'));
  const full = time(f.blocks, (i) => obj.fullEval(f.blocks[i], 'all'));
  emit({ bench: 'search', figure: 'ffn_candidate_ms', base: method, backend: ops.name, tokens: obj.N, incremental: +inc.toFixed(2), fullFfn: +ffnFull.toFixed(2), fullBlock: +full.toFixed(2), speedupVsFullFfn: +(ffnFull / inc).toFixed(2), speedupVsFullBlock: +(full / inc).toFixed(2) });
  // Attention moves: head by head vs the whole block.
  const a = drawn(() => drawAttnMove(model.config, rng, attnKindsOn(model.config, new Set(ALL_INVARIANCES)), DEFAULT_TUNING));
  const incA = time(a.blocks, (i) => obj.attnMoveLoss(a.blocks[i], a.moves[i].transforms));
  const fullA = time(a.blocks, (i) => obj.fullEval(a.blocks[i], 'all'));
  emit({ bench: 'search', figure: 'attn_candidate_ms', base: method, backend: ops.name, tokens: obj.N, incremental: +incA.toFixed(2), fullBlock: +fullA.toFixed(2), speedupVsFullBlock: +(fullA / incA).toFixed(2) });
}

export const searchBench: BenchModule = {
  name: 'search',
  async run() {
    note('search: incremental vs full candidate evaluation, then candidates/s on 1 and 2 workers (a few minutes)');
    incremental('rtn');
    incremental('gptq');
    await throughput();
  },
};
