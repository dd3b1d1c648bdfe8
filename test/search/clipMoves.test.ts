import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { readLlama2c } from '../../core/model/llama2c';
import { blockLinears, cloneBlock, type LinearName } from '../../core/model/types';
import { jsOps } from '../../core/ops';
import { CLIP_AUTO, CLIP_RATIOS, fakeQuantRtn, quantizeRtn } from '../../core/quant/rtn';
import { Rng } from '../../core/rng';
import { clipShape, currentCode, drawClipMove, fullClips, setClip, type BlockClips, type ClipSet } from '../../search/clipMoves';
import { CLIP_SHIFTS, shiftedLinear } from '../../search/clipInit';
import { DEFAULT_CONFIG } from '../../search/config';
import type { RunConfig, SearchJob } from '../../search/contract';
import { plainAlloc } from '../../search/blockState';
import { candidateQuantBlock } from '../../search/evaluator';
import { BlockObjective } from '../../search/objective';
import { createSearchJob } from '../../search/run';
import { MODEL_PATH, shippedModel } from '../helpers';
import { randomBlockData } from './blockData';

function setup(layer: number, bits: number) {
  const m = shippedModel();
  const { rng, data } = randomBlockData(m, layer, 11, 48);
  const spec = { bits, group: 32, clip: true, f16Scales: true };
  const clips = fullClips(m.config, spec, undefined, plainAlloc);
  const obj = new BlockObjective(m.config, data, spec, jsOps, 'rtn', undefined, undefined, clips);
  const cur = cloneBlock(m.blocks[layer]);
  obj.reset(cur);
  return { m, rng, obj, cur, spec, clips, data };
}

describe('clip codes in RTN', () => {
  it('CLIP_AUTO is the spec\'s own clip search, and a fixed code quantizes the group on [r·min, r·max]', () => {
    const rng = Rng.fromSeed(3);
    const w = Float32Array.from({ length: 4 * 64 }, () => rng.normal());
    const spec = { bits: 3, group: 32, clip: true };
    const auto = new Uint8Array(8).fill(CLIP_AUTO);
    expect(fakeQuantRtn(w, 4, 64, spec, undefined, auto)).toEqual(fakeQuantRtn(w, 4, 64, spec));
    const fixed = auto.slice();
    fixed[5] = 8; // row 2, group 1: ratio 0.8
    const got = quantizeRtn(w, 4, 64, spec, fixed);
    const grp = w.subarray(2 * 64 + 32, 3 * 64);
    const lo = Math.min(0, ...grp);
    const hi = Math.max(0, ...grp);
    expect(got.scale[5]).toBe(Math.fround((CLIP_RATIOS[8] * hi - CLIP_RATIOS[8] * lo) / 7));
    // every other group as the clip search left it
    const plain = quantizeRtn(w, 4, 64, spec);
    expect(Array.from(got.scale).filter((_, i) => i !== 5)).toEqual(Array.from(plain.scale).filter((_, i) => i !== 5));
    expect(got.scale[5]).not.toBe(plain.scale[5]);
  });
});

describe('clip moves in the block objective', () => {
  // One move on every linear, several times: scored incrementally, compared with a full
  // evaluation under the same codes, then some committed and checked against a fresh objective.
  it('score as a full evaluation does (attention linears bit for bit, FFN linears to round-off), and commits keep the FP block', () => {
    const { m, rng, obj, cur, spec, clips, data } = setup(1, 3);
    const fp = cloneBlock(cur);
    const seen = new Set<LinearName>();
    let changed = 0;
    const names = blockLinears(m.config);
    for (let i = 0; i < 42; i++) {
      // every linear in turn, a random group (every group of its row on odd turns) and code
      const linear = names[i % names.length];
      const [rows, nG] = clipShape(m.config, spec, linear);
      const row = rng.int(rows);
      const groups = Math.floor(i / names.length) % 2 === 1 ? Array.from({ length: nG }, (_, g) => g) : [rng.int(nG)];
      const cs: ClipSet[] = groups.map((group) => ({ linear, row, group, code: rng.int(CLIP_RATIOS.length) }));
      seen.add(linear);
      const inc = obj.clipMoveLoss(cur, cs);
      const full = obj.clipMoveFull(cur, cs).loss;
      if (['wq', 'wk', 'wv', 'wo'].includes(linear)) expect(inc).toBe(full);
      else expect(Math.abs(inc - full) / full).toBeLessThan(1e-6); // the FFN path sums its update in float32, as FFN moves do
      if (inc !== obj.loss) changed++;
      if (i % 4 === 0) {
        // the global term's whole candidate block (evaluator.ts) is the committed state's
        const candQ = candidateQuantBlock(m.config, obj, cur, { kind: 'clip', transforms: [], clips: cs });
        obj.clipMoveLoss(cur, cs, true);
        for (const c of cs) expect(clips[c.linear]![c.row * nG + c.group]).toBe(c.code);
        const fresh = new BlockObjective(m.config, data, spec, jsOps, 'rtn', undefined, undefined, structuredClone(clips));
        const freshLoss = fresh.reset(cur);
        expect(Math.abs(obj.loss - freshLoss) / freshLoss).toBeLessThan(1e-6);
        for (const k of blockLinears(m.config)) expect(obj.q[k]).toEqual(fresh.q[k]), expect(candQ[k]).toEqual(fresh.q[k]);
      }
    }
    expect([...seen].sort()).toEqual([...blockLinears(m.config)].sort());
    expect(changed).toBeGreaterThan(10); // the moves really change the quantized block
    for (const k of Object.keys(fp) as (keyof typeof fp)[]) expect(cur[k]).toEqual(fp[k]); // FP weights untouched
  });

  it('a clip move changes only its group of the quantized weights', () => {
    const { m, obj, cur, spec, clips } = setup(2, 3);
    const before = cloneBlock(obj.q);
    const c: ClipSet = { linear: 'w2', row: 5, group: 2, code: 12 };
    const q = obj.clipMoveFull(cur, [c]).q;
    const [, cols] = [0, m.config.hiddenDim];
    let diff = 0;
    for (let i = 0; i < q.w2.length; i++) {
      if (q.w2[i] === before.w2[i]) continue;
      diff++;
      expect(Math.floor(i / cols)).toBe(5);
      expect(Math.floor((i % cols) / spec.group)).toBe(2);
    }
    expect(diff).toBeGreaterThan(0);
    for (const k of ['wq', 'wk', 'wv', 'wo', 'w1', 'w3'] as const) expect(q[k]).toEqual(before[k]);
    expect(clips.w2![5 * clipShape(m.config, spec, 'w2')[1] + 2]).toBe(CLIP_AUTO); // scoring did not set the code
  });

  it('draws are a function of the seed and the current codes', () => {
    const { m, cur, spec } = setup(0, 2);
    const clips: BlockClips = {};
    const draw = (seed: number) => {
      const rng = Rng.fromSeed(seed);
      return Array.from({ length: 20 }, () => drawClipMove(m.config, spec, rng, cur, clips));
    };
    expect(draw(5)).toEqual(draw(5));
    expect(draw(5)).not.toEqual(draw(6));
    for (const c of draw(5).flat()) expect(c.code).toBeGreaterThanOrEqual(0), expect(c.code).toBeLessThan(CLIP_RATIOS.length);
    // a fixed code is the one a move steps from
    setClip(m.config, spec, clips, { linear: 'wq', row: 0, group: 0, code: 20 });
    const rng = Rng.fromSeed(1);
    let rowMoves = 0;
    for (let i = 0; i < 2000; i++) {
      const cs = drawClipMove(m.config, spec, rng, cur, clips, 0.5);
      if (cs.length > 1) rowMoves++;
      for (const c of cs) if (c.linear === 'wq' && c.row === 0 && c.group === 0) expect([18, 19]).toContain(c.code);
      expect(new Set(cs.map((c) => `${c.linear} ${c.row}`)).size).toBe(1);
    }
    expect(rowMoves).toBeGreaterThan(800);
    expect(rowMoves).toBeLessThan(1200);
  });
});

const packr = new Packr({ moreTypes: true });
const tuning = { calibSeqs: 4, validSeqs: 2, evalSeqs: 4, seqTokens: 64, blockSteps: 4, clipShare: 0.5, clipRowShare: 0.5, clipInit: true };
const config = (over: Partial<RunConfig> = {}): RunConfig => ({ ...DEFAULT_CONFIG, model: MODEL_PATH, bits: 3, group: 32, steps: 24, patience: 0, ...over });
async function runToEnd(job: SearchJob): Promise<void> {
  while (!job.done) await job.step();
}
const clipMovesOf = (j: SearchJob) => (j.snapshot() as { moves: { clips?: ClipSet[] }[] }).moves.filter((m) => m.clips);

describe('clip initialisation', () => {
  it('shifts every group of a linear from its current code, clamped to the grid', () => {
    const { m, cur, spec } = setup(0, 3);
    const clips: BlockClips = {};
    setClip(m.config, spec, clips, { linear: 'wk', row: 1, group: 0, code: 0 });
    setClip(m.config, spec, clips, { linear: 'wk', row: 2, group: 1, code: 10 });
    const nG = clipShape(m.config, spec, 'wk')[1];
    for (const d of CLIP_SHIFTS) {
      const cs = shiftedLinear(m.config, spec, cur, clips, 'wk', d);
      expect(cs.length).toBe(clipShape(m.config, spec, 'wk')[0] * nG);
      expect(cs[1 * nG + 0].code).toBe(Math.max(0, d));
      expect(cs[2 * nG + 1].code).toBe(10 + d);
      for (const c of cs) expect(c.code).toBe(Math.min(CLIP_RATIOS.length - 1, Math.max(0, currentCode(m.config, spec, cur.wk, clips, c) + d)));
    }
  });
});

describe('clip moves in a run', () => {
  it('are taken, deterministically by seed, resume exactly, and export with the chosen clips', async () => {
    const whole = await createSearchJob(config(), { tuning });
    await runToEnd(whole);
    expect(clipMovesOf(whole).length).toBeGreaterThan(0);
    const again = await createSearchJob(config(), { tuning });
    await runToEnd(again);
    expect(packr.pack(again.snapshot())).toEqual(packr.pack(whole.snapshot()));
    await again.close();
    const first = await createSearchJob(config(), { tuning });
    for (let i = 0; i < 10; i++) await first.step();
    const snap = packr.unpack(packr.pack(first.snapshot()));
    await first.close();
    const resumed = await createSearchJob(config(), { tuning, resumeFrom: snap });
    await runToEnd(resumed);
    expect(packr.pack(resumed.snapshot())).toEqual(packr.pack(whole.snapshot()));
    const r = await whole.report();
    expect(Object.keys(r.moveStats!).some((k) => k.startsWith('clip-') && r.moveStats![k].accepted.some((n) => n > 0))).toBe(true);
    // the export re-quantizes every block with its clip codes and checks the searched weights bit for bit (it throws otherwise)
    const dir = mkdtempSync(join(tmpdir(), 'invarx-clip-'));
    await whole.exportTo(dir);
    const fake = readLlama2c(join(dir, 'quantized-fake.bin'));
    const searched = r.models!.searched;
    fake.blocks.forEach((b, l) => expect(b.w2).toEqual(searched.blocks[l].w2));
    await whole.close();
    await resumed.close();
  });

  it('with clip moves only, the transformed FP model is the FP model and the quantized one improves', async () => {
    const job = await createSearchJob(config({ steps: 16 }), { tuning: { ...tuning, clipShare: 1, scaleInit: false } });
    await job.step(); // the initialisation pass: clip initialisation set whole linears at step 0
    const init = (job.snapshot() as { moves: { step: number; clips?: ClipSet[] }[] }).moves;
    expect(init.length).toBeGreaterThan(0);
    for (const m of init) expect(m.clips!.length).toBe(clipShape(shippedModel().config, { bits: 3, group: 32 }, m.clips![0].linear).reduce((a, b) => a * b));
    await runToEnd(job);
    const r = await job.report();
    expect(r.accepted).toBeGreaterThan(0);
    expect(r.searched.kl!).toBeLessThan(r.base.kl!);
    const dir = mkdtempSync(join(tmpdir(), 'invarx-clip-'));
    await job.exportTo(dir);
    const fp = shippedModel();
    const transformed = readLlama2c(join(dir, 'transformed-fp.bin'));
    transformed.blocks.forEach((b, l) => {
      for (const k of blockLinears(fp.config)) expect(b[k]).toEqual(fp.blocks[l][k]);
    });
    await job.close();
  });

  it('gives the same result on 2 workers as on 1', async () => {
    const one = await createSearchJob(config({ steps: 8 }), { tuning });
    const two = await createSearchJob(config({ steps: 8, workers: 2 }), { tuning });
    await runToEnd(one);
    await runToEnd(two);
    expect(clipMovesOf(one).length).toBeGreaterThan(0);
    expect(packr.pack(two.snapshot())).toEqual(packr.pack(one.snapshot()));
    await one.close();
    await two.close();
  });

  it('are not drawn on the GPTQ base', async () => {
    const job = await createSearchJob(config({ base: 'gptq', steps: 4 }), { tuning });
    await runToEnd(job);
    expect(clipMovesOf(job)).toEqual([]);
    await job.close();
  });
});
