import { describe, expect, it } from 'vitest';
import { forEachSeqLogits } from '../../core/blockPass';
import { BlockCache, eagerModel, lazyBlocks, type BlockKey } from '../../core/model/lazy';
import { blockLinears, type Model } from '../../core/model/types';
import { attentionContext, attnSublayer, embed, ffnActivation, ffnSublayer, norm } from '../../core/forward';
import { BlockHessianAccumulator, inputWidth, quantizeBlockLinears, quantizeModel, type BlockInput } from '../../core/quant/model';
import { cloneModel, type F32, type LinearName } from '../../core/model/types';
import type { Ops } from '../../core/ops';
import { quantizedView } from '../../core/quant/view';
import type { Quantized } from '../../core/quant/rtn';
import { Rng } from '../../core/rng';
import { getBackend } from '../../kernels';
import { randomModel } from '../reference';
import { InvarxError } from '../../core/errors';

type Codes = [number, string, Quantized][];

/**
 * The reference: true-sequential GPTQ (RTN: each linear alone) written the plain way, one
 * whole model copy and every sequence through core/forward.ts on its own.
 */
function referenceQuantize(model: Model, bits: number, group: number, method: 'rtn' | 'gptq', calib: number[][], ops: Ops, codes: Codes): Model {
  const cfg = model.config;
  const spec = { bits, group, clip: true, f16Scales: true };
  const out = cloneModel(model);
  const onQuantized = (l: number) => (n: LinearName, qz: Quantized) => codes.push([l, n, qz]);
  if (method === 'rtn') {
    out.blocks = out.blocks.map((b, l) => quantizeBlockLinears(cfg, b, spec, { method, onQuantized: onQuantized(l) }));
    return out;
  }
  let xs = calib.map((seq) => embed(model, seq));
  for (let l = 0; l < cfg.nLayers; l++) {
    let b = out.blocks[l];
    const stage = (names: LinearName[], input: BlockInput, acts: F32[]) => {
      const acc = new BlockHessianAccumulator(cfg);
      for (const a of acts) acc.add(input, a, a.length / inputWidth(cfg, input));
      b = quantizeBlockLinears(cfg, b, spec, { method, names: names.filter((n) => b[n]), hessians: acc.H, onQuantized: onQuantized(l) });
    };
    const Ts = xs.map((x) => x.length / cfg.dim);
    const normed = (ys: F32[], w: F32, bias: F32 | undefined) => ys.map((y, s) => {
      const xn = new Float32Array(y.length);
      norm(cfg, xn, y, w, bias, Ts[s]);
      return xn;
    });
    const xnAttn = normed(xs, b.attnNorm, b.attnNormBias);
    stage(['wq', 'wk', 'wv'], 'xnAttn', xnAttn);
    stage(['wo'], 'ctx', xnAttn.map((xn, s) => attentionContext(cfg, b, xn, Ts[s], ops)));
    const hs = xs.map((x, s) => attnSublayer(cfg, b, x, Ts[s], ops));
    const xnFfn = normed(hs, b.ffnNorm, b.ffnNormBias);
    stage(['w1', 'w3'], 'xnFfn', xnFfn);
    stage(['w2'], 'act', xnFfn.map((xn, s) => ffnActivation(cfg, b, xn, Ts[s], ops)));
    xs = hs.map((h, s) => ffnSublayer(cfg, b, h, Ts[s], ops));
    out.blocks[l] = b;
  }
  return out;
}

function seqs(m: Model, n: number, T: number, seed: number): number[][] {
  const rng = Rng.fromSeed(seed);
  return Array.from({ length: n }, () => Array.from({ length: T }, () => Math.floor(rng.float() * m.config.vocabSize)));
}

function same(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
}

/** m with lazy blocks counting loads (as a streamed checkpoint is). */
function lazy(m: Model): { model: Model; cache: BlockCache } {
  const cache = new BlockCache((l) => m.blocks[l], 2);
  return { model: { ...m, blocks: lazyBlocks(m.config.nLayers, Object.keys(m.blocks[0]) as BlockKey[], cache) }, cache };
}

describe('quantized views', () => {
  const ops = getBackend('wasm');
  for (const arch of ['llama', 'opt'] as const) {
    for (const method of ['rtn', 'gptq'] as const) {
      it(`${arch} ${method}: the view's blocks and codes are the plain per-sequence reference's, bit for bit`, () => {
        const m = randomModel({ arch, nLayers: 3, dim: 32, nHeads: 4, hiddenDim: 48, seqLen: 16 });
        const calib = seqs(m, 3, 12, 5);
        const codesA: Codes = [];
        const codesB: Codes = [];
        const opts = { bits: 3, group: 16, method, clip: true, f16Scales: true, calib, ops };
        const want = referenceQuantize(m, 3, 16, method, calib, ops, codesA);
        const got = eagerModel(quantizedView(lazy(m).model, { ...opts, onQuantized: (l, n, q) => codesB.push([l, n, q]) }));
        for (let l = 0; l < m.config.nLayers; l++) {
          for (const name of blockLinears(m.config)) expect(same(got.blocks[l][name]!, want.blocks[l][name]!)).toBe(true);
          expect(same(got.blocks[l].ffnNorm, m.blocks[l].ffnNorm)).toBe(true);
        }
        expect(codesB.map(([l, n]) => `${l}.${n}`)).toEqual(codesA.map(([l, n]) => `${l}.${n}`));
        codesB.forEach(([, , q], i) => { expect(Array.from(q.q)).toEqual(Array.from(codesA[i][2].q)); expect(Array.from(q.scale)).toEqual(Array.from(codesA[i][2].scale)); });
      });
    }
  }

  it('evaluating a GPTQ view quantizes each block once and reads each FP block once, in one block-major pass', () => {
    const m = randomModel({ nLayers: 4, dim: 32, nHeads: 4, hiddenDim: 48, seqLen: 16 });
    const { model, cache } = lazy(m);
    let quantized = 0;
    const view = quantizedView(model, { bits: 4, group: 16, method: 'gptq', calib: seqs(m, 2, 10, 1), ops, onQuantized: () => quantized++ });
    const want = quantizeModel(m, { bits: 4, group: 16, method: 'gptq', calib: seqs(m, 2, 10, 1), ops });
    const evalSeqs = seqs(m, 3, 9, 2);
    const logits: Float32Array[][] = [];
    forEachSeqLogits([model, view], evalSeqs, (s, z) => (logits[s] = z), { ops });
    expect(quantized).toBe(4 * blockLinears(m.config).length);
    expect(cache.loads).toBe(4);
    forEachSeqLogits([want], evalSeqs, (s, [z]) => expect(same(logits[s][1], z)).toBe(true), { ops });
  });

  it('GPTQ without calibration tokens, or with ids outside the vocabulary, is one clear error', () => {
    const m = randomModel();
    expect(() => quantizedView(m, { bits: 3, group: 8, method: 'gptq' })).toThrow(InvarxError);
    expect(() => quantizedView(m, { bits: 3, group: 8, method: 'gptq', calib: [[1, 2, 999]] })).toThrow(/outside the vocabulary/);
  });
});
