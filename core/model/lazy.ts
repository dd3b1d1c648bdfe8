/**
 * Blocks made on demand, so a model far larger than memory can be run block by block
 * (DESIGN §11): a lazy block looks like any Block (its weights are enumerable properties,
 * so spreading and cloning work), but its arrays are produced by `load(l)` when first read
 * and kept only while the block is among the `keep` most recently used. Readers that run
 * the model block-major (core/blockPass.ts) so hold O(keep) blocks of weights.
 *
 * An array handed out stays valid after its block is evicted (it is only dropped from the
 * cache); writing into it changes nothing the next load returns, so lazy blocks are for
 * reading: code that changes weights copies the block first (cloneBlock).
 */
import { ensureMemoryFor } from '../memory';
import { blockWeightBytes, type Block, type F32, type ModelConfig } from './types';

export type BlockKey = keyof Block;

/** A small LRU of loaded blocks. */
export class BlockCache {
  private recent: { l: number; b: Block }[] = [];
  /** How many times a block was loaded (a block read twice while cached counts once). */
  loads = 0;

  constructor(private load: (l: number) => Block, readonly keep = 2) {
    if (!(Number.isInteger(keep) && keep >= 1)) throw new RangeError(`a block cache keeps at least one block, got ${keep}`);
  }

  get(l: number): Block {
    const i = this.recent.findIndex((e) => e.l === l);
    if (i >= 0) {
      const [e] = this.recent.splice(i, 1);
      this.recent.unshift(e);
      return e.b;
    }
    const b = this.load(l);
    this.loads++;
    this.recent.unshift({ l, b });
    if (this.recent.length > this.keep) this.recent.length = this.keep;
    return b;
  }

  /** Drop block l (its source changed): the next read loads it again. */
  forget(l: number): void {
    this.recent = this.recent.filter((e) => e.l !== l);
  }
}

/** n lazy blocks with the weights `keys`, each loaded through `cache`. */
export function lazyBlocks(n: number, keys: readonly BlockKey[], cache: BlockCache): Block[] {
  return Array.from({ length: n }, (_, l) => lazyBlock(l, keys, cache));
}

/** Lazy block l with the weights `keys`, loaded through `cache`. */
export function lazyBlock(l: number, keys: readonly BlockKey[], cache: BlockCache): Block {
  const b = {} as Block;
  for (const key of keys) {
    Object.defineProperty(b, key, { enumerable: true, get: (): F32 | undefined => cache.get(l)[key] });
  }
  return b;
}

/** Whether `b` is a lazy block (its weights are getters). */
export function isLazyBlock(b: Block): boolean {
  const d = Object.getOwnPropertyDescriptor(b, 'wq');
  return d !== undefined && d.get !== undefined;
}

/** The weights block `b` holds, without loading it when it is lazy (a lazy block has a getter for each). */
export function presentKeys(b: Block): BlockKey[] {
  const keys = Object.keys(b) as BlockKey[];
  return isLazyBlock(b) ? keys : keys.filter((k) => b[k] !== undefined);
}

/**
 * `blocks` with `f` applied to each (f must keep a block's keys): a plain block is mapped
 * now, a lazy one when read, through a cache of one mapped block, so mapping a streamed
 * model loads nothing and reading it block by block holds one mapped block at a time.
 */
export function mapBlocks(blocks: readonly Block[], f: (b: Block, l: number) => Block): Block[] {
  let cache: BlockCache | undefined;
  return blocks.map((b, l) => {
    if (!isLazyBlock(b)) return f(b, l);
    cache ??= new BlockCache((i) => f(blocks[i], i), 1);
    return lazyBlock(l, presentKeys(b), cache);
  });
}

/**
 * Blocks that can only be made in order, each from state the previous one left (GPTQ: the
 * calibration inputs of block l are the outputs of the quantized blocks before it). Reading
 * block l after block l' > l starts again from block 0; a block-major pass reads each once.
 */
export function sequentialBlocks<S>(
  n: number, keys: readonly BlockKey[], start: () => S, step: (l: number, state: S) => { block: Block; state: S }, keep = 1,
): { blocks: Block[]; cache: BlockCache } {
  let next = 0;
  let state: S | undefined;
  const cache = new BlockCache((l) => {
    if (state === undefined || l < next) {
      next = 0;
      state = start();
    }
    let block: Block | undefined;
    while (next <= l) {
      const r = step(next, state!);
      block = r.block;
      state = r.state;
      next++;
    }
    return block!;
  }, keep);
  return { blocks: lazyBlocks(n, keys, cache), cache };
}

/**
 * `model` with every block read into a plain object (lazy blocks loaded once each, in
 * order): for work that visits every block many times over, such as token-by-token
 * decoding, where a block-at-a-time cache would load the whole model at every step.
 * A model whose blocks are plain already is returned as it is; one whose blocks cannot fit in
 * the memory available is refused with one clear error.
 */
export function eagerModel<M extends { config: ModelConfig; blocks: Block[] }>(model: M): M {
  if (!model.blocks.some(isLazyBlock)) return model;
  ensureMemoryFor(model.config.nLayers * blockWeightBytes(model.config), 'decoding token by token (sampling the token sets, the validation set always; generating text) holds the model\'s blocks in memory as float32');
  return { ...model, blocks: model.blocks.map((b) => ({ ...b })) };
}
