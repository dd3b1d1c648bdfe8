/**
 * Packed GPTQ export. Packing is checked against literal translations of AutoGPTQ's
 * QuantLinear.pack (qlinear_cuda_old.py) and of its torch dequantization path; export ->
 * loadModel must give back exactly the fake-quantized model (weights bit for bit, hence the
 * same logits and perplexity) for llama (both RoPE layouts), qwen2 and opt, in both zero-point
 * conventions, including groups whose zero point is 0.
 */
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import { forward } from '../../core/forward';
import { perplexity } from '../../core/metrics';
import { withRopeLayout } from '../../core/model/hf';
import { loadModel } from '../../core/model/load';
import { f16Round } from '../../core/model/halfFloat';
import { SafetensorsReader } from '../../core/model/safetensors';
import { type TensorToWrite, writeSafetensors } from '../../core/model/safetensorsWrite';
import { blockLinears, cloneModel, linearShape, type Model } from '../../core/model/types';
import { dequantize, quantizeRtn, type Quantized } from '../../core/quant/rtn';
import { Rng } from '../../core/rng';
import { packQweight, packQzeros, unpackQweight, unpackQzeros } from '../../core/export/pack';
import { withF16Scales, writeGptqExport, type BlockQuantized, type CheckpointFormat } from '../../core/export/gptq';
import { randomModel, type RandomModelOptions } from '../reference';
import { shippedModel } from '../helpers';

const tmp = mkdtempSync(join(tmpdir(), 'invarx-gptq-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(tmp, `e${n++}`);

// ---------------------------------------------------------------------------------------
// Literal translations of AutoGPTQ (auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py).

/** QuantLinear.pack's qweight loop: intweight [in][out] -> qweight [in/32*bits][out] (as uint32). */
function autogptqPackQweight(intweight: number[][], bits: number): number[][] {
  const out = intweight[0].length;
  const rows = (intweight.length / 32) * bits;
  const qweight = Array.from({ length: rows }, () => new Array<number>(out).fill(0));
  const or = (row: number, v: (c: number) => number) => {
    for (let c = 0; c < out; c++) qweight[row][c] = (qweight[row][c] | v(c)) >>> 0;
  };
  let i = 0;
  let row = 0;
  while (row < rows) {
    if ([2, 4, 8].includes(bits)) {
      for (let j = i; j < i + 32 / bits; j++) or(row, (c) => intweight[j][c] << (bits * (j - i)));
      i += 32 / bits;
      row += 1;
    } else {
      for (let j = i; j < i + 10; j++) or(row, (c) => intweight[j][c] << (3 * (j - i)));
      i += 10;
      const a = i;
      or(row, (c) => intweight[a][c] << 30);
      row += 1;
      or(row, (c) => (intweight[a][c] >> 2) & 1);
      i += 1;
      for (let j = i; j < i + 10; j++) or(row, (c) => intweight[j][c] << (3 * (j - i) + 1));
      i += 10;
      const b = i;
      or(row, (c) => intweight[b][c] << 31);
      row += 1;
      or(row, (c) => (intweight[b][c] >> 1) & 0x3);
      i += 1;
      for (let j = i; j < i + 10; j++) or(row, (c) => intweight[j][c] << (3 * (j - i) + 2));
      i += 10;
      row += 1;
    }
  }
  return qweight;
}

/** QuantLinear.pack's qzeros loop (after `zeros -= 1`): zeros [nG][out] -> qzeros [nG][out/32*bits]. */
function autogptqPackQzeros(zeros: number[][], bits: number): number[][] {
  // The same stream along the other axis: pack the transpose and transpose back.
  const t = zeros[0].map((_, c) => zeros.map((r) => r[c]));
  const packed = autogptqPackQweight(t, bits);
  return zeros.map((_, g) => packed.map((r) => r[g]));
}

const WF3 = [
  [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 0],
  [0, 1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31],
  [0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 0],
];

/** The forward() unpacking of a stream of int32 words (torch >> is arithmetic on int32). */
function autogptqUnpack(words: number[], bits: number): number[] {
  const out: number[] = [];
  if (bits !== 3) {
    for (const w of words) for (let s = 0; s < 32; s += bits) out.push(((w | 0) >> s) & ((1 << bits) - 1));
    return out;
  }
  for (let t = 0; t < words.length; t += 3) {
    const z = WF3.map((wf, a) => wf.map((s) => (words[t + a] | 0) >> s));
    z[0][10] = (z[0][10] & 0x3) | ((z[1][0] << 2) & 0x4);
    z[1][11] = (z[1][11] & 0x1) | ((z[2][0] << 1) & 0x6);
    const m = z.map((r) => r.map((v) => v & 0x7));
    out.push(...m[0].slice(0, 11), ...m[1].slice(1, 12), ...m[2].slice(1, 11));
  }
  return out;
}

describe('packing matches AutoGPTQ', () => {
  const shapeArb = fc.record({
    bits: fc.constantFrom(2, 3, 4, 8),
    in32: fc.integer({ min: 1, max: 3 }),
    out32: fc.integer({ min: 1, max: 2 }),
    nG: fc.integer({ min: 1, max: 3 }),
    seed: fc.nat(),
  });

  it('qweight and qzeros bytes equal the literal pack loops; the literal unpack gets the codes back', () => {
    fc.assert(
      fc.property(shapeArb, ({ bits, in32, out32, nG, seed }) => {
        const rng = Rng.fromSeed(seed);
        const [inDim, out] = [32 * in32, 32 * out32];
        const maxq = (1 << bits) - 1;
        const q = Uint8Array.from({ length: out * inDim }, () => rng.int(maxq + 1)); // [out, in]
        const z = Uint8Array.from({ length: nG * out }, () => rng.int(maxq + 1)); // [nG, out]
        const ours = packQweight(q, out, inDim, bits);
        const intweight = Array.from({ length: inDim }, (_, i) => Array.from({ length: out }, (_, o) => q[o * inDim + i]));
        const lit = autogptqPackQweight(intweight, bits);
        const oursZ = packQzeros(z, nG, out, bits);
        const litZ = autogptqPackQzeros(Array.from({ length: nG }, (_, g) => Array.from(z.subarray(g * out, (g + 1) * out))), bits);
        const W = (out * bits) / 32;
        for (let r = 0; r < lit.length; r++) for (let o = 0; o < out; o++) if ((ours[r * out + o] >>> 0) !== lit[r][o]) return false;
        for (let g = 0; g < nG; g++) for (let c = 0; c < W; c++) if ((oursZ[g * W + c] >>> 0) !== litZ[g][c]) return false;
        // AutoGPTQ's unpack of our words, column by column / group by group.
        for (let o = 0; o < out; o++) {
          const codes = autogptqUnpack(Array.from({ length: lit.length }, (_, r) => ours[r * out + o]), bits);
          for (let i = 0; i < inDim; i++) if (codes[i] !== q[o * inDim + i]) return false;
        }
        for (let g = 0; g < nG; g++) {
          const zs = autogptqUnpack(Array.from(oursZ.subarray(g * W, (g + 1) * W)), bits);
          for (let o = 0; o < out; o++) if (zs[o] !== z[g * out + o]) return false;
        }
        const back = unpackQweight(ours, out, inDim, bits);
        const backZ = unpackQzeros(oursZ, nG, out, bits);
        return back.every((v, i) => v === q[i]) && backZ.every((v, i) => v === z[i]);
      }),
      { numRuns: 60 },
    );
  });
});

// ---------------------------------------------------------------------------------------
// Export -> reload

/**
 * Random codes for a [rows, cols] linear with fp16-exact scales. A quarter of the groups get
 * zero point 0: half of those use the top code 2^b − 1 (stored mirrored in v1), half do not
 * (stored shifted).
 */
function randomQuantized(rng: Rng, rows: number, cols: number, bits: number, group: number): Quantized {
  const maxq = (1 << bits) - 1;
  const g = Math.min(group, cols);
  const nG = Math.ceil(cols / g);
  const q = Uint8Array.from({ length: rows * cols }, () => rng.int(maxq + 1));
  const zero = Uint8Array.from({ length: rows * nG }, () => rng.int(maxq + 1));
  const scale = Float32Array.from({ length: rows * nG }, () => f16Round(0.02 * Math.exp(rng.normal())));
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < nG; k++) {
      if (rng.int(4) !== 0) continue;
      zero[r * nG + k] = 0;
      const c0 = r * cols + k * g;
      const top = rng.int(2) === 0;
      for (let j = c0; j < c0 + g; j++) q[j] = top ? q[j] : Math.min(q[j], maxq - 1);
      if (top) q[c0 + rng.int(g)] = maxq;
    }
  }
  return { rows, cols, bits, group, q, scale, zero };
}

/** Codes for every linear of every block, and the fake-quantized model they dequantize to. */
function quantizeAll(m: Model, make: (rows: number, cols: number) => Quantized): { quant: BlockQuantized[]; fake: Model } {
  const fake = cloneModel(m);
  const quant = fake.blocks.map((b) => {
    const bq: BlockQuantized = {};
    for (const name of blockLinears(m.config)) {
      const [rows, cols] = linearShape(m.config, name);
      const qz = make(rows, cols);
      bq[name] = qz;
      b[name] = dequantize(qz);
    }
    return bq;
  });
  return { quant, fake };
}

function expectSameModel(a: Model, b: Model): void {
  // OPT has no RoPE; its layout field means nothing and the HF loader leaves it 'half'.
  expect(b.config).toEqual(a.config.arch === 'opt' ? { ...a.config, ropeLayout: b.config.ropeLayout } : a.config);
  for (const k of ['embedding', 'classifier', 'finalNorm', 'finalNormBias', 'positions'] as const) expect(b[k]).toEqual(a[k]);
  a.blocks.forEach((blk, l) => expect(b.blocks[l]).toEqual(blk));
}

const MODELS: [string, RandomModelOptions][] = [
  ['llama (half RoPE)', { arch: 'llama', ropeLayout: 'half', dim: 64, hiddenDim: 96, nHeads: 4, nKvHeads: 2, vocabSize: 48, sharedClassifier: false }],
  ['qwen2 (q/k/v biases)', { arch: 'llama', ropeLayout: 'half', qkvBias: true, dim: 64, hiddenDim: 96, nHeads: 4, nKvHeads: 2, vocabSize: 48 }],
  ['opt', { arch: 'opt', dim: 64, hiddenDim: 128, nHeads: 4, nKvHeads: 4, vocabSize: 48 }],
];

const SEQS = [[1, 5, 9, 3, 17, 30, 2, 11, 7, 39, 40, 41], [2, 2, 8, 47, 0, 13]];

describe('export -> loadModel gives back the fake-quantized model exactly', () => {
  for (const [label, opts] of MODELS) {
    for (const bits of [2, 3, 4, 8]) {
      for (const format of ['gptq', 'gptq_v2'] as CheckpointFormat[]) {
        it(`${label}, ${bits}-bit, ${format}`, () => {
          const m = randomModel({ ...opts, seed: bits });
          const rng = Rng.fromSeed(100 + bits);
          const group = bits === 8 ? 1000 : 32; // 8-bit: one group per row (group_size -1)
          const { quant, fake } = quantizeAll(m, (r, c) => randomQuantized(rng, r, c, bits, group));
          const dir = fresh();
          const rep = writeGptqExport(dir, m, quant, { checkpointFormat: format, maxShardBytes: bits === 4 ? 20000 : undefined });
          expect(rep.scalesRounded).toBe(0);
          if (format === 'gptq') expect(rep.mirroredGroups > 0 && rep.zeroShiftedGroups > 0).toBe(true);
          else expect(rep.mirroredGroups + rep.zeroShiftedGroups).toBe(0);
          const back = loadModel(dir);
          expectSameModel(fake, back);
          expect(forward(back, SEQS[0]).logits).toEqual(forward(fake, SEQS[0]).logits);
          expect(perplexity(back, SEQS).ppl).toBe(perplexity(fake, SEQS).ppl);
        });
      }
    }
  }

  it('RTN codes of a real weight distribution, scales rounded to fp16 before dequantizing', () => {
    const m = randomModel({ ...MODELS[0][1], seed: 9 });
    const { quant, fake } = quantizeAll(m, (() => {
      let l = 0;
      const names = blockLinears(m.config);
      return (rows: number, cols: number) => {
        const b = m.blocks[Math.floor(l / names.length)];
        const w = b[names[l++ % names.length]]!;
        return withF16Scales(quantizeRtn(w, rows, cols, { bits: 3, group: 32, clip: true }));
      };
    })());
    const dir = fresh();
    expect(writeGptqExport(dir, m, quant).scalesRounded).toBe(0);
    expectSameModel(fake, loadModel(dir));
  });

  it('an interleaved-RoPE (llama2.c) model exports in HF layout; converted back it is the fake-quantized model', () => {
    const m = randomModel({ ...MODELS[0][1], ropeLayout: 'interleaved', seed: 4 });
    const rng = Rng.fromSeed(5);
    const { quant, fake } = quantizeAll(m, (r, c) => randomQuantized(rng, r, c, 4, 32));
    const dir = fresh();
    writeGptqExport(dir, m, quant);
    const back = loadModel(dir);
    expect(back.config.ropeLayout).toBe('half');
    expectSameModel(fake, withRopeLayout(back, 'interleaved'));
  });

  it('scales that are not fp16 values are rounded and reported; the reload is the rounded model', () => {
    const m = randomModel({ ...MODELS[2][1], seed: 3 });
    const rng = Rng.fromSeed(6);
    const raw = quantizeAll(m, (r, c) => {
      const qz = randomQuantized(rng, r, c, 4, 32);
      return { ...qz, scale: qz.scale.map((s) => s * (1 + 1e-4)) };
    });
    const dir = fresh();
    const rep = writeGptqExport(dir, m, raw.quant);
    expect(rep.scalesRounded).toBeGreaterThan(0);
    expect(rep.maxScaleRelError).toBeLessThan(2 ** -11);
    const rounded = quantizeAll(m, (() => {
      let k = 0;
      const flat = raw.quant.flatMap((bq) => blockLinears(m.config).map((nm) => bq[nm]!));
      return () => withF16Scales(flat[k++]);
    })());
    expectSameModel(rounded.fake, loadModel(dir));
  });
});

describe('the files', () => {
  const m = randomModel({ ...MODELS[1][1], seed: 2, sharedClassifier: true });
  const rng = Rng.fromSeed(8);
  const { quant, fake } = quantizeAll(m, (r, c) => randomQuantized(rng, r, c, 3, 32));
  const dir = fresh();
  writeGptqExport(dir, m, quant, { baseConfig: { architectures: ['Qwen2ForCausalLM'], pad_token_id: 0, quantization_config: { quant_method: 'awq' } } });

  it('config.json and quantize_config.json declare GPTQ', () => {
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    const qc = { quant_method: 'gptq', bits: 3, group_size: 32, desc_act: false, sym: false, checkpoint_format: 'gptq', lm_head: false };
    expect(cfg).toMatchObject({ architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', pad_token_id: 0, tie_word_embeddings: true, quantization_config: qc });
    expect(JSON.parse(readFileSync(join(dir, 'quantize_config.json'), 'utf8'))).toMatchObject(qc);
  });

  it('tensor names, dtypes and shapes', () => {
    const r = SafetensorsReader.open(dir);
    try {
      expect(r.metadata.format).toBe('pt');
      const M = 'model.layers.1.self_attn.k_proj';
      expect(r.info(`${M}.qweight`)).toMatchObject({ dtype: 'I32', shape: [64 * 3 / 32, 32] });
      expect(r.info(`${M}.qzeros`)).toMatchObject({ dtype: 'I32', shape: [2, 32 * 3 / 32] });
      expect(r.info(`${M}.scales`)).toMatchObject({ dtype: 'F16', shape: [2, 32] });
      expect(r.info(`${M}.g_idx`)).toMatchObject({ dtype: 'I32', shape: [64] });
      expect(Array.from(r.readI32(`${M}.g_idx`))).toEqual(Array.from({ length: 64 }, (_, i) => Math.floor(i / 32)));
      expect(r.info(`${M}.bias`)).toMatchObject({ dtype: 'F32', shape: [32] });
      expect(r.info('model.layers.0.mlp.down_proj.qweight').shape).toEqual([96 * 3 / 32, 64]);
      expect(r.has('model.layers.0.mlp.down_proj.weight')).toBe(false);
      expect(r.has('model.layers.0.self_attn.o_proj.bias')).toBe(false);
      expect(r.has('lm_head.weight')).toBe(false); // tied
      for (const name of ['model.embed_tokens.weight', 'model.norm.weight', 'model.layers.0.input_layernorm.weight']) expect(r.info(name).dtype).toBe('F32');
    } finally {
      r.close();
    }
  });

  it('a checkpoint without g_idx (as older writers leave it) reads the same', () => {
    const r = SafetensorsReader.open(dir);
    const kept: TensorToWrite[] = [];
    try {
      for (const name of r.names()) {
        if (name.endsWith('.g_idx')) continue;
        const info = r.info(name);
        kept.push({ name, dtype: info.dtype, shape: info.shape, data: r.readBytes(name) });
      }
    } finally {
      r.close();
    }
    writeSafetensors(join(dir, 'model.safetensors'), kept, { format: 'pt' });
    expectSameModel(fake, loadModel(dir));
  });
});

describe('what GPTQ loaders cannot take is refused with a clear error', () => {
  const expectConfigError = (f: () => unknown, msg: RegExp) => {
    let err: unknown;
    try {
      f();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvarxError);
    expect((err as Error).message).toMatch(msg);
  };
  const m = randomModel({ ...MODELS[0][1], seed: 1 });
  const rng = Rng.fromSeed(2);
  const codes = (bits: number, group: number) => quantizeAll(m, (r, c) => randomQuantized(rng, r, c, bits, group)).quant;

  it('dimensions not divisible by 32 (the shipped stories260K: hidden 172) without hidden padding', () => {
    const s = shippedModel();
    const quant = quantizeAll(s, (r, c) => randomQuantized(rng, r, c, 4, 4)).quant;
    expectConfigError(
      () => writeGptqExport(fresh(), s, quant, { padHidden: false }),
      /block 0 w1: GPTQ loaders need both dimensions of a packed linear divisible by 32, it is \[172, 64\]/,
    );
  });

  it('ragged last groups, group sizes above some input dimensions, unpackable bit widths, missing codes', () => {
    expectConfigError(() => writeGptqExport(fresh(), m, codes(4, 48)), /block 0 wq: input dimension 64 is not a multiple of group size 48; GPTQ loaders cannot read a ragged last group/);
    expectConfigError(() => writeGptqExport(fresh(), m, codes(4, 64), { padHidden: false }), /block 0 w2: input dimension 96 is not a multiple of group size 64/);
    expectConfigError(() => writeGptqExport(fresh(), m, codes(5, 32)), /5-bit weights cannot be packed/);
    const partial = codes(4, 32);
    delete partial[1].w3;
    expectConfigError(() => writeGptqExport(fresh(), m, partial), /block 1 w3 has no quantized codes/);
  });

  it('one group per row is written as group_size -1', () => {
    const dir = fresh();
    expect(writeGptqExport(dir, m, codes(2, 1000)).groupSize).toBe(-1);
    expect(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).quantization_config.group_size).toBe(-1);
    expect(loadModel(dir).blocks[0].w2.length).toBe(64 * 96);
  });
});

describe('an FFN hidden size the layout cannot hold is padded with zero units, exactly', () => {
  const rtnCodes = (m: Model, bits: number, group: number) => {
    let l = 0;
    const names = blockLinears(m.config);
    return quantizeAll(m, (rows, cols) => {
      const w = m.blocks[Math.floor(l / names.length)][names[l++ % names.length]]!;
      return quantizeRtn(w, rows, cols, { bits, group, clip: true, f16Scales: true });
    });
  };

  it('the shipped stories260K (hidden 172) at 3 and 4 bits, group 32: hidden 192, same logits and perplexity', () => {
    const s = shippedModel();
    const seqs = [[1, 403, 407, 261, 378, 410, 284, 267, 395, 302, 261, 29], [1, 20, 300, 41, 7]];
    for (const bits of [3, 4]) {
      const { quant, fake } = rtnCodes(s, bits, 32);
      const dir = fresh();
      const rep = writeGptqExport(dir, s, quant);
      expect(rep.paddedHidden).toEqual({ from: 172, to: 192 });
      expect(rep.scalesRounded).toBe(0);
      expect(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).intermediate_size).toBe(192);
      const back = withRopeLayout(loadModel(dir), 'interleaved');
      expect(back.config.hiddenDim).toBe(192);
      back.blocks.forEach((b, l) => {
        const f = fake.blocks[l];
        // Real units unchanged, padding units zero in and out.
        for (let j = 0; j < 192; j++) {
          for (let i = 0; i < 64; i++) {
            expect(b.w1[j * 64 + i]).toBe(j < 172 ? f.w1[j * 64 + i] : 0);
            expect(b.w3![j * 64 + i]).toBe(j < 172 ? f.w3![j * 64 + i] : 0);
            expect(b.w2[i * 192 + j]).toBe(j < 172 ? f.w2[i * 172 + j] : 0);
          }
        }
      });
      for (const seq of seqs) expect(forward(back, seq).logits).toEqual(forward(fake, seq).logits);
      expect(perplexity(back, seqs).ppl).toBe(perplexity(fake, seqs).ppl);
    }
  });

  it('opt with a ragged last w2 group (hidden 96, group 64 -> 128)', () => {
    const m = randomModel({ arch: 'opt', dim: 64, hiddenDim: 96, nHeads: 4, nKvHeads: 4, vocabSize: 48, seed: 12 });
    // group 32 divides 96: nothing to pad.
    expect(writeGptqExport(fresh(), m, rtnCodes(m, 4, 32).quant).paddedHidden).toBeUndefined();
    const q64 = rtnCodes(m, 2, 64);
    const dir = fresh();
    expect(writeGptqExport(dir, m, q64.quant).paddedHidden).toEqual({ from: 96, to: 128 });
    const back = loadModel(dir);
    expect(back.config.hiddenDim).toBe(128);
    expect(Array.from(back.blocks[0].b1!.subarray(96))).toEqual(new Array(32).fill(0));
    for (const seq of SEQS) expect(forward(back, seq).logits).toEqual(forward(q64.fake, seq).logits);
  });
});
