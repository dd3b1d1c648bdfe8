/**
 * Quantization formats: our int grid and llama.cpp's block formats, behind one interface
 * (./types.ts). `formatByName` is how commands and the GGUF writer pick one.
 */
import { fail } from '../../errors';
import { Q2_K, Q3_K, Q4_K, Q5_K, Q6_K } from './kquants';
import { Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 } from './legacy';
import type { QuantFormat } from './types';

export type { QuantFormat, UnpackedRow } from './types';
export { dequantizeUnpacked } from './unpacked';
export { intFormat } from './intGrid';
export { Q2_K, Q3_K, Q4_K, Q5_K, Q6_K } from './kquants';
export { Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 } from './legacy';

/** llama.cpp's formats by name (lower case, as llama-quantize spells them in lower case). */
export const GGML_FORMATS: Readonly<Record<string, QuantFormat>> = Object.freeze({
  q4_0: Q4_0, q4_1: Q4_1, q5_0: Q5_0, q5_1: Q5_1, q8_0: Q8_0, q2_k: Q2_K, q3_k: Q3_K, q4_k: Q4_K, q5_k: Q5_K, q6_k: Q6_K,
});

export const GGML_FORMAT_NAMES: readonly string[] = Object.keys(GGML_FORMATS);

/** A ggml format by name (case-insensitive); else InvarxError('bad-config') listing the known ones. */
export function formatByName(name: string): QuantFormat {
  const key = name.toLowerCase();
  const fmt = Object.prototype.hasOwnProperty.call(GGML_FORMATS, key) ? GGML_FORMATS[key] : undefined;
  if (!fmt) fail('bad-config', `unknown quantization format "${name}" (known: ${GGML_FORMAT_NAMES.join(', ')})`);
  return fmt;
}

/** llama-quantize's fallback when a row's length is not a multiple of the k-quants' 256. */
const K_FALLBACK: Readonly<Record<string, QuantFormat>> = { q2_k: Q4_0, q3_k: Q4_0, q4_k: Q5_0, q5_k: Q5_1, q6_k: Q8_0 };

/**
 * The format a row of n weights gets when `fmt` is asked for, as llama-quantize decides:
 * `fmt` when its block divides n, else a k-quant's 32-block fallback when that divides n,
 * else null (f16).
 */
export function formatForRow(fmt: QuantFormat, n: number): QuantFormat | null {
  if (fmt.fitsRow(n)) return fmt;
  const next = K_FALLBACK[fmt.name];
  return next && next.fitsRow(n) ? next : null;
}

export { clippedFormat } from './clip';
export { clippedKFormat, hasKClip } from './kquantClip';
