import { describe, expect, it } from 'vitest';
import { attnRows, ffnRows } from '../../core/forwardRows';
import type { Block } from '../../core/model/types';
import { jsOps } from '../../core/ops';
import { Rng } from '../../core/rng';
import { QKV_LINEARS } from '../../search/blockQuant';
import { plainAlloc } from '../../search/blockState';
import { runNormTask, type NormRunner } from '../../search/normRows';
import { AttnRowScorer, FfnNormScorer } from '../../search/normScorers';
import { shippedModel } from '../helpers';
import { objective, quantizedBlock, randomBlockData, sqErr } from './blockData';

describe('incremental scorers of the norm pass', () => {
  it('scores an FFN-norm channel by a rank-one update as a fresh FFN pass does, to float32 round-off, also after kept changes', async () => {
    const cfg = shippedModel().config;
    const { data } = randomBlockData(shippedModel(), 3, 9, 40);
    const q = quantizedBlock(shippedModel(), 3);
    const w = { ...q, ffnNorm: q.ffnNorm.slice() };
    const h = attnRows(cfg, w, { x: data.x, seqStarts: data.seqStarts }, jsOps).h;
    const fresh = () => sqErr(ffnRows(cfg, w, h, jsOps), data.y);
    const s = new FfnNormScorer(cfg, w, h, data.y, jsOps);
    const rng = Rng.fromSeed(4);
    for (let i = 0; i < 12; i++) {
      const c = rng.int(cfg.dim);
      const k = 0.9 + 0.2 * rng.float();
      const g0 = w.ffnNorm[c];
      w.ffnNorm[c] = g0 * k;
      const want = fresh();
      expect(Math.abs((await s.loss(c, k)) / want - 1)).toBeLessThan(1e-5);
      // every other one is kept, the others undone
      if (i % 2 === 0) await s.commit(c, k);
      else w.ffnNorm[c] = g0;
    }
    expect(Math.abs((await s.loss(0, 1)) / fresh() - 1)).toBeLessThan(1e-5);
  });

  it('scores a row of wq, wk or wv by its reading heads and thin products as a fresh block pass does, to float32 round-off, also after kept rows, and the same bits split in any order', async () => {
    const m = shippedModel();
    const cfg = m.config;
    const { data } = randomBlockData(m, 2, 13, 40);
    const q = quantizedBlock(m, 2);
    // the FFN norm made to differ from 1s: its gain is in the precomputed products
    const w: Block = { ...q, wq: q.wq.slice(), wk: q.wk.slice(), wv: q.wv.slice(), ffnNorm: q.ffnNorm.map((g, i) => g * (1 + 0.05 * Math.cos(i))) };
    const whole = new AttnRowScorer(cfg, w, data.x, data.seqStarts, data.y, jsOps);
    let ranges = 0;
    // a second scorer's tasks cut into 3 ranges of sequences, run last to first
    const runner: NormRunner = { alloc: plainAlloc, parts: 3, run: async (tasks) => { ranges = Math.max(ranges, tasks.length); for (const t of [...tasks].reverse()) runNormTask(t, jsOps); } };
    const split = new AttnRowScorer(cfg, w, data.x, data.seqStarts, data.y, jsOps, runner);
    const rng = Rng.fromSeed(8);
    const start = await whole.loss('wq', 0);
    expect(Math.abs(start / objective(m, w, data) - 1)).toBeLessThan(1e-6);
    let moved = 0;
    for (let i = 0; i < 18; i++) {
      const name = QKV_LINEARS[i % 3];
      const r = rng.int(w[name].length / cfg.dim);
      const row = w[name].subarray(r * cfg.dim, (r + 1) * cfg.dim);
      const old = row.slice();
      const k = 0.9 + 0.2 * rng.float();
      row.set(old.map((v) => v * k));
      const want = objective(m, w, data);
      const got = await whole.loss(name, r);
      expect(Math.abs(got / want - 1)).toBeLessThan(1e-5);
      moved = Math.max(moved, Math.abs(want / start - 1));
      expect(await split.loss(name, r)).toBe(got);
      // every other one is kept, the others undone
      if (i % 2 === 0) await Promise.all([whole.commit(name, r), split.commit(name, r)]);
      else row.set(old);
    }
    expect(ranges).toBe(3);
    // the rows tried moved the loss well past the tolerance
    expect(moved).toBeGreaterThan(1e-3);
    expect(Math.abs((await whole.loss('wv', 0)) / objective(m, w, data) - 1)).toBeLessThan(1e-5);
  });
});
