/**
 * Exports of lazy (streamed) models: byte-identical to the exports of the same model held
 * in memory, and written a block at a time — each block is loaded when its tensors' turn
 * comes (after the blocks before it are on disk), a bounded number of times, and the GPTQ
 * codes are asked for once per block.
 */
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import { llama2cIncompatibility, writeHfExport, writeLlama2cExport } from '../../core/export/fp';
import { writeGptqExport, type BlockQuantized } from '../../core/export/gptq';
import { hfLayoutOf, hfTensors, loadHfModel, withRopeLayout } from '../../core/model/hf';
import { BlockCache, isLazyBlock, lazyBlocks, type BlockKey } from '../../core/model/lazy';
import { encodeLlama2c } from '../../core/model/llama2c';
import { writeSyntheticCheckpoint } from '../../core/model/synthetic';
import { blockLinears, cloneBlock, linearShape, type Block, type Model } from '../../core/model/types';
import { quantizeRtn } from '../../core/quant/rtn';
import { shippedModel } from '../helpers';

const tmp = mkdtempSync(join(tmpdir(), 'invarx-export-stream-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(tmp, `e${n++}`);

/** Every file under dir (relative path → bytes). */
function files(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const f of (readdirSync(dir, { recursive: true, encoding: 'utf8' }) as string[]).sort()) {
    const p = join(dir, f);
    if (statSync(p).isFile()) out.set(f, readFileSync(p));
  }
  return out;
}

function expectSameFiles(a: string, b: string): void {
  const fa = files(a);
  const fb = files(b);
  expect([...fb.keys()]).toEqual([...fa.keys()]);
  for (const [f, bytes] of fa) expect(fb.get(f)!.equals(bytes), f).toBe(true);
}

/** RTN codes (f16 scales, so the GPTQ export is exact) of one block. */
function blockCodes(m: Model, b: Block, bits: number, group: number): BlockQuantized {
  const out: BlockQuantized = {};
  for (const name of blockLinears(m.config)) {
    const [rows, cols] = linearShape(m.config, name);
    out[name] = quantizeRtn(b[name]!, rows, cols, { bits, group, clip: false, f16Scales: true });
  }
  return out;
}

/**
 * `m` with lazy blocks loaded through a cache of `keep`: each load hands out fresh copies
 * (an evicted block really is read again) and calls `onLoad`.
 */
function lazyOf(m: Model, keep: number, onLoad: (l: number) => void = () => {}): { model: Model; cache: BlockCache } {
  const cache = new BlockCache((l) => {
    onLoad(l);
    return cloneBlock(m.blocks[l]);
  }, keep);
  const keys = Object.keys(m.blocks[0]) as BlockKey[];
  return { model: { ...m, blocks: lazyBlocks(m.config.nLayers, keys, cache) }, cache };
}

/** Size of the file at path now (-1: not there yet). */
const sizeNow = (path: string) => (existsSync(path) ? statSync(path).size : -1);

describe('a streamed HF checkpoint exports the bytes of the same checkpoint loaded eagerly', () => {
  let dir: string;
  let eager: Model;
  let lazy: Model;
  beforeAll(() => {
    dir = fresh();
    writeSyntheticCheckpoint(dir, '260k', { seed: 3 });
    eager = loadHfModel(dir);
    lazy = loadHfModel(dir, { stream: true });
  });

  it('is really streamed, and converting it loads nothing', () => {
    expect(lazy.blocks.every(isLazyBlock)).toBe(true);
    expect(eager.blocks.some(isLazyBlock)).toBe(false);
    // hfLayoutOf, llama2cIncompatibility and the RoPE conversion read keys, not weights: a
    // model whose every load throws still gets through them
    const { model: untouchable } = lazyOf(eager, 1, () => {
      throw new Error('loaded');
    });
    expect(llama2cIncompatibility(untouchable)).toBeNull();
    const tensors = hfTensors(withRopeLayout(untouchable, 'interleaved'), hfLayoutOf(untouchable));
    expect(tensors.length).toBeGreaterThan(eager.config.nLayers * 9);
    expect(() => tensors.find((t) => t.linear)!.read()).toThrow('loaded');
  });

  it('transformed-fp/ in F32 and sharded BF16', () => {
    for (const opts of [{}, { dtype: 'BF16' as const, maxShardBytes: 60_000 }]) {
      const [a, b] = [fresh(), fresh()];
      writeHfExport(a, eager, opts);
      writeHfExport(b, lazy, opts);
      expectSameFiles(a, b);
      if (opts.maxShardBytes) expect(readdirSync(b).filter((f) => f.endsWith('.safetensors')).length).toBeGreaterThan(1);
    }
  });

  it('llama2.c (half RoPE converted to interleaved block by block)', () => {
    const [a, b] = [fresh(), fresh()];
    writeLlama2cExport(a, eager);
    writeLlama2cExport(b, lazy);
    expect(readFileSync(b).equals(readFileSync(a))).toBe(true);
  });

  it('gptq/ (hidden 172 padded to 192), codes as a list and from a function', () => {
    const quant = eager.blocks.map((b) => blockCodes(eager, b, 4, 32));
    const [a, b] = [fresh(), fresh()];
    const repA = writeGptqExport(a, eager, quant);
    const repB = writeGptqExport(b, lazy, (l) => blockCodes(lazy, lazy.blocks[l], 4, 32));
    expect(repB.paddedHidden).toEqual({ from: 172, to: 192 });
    expect({ ...repB, files: [] }).toEqual({ ...repA, files: [] });
    expectSameFiles(a, b);
  });
});

describe('a llama2.c (interleaved RoPE) model held lazily exports the same bytes', () => {
  const s = shippedModel();

  it('transformed-fp/, llama2.c and gptq/ (wq/wk and their codes permuted to the half layout per block)', () => {
    const { model: lazy } = lazyOf(s, 2);
    const [a, b] = [fresh(), fresh()];
    writeHfExport(a, s);
    writeHfExport(b, lazy);
    expectSameFiles(a, b);
    const [c, d] = [fresh(), fresh()];
    writeLlama2cExport(c, s);
    writeLlama2cExport(d, lazy);
    expect(readFileSync(d).equals(readFileSync(c))).toBe(true);
    const [e, f] = [fresh(), fresh()];
    writeGptqExport(e, s, s.blocks.map((blk) => blockCodes(s, blk, 3, 32)));
    writeGptqExport(f, lazy, (l) => blockCodes(s, s.blocks[l], 3, 32));
    expectSameFiles(e, f);
  });
});

describe('the writers hold one block at a time', () => {
  const s = shippedModel();
  const L = s.config.nLayers;

  /** Loads of a one-block cache while `write` runs, with the size `out` had at each. */
  function watch(out: string, write: (m: Model) => void): { loads: number[]; sizes: number[] } {
    const loads: number[] = [];
    const sizes: number[] = [];
    const { model } = lazyOf(s, 1, (l) => {
      loads.push(l);
      sizes.push(sizeNow(out));
    });
    write(model);
    return { loads, sizes };
  }

  /** Each load after the first finds more of the file written than the load before it did. */
  function expectWrittenBetweenLoads(sizes: number[]): void {
    for (let i = 1; i < sizes.length; i++) expect(sizes[i], `load ${i}`).toBeGreaterThan(sizes[i - 1]);
  }

  it('HF: each block loaded once, after the blocks before it are written', () => {
    const dir = fresh();
    const { loads, sizes } = watch(join(dir, 'model.safetensors'), (m) => writeHfExport(dir, m));
    expect([...loads].sort()).toEqual(Array.from({ length: L }, (_, l) => l));
    expect(sizes[0]).toBeGreaterThan(0); // the header and the embedding are out before block 0 is read
    expectWrittenBetweenLoads(sizes);
  });

  it('llama2.c: each block loaded once (its tensors written at their places in the kind-major file), the file growing between loads', () => {
    const path = join(fresh() + '.bin');
    const { loads, sizes } = watch(path, (m) => writeLlama2cExport(path, m));
    expect(loads).toEqual(Array.from({ length: L }, (_, l) => l));
    expectWrittenBetweenLoads(sizes);
    expect(readFileSync(path).equals(Buffer.from(encodeLlama2c(s)))).toBe(true);
  });

  it('GPTQ: codes asked once per block, each block loaded once, as the file grows', () => {
    const dir = fresh();
    const out = join(dir, 'model.safetensors');
    const asked: number[] = [];
    const askedAt: number[] = [];
    const { loads, sizes } = watch(out, (m) =>
      writeGptqExport(dir, m, (l) => {
        asked.push(l);
        askedAt.push(sizeNow(out));
        return blockCodes(s, s.blocks[l], 4, 32);
      }),
    );
    expect([...asked].sort()).toEqual(Array.from({ length: L }, (_, l) => l));
    expect(asked[0]).toBe(0); // asked first, for the grid, before anything is written
    expect(askedAt[0]).toBe(-1);
    expectWrittenBetweenLoads(askedAt.slice(1));
    expect([...loads].sort()).toEqual(Array.from({ length: L }, (_, l) => l));
    expectWrittenBetweenLoads(sizes);
  });

  it('GPTQ: codes refused part-way leave no checkpoint behind', () => {
    const dir = fresh();
    const { model } = lazyOf(s, 1);
    const codesOf = (l: number) => blockCodes(s, s.blocks[l], l === L - 1 ? 2 : 4, 32);
    expect(() => writeGptqExport(dir, model, codesOf)).toThrow(InvarxError);
    expect(() => writeGptqExport(dir, model, codesOf)).toThrow(new RegExp(`block ${L - 1} wq: 2 bits / group 32 differs from 4 bits`));
    expect(existsSync(dir)).toBe(false);
  });
});
