import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  dequantizeUnpacked, formatByName, GGML_FORMATS, intFormat, type QuantFormat,
} from '../../core/quant/formats';
import { intGridReference } from '../../core/quant/formats/intGrid';
import { f16BitsToF32 } from '../../core/model/halfFloat';
import { InvarxError } from '../../core/errors';
import { Rng } from '../../core/rng';

/**
 * Float64 dequantizers written from ggml's block layouts field by field, independent of the
 * formats' unpack code: d, m, sub-scales and codes read at their byte offsets.
 */
const h = (b: Uint8Array, o: number) => f16BitsToF32(b[o] | (b[o + 1] << 8));
const s8 = (v: number) => (v << 24) >> 24;
function k4(sc: Uint8Array, o: number, j: number): [number, number] {
  return j < 4
    ? [sc[o + j] & 63, sc[o + j + 4] & 63]
    : [(sc[o + j + 4] & 0xf) | ((sc[o + j - 4] >> 6) << 4), (sc[o + j + 4] >> 4) | ((sc[o + j] >> 6) << 4)];
}
const REFERENCE: Record<string, (b: Uint8Array, o: number, y: number[]) => void> = {
  q4_0: (b, o, y) => { for (let j = 0; j < 32; j++) y.push(h(b, o) * (((b[o + 2 + (j % 16)] >> (j < 16 ? 0 : 4)) & 15) - 8)); },
  q4_1: (b, o, y) => { for (let j = 0; j < 32; j++) y.push(h(b, o) * ((b[o + 4 + (j % 16)] >> (j < 16 ? 0 : 4)) & 15) + h(b, o + 2)); },
  q5_0: (b, o, y) => {
    const qh = (b[o + 2] | (b[o + 3] << 8) | (b[o + 4] << 16) | (b[o + 5] << 24)) >>> 0;
    for (let j = 0; j < 32; j++) y.push(h(b, o) * ((((b[o + 6 + (j % 16)] >> (j < 16 ? 0 : 4)) & 15) | (((qh >>> j) & 1) << 4)) - 16));
  },
  q5_1: (b, o, y) => {
    const qh = (b[o + 4] | (b[o + 5] << 8) | (b[o + 6] << 16) | (b[o + 7] << 24)) >>> 0;
    for (let j = 0; j < 32; j++) y.push(h(b, o) * (((b[o + 8 + (j % 16)] >> (j < 16 ? 0 : 4)) & 15) | (((qh >>> j) & 1) << 4)) + h(b, o + 2));
  },
  q8_0: (b, o, y) => { for (let j = 0; j < 32; j++) y.push(h(b, o) * s8(b[o + 2 + j])); },
  q2_k: (b, o, y) => {
    for (let e = 0; e < 256; e++) {
      const sc = b[o + (e >> 4)];
      const q = (b[o + 16 + 32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
      y.push(h(b, o + 80) * (sc & 15) * q - h(b, o + 82) * (sc >> 4));
    }
  },
  q3_k: (b, o, y) => {
    for (let e = 0; e < 256; e++) {
      const j = e >> 4;
      const sc = ((j < 8 ? b[o + 96 + j] & 15 : b[o + 96 + j - 8] >> 4) | (((b[o + 104 + (j % 4)] >> (2 * (j >> 2))) & 3) << 4)) - 32;
      const low = (b[o + 32 + 32 * (e >> 7) + (e & 31)] >> (2 * ((e >> 5) & 3))) & 3;
      const high = (b[o + (e & 31)] >> (e >> 5)) & 1;
      y.push(h(b, o + 108) * sc * (low - (high ? 0 : 4)));
    }
  },
  q4_k: (b, o, y) => {
    for (let e = 0; e < 256; e++) {
      const [sc, m] = k4(b, o + 4, e >> 5);
      const q = (b[o + 16 + 32 * (e >> 6) + (e & 31)] >> ((e & 32) ? 4 : 0)) & 15;
      y.push(h(b, o) * sc * q - h(b, o + 2) * m);
    }
  },
  q5_k: (b, o, y) => {
    for (let e = 0; e < 256; e++) {
      const [sc, m] = k4(b, o + 4, e >> 5);
      const q = ((b[o + 48 + 32 * (e >> 6) + (e & 31)] >> ((e & 32) ? 4 : 0)) & 15) | (((b[o + 16 + (e & 31)] >> (e >> 5)) & 1) << 4);
      y.push(h(b, o) * sc * q - h(b, o + 2) * m);
    }
  },
  q6_k: (b, o, y) => {
    for (let e = 0; e < 256; e++) {
      const half = e >> 7, k = (e >> 5) & 3, l = e & 31;
      const low = (b[o + 64 * half + l + 32 * (k & 1)] >> (k >= 2 ? 4 : 0)) & 15;
      const high = (b[o + 128 + 32 * half + l] >> (2 * k)) & 3;
      y.push(h(b, o + 208) * s8(b[o + 192 + (e >> 4)]) * ((low | (high << 4)) - 32));
    }
  },
};

function referenceDequant(fmt: QuantFormat, bytes: Uint8Array, n: number): number[] {
  const y: number[] = [];
  for (let b = 0; b < n / fmt.blockSize; b++) REFERENCE[fmt.name](bytes, b * fmt.blockBytes, y);
  return y;
}

function gaussianRow(rng: Rng, n: number, std = 1): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = rng.normal() * std;
  return x;
}

const rowArb = (block: number) =>
  fc.integer({ min: 1, max: 3 }).chain((nb) =>
    fc.float32Array({ minLength: nb * block, maxLength: nb * block, noNaN: true, noDefaultInfinity: true, min: -1000, max: 1000 }),
  );

const formats = Object.values(GGML_FORMATS);

describe('ggml formats: sizes', () => {
  it.each([
    ['q4_0', 18, 4.5], ['q4_1', 20, 5], ['q5_0', 22, 5.5], ['q5_1', 24, 6], ['q8_0', 34, 8.5],
    ['q2_k', 84, 2.625], ['q3_k', 110, 3.4375], ['q4_k', 144, 4.5], ['q5_k', 176, 5.5], ['q6_k', 210, 6.5625],
  ])('%s: %i bytes a block, %f bits a weight', (name, bytes, bpw) => {
    const fmt = formatByName(name as string);
    expect(fmt.blockBytes).toBe(bytes);
    expect(fmt.bitsPerWeight).toBe(bpw);
    expect(fmt.quantizeRow(new Float32Array(fmt.blockSize * 2)).length).toBe(2 * (bytes as number));
  });

  it('an unknown format name is one clear error', () => {
    expect(() => formatByName('q4_2')).toThrow(InvarxError);
    expect(() => formatByName('q4_2')).toThrow(/unknown quantization format "q4_2".*q4_0/);
    expect(formatByName('Q4_K').name).toBe('q4_k');
  });

  it('a row that is not a whole number of blocks is refused', () => {
    for (const fmt of formats) {
      expect(fmt.fitsRow(fmt.blockSize + 1)).toBe(false);
      expect(() => fmt.quantizeRow(new Float32Array(fmt.blockSize + 1))).toThrow(RangeError);
    }
  });
});

describe.each(formats.map((f) => [f.name, f] as const))('%s', (_name, fmt) => {
  it('dequantizes as the float64 formula of its byte layout', () => {
    const rng = Rng.fromSeed(7);
    for (const std of [1e-3, 0.05, 3]) {
      const n = fmt.blockSize * 4;
      const x = gaussianRow(rng, n, std);
      const bytes = fmt.quantizeRow(x);
      const got = fmt.dequantizeRow(bytes, n);
      const want = referenceDequant(fmt, bytes, n);
      const scale = Math.max(...want.map(Math.abs));
      for (let i = 0; i < n; i++) expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(scale * 2 ** -20);
    }
  });

  it('random bytes: unpacked and packed dequantize alike and match the formula (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: fmt.blockBytes * 2, maxLength: fmt.blockBytes * 2 }), (raw) => {
        const bytes = raw.slice();
        // Keep the fp16 fields finite: clear the top exponent bit of every fp16 field's high byte.
        for (let b = 0; b < 2; b++) for (const at of f16Fields(fmt.name)) bytes[b * fmt.blockBytes + at + 1] &= 0xbf;
        const n = fmt.blockSize * 2;
        const packed = fmt.dequantizeRow(bytes, n);
        const unpacked = dequantizeUnpacked(fmt.unpackRow(bytes, n));
        const want = referenceDequant(fmt, bytes, n);
        for (let i = 0; i < n; i++) {
          expect(Object.is(packed[i], unpacked[i])).toBe(true);
          expect(Math.abs(packed[i] - want[i])).toBeLessThanOrEqual(Math.abs(want[i]) * 2 ** -22 + 1e-30);
        }
      }),
      { numRuns: 100 },
    );
  });

  it('quantizing is deterministic and every code stays in range (property)', () => {
    fc.assert(
      fc.property(rowArb(fmt.blockSize), (x) => {
        const a = fmt.quantizeRow(x);
        expect(fmt.quantizeRow(x)).toEqual(a);
        const u = fmt.unpackRow(a, x.length);
        const bits = { q4_0: 4, q4_1: 4, q5_0: 5, q5_1: 5, q8_0: 8, q2_k: 2, q3_k: 3, q4_k: 4, q5_k: 5, q6_k: 6 }[fmt.name]!;
        for (const c of u.codes) expect(c).toBeLessThan(2 ** bits);
        for (const v of fmt.dequantizeRow(a, x.length)) expect(Number.isFinite(v)).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it('an all-zero row comes back as zeros', () => {
    const deq = fmt.dequantizeRow(fmt.quantizeRow(new Float32Array(fmt.blockSize)), fmt.blockSize);
    for (const v of deq) expect(v === 0).toBe(true); // ggml gives −0 where d is −0 or negative
  });
});

/** Byte offsets of a block's fp16 fields. */
function f16Fields(name: string): number[] {
  return ({ q4_0: [0], q4_1: [0, 2], q5_0: [0], q5_1: [0, 2], q8_0: [0], q2_k: [80, 82], q3_k: [108], q4_k: [0, 2], q5_k: [0, 2], q6_k: [208] } as Record<string, number[]>)[name];
}

describe('error bounds of the reference quantizers', () => {
  it('blocks of 32: every weight within one step d of its value (q·d grids: half a step, bar the clamped end)', () => {
    fc.assert(
      fc.property(rowArb(32), fc.constantFrom('q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0'), (x, name) => {
        const fmt = formatByName(name);
        const bytes = fmt.quantizeRow(x);
        const u = fmt.unpackRow(bytes, x.length);
        const deq = fmt.dequantizeRow(bytes, x.length);
        for (let i = 0; i < x.length; i++) {
          const d = Math.abs(u.scale[Math.floor(i / 32)]);
          // fp16 rounding of d (relative 2^-11, times at most 31 steps; in fp16's subnormal range
          // absolute, up to 2^-25 times q8_0's 127 steps: a block of tiny weights gets d = 0)
          // and of the min add to the rounding error.
          const slack = d * 32 * 2 ** -10 + Math.abs(x[i]) * 2 ** -10 + 128 * 2 ** -25;
          const step = name.endsWith('_0') && name !== 'q8_0' ? d : d / 2;
          expect(Math.abs(deq[i] - x[i])).toBeLessThanOrEqual(step + slack);
        }
      }),
      // (a counterexample fast-check found: a q8_0 block whose only weight is too small for an fp16 scale)
      { numRuns: 200, examples: [[Float32Array.from({ length: 64 }, (_, i) => (i === 55 ? -0.0000010009775905928109 : 0)), 'q8_0']] },
    );
  });

  it('super-blocks: relative RMS error on Gaussian weights falls with the bits and stays within ggml-like figures', () => {
    const rng = Rng.fromSeed(3);
    const x = gaussianRow(rng, 256 * 64, 0.02);
    const rel: Record<string, number> = {};
    for (const name of ['q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k']) {
      const fmt = formatByName(name);
      const deq = fmt.dequantizeRow(fmt.quantizeRow(x), x.length);
      let se = 0, ss = 0;
      for (let i = 0; i < x.length; i++) {
        se += (deq[i] - x[i]) ** 2;
        ss += x[i] ** 2;
      }
      rel[name] = Math.sqrt(se / ss);
    }
    // A b-bit grid over ±3σ has RMS error ≈ 6σ/2^b/√12; allow about twice that.
    const limit: Record<string, number> = { q2_k: 0.6, q3_k: 0.3, q4_k: 0.14, q5_k: 0.07, q6_k: 0.035 };
    for (const name of Object.keys(limit)) expect(rel[name]).toBeLessThan(limit[name]);
    expect(rel.q2_k).toBeGreaterThan(rel.q3_k);
    expect(rel.q3_k).toBeGreaterThan(rel.q4_k);
    expect(rel.q4_k).toBeGreaterThan(rel.q5_k);
    expect(rel.q5_k).toBeGreaterThan(rel.q6_k);
  });

  it('values already on a q4_0 / q5_0 / q8_0 grid survive a second quantization', () => {
    fc.assert(
      fc.property(rowArb(32), fc.constantFrom('q4_0', 'q5_0', 'q8_0'), (x, name) => {
        const fmt = formatByName(name);
        const once = fmt.dequantizeRow(fmt.quantizeRow(x), x.length);
        const twice = fmt.dequantizeRow(fmt.quantizeRow(once), x.length);
        // Equal as numbers: a block that rounds to all zeros may come back as −0 (ggml's
        // d = max / −8 is −0 for a zero block, and 0 · −0 = −0), which is the same weight.
        for (let i = 0; i < x.length; i++) expect(twice[i] + 0).toBe(once[i] + 0);
      }),
      {
        numRuns: 200,
        // A block whose only non-zero weight is a float32 denormal: its d underflows fp16.
        examples: [[Float32Array.from({ length: 32 }, (_, i) => (i === 31 ? 7.006492321624085e-45 : 0)), 'q4_0']],
      },
    );
  });
});

describe('the int grid as a format', () => {
  it('gives core/quant/rtn.ts numbers exactly, any row length, and unpacks to them', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 8 }), fc.integer({ min: 1, max: 40 }),
        fc.float32Array({ minLength: 1, maxLength: 90, noNaN: true, noDefaultInfinity: true, min: -100, max: 100 }),
        (bits, group, x) => {
          const fmt = intFormat(bits, group);
          const bytes = fmt.quantizeRow(x);
          expect(bytes.length).toBe(fmt.rowBytes(x.length));
          const want = intGridReference(x, bits, group);
          const got = fmt.dequantizeRow(bytes, x.length);
          for (let i = 0; i < x.length; i++) expect(Object.is(got[i], want[i])).toBe(true);
        },
      ),
      { numRuns: 150 },
    );
    expect(intFormat(4, 32).ggmlType).toBeNull();
  });
});
