import { describe, expect, it } from 'vitest';
import { sampleTokens } from '../../core/data';
import { BatchDecoder } from '../../core/decode';
import { Decoder } from '../../core/forward';
import type { Model } from '../../core/model/types';
import { jsOps, type Ops } from '../../core/ops';
import { categoricalAt, Rng } from '../../core/rng';
import { getBackend } from '../../kernels/registry';
import { createWasmBackend } from '../../kernels/wasm/backend';
import { shippedModel } from '../helpers';
import { randomModel, type RandomModelOptions } from '../reference';
import { sampleSequential as sequentialSampling } from '../../bench/sample';

/** Sampling as it was before batching (a Decoder per sequence, one Rng draw per token): the reference, kept in the sample bench. */
function sampleSequential(model: Model, count: number, length: number, seed: number, ops: Ops = jsOps, temperature = 1): number[][] {
  return sequentialSampling(model, count, length, seed, ops, temperature);
}

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

const CASES: Array<[string, RandomModelOptions]> = [
  ['llama interleaved GQA', { arch: 'llama', nHeads: 4, nKvHeads: 2 }],
  ['llama half RoPE, q/k/v biases, separate head', { arch: 'llama', nHeads: 4, nKvHeads: 1, qkvBias: true, ropeLayout: 'half', sharedClassifier: false }],
  ['opt LayerNorm biases ReLU positions', { arch: 'opt', nHeads: 4, nKvHeads: 4 }],
];

describe('BatchDecoder vs one Decoder per sequence (jsOps, bit for bit)', () => {
  for (const [name, o] of CASES) {
    for (const B of [1, 6]) {
      it(`${name}, ${B} sequence(s) in step`, () => {
        const m = randomModel({ ...o, seed: 11 + B });
        const { vocabSize: V, seqLen } = m.config;
        const rng = Rng.fromSeed(B);
        const toks = Array.from({ length: B }, () => Array.from({ length: seqLen }, () => rng.int(V)));
        const batch = new BatchDecoder(m, B, seqLen);
        const singles = toks.map(() => new Decoder(m));
        for (let t = 0; t < seqLen; t++) {
          const logits = batch.step(toks.map((s) => s[t]));
          expect(logits).toHaveLength(B * V);
          for (let b = 0; b < B; b++) expect(bits(logits.subarray(b * V, (b + 1) * V))).toEqual(bits(singles[b].step(toks[b][t])));
        }
        for (let b = 0; b < B; b++) expect(batch.position(b)).toBe(seqLen);
      });
    }

    it(`${name}, sequences at different positions, a varying subset per step`, () => {
      const m = randomModel({ ...o, seed: 5 });
      const { vocabSize: V, seqLen } = m.config;
      const B = 7;
      const rng = Rng.fromSeed(99);
      const batch = new BatchDecoder(m, B, seqLen);
      const singles = Array.from({ length: B }, () => new Decoder(m));
      let fed = 0;
      let spread = 0;
      for (let step = 0; step < 60; step++) {
        // a random subset of the sequences that still have room, in random order
        const open = Array.from({ length: B }, (_, s) => s).filter((s) => batch.position(s) < seqLen);
        if (open.length === 0) break;
        const seqs = rng.sample(open.length, 1 + rng.int(open.length)).map((i) => open[i]);
        const tokens = seqs.map(() => rng.int(V));
        const logits = batch.step(tokens, seqs);
        seqs.forEach((s, r) => {
          expect(bits(logits.subarray(r * V, (r + 1) * V))).toEqual(bits(singles[s].step(tokens[r])));
          expect(batch.position(s)).toBe(singles[s].position);
        });
        fed += seqs.length;
        const at = singles.map((d) => d.position);
        spread = Math.max(spread, Math.max(...at) - Math.min(...at));
      }
      expect(fed).toBe(B * seqLen); // every sequence filled to capacity
      expect(spread).toBeGreaterThan(3); // with rows at quite different positions on the way
    });
  }

  it('the shipped model, 5 sequences over 40 positions', () => {
    const m = shippedModel();
    const V = m.config.vocabSize;
    const B = 5;
    const rng = Rng.fromSeed(3);
    const batch = new BatchDecoder(m, B, 40);
    const singles = Array.from({ length: B }, () => new Decoder(m));
    for (let t = 0; t < 40; t++) {
      const tokens = Array.from({ length: B }, () => rng.int(V));
      const logits = batch.step(tokens);
      for (let b = 0; b < B; b++) expect(bits(logits.subarray(b * V, (b + 1) * V))).toEqual(bits(singles[b].step(tokens[b])));
    }
  });

  it('allocates only the capacity asked for, and refuses what does not fit', () => {
    const m = randomModel({ seed: 2 });
    expect(() => new BatchDecoder(m, 0, 4)).toThrow(/batch/);
    expect(() => new BatchDecoder(m, 2, m.config.seqLen + 1)).toThrow(/capacity/);
    const dec = new BatchDecoder(m, 3, 2);
    expect(() => dec.step([1, 2])).toThrow(/3 tokens/);
    expect(() => dec.step([1, 2], [0, 0])).toThrow(/twice/);
    expect(() => dec.step([1], [3])).toThrow(/outside the batch/);
    expect(() => dec.step([m.config.vocabSize], [0])).toThrow(/vocabulary/);
    dec.step([1, 2], [0, 2]);
    dec.step([1], [0]);
    expect(() => dec.step([1, 1, 1])).toThrow(/sequence 0 is full/);
    expect(dec.position(1)).toBe(0); // a refused step feeds nothing
    dec.step([4], [1]);
    expect([0, 1, 2].map((s) => dec.position(s))).toEqual([2, 1, 1]);
  });
});

describe('BatchDecoder on the wasm backend', () => {
  const wasm = getBackend('wasm');
  const m = shippedModel();
  const V = m.config.vocabSize;
  const T = 24;
  const rng = Rng.fromSeed(8);
  const toks = Array.from({ length: 6 }, () => Array.from({ length: T }, () => rng.int(V)));
  /** Logits of the first `B` sequences decoded together: [step][row] bit patterns. */
  const run = (B: number) => {
    const dec = new BatchDecoder(m, B, T, wasm);
    return Array.from({ length: T }, (_, t) => {
      const logits = dec.step(toks.slice(0, B).map((s) => s[t]));
      return Array.from({ length: B }, (_, b) => bits(logits.subarray(b * V, (b + 1) * V)));
    });
  };

  it('under SEPARABLE_MIN_ROWS rows: the Decoder\'s bits (both take the one-row matmul path)', () => {
    const got = run(2);
    for (let b = 0; b < 2; b++) {
      const dec = new Decoder(m, wasm);
      for (let t = 0; t < T; t++) expect(got[t][b]).toEqual(bits(dec.step(toks[b][t])));
    }
  });

  it('from SEPARABLE_MIN_ROWS rows up: a sequence\'s logits do not depend on the batch it is in', () => {
    const four = run(4);
    const six = run(6);
    for (let t = 0; t < T; t++) expect(six[t].slice(0, 4)).toEqual(four[t]);
  });

  it('nor with 4 query heads per KV head (their attention is one 4-row matmul)', () => {
    const g = randomModel({ dim: 32, nHeads: 8, nKvHeads: 2, seqLen: T, seed: 4 });
    const Vg = g.config.vocabSize;
    const go = (B: number) => {
      const dec = new BatchDecoder(g, B, T, wasm);
      return Array.from({ length: T }, (_, t) => bits(dec.step(toks.slice(0, B).map((s) => s[t] % Vg)).slice(0, 2 * Vg)));
    };
    expect(go(6)).toEqual(go(4));
  });
});

describe('BatchDecoder with the caches and weights resident in the wasm backend', () => {
  /** The wasm backend without pin, residentArray and attendCached: the decoder's reference path. */
  const plain = (b: Ops): Ops => ({ name: 'wasm (plain)', matmulT: b.matmulT, softmaxCausal: b.softmaxCausal, siluMul: b.siluMul });
  const models: Array<[string, Model]> = [
    ['the shipped model', shippedModel()],
    ['4 query heads per KV head', randomModel({ dim: 32, nHeads: 8, nKvHeads: 2, seqLen: 20, seed: 4 })],
    ['opt, 5 query heads per KV head', randomModel({ arch: 'opt', dim: 40, nHeads: 5, nKvHeads: 1, seqLen: 20, seed: 6 })],
  ];
  for (const [name, m] of models) {
    it(`${name}: the reference path's bits, then everything released once every sequence is full`, () => {
      const wasm = createWasmBackend();
      const V = m.config.vocabSize;
      const T = Math.min(20, m.config.seqLen);
      const rng = Rng.fromSeed(12);
      const B = 5;
      const toks = Array.from({ length: B }, () => Array.from({ length: T }, () => rng.int(V)));
      const fast = new BatchDecoder(m, B, T, wasm);
      const ref = new BatchDecoder(m, B, T, plain(wasm));
      for (let t = 0; t < T; t++) {
        // every third step only two sequences, in reverse order, so rows and sequences differ
        const seqs = t % 3 === 1 ? [3, 0] : Array.from({ length: B }, (_, s) => s);
        const step = (d: BatchDecoder) => bits(d.step(seqs.map((s) => toks[s][d.position(s)]), seqs));
        expect(step(fast)).toEqual(step(ref));
        if (t === 0) expect(wasm.residentWeightBytes).toBeGreaterThan(0);
      }
      // the sequences left out of every third step catch up
      while (fast.position(1) < T) {
        const seqs = [1, 2, 4].filter((s) => fast.position(s) < T);
        expect(bits(fast.step(seqs.map(() => 7), seqs))).toEqual(bits(ref.step(seqs.map(() => 7), seqs)));
      }
      for (let s = 0; s < B; s++) expect(fast.position(s)).toBe(T);
      expect(wasm.residentWeightBytes).toBe(0);
      expect(() => fast.step([1], [0])).toThrow(/full/);
    });
  }

  it('close() releases early; a closed decoder refuses to step', () => {
    const wasm = createWasmBackend();
    const dec = new BatchDecoder(shippedModel(), 4, 8, wasm);
    dec.step([1, 2, 3, 4]);
    expect(wasm.residentWeightBytes).toBeGreaterThan(0);
    dec.close();
    expect(wasm.residentWeightBytes).toBe(0);
    expect(() => dec.step([1, 2, 3, 4])).toThrow(/closed/);
  });
});

describe('sampleTokens (batched) vs sampling one sequence at a time', () => {
  it('same sets on jsOps: shipped model, several seeds and counts', () => {
    const m = shippedModel();
    for (const [count, length, seed] of [[1, 12, 1], [5, 24, 7], [9, 17, 1001]]) {
      expect(sampleTokens(m, { count, length, seed })).toEqual(sampleSequential(m, count, length, seed));
    }
  });

  it('same sets on jsOps: random llama and opt models, temperatures 1, 0.7 and 0 (greedy)', () => {
    for (const [, o] of CASES) {
      const m = randomModel({ ...o, seed: 21, seqLen: 24 });
      for (const temperature of [1, 0.7, 0]) {
        const got = sampleTokens(m, { count: 6, length: 20, seed: 4, temperature });
        expect(got).toEqual(sampleSequential(m, 6, 20, 4, jsOps, temperature));
      }
    }
  });

  it('greedy: every sequence the same, the argmax chain', () => {
    const m = shippedModel();
    const seqs = sampleTokens(m, { count: 5, length: 16, seed: 9, temperature: 0 });
    expect(seqs[0]).toEqual([1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426]);
    for (const s of seqs) expect(s).toEqual(seqs[0]);
  });

  it('length 1 is just BOS; no draws are needed', () => {
    expect(sampleTokens(shippedModel(), { count: 3, length: 1, seed: 1 })).toEqual([[1], [1], [1]]);
  });

  it('a cache budget that forces several batches changes nothing (jsOps and wasm)', () => {
    const m = shippedModel();
    const perSeq = 2 * m.config.nLayers * 19 * m.config.nKvHeads * m.config.headDim * 4;
    for (const ops of [jsOps, getBackend('wasm')]) {
      const one = sampleTokens(m, { count: 13, length: 20, seed: 5, ops });
      // room for 4 sequences: batches of 4, 4 and 5 (never under 4 rows, where wasm's
      // matmul takes its one-row path)
      expect(sampleTokens(m, { count: 13, length: 20, seed: 5, ops, maxCacheBytes: 4 * perSeq })).toEqual(one);
      expect(sampleTokens(m, { count: 13, length: 20, seed: 5, ops, maxCacheBytes: 1 })).toEqual(one);
    }
  });
});

describe('categoricalAt', () => {
  it('is what Rng.categorical does with its draw', () => {
    const w = Float64Array.from([0.5, 0, 2, 1e-9, 3, 0.25]);
    const a = Rng.fromSeed(17);
    const b = Rng.fromSeed(17);
    for (let i = 0; i < 500; i++) expect(a.categorical(w)).toBe(categoricalAt(w, b.float()));
    expect(a.state()).toEqual(b.state());
    expect(categoricalAt(w, 0)).toBe(0);
    expect(categoricalAt(w, 0.999999)).toBe(5);
  });
});
