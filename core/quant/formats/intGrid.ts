/**
 * Today's grid (./../rtn.ts) as a format: asymmetric b-bit codes with an integer zero point
 * and a float32 scale per group of G columns, the last group of a row possibly shorter.
 * GGUF cannot hold it; its packed row is our own layout, per group: float32 scale
 * (little-endian), uint8 zero, then one byte per code.
 */
import { dequantize, numGroups, quantizeRtn, validateSpec, type QuantSpec } from '../rtn';
import type { QuantFormat } from './types';
import { dequantizeUnpacked, newUnpacked } from './unpacked';

export function intFormat(bits: number, group: number, f16Scales = false): QuantFormat {
  const spec: QuantSpec = { bits, group, f16Scales };
  validateSpec(spec, group);
  const rowBytes = (n: number) => numGroups(n, group) * 5 + n;
  const fmt: QuantFormat = {
    name: 'int',
    ggmlType: null,
    blockSize: group,
    blockBytes: 5 + group,
    groupSize: group,
    codeBits: bits,
    bitsPerWeight: bits + (f16Scales ? 16 + bits : 32 + 8) / group,
    rowBytes,
    fitsRow: (n) => Number.isInteger(n) && n > 0,
    quantizeRow(x, out) {
      const n = x.length;
      const qz = quantizeRtn(x, 1, n, spec);
      const y = out ?? new Uint8Array(rowBytes(n));
      const dv = new DataView(y.buffer, y.byteOffset, y.byteLength);
      let o = 0;
      for (let g = 0; g < qz.scale.length; g++) {
        const len = Math.min(group, n - g * group);
        dv.setFloat32(o, qz.scale[g], true);
        y[o + 4] = qz.zero[g];
        y.set(qz.q.subarray(g * group, g * group + len), o + 5);
        o += 5 + len;
      }
      return y;
    },
    unpackRow(bytes, n) {
      if (bytes.length < rowBytes(n)) throw new RangeError(`int grid: a row of ${n} needs ${rowBytes(n)} bytes, got ${bytes.length}`);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const u = newUnpacked(n, group, false);
      let o = 0;
      for (let g = 0; g < u.scale.length; g++) {
        const len = Math.min(group, n - g * group);
        u.scale[g] = dv.getFloat32(o, true);
        u.zero[g] = bytes[o + 4];
        u.codes.set(bytes.subarray(o + 5, o + 5 + len), g * group);
        o += 5 + len;
      }
      return u;
    },
    dequantizeRow(bytes, n, out) {
      return dequantizeUnpacked(fmt.unpackRow(bytes, n), out);
    },
  };
  return fmt;
}

/** The int grid's values exactly as core/quant/rtn.ts computes them (for checking the wrapper). */
export function intGridReference(x: Float32Array, bits: number, group: number): Float32Array {
  return dequantize(quantizeRtn(x, 1, x.length, { bits, group }));
}
