import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { blockForwardChunked, chunkSeqs, embedRows, finalStreams, forEachSeqLogits } from '../../core/blockPass';
import { blockForward, Decoder, forward, rope } from '../../core/forward';
import { BatchDecoder } from '../../core/decode';
import { attnRows, blockForwardRows, ffnRows, seqStartsOf } from '../../core/forwardRows';
import { ScratchBuffers } from '../../core/scratchBuffers';
import { BlockCache, isLazyBlock, lazyBlocks, sequentialBlocks, type BlockKey } from '../../core/model/lazy';
import { loadHfModel } from '../../core/model/hf';
import { blockLinears, type Model } from '../../core/model/types';
import { jsOps, type Ops } from '../../core/ops';
import { Rng } from '../../core/rng';
import { getBackend } from '../../kernels';
import { randomModel } from '../reference';
import { randomHf, writeHf } from '../formats/hfFixtures';
import { InvarxError } from '../../core/errors';

const BACKENDS: [string, Ops][] = [['js', jsOps], ['wasm', getBackend('wasm')]];

function randomSeqs(m: Model, lengths: number[], seed = 3): number[][] {
  const rng = Rng.fromSeed(seed);
  return lengths.map((T) => Array.from({ length: T }, () => Math.floor(rng.float() * m.config.vocabSize)));
}

function same(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
}

/** A lazy view of m's blocks through a cache that counts loads. */
function lazyOf(m: Model, keep: number): { model: Model; cache: BlockCache } {
  const cache = new BlockCache((l) => m.blocks[l], keep);
  const keys = Object.keys(m.blocks[0]) as BlockKey[];
  return { model: { ...m, blocks: lazyBlocks(m.config.nLayers, keys, cache) }, cache };
}

describe('block-major forward over packed sequences', () => {
  for (const arch of ['llama', 'opt'] as const) {
    it.each(BACKENDS)(`${arch}: each sequence of a packed block pass has the bits of blockForward alone (%s)`, (_n, ops) => {
      const m = randomModel({ arch, nLayers: 2, seqLen: 16, qkvBias: arch === 'llama' });
      const lengths = [5, 9, 4, 16];
      const seqs = randomSeqs(m, lengths);
      const x = embedRows(m, seqs);
      const y = blockForwardRows(m.config, m.blocks[0], x, ops);
      const d = m.config.dim;
      seqs.forEach((s, i) => {
        const xi = x.x.subarray(x.seqStarts[i] * d, x.seqStarts[i + 1] * d).slice();
        const want = blockForward(m.config, m.blocks[0], xi, s.length, ops);
        expect(same(y.x.subarray(y.seqStarts[i] * d, y.seqStarts[i + 1] * d), want)).toBe(true);
      });
    });
  }

  for (const arch of ['llama', 'opt'] as const) {
    it.each(BACKENDS)(`${arch}: passes through reused scratch buffers have the bits of fresh ones, as the rows shrink and grow (%s)`, (_n, ops) => {
      const m = randomModel({ arch, nLayers: 2, seqLen: 16, qkvBias: arch === 'llama' });
      const scratch = new ScratchBuffers();
      const cfg = m.config;
      // a buffer taken again holds the last pass's values, never zeros: a pass that read one would differ
      for (const [l, lengths] of [[0, [5, 9, 16]], [1, [4, 6]], [0, [16, 16, 12, 7]], [1, [5, 9, 16]]] as const) {
        const x = embedRows(m, randomSeqs(m, [...lengths], lengths.length));
        const b = m.blocks[l];
        const fresh = ffnRows(cfg, b, attnRows(cfg, b, x, ops).h, ops);
        const reused = ffnRows(cfg, b, attnRows(cfg, b, x, ops, scratch).h, ops, scratch);
        expect(same(reused, fresh)).toBe(true);
      }
    });
  }

  it('RoPE at any position has the bits of its angles computed in place, whatever positions were asked for first', () => {
    const m = randomModel({ dim: 16, nHeads: 2, ropeLayout: 'half' });
    const cfg = { ...m.config, ropeTheta: 5000 + Math.random() }; // a table no other test has grown
    const hd = cfg.headDim;
    const rng = Rng.fromSeed(4);
    const direct = (v: Float32Array, T: number, pos0: number) => {
      for (let t = 0; t < T; t++) {
        for (let i = 0; i < hd / 2; i++) {
          const a = (pos0 + t) * Math.pow(cfg.ropeTheta, -(2 * i) / hd);
          const [c, s] = [Math.cos(a), Math.sin(a)];
          for (let h = 0; h < 2; h++) {
            const p0 = t * 2 * hd + h * hd + i;
            const p1 = p0 + hd / 2;
            const [x0, x1] = [v[p0], v[p1]];
            v[p0] = x0 * c - x1 * s;
            v[p1] = x0 * s + x1 * c;
          }
        }
      }
    };
    for (const [T, pos0] of [[3, 10], [5, 200], [8, 0], [2, 1000]]) {
      const v = Float32Array.from({ length: T * 2 * hd }, () => rng.normal());
      const want = v.slice();
      direct(want, T, pos0);
      rope(cfg, v, T, 2, pos0);
      expect(same(v, want)).toBe(true);
    }
  });

  it.each(BACKENDS)('logits of every sequence equal forward(), also when the rows are split into several chunks (%s)', (_n, ops) => {
    const m = randomModel({ nLayers: 3, seqLen: 16 });
    const seqs = randomSeqs(m, [6, 16, 4, 11, 7]);
    for (const chunkBytes of [1 << 30, 1]) {
      const seen: number[] = [];
      forEachSeqLogits([m], seqs, (s, [z]) => {
        seen.push(s);
        expect(same(z, forward(m, seqs[s], { ops }).logits)).toBe(true);
      }, { ops, chunkBytes });
      expect(seen).toEqual([0, 1, 2, 3, 4]);
    }
  });

  it.each(BACKENDS)('a block over packed rows in chunks of whole sequences has the bits of the unchunked pass (%s)', (_n, ops) => {
    const m = randomModel({ nLayers: 1, seqLen: 16 });
    const x = embedRows(m, randomSeqs(m, [6, 16, 4, 11, 7, 5]));
    const whole = blockForwardRows(m.config, m.blocks[0], x, ops);
    // 1: a chunk per sequence; 20: several sequences in some chunks; 1000: one chunk
    for (const maxRows of [1, 20, 1000]) {
      const y = blockForwardChunked(m.config, m.blocks[0], x, ops, maxRows);
      expect(y.seqStarts).toEqual(x.seqStarts);
      expect(same(y.x, whole.x)).toBe(true);
    }
  });

  it('chunks are consecutive, cover every sequence once and keep to the row limit unless one sequence is longer', () => {
    const seqs = [3, 4, 2, 9, 1, 1].map((n) => new Array(n).fill(0));
    const chunks = chunkSeqs(seqs, 5);
    expect(chunks.flat()).toEqual([0, 1, 2, 3, 4, 5]);
    expect(chunks).toEqual([[0], [1], [2], [3], [4, 5]]);
    expect(seqStartsOf([3, 4, 2])).toEqual([0, 3, 7, 9]);
  });

  it('a pass starting at block l from given inputs equals the whole pass', () => {
    const m = randomModel({ nLayers: 3, seqLen: 16 });
    const seqs = randomSeqs(m, [8, 5]);
    const inputs: Float32Array[] = [];
    finalStreams([m], seqs, {
      onBlock: (l, streams) => {
        if (l !== 0) return;
        const st = streams[0][0];
        seqs.forEach((_, i) => inputs.push(st.x.slice(st.seqStarts[i] * m.config.dim, st.seqStarts[i + 1] * m.config.dim)));
      },
    });
    const whole: Float32Array[] = [];
    forEachSeqLogits([m], seqs, (s, [z]) => (whole[s] = z));
    forEachSeqLogits([m], seqs, (s, [z]) => expect(same(z, whole[s])).toBe(true), { from: 1, inputs });
  });
});

describe('lazy blocks', () => {
  it('a lazy model computes what the eager one does, reading each block once per block-major pass', () => {
    const m = randomModel({ nLayers: 4, seqLen: 16 });
    const { model, cache } = lazyOf(m, 1);
    expect(isLazyBlock(model.blocks[0])).toBe(true);
    expect(isLazyBlock(m.blocks[0])).toBe(false);
    const seqs = randomSeqs(m, [7, 9, 12]);
    const loadsBefore = cache.loads;
    const lazyLogits: Float32Array[] = [];
    forEachSeqLogits([model], seqs, (s, [z]) => (lazyLogits[s] = z), { chunkBytes: 1 });
    expect(cache.loads - loadsBefore).toBe(m.config.nLayers);
    seqs.forEach((s, i) => expect(same(lazyLogits[i], forward(m, s).logits)).toBe(true));
  });

  it('decoders read a lazy model into memory once instead of loading every block at every token', () => {
    const m = randomModel({ nLayers: 3, seqLen: 16 });
    const { model, cache } = lazyOf(m, 1);
    const lazyDec = new Decoder(model);
    const dec = new Decoder(m);
    for (const tok of [1, 5, 7, 2, 9]) expect(same(lazyDec.step(tok), dec.step(tok))).toBe(true);
    expect(cache.loads).toBe(3);
    const batch = new BatchDecoder(model, 2, 4);
    for (let t = 0; t < 4; t++) batch.step(Int32Array.from([t + 1, t + 2]));
    expect(cache.loads).toBe(6);
  });

  it('the cache keeps only the most recent blocks, and spreading a lazy block gives its arrays', () => {
    const m = randomModel({ nLayers: 4 });
    const { model, cache } = lazyOf(m, 2);
    const b0 = { ...model.blocks[0] };
    expect(b0.wq).toBe(m.blocks[0].wq);
    model.blocks[1].wq;
    model.blocks[0].wk; // still cached
    expect(cache.loads).toBe(2);
    model.blocks[2].wq; // evicts block 1
    model.blocks[1].wq;
    expect(cache.loads).toBe(4);
    expect(() => new BlockCache(() => m.blocks[0], 0)).toThrow(RangeError);
  });

  it('sequential blocks are made in order from the state the last one left, starting again when read out of order', () => {
    const m = randomModel({ nLayers: 3 });
    const steps: number[] = [];
    const keys = Object.keys(m.blocks[0]) as BlockKey[];
    const { blocks } = sequentialBlocks<number>(3, keys, () => 0, (l, st) => {
      steps.push(l);
      return { block: m.blocks[l], state: st + 1 };
    });
    blocks[0].wq;
    blocks[1].wq;
    blocks[2].wq;
    expect(steps).toEqual([0, 1, 2]);
    blocks[0].wq; // evicted (keep = 1): made again from the start
    expect(steps).toEqual([0, 1, 2, 0]);
    blocks[2].w1;
    expect(steps).toEqual([0, 1, 2, 0, 1, 2]);
  });
});

describe('streamed HF checkpoints', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  for (const kind of ['llama', 'opt'] as const) {
    it(`${kind}: a streamed load gives the eager model's weights and logits`, () => {
      const dir = mkdtempSync(join(tmpdir(), 'invarx-stream-'));
      dirs.push(dir);
      writeHf(dir, randomHf(kind), 'BF16');
      const eager = loadHfModel(dir);
      const lazy = loadHfModel(dir, { stream: true });
      expect(isLazyBlock(lazy.blocks[0])).toBe(true);
      expect(isLazyBlock(eager.blocks[0])).toBe(false);
      for (let l = 0; l < eager.config.nLayers; l++) {
        for (const name of blockLinears(eager.config)) expect(same(lazy.blocks[l][name]!, eager.blocks[l][name]!)).toBe(true);
      }
      const seqs = randomSeqs(eager, [6, 10]);
      forEachSeqLogits([lazy, eager], seqs, (_s, [a, b]) => expect(same(a, b)).toBe(true));
    });
  }

  it('a block tensor of the wrong shape fails the streamed load itself, not a later read', () => {
    const dir = mkdtempSync(join(tmpdir(), 'invarx-stream-'));
    dirs.push(dir);
    const ck = randomHf('llama');
    const name = 'model.layers.1.mlp.down_proj.weight';
    const t = ck.tensors.get(name)!;
    ck.tensors.set(name, { shape: [t.shape[0], t.shape[1] - 1], values: t.values.subarray(0, t.shape[0] * (t.shape[1] - 1)) });
    writeHf(dir, ck, 'F32');
    expect(() => loadHfModel(dir, { stream: true })).toThrow(InvarxError);
    expect(() => loadHfModel(dir, { stream: true })).toThrow(/down_proj.*shape/);
  });
});



