import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { InvarxError } from '../../core/errors';
import {
  F16_TYPE, F32_TYPE, GgufValueType, alignUp, readGgufHeader, readGgufTensor, tensorTypeByName, toInterleaved, writeGguf, writeLlamaGguf,
  type GgufValue, type GgufTensorToWrite,
} from '../../core/gguf';
import { loadGgufModel } from '../../core/model/gguf';
import { withRopeLayout } from '../../core/model/hf';
import { encodeF16, f16Round } from '../../core/model/halfFloat';
import { randomModel } from '../../core/model/synthetic';
import { loadTokenizer } from '../../core/tokenizer';
import { formatByName } from '../../core/quant/formats';
import { Rng } from '../../core/rng';
import { shippedModel, TOKENIZER_PATH } from '../helpers';

const dir = mkdtempSync(join(tmpdir(), 'invarx-gguf-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function randomRows(seed: number, n: number): Float32Array {
  const rng = Rng.fromSeed(seed);
  return Float32Array.from({ length: n }, () => rng.normal() * 0.1);
}

/** Bad input must fail with one InvarxError('bad-model') naming the file, nothing else. */
function expectBadModel(f: () => unknown, path: string, pattern?: RegExp): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(InvarxError);
  expect((err as InvarxError).code).toBe('bad-model');
  expect((err as InvarxError).message).toContain(path);
  if (pattern) expect((err as InvarxError).message).toMatch(pattern);
}

describe('GGUF writer and reader', () => {
  const path = join(dir, 'small.gguf');
  const names = ['f32', 'f16', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k'];
  const values = names.map((n, i) => randomRows(i + 1, (n.endsWith('_k') ? 256 : 64) * 3));
  const produced: string[] = [];
  const tensors: GgufTensorToWrite[] = names.map((n, i) => {
    const type = tensorTypeByName(n)!;
    const cols = n.endsWith('_k') ? 256 : 64;
    return {
      name: `t.${n}`,
      dims: [cols, 3],
      type,
      data: () => {
        produced.push(n);
        if (type === F32_TYPE) return new Uint8Array(values[i].buffer.slice(0));
        if (type === F16_TYPE) return new Uint8Array(encodeF16(values[i]).buffer);
        const fmt = type.format!;
        return [0, 1, 2].map((r) => fmt.quantizeRow(values[i].subarray(r * cols, (r + 1) * cols))); // row by row
      },
    };
  });
  const metadata: [string, GgufValue][] = [
    ['general.architecture', { type: GgufValueType.STRING, value: 'test' }],
    ['u8', { type: GgufValueType.UINT8, value: 200 }],
    ['i32', { type: GgufValueType.INT32, value: -7 }],
    ['f32', { type: GgufValueType.FLOAT32, value: 0.5 }],
    ['flag', { type: GgufValueType.BOOL, value: true }],
    ['u64', { type: GgufValueType.UINT64, value: 2n ** 40n }],
    ['words', { type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, value: ['a', '▁b', ''] }],
    ['ints', { type: GgufValueType.ARRAY, itemType: GgufValueType.INT32, value: [1, -2, 3] }],
  ];
  const size = writeGguf(path, metadata, tensors);

  it('produces each tensor once, in order, when its turn comes', () => {
    expect(produced).toEqual(names);
    expect(readFileSync(path).length).toBe(size);
  });

  it('reads back metadata, tensor infos at 32-byte aligned offsets, and the exact dequantized values', () => {
    const file = readGgufHeader(path);
    expect(file.version).toBe(3);
    expect(file.dataOffset % 32).toBe(0);
    expect(file.metadata.get('u8')!.value).toBe(200);
    expect(file.metadata.get('i32')!.value).toBe(-7);
    expect(file.metadata.get('f32')!.value).toBe(0.5);
    expect(file.metadata.get('flag')!.value).toBe(true);
    expect(file.metadata.get('u64')!.value).toBe(2n ** 40n);
    expect(file.metadata.get('words')!.value).toEqual(['a', '▁b', '']);
    expect(file.metadata.get('ints')!.value).toEqual([1, -2, 3]);
    let expectOffset = 0;
    names.forEach((n, i) => {
      const info = file.tensors[i];
      expect(info.name).toBe(`t.${n}`);
      expect(info.offset).toBe(expectOffset);
      const type = tensorTypeByName(n)!;
      const cols = info.dims[0];
      expectOffset = alignUp(expectOffset + (cols / type.blockSize) * type.blockBytes * 3, 32);
      const got = readGgufTensor(file, `t.${n}`);
      const want = type === F32_TYPE ? values[i] : type === F16_TYPE ? values[i].map(f16Round) : dequantRows(n, values[i], cols);
      expect(Array.from(got)).toEqual(Array.from(want));
    });
  });

  it('a truncated file is one bad-model error naming it, at every length (property)', () => {
    const bytes = readFileSync(path);
    const cut = join(dir, 'cut.gguf');
    // Only the padding after the last tensor may go missing (llama.cpp does not need it either).
    const file = readGgufHeader(path);
    const last = file.tensors[file.tensors.length - 1];
    const end = file.dataOffset + last.offset + (256 / 256) * 210 * 3;
    expect(last.name).toBe('t.q6_k');
    fc.assert(
      fc.property(fc.integer({ min: 0, max: end - 1 }), (n) => {
        writeFileSync(cut, bytes.subarray(0, n));
        expectBadModel(() => {
          const file = readGgufHeader(cut);
          for (const t of file.tensors) readGgufTensor(file, t.name);
        }, cut);
      }),
      { numRuns: 150 },
    );
  });

  it('malformed headers: bad magic, huge counts, bad dims, unknown tensor type, non-power-of-two alignment', () => {
    const bytes = readFileSync(path);
    const bad = join(dir, 'bad.gguf');
    const patch = (at: number, f: (dv: DataView) => void) => {
      const b = Uint8Array.from(bytes);
      f(new DataView(b.buffer, at));
      writeFileSync(bad, b);
    };
    patch(0, (dv) => dv.setUint32(0, 0x12345678, true));
    expectBadModel(() => readGgufHeader(bad), bad, /not a GGUF file/);
    patch(4, (dv) => dv.setUint32(0, 9, true));
    expectBadModel(() => readGgufHeader(bad), bad, /version 9/);
    patch(8, (dv) => dv.setBigUint64(0, 2n ** 50n, true));
    expectBadModel(() => readGgufHeader(bad), bad, /cannot fit/);
    patch(16, (dv) => dv.setBigUint64(0, 2n ** 63n, true));
    expectBadModel(() => readGgufHeader(bad), bad, /malformed GGUF/);
    // The first tensor info's type (after its name, dims count and two dims).
    const file = readGgufHeader(path);
    const typeAt = findTensorTypeOffset(bytes, 't.f32');
    patch(typeAt, (dv) => dv.setUint32(0, 16, true)); // iq2_xxs: a type we do not read
    const f2 = readGgufHeader(bad);
    expectBadModel(() => readGgufTensor(f2, 't.f32'), bad, /ggml type 16/);
    patch(findTensorTypeOffset(bytes, 't.q4_0') - 16, (dv) => dv.setBigUint64(0, 63n, true));
    expectBadModel(() => readGgufHeader(bad), bad, /rows of 63, not a multiple of 32/);
    patch(typeAt - 8, (dv) => dv.setBigUint64(0, 1000000n, true)); // a million rows: data past the end of the file
    expectBadModel(() => readGgufHeader(bad), bad, /ends past the file/);
    expect(file.tensors.length).toBe(names.length);
    const emptyPath = join(dir, 'empty.gguf');
    writeFileSync(emptyPath, new Uint8Array(0));
    expectBadModel(() => loadGgufModel(emptyPath), emptyPath, /not a GGUF file|truncated/);
    expectBadModel(() => loadGgufModel(join(dir, 'missing.gguf')), join(dir, 'missing.gguf'));
  });
});


function dequantRows(name: string, v: Float32Array, cols: number): Float32Array {
  const fmt = formatByName(name);
  const out = new Float32Array(v.length);
  for (let r = 0; r < v.length / cols; r++) {
    fmt.dequantizeRow(fmt.quantizeRow(v.subarray(r * cols, (r + 1) * cols)), cols, out.subarray(r * cols, (r + 1) * cols));
  }
  return out;
}

/** Byte offset of the type field in the tensor info of `name`. */
function findTensorTypeOffset(bytes: Buffer, name: string): number {
  const key = Buffer.from(name);
  const at = bytes.indexOf(key);
  // name, u32 n_dims (2), u64 ne0, u64 ne1, then u32 type
  return at + key.length + 4 + 16;
}

describe('llama models as GGUF', () => {
  const tok = loadTokenizer(TOKENIZER_PATH, 512);

  it('stories260K in f32 reads back bit for bit; tied classifier omitted; metadata as llama.cpp expects', () => {
    const m = shippedModel();
    const path = join(dir, 's260k-f32.gguf');
    const rep = writeLlamaGguf(m, tok, path, { format: 'f32' });
    expect(rep.fallbacks).toEqual([]);
    expect(rep.tensors.some((t) => t.name === 'output.weight')).toBe(false);
    const file = readGgufHeader(path);
    const md = (k: string) => file.metadata.get(k)!.value;
    expect(md('general.architecture')).toBe('llama');
    expect(md('llama.embedding_length')).toBe(64);
    expect(md('llama.feed_forward_length')).toBe(172);
    expect(md('llama.attention.head_count')).toBe(8);
    expect(md('llama.attention.head_count_kv')).toBe(4);
    expect(md('llama.rope.dimension_count')).toBe(8);
    expect(md('tokenizer.ggml.model')).toBe('llama');
    const tokens = md('tokenizer.ggml.tokens') as string[];
    const types = md('tokenizer.ggml.token_type') as number[];
    expect(tokens.slice(0, 3)).toEqual(['<unk>', '<s>', '</s>']);
    expect(types.slice(0, 3)).toEqual([2, 3, 3]);
    expect(tokens[3 + 0x0a]).toBe('<0x0A>');
    expect(types[3 + 0x0a]).toBe(6);
    const spaced = tokens.findIndex((t, i) => types[i] === 1 && t.startsWith('▁'));
    expect(spaced).toBeGreaterThan(0);
    expect(Buffer.from(tok.piece(spaced)).toString('utf8')).toBe(tokens[spaced].replaceAll('▁', ' '));
    const back = loadGgufModel(path);
    const streamed = loadGgufModel(path, { stream: true });
    for (let l = 0; l < m.config.nLayers; l++) expect({ ...streamed.blocks[l] }).toEqual({ ...back.blocks[l] });
    // The RMS epsilon is a float32 in GGUF.
    expect(back.config.normEps).toBe(Math.fround(m.config.normEps));
    expect({ ...back.config, normEps: m.config.normEps }).toEqual(m.config);
    expect(back.embedding).toEqual(m.embedding);
    expect(back.classifier).toBe(back.embedding);
    m.blocks.forEach((b, l) => {
      for (const k of ['attnNorm', 'ffnNorm', 'wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as const) expect(back.blocks[l][k]).toEqual(b[k]);
    });
  });

  it('q4_0 on stories260K: the FFN down projection (rows of 172) falls back to f16, and is reported', () => {
    const path = join(dir, 's260k-q4_0.gguf');
    const rep = writeLlamaGguf(shippedModel(), tok, path, { format: 'q4_0', embed: 'f16' });
    expect(rep.fallbacks.map((f) => f.tensor)).toEqual([0, 1, 2, 3, 4].map((l) => `blk.${l}.ffn_down.weight`));
    expect(rep.fallbacks.every((f) => f.used === 'f16' && f.rowLength === 172)).toBe(true);
    expect(readGgufHeader(path).tensors.find((t) => t.name === 'token_embd.weight')!.type).toBe(1);
  });

  it('k-quant fallbacks follow llama-quantize: q4_k → q5_0 where 32 divides the row, else f16', () => {
    const path = join(dir, 's260k-q4_k.gguf');
    const rep = writeLlamaGguf(shippedModel(), tok, path, { format: 'q4_k' });
    const used = new Map(rep.fallbacks.map((f) => [f.tensor, f.used]));
    expect(used.get('blk.0.attn_q.weight')).toBe('q5_0');
    expect(used.get('blk.0.ffn_down.weight')).toBe('f16');
    expect(rep.fallbacks.length).toBe(5 * 7);
  });

  it("HF's half RoPE layout is written interleaved and read back interleaved; a separate classifier is written", () => {
    const m = withRopeLayout(randomModel({ dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 512, seqLen: 64, sharedClassifier: false }, 5), 'half');
    expect(m.config.ropeLayout).toBe('half');
    const path = join(dir, 'half.gguf');
    const rep = writeLlamaGguf(m, tok, path, { format: 'f32' });
    expect(rep.tensors.some((t) => t.name === 'output.weight')).toBe(true);
    const back = loadGgufModel(path);
    const want = withRopeLayout(m, 'interleaved');
    expect(back.config.ropeLayout).toBe('interleaved');
    expect(back.classifier).toEqual(m.classifier);
    for (let l = 0; l < 2; l++) {
      expect(back.blocks[l].wq).toEqual(want.blocks[l].wq);
      expect(back.blocks[l].wk).toEqual(want.blocks[l].wk);
      expect(back.blocks[l].wv).toEqual(m.blocks[l].wv);
    }
  });

  it('a model/tokenizer vocabulary mismatch and an unknown format are clear errors', () => {
    const m = randomModel({ dim: 64, hiddenDim: 128, nLayers: 1, nHeads: 4, nKvHeads: 4, vocabSize: 100, seqLen: 64, sharedClassifier: true }, 1);
    expect(() => writeLlamaGguf(m, tok, join(dir, 'x.gguf'), { format: 'q4_0' })).toThrow(/512 pieces.*100/);
    expect(() => writeLlamaGguf(shippedModel(), tok, join(dir, 'x.gguf'), { format: 'q4_2' })).toThrow(InvarxError);
  });
});

describe('toInterleaved on packed rows', () => {
  it('permutes packed rows as it permutes their float rows (what the GPTQ export of a half-RoPE model writes)', () => {
    const heads = 2, headDim = 8, cols = 64;
    const fmt = formatByName('q4_0');
    const w = randomRows(41, heads * headDim * cols);
    const rb = fmt.rowBytes(cols);
    const packed = new Uint8Array(heads * headDim * rb);
    for (let r = 0; r < heads * headDim; r++) fmt.quantizeRow(w.subarray(r * cols, (r + 1) * cols), packed.subarray(r * rb, (r + 1) * rb));
    const deq = (bytes: Uint8Array) => {
      const out = new Float32Array(heads * headDim * cols);
      for (let r = 0; r < heads * headDim; r++) fmt.dequantizeRow(bytes.subarray(r * rb, (r + 1) * rb), cols, out.subarray(r * cols, (r + 1) * cols));
      return out;
    };
    const moved = toInterleaved(packed, heads, headDim, rb);
    expect(moved).toBeInstanceOf(Uint8Array);
    expect(deq(moved)).toEqual(toInterleaved(deq(packed), heads, headDim, cols));
    expect(deq(moved)).not.toEqual(deq(packed));
  });
});
