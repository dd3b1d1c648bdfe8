/**
 * Random-weight checkpoints of real shapes (core/model/synthetic.ts), the streaming
 * safetensors writers they use, and `invarx gen-model`.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import { forward } from '../../core/forward';
import { loadModel } from '../../core/model/load';
import { parseSafetensorsHeader } from '../../core/model/safetensors';
import {
  type TensorToWrite,
  writeSafetensors,
  writeSafetensorsCheckpoint,
  writeSafetensorsCheckpointStream,
  writeSafetensorsStream,
} from '../../core/model/safetensorsWrite';
import {
  SYNTHETIC_SHAPES, planSynthetic, randomModel, syntheticConfig, syntheticOutliers, writeSyntheticCheckpoint, type SyntheticShape,
} from '../../core/model/synthetic';
import { LINEAR_NAMES, linearShape, type F32, type Model } from '../../core/model/types';
import { shippedModel, readDir, sameFiles } from '../helpers';
import { ensureBuilt, expectUserError, invarx } from '../cli/cli';

const tmp = mkdtempSync(join(tmpdir(), 'invarx-synthetic-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(tmp, `d${n++}`);

/** Every float32 array of a model, in a fixed order, with a label. */
function arrays(m: Model): Array<[string, F32]> {
  const out: Array<[string, F32]> = [['embedding', m.embedding], ['finalNorm', m.finalNorm], ['classifier', m.classifier]];
  m.blocks.forEach((b, l) => {
    for (const [k, v] of Object.entries(b)) if (v) out.push([`${l}.${k}`, v as F32]);
  });
  return out.sort(([a], [b]) => (a < b ? -1 : 1));
}

/** Same config, same tensors bit for bit (compared as bytes, so -0 and NaN payloads count). */
function expectSameModel(a: Model, b: Model): void {
  expect(a.config).toEqual(b.config);
  const xa = arrays(a);
  const xb = arrays(b);
  expect(xa.map(([k]) => k)).toEqual(xb.map(([k]) => k));
  xa.forEach(([k, v], i) => {
    const w = xb[i][1];
    expect(Buffer.from(v.buffer, v.byteOffset, v.byteLength).equals(Buffer.from(w.buffer, w.byteOffset, w.byteLength)), k).toBe(true);
  });
}

/** L2 norm of each input column of a row-major [rows, cols] matrix. */
function columnNorms(w: F32, rows: number, cols: number): number[] {
  const s = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) s[c] += w[r * cols + c] ** 2;
  return Array.from(s, Math.sqrt);
}

describe('shapes and plans', () => {
  it('260k has stories260K\'s shape and parameter count; 1b and 7b count as TinyLlama and LLaMA-2 7B', () => {
    const c = syntheticConfig('260k');
    const s = shippedModel().config;
    for (const k of ['dim', 'hiddenDim', 'nLayers', 'nHeads', 'nKvHeads', 'vocabSize', 'seqLen'] as const) expect(c[k], k).toBe(s[k]);
    expect(planSynthetic('260k').parameters).toBe(260_032);
    expect(planSynthetic('1b').parameters).toBe(1_100_048_384);
    expect(planSynthetic('7b').parameters).toBe(6_738_415_616);
    const p = planSynthetic('1b');
    expect(p.blockBytesF32).toBe(4 * 44_044_288);
    expect(p.embeddingBytesF32).toBe(2 * 4 * 32000 * 2048); // separate classifier
    expect(p.bytes).toEqual({ bf16: 2 * p.parameters, fp16: 2 * p.parameters, fp32: 4 * p.parameters });
    expect(planSynthetic('7b').headerOnly).toBe(true);
    expect(planSynthetic('15m').config.sharedClassifier).toBe(true);
    expect(planSynthetic('110m').config.sharedClassifier).toBe(false);
  });
});

describe('written checkpoints', () => {
  const seed = 7;
  const dirs: Record<string, string> = {};
  beforeAll(() => {
    for (const dtype of ['bf16', 'fp32'] as const) {
      dirs[dtype] = fresh();
      writeSyntheticCheckpoint(dirs[dtype], '260k', { dtype, seed });
    }
  });

  it('load with loadModel to the expected shapes', () => {
    for (const dtype of ['bf16', 'fp32'] as const) {
      const m = loadModel(dirs[dtype]);
      const cfg = syntheticConfig('260k');
      expect(m.config).toEqual(cfg);
      expect(m.embedding.length).toBe(512 * 64);
      expect(m.classifier).toBe(m.embedding); // tied
      expect(m.blocks).toHaveLength(5);
      for (const b of m.blocks) {
        for (const name of LINEAR_NAMES) {
          const [r, c] = linearShape(cfg, name);
          expect(b[name]!.length, name).toBe(r * c);
        }
        expect(b.attnNorm.length).toBe(64);
      }
      const header = JSON.parse(readFileSync(join(dirs[dtype], 'config.json'), 'utf8'));
      expect(header.torch_dtype).toBe(dtype === 'bf16' ? 'bfloat16' : 'float32');
    }
  });

  it('hold exactly randomModel\'s values (fp32 unrounded, bf16 rounded)', () => {
    expectSameModel(loadModel(dirs.fp32), randomModel('260k', seed));
    expectSameModel(loadModel(dirs.bf16), randomModel('260k', seed, { dtype: 'bf16' }));
  });

  it('are a function of the seed: same seed same bytes, another seed other values', () => {
    const again = fresh();
    writeSyntheticCheckpoint(again, '260k', { dtype: 'bf16', seed });
    expect(sameFiles(readDir(again), readDir(dirs.bf16))).toBe(true);
    const other = fresh();
    writeSyntheticCheckpoint(other, '260k', { dtype: 'bf16', seed: seed + 1 });
    expect(readFileSync(join(other, 'model.safetensors')).equals(readFileSync(join(dirs.bf16, 'model.safetensors')))).toBe(false);
    const a = randomModel('260k', seed);
    const b = randomModel('260k', seed + 1);
    for (const [[k, x], [, y]] of arrays(a).map((e, i) => [e, arrays(b)[i]] as const)) expect(x.some((v, i) => v !== y[i]), k).toBe(true);
  });

  it('shard into the asked number of files and load to the same model', () => {
    const dir = fresh();
    const res = writeSyntheticCheckpoint(dir, '260k', { dtype: 'bf16', seed, shards: 3 });
    expect(res.files.filter((f) => f.endsWith('.safetensors'))).toHaveLength(3);
    expect(existsSync(join(dir, 'model.safetensors.index.json'))).toBe(true);
    expectSameModel(loadModel(dir), loadModel(dirs.bf16));
  });

  it('run forward to finite, non-constant logits', () => {
    const m = loadModel(dirs.bf16);
    const tokens = [1, 17, 300, 5, 511];
    const { logits } = forward(m, tokens);
    expect(logits.length).toBe(tokens.length * 512);
    expect(logits.every(Number.isFinite)).toBe(true);
    expect(Math.max(...logits) - Math.min(...logits)).toBeGreaterThan(1e-3);
  });
});

describe('weight statistics', () => {
  // Wide enough that 1% of the inputs is more than one channel.
  const wide: SyntheticShape = { dim: 256, hiddenDim: 704, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 300, seqLen: 64, sharedClassifier: false };
  const m = randomModel(wide, 3);
  const cfg = m.config;

  it('every linear has 1% outlier input columns, ×10–30, shared by linears reading the same input', () => {
    m.blocks.forEach((b, l) => {
      for (const name of LINEAR_NAMES) {
        const [rows, cols] = linearShape(cfg, name);
        const norms = columnNorms(b[name]!, rows, cols);
        const median = [...norms].sort((x, y) => x - y)[cols >> 1];
        const big = norms.map((v, c) => (v > 5 * median ? c : -1)).filter((c) => c >= 0);
        const { channels, factors } = syntheticOutliers(3, l, name, cols);
        expect(channels).toHaveLength(Math.round(cols / 100));
        expect(big, `${l}.${name}`).toEqual([...channels].sort((x, y) => x - y));
        for (const f of factors) expect(f >= 10 && f <= 30).toBe(true);
      }
      expect(syntheticOutliers(3, l, 'wq', 256).channels).toEqual(syntheticOutliers(3, l, 'wv', 256).channels);
      expect(syntheticOutliers(3, l, 'w1', 256).channels).toEqual(syntheticOutliers(3, l, 'w3', 256).channels);
    });
  });

  it('has trained-LLM scales: bulk weights N(0, 1/in), norms near 1, embedding std 0.02', () => {
    const std = (x: ArrayLike<number>) => Math.sqrt(Array.from(x).reduce((s, v) => s + v * v, 0) / x.length);
    const b = m.blocks[0];
    const out = new Set(syntheticOutliers(3, 0, 'w2', 704).channels);
    const bulk = Array.from(b.w2).filter((_, i) => !out.has(i % 704));
    expect(std(bulk)).toBeCloseTo(1 / Math.sqrt(704), 3);
    expect(std(m.embedding)).toBeCloseTo(0.02, 3);
    for (const v of b.attnNorm) expect(Math.abs(v - 1)).toBeLessThan(0.3);
    expect(std(Array.from(b.attnNorm, (v) => v - 1))).toBeGreaterThan(0.02);
  });
});

describe('streaming writer', () => {
  it('draws each tensor only after the previous one is on disk, once each, in file order', () => {
    const dir = fresh();
    const file = join(dir, 'model.safetensors');
    const calls: string[] = [];
    const seen: number[] = [];
    writeSyntheticCheckpoint(dir, '260k', {
      onTensor: (name, i, count) => {
        calls.push(name);
        expect(count).toBe(47);
        expect(i).toBe(calls.length - 1);
        seen.push(statSync(file).size); // the header and tensors 0…i-1, nothing more
      },
    });
    const bytes = readFileSync(file);
    const h = parseSafetensorsHeader(bytes, bytes.length, file);
    const inFileOrder = [...h.tensors].sort((a, b) => a.begin - b.begin);
    expect(calls).toEqual(inFileOrder.map((t) => t.name));
    expect(seen).toEqual(inFileOrder.map((t) => h.dataStart + t.begin));
    // The model is many tensors: drawing one at a time bounds memory well below the whole.
    expect(Math.max(...inFileOrder.map((t) => t.end - t.begin))).toBeLessThan(bytes.length / 5);
  });

  const tensors = (): TensorToWrite[] => [
    { name: 'b', dtype: 'BF16', shape: [3, 4], data: Float32Array.from({ length: 12 }, (_, i) => i / 3) },
    { name: 'a', dtype: 'F32', shape: [5], data: Float32Array.from([1, -2, 3.5, 0, 9]) },
    { name: 'c', dtype: 'F16', shape: [2, 2], data: Float32Array.from([0.1, 0.2, 0.3, 0.4]) },
  ];

  it('writes the same bytes as the all-at-once writer, asking once per tensor', () => {
    const a = join(tmp, 'whole.safetensors');
    const b = join(tmp, 'stream.safetensors');
    writeSafetensors(a, tensors(), { format: 'pt' });
    const asked: string[] = [];
    const byName = new Map(tensors().map((t) => [t.name, t.data]));
    const specs = tensors().map(({ name, dtype, shape }) => ({ name, dtype, shape }));
    writeSafetensorsStream(b, specs, (t) => (asked.push(t.name), byName.get(t.name)!), { format: 'pt' });
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true);
    expect(asked).toEqual(['a', 'b', 'c']); // F32 first, then by name
  });

  it('cuts a checkpoint into a given number of shards, and refuses a bad count', () => {
    const big = Array.from({ length: 9 }, (_, i) => ({ name: `t${i}`, dtype: 'F32' as const, shape: [100 + 10 * i] }));
    const produce = (t: { shape: readonly number[] }) => new Float32Array(t.shape[0]);
    for (const shards of [1, 2, 4, 9]) {
      const dir = fresh();
      mkdirSync(dir);
      const files = writeSafetensorsCheckpointStream(dir, big, produce, { shards });
      expect(files.filter((f) => f.endsWith('.safetensors')), `shards ${shards}`).toHaveLength(shards);
    }
    const dir = fresh();
    mkdirSync(dir);
    expect(() => writeSafetensorsCheckpointStream(dir, big, produce, { shards: 0 })).toThrow(/positive integer/);
    expect(() => writeSafetensorsCheckpoint(dir, tensors(), { shards: 2, maxShardBytes: 10 })).toThrow(/not both/);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('bad inputs', () => {
  const err = (f: () => unknown, msg: RegExp) => {
    expect(f).toThrow(InvarxError);
    expect(f).toThrow(msg);
  };

  it('each get one clear error', () => {
    err(() => planSynthetic('3b'), /unknown model shape "3b" \(known: 260k, 15m, 110m, 1b, 7b\)/);
    err(() => writeSyntheticCheckpoint(fresh(), '7b'), /7b is header-only .*planned, not written/);
    err(() => writeSyntheticCheckpoint(fresh(), '260k', { dtype: 'int4' as 'bf16' }), /unknown dtype "int4"/);
    err(() => writeSyntheticCheckpoint(fresh(), '260k', { shards: 48 }), /shards must be an integer from 1 to 47/);
    err(() => randomModel('1b'), /too large to build in memory/);
    err(() => randomModel('260k', -1), /seed must be an integer/);
    err(() => randomModel({ ...SYNTHETIC_SHAPES['260k'], nKvHeads: 3 }), /not a multiple of 3 KV heads/);
    err(() => randomModel({ ...SYNTHETIC_SHAPES['260k'], dim: 0 }), /dim must be a positive integer/);
    const full = fresh();
    mkdirSync(full);
    writeFileSync(join(full, 'x'), '');
    err(() => writeSyntheticCheckpoint(full, '260k'), /is not empty/);
    const file = join(tmp, 'a-file');
    writeFileSync(file, '');
    err(() => writeSyntheticCheckpoint(file, '260k'), /not a directory/);
  });
});

describe('invarx gen-model', () => {
  beforeAll(() => ensureBuilt());

  it('writes what writeSyntheticCheckpoint writes', () => {
    const a = fresh();
    const r = invarx('gen-model', '--shape', '260k', '--out', a, '--dtype', 'fp16', '--seed', '11', '--shards', '2');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/shape 260k: dim 64/);
    const b = fresh();
    writeSyntheticCheckpoint(b, '260k', { dtype: 'fp16', seed: 11, shards: 2 });
    expect(sameFiles(readDir(a), readDir(b))).toBe(true);
  });

  it('writes a shape\'s width with fewer layers', () => {
    const a = fresh();
    const r = invarx('gen-model', '--shape', '260k', '--out', a, '--layers', '2');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/shape 260k-2l: dim 64, FFN 172, 2 layers/);
    const m = loadModel(a);
    expect(m.blocks.length).toBe(2);
    expect([m.config.nLayers, m.config.dim, m.config.hiddenDim, m.config.nHeads, m.config.nKvHeads]).toEqual([2, 64, 172, 8, 4]);
  });

  it('plans 7b and writes nothing', () => {
    const dir = fresh();
    const r = invarx('gen-model', '--shape', '7b', '--out', dir);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/6738\.4M parameters/);
    expect(r.stdout).toMatch(/809\.5 MB per block/);
    expect(r.stdout).toMatch(/header-only: planned, no weights written/);
    expect(existsSync(dir)).toBe(false);
  });

  it('refuses bad input with one line', () => {
    expectUserError(invarx('gen-model', '--shape', 'huge', '--out', fresh()), /unknown model shape "huge"/);
    expectUserError(invarx('gen-model', '--shape', '260k', '--out', fresh(), '--dtype', 'fp8'), /unknown dtype "fp8"/);
    expectUserError(invarx('gen-model', '--shape', '260k', '--out', fresh(), '--shards', '0'), /--shards must be an integer from 1 to 47/);
    expectUserError(invarx('gen-model', '--shape', '260k'), /--out DIR is required/);
    expectUserError(invarx('gen-model', '--shape', '260k', '--out', fresh(), '--layers', '0'), /--layers must be an integer from 1/);
    const full = fresh();
    mkdirSync(full);
    writeFileSync(join(full, 'x'), '');
    expectUserError(invarx('gen-model', '--shape', '260k', '--out', full), /is not empty/);
  });
});
