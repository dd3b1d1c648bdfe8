/**
 * GGUF export of transformed models block by block (core/invariance/acceptedMoves.ts):
 * the bytes of the old whole-model path (every block copied, the moves applied in order)
 * for models in memory and for lazy ones, each lazy block loaded once, in order, and a move
 * that cannot be applied failing with its message and no file left.
 */
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeLlamaGguf } from '../../core/gguf';
import { applyTransforms, type Transform } from '../../core/invariance';
import { readAcceptedMoves, withMoves, type AcceptedMove } from '../../core/invariance/acceptedMoves';
import { BlockCache, lazyBlocks, type BlockKey } from '../../core/model/lazy';
import { cloneBlock, type Model } from '../../core/model/types';
import { loadTokenizer } from '../../core/tokenizer';
import { ensureBuilt, expectUserError, invarx } from '../cli/cli';
import { shippedModel, TOKENIZER_PATH } from '../helpers';

const tmp = mkdtempSync(join(tmpdir(), 'invarx-gguf-stream-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => ensureBuilt());

const m = shippedModel();
const tok = loadTokenizer(TOKENIZER_PATH, 512);
const H = m.config.hiddenDim;
const perm = (mult: number): Transform => ({
  kind: 'ffn-perm', units: Int32Array.from({ length: H }, (_, i) => i), from: Int32Array.from({ length: H }, (_, i) => (i * mult) % H),
});
const scale = (): Transform => ({
  kind: 'ffn-scale', units: Int32Array.from([3, 50, 171]), scales: Float64Array.from([1.5, 0.25, 3]),
});
// Two moves on block 1 that do not commute (a scale, then a permutation moving the scaled units), one on block 3.
const MOVES: AcceptedMove[] = [
  { block: 1, transforms: [scale()] },
  { block: 3, transforms: [perm(37), scale()] },
  { block: 1, transforms: [perm(41)] },
];

/** The old path: every block copied, then the moves applied in their order. */
function eagerlyTransformed(model: Model, moves: readonly AcceptedMove[]): Model {
  const blocks = model.blocks.map((b) => cloneBlock(b));
  for (const mv of moves) applyTransforms(model.config, blocks[mv.block], mv.transforms);
  return { ...model, blocks };
}

/** `model` with lazy blocks through a cache of one, each load a fresh copy, noted in `loads`. */
function lazyOf(model: Model, loads: number[]): Model {
  const cache = new BlockCache((l) => {
    loads.push(l);
    return cloneBlock(model.blocks[l]);
  }, 1);
  return { ...model, blocks: lazyBlocks(model.config.nLayers, Object.keys(model.blocks[0]) as BlockKey[], cache) };
}

describe('export-gguf of a transformed model, block by block', () => {
  const want = join(tmp, 'old-path.gguf');
  beforeAll(() => {
    writeLlamaGguf(eagerlyTransformed(m, MOVES), tok, want, { format: 'q4_0' });
  });

  it('a model in memory: the bytes of the old path, the source model untouched, untouched blocks not copied', () => {
    const before = m.blocks[1].w2.slice();
    const t = withMoves(m, MOVES, 'moves');
    expect(t.blocks[0]).toBe(m.blocks[0]);
    const out = join(tmp, 'eager.gguf');
    writeLlamaGguf(t, tok, out, { format: 'q4_0' });
    expect(readFileSync(out).equals(readFileSync(want))).toBe(true);
    expect(m.blocks[1].w2).toEqual(before);
    // The moves do change the file (else the comparison above would prove nothing).
    writeLlamaGguf(m, tok, join(tmp, 'plain.gguf'), { format: 'q4_0' });
    expect(readFileSync(join(tmp, 'plain.gguf')).equals(readFileSync(want))).toBe(false);
  });

  it('a lazy model: the same bytes, each block loaded once and in order', () => {
    const loads: number[] = [];
    const out = join(tmp, 'lazy.gguf');
    writeLlamaGguf(withMoves(lazyOf(m, loads), MOVES, 'moves'), tok, out, { format: 'q4_0' });
    expect(readFileSync(out).equals(readFileSync(want))).toBe(true);
    expect(loads).toEqual(m.blocks.map((_, l) => l));
  });

  it('the CLI with --transforms writes the same bytes', () => {
    const tPath = join(tmp, 'transforms.msgpack');
    writeFileSync(tPath, new Packr({ moreTypes: true }).pack({ config: {}, moves: MOVES.map((mv, i) => ({ ...mv, step: i + 1 })) }));
    const out = join(tmp, 'cli.gguf');
    const r = invarx('export-gguf', '--model', 'models/stories260K.bin', '--transforms', tPath, '--format', 'q4_0', '--out', out);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(out).equals(readFileSync(want))).toBe(true);
  });

  it('a move that cannot be applied: its error, and no file (nor temporary) left; reading the moves says so before any weight is read', () => {
    const bad: AcceptedMove[] = [{ block: 2, transforms: [{ kind: 'ffn-perm', units: Int32Array.from([0, 1]), from: Int32Array.from([1, H + 5]) }] }];
    const out = join(tmp, 'bad.gguf');
    expect(() => writeLlamaGguf(withMoves(m, bad, 'bad.msgpack'), tok, out, { format: 'q4_0' })).toThrow(`ffn-perm: from[1] = ${H + 5} is outside [0, ${H})`);
    expect(readdirSync(tmp).filter((f) => f.startsWith('bad.gguf'))).toEqual([]);
    const tPath = join(tmp, 'bad.msgpack');
    writeFileSync(tPath, new Packr({ moreTypes: true }).pack({ config: {}, moves: bad }));
    const loads: number[] = [];
    expect(() => readAcceptedMoves(tPath, lazyOf(m, loads))).toThrow(/ffn-perm: from\[1\] = \d+ is outside/);
    expect(loads).toEqual([]);
    expectUserError(invarx('export-gguf', '--model', 'models/stories260K.bin', '--transforms', tPath, '--format', 'q4_0', '--out', out), /ffn-perm: from\[1\] = \d+ is outside/);
    expect(existsSync(out)).toBe(false);
  });
});
