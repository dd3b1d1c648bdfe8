/**
 * safetensors reader and writer: exact bytes of the writer, round trips of every dtype
 * (single file and sharded), and hostile input — every truncation of a valid file, targeted
 * header corruptions, and fast-check fuzzing of header bytes and header JSON — rejected with
 * an InvarxError('bad-model'), never a crash or a hang.
 */
import fc from 'fast-check';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import { type Dtype, dtypeSize, INDEX_FILE, parseSafetensorsHeader, SafetensorsReader } from '../../core/model/safetensors';
import { type TensorToWrite, writeSafetensors, writeSafetensorsCheckpoint } from '../../core/model/safetensorsWrite';

const tmp = mkdtempSync(join(tmpdir(), 'invarx-st-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = (ext = '.safetensors') => join(tmp, `f${n++}${ext}`);

function badModel(f: () => unknown): InvarxError {
  try {
    f();
  } catch (e) {
    if (e instanceof InvarxError && e.code === 'bad-model') return e;
    throw e;
  }
  throw new Error('expected an InvarxError(bad-model), nothing was thrown');
}

/** A file from raw parts: header JSON text (padded as given) and a data region. */
function rawFile(header: string, data: Uint8Array = new Uint8Array(0), lenOverride?: bigint): Uint8Array {
  const h = Buffer.from(header, 'utf8');
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, lenOverride ?? BigInt(h.byteLength), true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}

function parseBytes(bytes: Uint8Array) {
  return parseSafetensorsHeader(bytes, bytes.byteLength, 'x');
}

const SAMPLE: TensorToWrite[] = [
  { name: 'w', dtype: 'F16', shape: [2, 3], data: Float32Array.from([1, -2, 0.5, 65504, 1e-7, -0]) },
  { name: 'b', dtype: 'F32', shape: [3], data: Float32Array.from([0.1, 2, 3]) },
  { name: 'ids', dtype: 'I32', shape: [2], data: Int32Array.from([7, -1]) },
  { name: 'bf', dtype: 'BF16', shape: [1, 2], data: Float32Array.from([1, 3.140625]) },
];

describe('writer', () => {
  it('writes the exact bytes of the format, independent of input order', () => {
    const p1 = fresh();
    const p2 = fresh();
    writeSafetensors(p1, SAMPLE, { format: 'pt' });
    writeSafetensors(p2, [...SAMPLE].reverse(), { format: 'pt' });
    const a = readFileSync(p1);
    expect(readFileSync(p2).equals(a)).toBe(true);
    const hlen = Number(a.readBigUInt64LE(0));
    expect(hlen % 8).toBe(0);
    const header = a.subarray(8, 8 + hlen).toString('utf8');
    // 4-byte elements first, then 2-byte, each group by name; compact JSON padded with spaces.
    const expected =
      '{"__metadata__":{"format":"pt"},' +
      '"b":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},' +
      '"ids":{"dtype":"I32","shape":[2],"data_offsets":[12,20]},' +
      '"bf":{"dtype":"BF16","shape":[1,2],"data_offsets":[20,24]},' +
      '"w":{"dtype":"F16","shape":[2,3],"data_offsets":[24,36]}}';
    expect(header.trimEnd()).toBe(expected);
    expect(header.slice(expected.length)).toMatch(/^ *$/);
    const data = a.subarray(8 + hlen);
    expect(data.byteLength).toBe(36);
    expect(Array.from(new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + 12)))).toEqual(Array.from(Float32Array.from([0.1, 2, 3])));
    expect(Array.from(new Uint16Array(data.buffer.slice(data.byteOffset + 20, data.byteOffset + 36)))).toEqual([
      0x3f80, 0x4049, 0x3c00, 0xc000, 0x3800, 0x7bff, 0x0002, 0x8000,
    ]);
  });

  it('refuses duplicate names, wrong sizes, unconvertible data', () => {
    const e = (ts: TensorToWrite[]) => expect(() => writeSafetensors(fresh(), ts)).toThrow(InvarxError);
    e([SAMPLE[0], SAMPLE[0]]);
    e([{ name: 'x', dtype: 'F32', shape: [4], data: new Float32Array(3) }]);
    e([{ name: 'x', dtype: 'I32', shape: [2], data: new Float32Array(2) }]);
    e([{ name: '__metadata__', dtype: 'F32', shape: [1], data: new Float32Array(1) }]);
  });
});

describe('reader', () => {
  it('round-trips every dtype, scalars and empty tensors', () => {
    const p = fresh();
    const vals = Float32Array.from([0, 1, -1.5, 0.25, 3, -7]);
    const ts: TensorToWrite[] = [
      ...(['F32', 'F16', 'BF16', 'F64'] as Dtype[]).map((dtype) => ({ name: `f.${dtype}`, dtype, shape: [2, 3], data: vals })),
      { name: 'i32', dtype: 'I32', shape: [3], data: Int32Array.from([-5, 0, 2147483647]) },
      { name: 'i64', dtype: 'I64', shape: [2], data: BigInt64Array.from([-3n, 1n << 20n]) },
      { name: 'big', dtype: 'I64', shape: [1], data: BigInt64Array.from([1n << 40n]) },
      { name: 'u8', dtype: 'U8', shape: [3], data: Uint8Array.from([0, 200, 255]) },
      { name: 'scalar', dtype: 'F32', shape: [], data: Float32Array.from([42]) },
      { name: 'empty', dtype: 'F16', shape: [0, 5], data: new Float32Array(0) },
      { name: '__proto__', dtype: 'F32', shape: [1], data: Float32Array.from([9]) },
    ];
    writeSafetensors(p, ts, { format: 'pt', note: 'hi' });
    const r = SafetensorsReader.open(p);
    try {
      expect({ ...r.metadata }).toEqual({ format: 'pt', note: 'hi' });
      expect(r.names().sort()).toEqual(ts.map((t) => t.name).sort());
      for (const dtype of ['F32', 'F16', 'BF16', 'F64']) expect(r.readF32(`f.${dtype}`, [2, 3])).toEqual(vals);
      expect(Array.from(r.readI32('i32'))).toEqual([-5, 0, 2147483647]);
      expect(Array.from(r.readI32('i64'))).toEqual([-3, 1 << 20]);
      expect(Array.from(r.readI32('u8'))).toEqual([0, 200, 255]);
      expect(Array.from(r.readF32('scalar', []))).toEqual([42]);
      expect(r.readF32('empty', [0, 5]).length).toBe(0);
      expect(Array.from(r.readF32('__proto__'))).toEqual([9]);
      expect(r.info('f.BF16')).toMatchObject({ dtype: 'BF16', shape: [2, 3] });
      expect(badModel(() => r.readI32('big')).message).toMatch(/does not fit in int32/);
      expect(badModel(() => r.readF32('i32')).message).toMatch(/is I32, expected a floating-point tensor/);
      expect(badModel(() => r.readF32('f.F32', [3, 2])).message).toMatch(/has shape \[2, 3\], expected \[3, 2\]/);
      expect(badModel(() => r.readF32('nope')).message).toMatch(/tensor "nope" is missing/);
    } finally {
      r.close();
    }
  });

  it('converts 16-bit tensors larger than one chunk', () => {
    const p = fresh();
    const N = (1 << 20) + 123;
    const v = new Float32Array(N);
    for (let i = 0; i < N; i++) v[i] = (i % 251) - 125; // exact in fp16 and bf16
    writeSafetensors(p, [{ name: 'h', dtype: 'F16', shape: [N], data: v }, { name: 'g', dtype: 'BF16', shape: [N], data: v }]);
    const r = SafetensorsReader.open(p);
    try {
      // (a plain loop: deep equality of a million elements is slow)
      for (const name of ['h', 'g']) {
        const got = r.readF32(name);
        let same = got.length === N;
        for (let i = 0; same && i < N; i++) same = got[i] === v[i];
        expect(same).toBe(true);
      }
    } finally {
      r.close();
    }
  });

  it('reads sharded checkpoints through the index, and rejects a tensor in two shards', () => {
    const dir = join(tmp, `sharded${n++}`);
    const ts: TensorToWrite[] = Array.from({ length: 10 }, (_, i) => ({ name: `t${i}`, dtype: 'F32', shape: [25], data: new Float32Array(25).fill(i) }));
    mkdirSync(dir);
    const files = writeSafetensorsCheckpoint(dir, ts, { maxShardBytes: 250 });
    expect(files).toEqual([...[1, 2, 3, 4, 5].map((k) => `model-0000${k}-of-00005.safetensors`), INDEX_FILE]);
    const index = JSON.parse(readFileSync(join(dir, INDEX_FILE), 'utf8'));
    expect(index.metadata.total_size).toBe(1000);
    for (const path of [dir, join(dir, INDEX_FILE)]) {
      const r = SafetensorsReader.open(path);
      try {
        for (let i = 0; i < 10; i++) expect(r.readF32(`t${i}`)[24]).toBe(i);
      } finally {
        r.close();
      }
    }
    writeSafetensors(join(dir, 'model-00002-of-00005.safetensors'), [ts[0]]);
    expect(badModel(() => SafetensorsReader.open(dir)).message).toMatch(/tensor "t0" appears in both/);
  });
});

describe('hostile and broken files', () => {
  const good = (() => {
    const p = fresh();
    writeSafetensors(p, SAMPLE, { format: 'pt' });
    return new Uint8Array(readFileSync(p));
  })();

  it('every truncation of a valid file is rejected', () => {
    for (let len = 0; len < good.byteLength; len++) {
      const p = fresh();
      writeFileSync(p, good.subarray(0, len));
      const err = badModel(() => {
        const r = SafetensorsReader.open(p);
        r.close();
      });
      expect(err.message).toContain(p);
    }
  });

  it('each kind of header corruption gets a clear message', () => {
    const data = new Uint8Array(16);
    const t = (dtype: string, shape: unknown, off: unknown) => JSON.stringify({ dtype, shape, data_offsets: off });
    const cases: [Uint8Array, RegExp][] = [
      [new Uint8Array(5), /too short for the 8-byte header length/],
      [rawFile('{}', data, 1n << 62n), /header length \d+ points beyond the end of the file/],
      [rawFile('{}', data, 0xffffffffffffffffn), /points beyond the end/],
      [rawFile('{"a": [1, 2', data), /header is not JSON/],
      [rawFile('[1, 2, 3]', data), /not a JSON object/],
      [rawFile(`{"a":${t('F32', [4], [0, 20])}}`, data), /outside the 16-byte data region/],
      [rawFile(`{"a":${t('F32', [2], [0, 8])},"b":${t('F32', [2], [4, 12])}}`, data), /tensors "a" and "b" overlap/],
      [rawFile(`{"a":${t('F32', [3], [0, 8])}}`, data), /holds 8 bytes but shape \[3\] of F32 needs 12/],
      [rawFile(`{"a":${t('Q4_K', [2], [0, 8])}}`, data), /unknown dtype "Q4_K"/],
      [rawFile(`{"a":${t('F32', [2], [0, 8])},"a":${t('F32', [2], [8, 16])}}`, data), /tensor "a" appears twice/],
      [rawFile(`{"a":${t('F32', [-2], [0, 8])}}`, data), /invalid shape/],
      [rawFile(`{"a":${t('F32', [2], [8, 0])}}`, data), /invalid data_offsets/],
      [rawFile(`{"a":${t('F32', [2 ** 40, 2 ** 40], [0, 8])}}`, data), /invalid shape/],
      [rawFile('{"__metadata__":{"k":1}}', data), /__metadata__ value "k" is not a string/],
      [rawFile('{"a":3}', data), /entry "a" is not an object/],
      [rawFile('\u00ff{}', data), /not JSON/],
    ];
    const bad = new Uint8Array(rawFile('{"a":1}'));
    bad[9] = 0xff;
    cases.push([bad, /not UTF-8/]);
    for (const [bytes, msg] of cases) {
      expect(badModel(() => parseBytes(bytes)).message).toMatch(msg);
      const p = fresh();
      writeFileSync(p, bytes);
      expect(badModel(() => SafetensorsReader.open(p).close()).message).toMatch(msg);
    }
    // Gaps between tensors and unreferenced trailing bytes are harmless and accepted.
    expect(parseBytes(rawFile(`{"a":${t('F32', [1], [4, 8])}}`, data)).tensors[0]).toMatchObject({ begin: 4, end: 8 });
  });

  /** What must hold of any header that parses. */
  function sane(h: ReturnType<typeof parseBytes>, fileSize: number): boolean {
    const dataLen = fileSize - h.dataStart;
    const ranges = h.tensors.map((t) => [t.begin, t.end] as const).filter(([b, e]) => e > b).sort((x, y) => x[0] - y[0]);
    return (
      h.tensors.every((t) => t.end <= dataLen && t.end - t.begin === t.shape.reduce((a, b) => a * b, 1) * dtypeSize(t.dtype)) &&
      ranges.every((r, i) => i === 0 || r[0] >= ranges[i - 1][1])
    );
  }

  function parsesSanelyOrRejects(bytes: Uint8Array): boolean {
    try {
      return sane(parseBytes(bytes), bytes.byteLength);
    } catch (e) {
      if (e instanceof InvarxError && e.code === 'bad-model') return true;
      throw e;
    }
  }

  it('fuzz: random byte edits of a valid header', () => {
    const hlen = 8 + Number(new DataView(good.buffer, good.byteOffset).getBigUint64(0, true));
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(hlen - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), fc.nat(good.byteLength), (edits, cut) => {
        const b = good.slice(0, Math.max(cut, 8));
        for (const [i, v] of edits) if (i < b.length) b[i] = v;
        return parsesSanelyOrRejects(b);
      }),
      { numRuns: 3000 },
    );
  });

  it('fuzz: random header lengths', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (len) => {
        const b = good.slice();
        new DataView(b.buffer).setBigUint64(0, len, true);
        return parsesSanelyOrRejects(b);
      }),
      { numRuns: 1000 },
    );
  });

  it('fuzz: structured headers with hostile fields', () => {
    const dtype = fc.oneof(fc.constantFrom('F32', 'F16', 'BF16', 'I64', 'U8', 'BOOL'), fc.string());
    const dimArb = fc.oneof(fc.nat(6), fc.integer({ min: -3, max: 2 ** 53 }), fc.double(), fc.constant('3' as unknown as number));
    const entry = fc.oneof(
      fc.record({ dtype, shape: fc.array(dimArb, { maxLength: 3 }), data_offsets: fc.tuple(fc.nat(80), fc.nat(80)) }),
      fc.record({ dtype, shape: fc.anything(), data_offsets: fc.anything() }),
      fc.anything(),
    );
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 4 }), entry, { maxKeys: 6 }), fc.nat(64), fc.nat(7), (obj, dataLen, pad) => {
        const b = rawFile(JSON.stringify(obj) + ' '.repeat(pad), new Uint8Array(dataLen));
        return parsesSanelyOrRejects(b);
      }),
      { numRuns: 3000 },
    );
  });

  it('fuzz: mutated files never crash the file reader', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(good.byteLength - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (edits) => {
        const b = good.slice();
        for (const [i, v] of edits) b[i] = v;
        const p = fresh();
        writeFileSync(p, b);
        try {
          const r = SafetensorsReader.open(p);
          try {
            for (const name of r.names()) {
              const dt = r.info(name).dtype;
              if (dt === 'F32' || dt === 'F16' || dt === 'BF16' || dt === 'F64') r.readF32(name);
              else r.readBytes(name);
            }
          } finally {
            r.close();
          }
        } catch (e) {
          if (!(e instanceof InvarxError)) throw e;
        }
        return true;
      }),
      { numRuns: 200 },
    );
  });
});
