/**
 * Our reference quantizers against ggml's own: node-llama-cpp ships the llama.cpp source it
 * was built from (a git bundle); this test checks out ggml-quants.c from it, compiles it
 * with a small harness (./ggmlQuantHarness.c) and asks for the bytes of the same rows.
 * Skipped, saying why, where there is no C compiler or no bundle.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GGML_FORMATS } from '../../core/quant/formats';
import { Rng } from '../../core/rng';
import { ROOT } from '../helpers';

const BUNDLE = join(ROOT, 'node_modules', 'node-llama-cpp', 'llama', 'gitRelease.bundle');
const hasCc = spawnSync('cc', ['--version']).status === 0;
const canRun = hasCc && existsSync(BUNDLE);
const dir = mkdtempSync(join(tmpdir(), 'invarx-ggml-ref-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function buildHarness(): string {
  const src = join(dir, 'llama.cpp');
  execFileSync('git', ['clone', '-q', '--no-checkout', BUNDLE, src]);
  execFileSync('git', ['-C', src, 'checkout', '-q', 'HEAD', '--', 'ggml/include', 'ggml/src/ggml-quants.c', 'ggml/src/ggml-quants.h',
    'ggml/src/ggml-common.h', 'ggml/src/ggml-impl.h', 'ggml/src/ggml-cpu/ggml-cpu-impl.h']);
  const exe = join(dir, 'harness');
  // Plain -O2 for x86-64/arm64 defaults: ggml's portable build of these files.
  execFileSync('cc', ['-O2', '-std=gnu11', '-ffp-contract=off', join(ROOT, 'test', 'gguf', 'ggmlQuantHarness.c'), join(src, 'ggml/src/ggml-quants.c'),
    '-I', join(src, 'ggml/include'), '-I', join(src, 'ggml/src'), '-I', join(src, 'ggml/src/ggml-cpu'), '-lm', '-o', exe]);
  return exe;
}

/** Rows of several kinds: Gaussian at small and large scales, outliers, zeros, one-signed, on a coarse grid. */
function rows(seed: number, n: number, count: number): Float32Array {
  const rng = Rng.fromSeed(seed);
  const x = new Float32Array(n * count);
  for (let r = 0; r < count; r++) {
    const kind = r % 6;
    const scale = [0.02, 1, 0.05, 3, 0.5, 0.01][kind];
    for (let i = 0; i < n; i++) {
      let v = rng.normal() * scale;
      if (kind === 2 && rng.float() < 0.02) v *= 25;
      if (kind === 3 && i % 64 < 40) v = 0;
      if (kind === 4) v = Math.abs(v) + 0.1;
      if (kind === 5) v = Math.round(v * 400) / 400;
      x[r * n + i] = v;
    }
  }
  return x;
}

describe.skipIf(!canRun)("reference quantizers give ggml's bytes (ggml-quants.c compiled from node-llama-cpp's bundled source)", () => {
  let exe = '';
  it.each(Object.values(GGML_FORMATS).map((f) => [f.name, f] as const))('%s', (name, fmt) => {
    exe ||= buildHarness();
    const n = fmt.blockSize * 4;
    const count = 60;
    const x = rows(name.length * 7 + fmt.blockBytes, n, count);
    const cName = name.replace('_k', '_K');
    const want = execFileSync(exe, [cName, String(n), String(fmt.rowBytes(n)), String(count)], { input: Buffer.from(x.buffer) });
    expect(want.length).toBe(fmt.rowBytes(n) * count);
    let same = 0;
    for (let r = 0; r < count; r++) {
      const got = fmt.quantizeRow(x.subarray(r * n, (r + 1) * n));
      const ref = want.subarray(r * fmt.rowBytes(n), (r + 1) * fmt.rowBytes(n));
      if (Buffer.from(got).equals(ref)) same++;
    }
    expect(same).toBe(count);
  });
});

if (!canRun) {
  describe('reference quantizers vs ggml', () => {
    it.skip(`needs a C compiler and node-llama-cpp's source bundle (cc: ${hasCc}, bundle: ${existsSync(BUNDLE)})`, () => {});
  });
}
