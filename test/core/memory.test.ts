import { mkdtempSync, rmSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { sampleSet } from '../../core/data';
import { InvarxError } from '../../core/errors';
import { availableMemoryBytes, COLLECT_FROM_BLOCK_BYTES, collectGarbage, ensureMemoryFor } from '../../core/memory';
import { loadHfModel } from '../../core/model/hf';
import { eagerModel } from '../../core/model/lazy';
import { syntheticConfig } from '../../core/model/synthetic';
import { blockWeightBytes } from '../../core/model/types';
import { randomHf, writeHf } from '../formats/hfFixtures';

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

describe('memory a big allocation needs, checked before it is made', () => {
  const dirs: string[] = [];
  afterEach(() => vi.restoreAllMocks());
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('ensureMemoryFor names what needs how much and what is available, and lets what fits through', () => {
    expect(() => ensureMemoryFor(27e9, 'the thing', 22e9)).toThrow(InvarxError);
    expect(() => ensureMemoryFor(27e9, 'the thing', 22e9)).toThrow('the thing: 27.0 GB, more than the 22.0 GB this machine has available');
    expect(() => ensureMemoryFor(22e9, 'the thing', 22e9)).not.toThrow();
    const available = availableMemoryBytes();
    expect(available).toBeGreaterThan(0);
    expect(available).toBeLessThanOrEqual(os.totalmem());
  });

  it('decoding a streamed model refuses at once, with one clear error, where its float32 blocks cannot fit; the 7B shape\'s do not fit 24 GiB', () => {
    const dir = mkdtempSync(join(tmpdir(), 'invarx-mem-'));
    dirs.push(dir);
    writeHf(dir, randomHf('llama'), 'BF16');
    const lazy = loadHfModel(dir, { stream: true });
    const need = lazy.config.nLayers * blockWeightBytes(lazy.config);
    // enough: the blocks are read in (a new object, plain blocks)
    expect(eagerModel(lazy)).not.toBe(lazy);
    vi.spyOn(os, 'freemem').mockReturnValue(need - 1);
    expect(() => sampleSet(lazy, { count: 2, length: 4, seed: 1 })).toThrow(/decoding token by token.*holds the model's blocks in memory as float32: .* GB, more than the .* GB this machine has available/);
    try {
      eagerModel(lazy);
    } catch (e) {
      expect((e as InvarxError).code).toBe('out-of-memory');
    }
    expect.assertions(4);
    // the 7B shape: 6.5B parameters in its blocks, 25.9 GB as float32
    const b7 = syntheticConfig('7b');
    expect(() => ensureMemoryFor(b7.nLayers * blockWeightBytes(b7), '7b', 24 * 2 ** 30)).toThrow(/7b: 25\.9 GB/);
  });
});
