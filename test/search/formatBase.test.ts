/**
 * The search's RTN base on llama.cpp's formats: every linear the objective scores is what
 * the GGUF writer packs (the format's reference quantizer, llama-quantize's fallback where
 * the block does not fit), and the incremental moves still equal a full evaluation.
 */
import { describe, expect, it } from 'vitest';
import { decodeF16 } from '../../core/model/halfFloat';
import { F16_TYPE, packTensorRows, tensorTypeByName, typeForRow } from '../../core/gguf';
import { applyTransforms } from '../../core/invariance';
import { blockLinears, linearShape, type Model } from '../../core/model/types';
import { ALL_INVARIANCES, DEFAULT_TUNING } from '../../search/config';
import { candidateBlock, candidateLoss } from '../../search/evaluator';
import { attnKindsOn, drawAttnMove, drawFfnMove } from '../../search/proposals';
import { aligned256, aligned32, formatObjective, stories } from './formatFixture';

const setup = (m: Model, layer: number, format: string, group: number) => formatObjective(m, layer, format, group, { method: 'rtn', seed: 7 });

/** A linear as the GGUF writer packs it, dequantized back (an independent path: packed bytes, then the type's decoder). */
function asGguf(w: Float32Array, rows: number, cols: number, format: string): { type: string; values: Float32Array } {
  const t = typeForRow(tensorTypeByName(format)!, cols);
  const bytes = packTensorRows(w, rows, cols, t);
  if (t === F16_TYPE) {
    const values = new Float32Array(rows * cols);
    decodeF16(new Uint16Array(bytes.buffer, bytes.byteOffset, rows * cols), values);
    return { type: t.name, values };
  }
  const rb = t.format!.rowBytes(cols);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) t.format!.dequantizeRow(bytes.subarray(r * rb, (r + 1) * rb), cols, out.subarray(r * cols, (r + 1) * cols));
  return { type: t.name, values: out };
}


describe('RTN base on ggml formats', () => {
  it.each([
    ['q4_0', stories, 32, { w2: 'f16' }],
    ['q8_0', stories, 32, { w2: 'f16' }],
    ['q4_1', aligned32, 32, {}],
    ['q5_1', aligned32, 32, {}],
    ['q4_k', aligned256, 256, {}],
  ] as const)('%s: the scored linears are the GGUF writer\'s, bit for bit (fallbacks included)', (format, make, group, fallbacks) => {
    const m = make();
    const { obj } = setup(m, 0, format, group);
    for (const name of blockLinears(m.config)) {
      const [rows, cols] = linearShape(m.config, name);
      const g = asGguf(m.blocks[0][name]!, rows, cols, format);
      expect(g.type).toBe((fallbacks as Record<string, string>)[name] ?? format);
      expect(obj.q[name]!).toEqual(g.values);
      expect(obj.q[name]!).not.toEqual(m.blocks[0][name]); // really rounded
    }
  });

  it.each([
    ['q4_0', stories, 32],
    ['q4_1', aligned32, 32],
    ['q5_0', aligned32, 32],
    ['q6_k', aligned256, 256],
  ] as const)('%s: incremental FFN moves equal a full evaluation, before and after commits', (format, make, group) => {
    const m = make();
    const { rng, obj, cur, spec } = setup(m, 0, format, group);
    const on = new Set(ALL_INVARIANCES);
    const tuning = { ...DEFAULT_TUNING, scaleStep: 0.2, angleStep: 0.05 };
    // k-quants' reference quantizer is slow in JS: fewer moves there
    for (let i = 0; i < (group === 256 ? 3 : 8); i++) {
      const move = drawFfnMove(m.config, rng, on, tuning, spec.group);
      const nb = candidateBlock(cur, move);
      applyTransforms(m.config, nb, move.transforms);
      const inc = obj.ffnMoveLoss(nb, move.units!);
      const full = obj.fullEval(nb).loss;
      expect(Math.abs(inc - full) / full).toBeLessThan(1e-6);
      expect(inc).not.toBe(obj.loss);
      if (i % 3 === 0) {
        applyTransforms(m.config, cur, move.transforms);
        obj.ffnMoveLoss(cur, move.units!, true);
        const fresh = obj.fullEval(cur);
        expect(Math.abs(obj.loss - fresh.loss) / fresh.loss).toBeLessThan(1e-6);
        for (const k of ['w1', 'w3', 'w2'] as const) expect(obj.q[k]).toEqual(fresh.q[k]);
      }
    }
  });

  it.each([['q4_1', aligned32, 32], ['q4_0', stories, 32]] as const)('%s: attention moves are bit for bit the full evaluation', (format, make, group) => {
    const m = make();
    const { rng, obj, cur } = setup(m, 1, format, group);
    const kinds = attnKindsOn(m.config, new Set(ALL_INVARIANCES));
    for (let i = 0; i < 8; i++) {
      const move = drawAttnMove(m.config, rng, kinds, DEFAULT_TUNING);
      const nb = candidateBlock(cur, move);
      applyTransforms(m.config, nb, move.transforms);
      expect(candidateLoss(m.config, obj, cur, move)).toBe(obj.fullEval(nb).loss);
      if (i % 3 === 0) {
        applyTransforms(m.config, cur, move.transforms);
        obj.attnMoveLoss(cur, move.transforms, true);
        const fresh = obj.fullEval(cur);
        expect(obj.loss).toBe(fresh.loss);
        for (const k of ['wq', 'wk', 'wv', 'wo'] as const) expect(obj.q[k]).toEqual(fresh.q[k]);
      }
    }
  });
});
