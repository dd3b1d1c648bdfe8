/**
 * The search's GPTQ base on llama.cpp's formats: the codes a full evaluation leaves are
 * packed rows of the format (or its fallback) that dequantize exactly to the linears the
 * objective scored, and the moves still equal a full evaluation.
 */
import { describe, expect, it } from 'vitest';
import { applyTransforms } from '../../core/invariance';
import { blockLinears, linearShape, type Model } from '../../core/model/types';
import { formatByName, formatForRow } from '../../core/quant/formats';
import type { FormatGptqResult } from '../../core/quant/gptqFormat';
import type { CodeSink } from '../../search/blockQuant';
import { ALL_INVARIANCES, DEFAULT_TUNING } from '../../search/config';
import { candidateBlock, candidateLoss } from '../../search/evaluator';
import { attnKindsOn, drawAttnMove, drawFfnMove } from '../../search/proposals';
import { aligned256, aligned32, formatObjective, stories } from './formatFixture';

const setup = (m: Model, layer: number, format: string, group: number, clip = false) => formatObjective(m, layer, format, group, { method: 'gptq', seed: 11, clip });


describe('GPTQ base on ggml formats', () => {
  it.each([
    ['q4_0', stories, 32, false, { w2: 'f16' }],
    ['q4_k', stories, 256, false, { wq: 'q5_0', wk: 'q5_0', wv: 'q5_0', wo: 'q5_0', w1: 'q5_0', w3: 'q5_0', w2: 'f16' }],
    ['q4_1', aligned32, 32, true, {}],
    ['q3_k', aligned256, 256, false, {}],
  ] as const)('%s: the codes are packed rows that dequantize to the scored linears exactly', (format, make, group, clip, fallbacks) => {
    const m = make();
    const { obj, cur } = setup(m, 0, format, group, clip);
    const codes: CodeSink = {};
    const { q } = obj.fullEval(cur, 'all', codes);
    for (const name of blockLinears(m.config)) {
      const [rows, cols] = linearShape(m.config, name);
      const c = codes[name] as FormatGptqResult;
      const want = (fallbacks as Record<string, string>)[name] ?? format;
      expect(c.format?.name ?? 'f16').toBe(want);
      expect(c.format).toBe(formatForRow(formatByName(format), cols));
      expect(q[name]).toEqual(obj.q[name]);
      expect(q[name]).not.toEqual(m.blocks[0][name]);
      if (!c.format) continue;
      const rb = c.format.rowBytes(cols);
      const y = new Float32Array(cols);
      for (let r = 0; r < rows; r++) {
        c.format.dequantizeRow(c.packed!.subarray(r * rb, (r + 1) * rb), cols, y);
        expect(y.every((v, j) => Object.is(v, obj.q[name]![r * cols + j]))).toBe(true);
      }
    }
  });

  it.each([
    ['q4_0', aligned32, 32],
    ['q4_k', aligned256, 256],
  ] as const)('%s: FFN and attention moves equal a full evaluation, before and after commits', (format, make, group) => {
    const m = make();
    const { rng, obj, cur, spec } = setup(m, 0, format, group);
    const on = new Set(ALL_INVARIANCES);
    const tuning = { ...DEFAULT_TUNING, scaleStep: 0.2, angleStep: 0.05 };
    // k-quants' reference quantizer (each super-block's fit) is slow in JS: fewer moves there
    const n = group === 256 ? 2 : 3;
    for (let i = 0; i < n; i++) {
      const move = drawFfnMove(m.config, rng, on, tuning, spec.group);
      const nb = candidateBlock(cur, move);
      applyTransforms(m.config, nb, move.transforms);
      const inc = obj.ffnMoveLoss(nb, move.units!);
      const full = obj.fullEval(nb).loss;
      expect(Math.abs(inc - full) / full).toBeLessThan(1e-9);
      expect(inc).not.toBe(obj.loss);
      if (i === n - 1) {
        applyTransforms(m.config, cur, move.transforms);
        obj.ffnMoveLoss(cur, move.units!, true);
        const fresh = obj.fullEval(cur);
        expect(Math.abs(obj.loss - fresh.loss) / fresh.loss).toBeLessThan(1e-9);
        for (const k of ['w1', 'w3', 'w2'] as const) expect(obj.q[k]).toEqual(fresh.q[k]);
      }
    }
    const kinds = attnKindsOn(m.config, on);
    for (let i = 0; i < n; i++) {
      const move = drawAttnMove(m.config, rng, kinds, DEFAULT_TUNING);
      const nb = candidateBlock(cur, move);
      applyTransforms(m.config, nb, move.transforms);
      expect(candidateLoss(m.config, obj, cur, move)).toBe(obj.fullEval(nb).loss);
    }
  });
});
