import { describe, expect, it } from 'vitest';
import { COLLECT_FROM_BLOCK_BYTES, collectGarbage } from '../../core/memory';
import { syntheticConfig } from '../../core/model/synthetic';
import { blockWeightBytes } from '../../core/model/types';

/** `mb` MB of typed arrays. */
function arrays(mb: number): Float32Array[] {
  return Array.from({ length: mb / 16 }, () => new Float32Array(4 * 2 ** 20).fill(1));
}

describe('collecting garbage at block boundaries', () => {
  it('collectGarbage frees typed arrays that became unreachable, at once', () => {
    collectGarbage();
    const before = process.memoryUsage().arrayBuffers;
    // reachable while they are counted (a collection V8 starts on its own must not free them first)
    let xs: Float32Array[] | null = arrays(256);
    const made = xs.reduce((n, x) => n + x.byteLength, 0);
    expect(process.memoryUsage().arrayBuffers - before).toBeGreaterThanOrEqual(made * 0.9);
    xs = null;
    collectGarbage();
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(made * 0.1);
  });

  it('blockWeightBytes is a block\'s linears in float32 (the 1B shape: 176,160,768 bytes); blocks are big enough to collect for from the 110M shape up', () => {
    // 1B: wq and wo 2048 × 2048, wk and wv 256 × 2048, w1 w2 w3 5632 × 2048
    expect(blockWeightBytes(syntheticConfig('1b'))).toBe(4 * (2 * 2048 * 2048 + 2 * 256 * 2048 + 3 * 5632 * 2048));
    // 260K (dim 64, FFN 172, 8 heads of 8, 4 KV heads)
    expect(blockWeightBytes(syntheticConfig('260k'))).toBe(4 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 172 * 64));
    for (const shape of ['260k', '15m', '110m', '1b', '7b']) {
      expect(blockWeightBytes(syntheticConfig(shape)) >= COLLECT_FROM_BLOCK_BYTES).toBe(shape === '110m' || shape === '1b' || shape === '7b');
    }
  });
});
