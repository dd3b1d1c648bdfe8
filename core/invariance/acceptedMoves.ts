/**
 * A search's accepted moves (DIR/transforms.msgpack) read and applied to a model for export:
 * each block is copied and its moves applied, in order, when the block is read, through a
 * cache of one transformed block, so a streamed model is transformed in O(block) memory and
 * a block without moves is the model's own (not copied). A move only ever rewrites its own
 * block, so applying them block by block gives what applying the whole list in order does.
 */
import { Packr } from 'msgpackr';
import { fail, InvarxError } from '../errors';
import { readRegularFile } from '../files';
import { BlockCache, lazyBlock, presentKeys } from '../model/lazy';
import { cloneBlock, type Block, type Model } from '../model/types';
import { applyTransforms, validateTransform } from './index';
import type { Transform } from './types';

export interface AcceptedMove {
  block: number;
  transforms: Transform[];
}

/** The accepted moves of a transforms.msgpack, each transform checked against `model`'s config. */
export function readAcceptedMoves(path: string, model: Model): AcceptedMove[] {
  const bytes = readRegularFile(path, 'transforms file', 'bad-transforms');
  let data: unknown;
  try {
    data = new Packr({ moreTypes: true }).unpack(bytes);
  } catch (e) {
    return fail('bad-transforms', `${path}: not a transforms.msgpack (${(e as Error).message})`);
  }
  const moves = (data as { moves?: unknown } | null)?.moves;
  if (!Array.isArray(moves)) fail('bad-transforms', `${path}: not a transforms.msgpack (no list of moves)`);
  moves.forEach((m: Partial<AcceptedMove> | null, i) => {
    if (!(m && Number.isInteger(m.block) && m.block! >= 0 && m.block! < model.config.nLayers && Array.isArray(m.transforms))) {
      fail('bad-transforms', `${path}: move ${i} does not name a block of this ${model.config.nLayers}-layer model with a list of transforms`);
    }
    // Shapes and index ranges now, from the config alone: a bad move fails before any weight is read.
    for (const t of m.transforms!) validateTransform(model.config, t);
  });
  return moves as AcceptedMove[];
}

/**
 * `model` with `moves` applied to copies of its blocks, as the search applied them; `path`
 * names the moves' file in errors. A move that cannot be applied fails when its block is
 * read (an export's writer then leaves no file behind).
 */
export function withMoves(model: Model, moves: readonly AcceptedMove[], path: string): Model {
  const byBlock = new Map<number, { index: number; transforms: Transform[] }[]>();
  moves.forEach((m, index) => {
    if (!byBlock.has(m.block)) byBlock.set(m.block, []);
    byBlock.get(m.block)!.push({ index, transforms: m.transforms });
  });
  const cache = new BlockCache((l) => {
    const b = cloneBlock(model.blocks[l]);
    for (const { index, transforms } of byBlock.get(l)!) {
      try {
        applyTransforms(model.config, b, transforms);
      } catch (e) {
        if (e instanceof InvarxError) throw e;
        fail('bad-transforms', `${path}: move ${index} cannot be applied to this model (${(e as Error).message})`);
      }
    }
    return b;
  }, 1);
  const blocks: Block[] = model.blocks.map((b, l) => (byBlock.has(l) ? lazyBlock(l, presentKeys(b), cache) : b));
  return { ...model, blocks };
}
