import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ActivationStore } from '../../core/activationStore';
import { InvarxError } from '../../core/errors';
import { Rng } from '../../core/rng';

const root = mkdtempSync(join(tmpdir(), 'invarx-acts-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Mount a 64 KiB tmpfs on dir; false where this machine does not let us (then the full-disk test is skipped, and says so). */
function mountTiny(dir: string): boolean {
  mkdirSync(dir, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const tinyDir = join(root, 'tmpfs');
const canMount = mountTiny(tinyDir);
afterAll(() => {
  if (canMount) execFileSync('umount', [tinyDir]);
});

function randomF32(n: number, seed: number): Float32Array {
  const rng = Rng.fromSeed(seed);
  return Float32Array.from({ length: n }, () => rng.normal());
}

function same(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
}

describe('ActivationStore', () => {
  it('keeps what fits the budget in memory, spills the rest to scratch files, and gives both back bit for bit', () => {
    const dir = join(root, 'a');
    const store = new ActivationStore({ memoryBytes: 3000, dir });
    const xs = [0, 1, 2, 3].map((k) => randomF32(300, k)); // 1200 bytes each
    xs.forEach((x, k) => store.set(k, x));
    expect(store.bytesInMemory).toBe(2400);
    expect(store.bytesOnDisk).toBe(2400);
    expect(readdirSync(dir).sort()).toEqual(['activations-2.f32', 'activations-3.f32']);
    xs.forEach((x, k) => expect(same(store.get(k), x)).toBe(true));
    // replacing a key frees its old place
    store.set(0, randomF32(10, 9));
    expect(store.bytesInMemory).toBe(1240);
    store.delete(3);
    expect(readdirSync(dir)).toEqual(['activations-2.f32']);
    expect(() => store.get(3)).toThrow(RangeError);
    store.close();
    expect(readdirSync(dir)).toEqual([]);
    expect(store.has(2)).toBe(false);
  });

  it('a lower limit writes what is held past it to scratch files at once, and later sets keep to it', () => {
    const dir = join(root, 'limit');
    const store = new ActivationStore({ memoryBytes: 5000, dir });
    const xs = [0, 1, 2, 3].map((k) => randomF32(300, 10 + k)); // 1200 bytes each
    xs.forEach((x, k) => store.set(k, x));
    expect(store.bytesInMemory).toBe(4800);
    store.limit(1300);
    expect(store.bytesInMemory).toBe(1200);
    expect(store.bytesOnDisk).toBe(3600);
    expect(readdirSync(dir).length).toBe(3);
    xs.forEach((x, k) => expect(same(store.get(k), x)).toBe(true));
    store.set(4, randomF32(300, 20));
    expect(store.bytesInMemory).toBe(1200);
    store.limit(0);
    expect(store.bytesInMemory).toBe(0);
    xs.forEach((x, k) => expect(same(store.get(k), x)).toBe(true));
    expect(() => store.limit(-1)).toThrow(RangeError);
    store.close();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('without a scratch directory, more than the budget is one clear error', () => {
    const store = new ActivationStore({ memoryBytes: 100 });
    expect(() => store.set(0, new Float32Array(100))).toThrow(InvarxError);
    expect(() => new ActivationStore({ memoryBytes: -1 })).toThrow(RangeError);
  });

  it.skipIf(!canMount)('a full disk fails that write with one error naming the file, leaves no partial file, and keeps what was stored', () => {
    const dir = tinyDir;
    {
      const store = new ActivationStore({ memoryBytes: 0, dir });
      const small = randomF32(1000, 1);
      store.set(0, small);
      let err: unknown;
      try {
        store.set(1, new Float32Array(64 * 1024));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvarxError);
      expect((err as InvarxError).code).toBe('disk-full');
      expect((err as Error).message).toMatch(/activations-1\.f32.*ENOSPC/);
      expect(existsSync(join(dir, 'activations-1.f32'))).toBe(false);
      expect(same(store.get(0), small)).toBe(true);
      store.close();
    }
    {
      // a limit that cannot write keeps the entry in memory, whole
      const store = new ActivationStore({ memoryBytes: 2 ** 20, dir });
      const big = randomF32(32 * 1024, 2);
      store.set(0, big);
      expect(() => store.limit(0)).toThrow(/disk-full|ENOSPC/);
      expect(store.bytesInMemory).toBe(big.byteLength);
      expect(same(store.get(0), big)).toBe(true);
      expect(readdirSync(dir)).toEqual([]);
      store.close();
    }
  });
});
