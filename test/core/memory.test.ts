import { describe, expect, it } from 'vitest';
import { COLLECT_FROM_BLOCK_BYTES, collectGarbage, oneBlockBytes } from '../../core/memory';
import { syntheticConfig } from '../../core/model/synthetic';
import { blockLinears, linearShape } from '../../core/model/types';

/** Allocates and drops `mb` MB of typed arrays; returns how many bytes it allocated. */
function garbage(mb: number): number {
  const xs = Array.from({ length: mb / 16 }, () => new Float32Array(4 * 2 ** 20).fill(1));
  return xs.reduce((n, x) => n + x.byteLength, 0);
}

describe('collecting garbage at block boundaries', () => {
  it('collectGarbage frees typed arrays that became unreachable, at once', () => {
    collectGarbage();
    const before = process.memoryUsage().arrayBuffers;
    const made = garbage(256);
    expect(process.memoryUsage().arrayBuffers - before).toBeGreaterThanOrEqual(made * 0.9);
    collectGarbage();
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(made * 0.1);
  });

  it('oneBlockBytes is the float32 bytes of a block\'s linears; blocks are big enough to collect for from the 110M shape up', () => {
    for (const shape of ['260k', '15m', '110m', '1b', '7b']) {
      const cfg = syntheticConfig(shape);
      const bytes = blockLinears(cfg).reduce((n, name) => n + 4 * linearShape(cfg, name)[0] * linearShape(cfg, name)[1], 0);
      expect(oneBlockBytes(cfg)).toBe(bytes);
      expect(oneBlockBytes(cfg) >= COLLECT_FROM_BLOCK_BYTES).toBe(shape === '110m' || shape === '1b' || shape === '7b');
    }
  });
});
