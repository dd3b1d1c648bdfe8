/**
 * Where a search gets each block's weights: the FP weights (the model as loaded, possibly
 * streamed from disk), the transformed FP weights (FP + the accepted moves of that block)
 * and the quantized transformed weights (what the objective scored, what validation and
 * the report run). This class is the one place that knows how they are held.
 *
 * Within `residentBytes` they are float arrays, as a small model's always are. Past it:
 * - a transformed block is rebuilt from its FP block and the transforms applied to it, in
 *   order, when used (the same float operations in the same order, so the same bits), and
 *   the most recently used are kept while they fit; the block being searched is pinned;
 * - a quantized block is kept palette-packed (core/quant/palette.ts, ~1 byte a weight,
 *   exact) and unpacked when read.
 * So a run holds O(1 block) of float weights whatever the model's size.
 */
import { applyTransforms, type Transform } from '../core/invariance';
import type { AcceptedMove as BlockMoves } from '../core/invariance/acceptedMoves';
import { BlockCache, lazyBlocks, type BlockKey } from '../core/model/lazy';
import { blockLinears, cloneBlock, linearShape, type Block, type F32, type LinearName, type Model, type ModelConfig } from '../core/model/types';
import { packPalette, paletteBytes, unpackPalette, type PaletteWeights } from '../core/quant/palette';
import type { QuantSpec } from '../core/quant/rtn';
import { setClip, type BlockClips, type ClipSet } from './clipMoves';
import { withFinalNorm } from './finalNormTune';
import { withNormFactors, type GainedLinear, type NormFactors } from './normTune';
import { gainedLinear } from './rowGains';

/** One accepted move: the transforms applied to one block (step 0: scale initialisation), the clip codes it set, or its tuned norm gains. */
export interface AcceptedMove extends BlockMoves {
  step: number;
  /** A clip move's codes (clipMoves.ts); absent for an invariance move. */
  clips?: ClipSet[];
  /** The norm-gain factors of the quantized block (normTune.ts; the run's last pass); absent elsewhere. */
  norms?: NormFactors;
  /** The factors of the quantized model's final norm gain (finalNormTune.ts; after the blocks' norms); absent elsewhere. */
  finalNorm?: Float64Array;
}

/** How a quantized block is held: as floats, or its linears palette-packed (other arrays as they are). */
type HeldQuantized = { floats: Block } | { packed: Partial<Record<LinearName, PaletteWeights>>; rest: Partial<Block> };

/** Quantized blocks unpacked at a time (a block-major pass reads one block at a time). */
const UNPACKED_KEEP = 2;

export class SearchBlocks {
  /** Per block, every transform applied to it since FP, in order. */
  private applied: Transform[][];
  /** Per block, the clip codes its accepted clip moves set (undefined: none, every group CLIP_AUTO). */
  private clipCodes: (BlockClips | undefined)[];
  /** Per block, the factors its quantized norm gains are multiplied by (undefined: none). */
  private normFactors: (NormFactors | undefined)[];
  /** Per block whose quantized weights carry factors: its norm gains and gained linears without them. */
  private untuned: (Partial<Block> | undefined)[] = [];
  /** The factors the quantized model's final norm gain is multiplied by (undefined: none). */
  private finalNormFactors: Float64Array | undefined;
  /** Transformed blocks held as floats, least recently used first. */
  private resident = new Map<number, Block>();
  private pinned = -1;
  private q: HeldQuantized[] = [];
  private unpacked: BlockCache;
  private qLazy: Block[];
  /** How many times each block's quantized weights were set (what cached activations depend on). */
  private ver: number[];
  private readonly blockBytes: number;

  /**
   * `residentBytes`: float block weights to hold at most, half transformed and half
   * quantized (Infinity: every block as floats); `grid`: the quantized weights' grid (as the
   * RTN base quantizes, for row gains).
   */
  constructor(private model: Model, private grid: QuantSpec, private residentBytes = Infinity) {
    const L = model.config.nLayers;
    this.applied = Array.from({ length: L }, () => []);
    this.clipCodes = new Array(L).fill(undefined);
    this.normFactors = new Array(L).fill(undefined);
    this.ver = new Array(L).fill(0);
    this.blockBytes = Object.values(model.blocks[0]).reduce((s, v) => s + (v ? (v as F32).byteLength : 0), 0);
    this.unpacked = new BlockCache((l) => this.unpack(l), UNPACKED_KEEP);
    const keys = Object.keys(model.blocks[0]).filter((k) => model.blocks[0][k as BlockKey] !== undefined) as BlockKey[];
    this.qLazy = lazyBlocks(L, keys, this.unpacked);
  }

  get config(): ModelConfig {
    return this.model.config;
  }

  get nLayers(): number {
    return this.model.config.nLayers;
  }

  /** FP weights of block l. */
  fp(l: number): Block {
    return this.model.blocks[l];
  }

  /** Transformed FP weights of block l (a move being accepted changes them in place). */
  transformed(l: number): Block {
    let b = this.resident.get(l);
    if (b) {
      this.resident.delete(l);
    } else {
      b = cloneBlock(this.model.blocks[l]);
      applyTransforms(this.model.config, b, this.applied[l]);
    }
    this.resident.set(l, b);
    this.evict();
    return b;
  }

  /** Quantized transformed weights of block l. */
  quantized(l: number): Block {
    const h = this.q[l];
    return 'floats' in h ? h.floats : this.qLazy[l];
  }

  /** Hold block l's transformed weights in `b` (the same values, e.g. in memory workers share), pinned while it is searched. */
  setTransformed(l: number, b: Block): void {
    this.resident.delete(l);
    this.resident.set(l, b);
    this.pinned = l;
    this.evict();
  }

  /** Block l's quantized weights are `q`'s, with the block's norm factors (if any) applied to copies of its norms and gained linears. */
  setQuantized(l: number, q: Block): void {
    const f = this.normFactors[l];
    this.untuned[l] = f ? untunedParts(q, f) : undefined;
    this.q[l] = this.hold(l, f ? this.tuned(l, q, f) : q);
    this.unpacked.forget(l);
    this.ver[l]++;
  }

  /** The versions of the quantized blocks 0 … k−1: the rows entering block k depend on exactly these. */
  versions(k: number): number[] {
    return this.ver.slice(0, k);
  }

  /** Apply `transforms` to block l's transformed weights (an accepted move). */
  apply(l: number, transforms: readonly Transform[]): void {
    applyTransforms(this.model.config, this.transformed(l), transforms);
    this.applied[l].push(...transforms);
  }

  /** Block l's clip codes (undefined while no clip move set one). */
  clips(l: number): BlockClips | undefined {
    return this.clipCodes[l];
  }

  /** Hold block l's clip codes in `clips` (the same codes, e.g. in memory workers share, which a committed clip move then updates). */
  setClips(l: number, clips: BlockClips): void {
    this.clipCodes[l] = clips;
  }

  /** Set clip codes `cs` of block l (an accepted clip move). */
  applyClips(l: number, cs: readonly ClipSet[]): void {
    const t = (this.clipCodes[l] ??= {});
    for (const c of cs) setClip(this.model.config, this.clipSpec(), t, c);
  }

  /** Block l's norm factors (undefined while none are set). */
  norms(l: number): NormFactors | undefined {
    return this.normFactors[l];
  }

  /** Set block l's norm factors; they apply from the next setQuantized of the block on. */
  setNorms(l: number, f: NormFactors | undefined): void {
    this.normFactors[l] = f;
  }

  /**
   * Runs `fn` on the quantized model without its blocks' norm factors (the model the search
   * left, whose rows GPTQ quantizes a block on), then puts the factors back on whatever
   * quantized weights `fn` left.
   */
  withoutNorms<T>(fn: () => T): T {
    const factors = this.normFactors.slice();
    this.normFactors.fill(undefined);
    this.untuned.forEach((n, l) => n && this.setQuantized(l, { ...this.quantized(l), ...n }));
    try {
      return fn();
    } finally {
      this.normFactors = factors;
      factors.forEach((f, l) => f && this.setQuantized(l, this.quantized(l)));
    }
  }

  /** The final norm's factors (undefined while none are set). */
  finalNorm(): Float64Array | undefined {
    return this.finalNormFactors;
  }

  /** Set the quantized model's final norm factors (they apply to quantizedModel and transformedModel(true) at once). */
  setFinalNorm(f: Float64Array | undefined): void {
    this.finalNormFactors = f;
  }

  /** `q` with norm factors `f`: its row gains on RTN's codes of the transformed weights (rowGains.ts). */
  private tuned(l: number, q: Block, f: NormFactors): Block {
    const t = withNormFactors(q, f);
    for (const [name, g] of Object.entries(f.rows ?? {}) as [GainedLinear, Float64Array][]) {
      t[name] = gainedLinear(this.model.config, this.transformed(l), name, q[name]!, this.grid, this.clipCodes[l]?.[name], g);
    }
    return t;
  }

  private clipSpec(): QuantSpec {
    return { bits: this.grid.bits, group: this.grid.group };
  }

  /** The transformed weights, clip codes and norm factors of every block rebuilt as FP + `moves`, in order (resume, rollback). */
  replay(moves: readonly AcceptedMove[]): void {
    this.applied = Array.from({ length: this.nLayers }, () => []);
    this.clipCodes = new Array(this.nLayers).fill(undefined);
    this.normFactors = new Array(this.nLayers).fill(undefined);
    this.finalNormFactors = undefined;
    for (const m of moves) {
      this.applied[m.block].push(...m.transforms);
      if (m.clips) this.applyClips(m.block, m.clips);
      if (m.norms) this.normFactors[m.block] = m.norms;
      if (m.finalNorm) this.finalNormFactors = m.finalNorm;
    }
    this.resident.clear();
    this.pinned = -1;
  }

  /** The FP model. */
  fpModel(): Model {
    return this.model;
  }

  /**
   * The transformed FP model (computes the FP function, up to the approximate invariances);
   * blocks built when read. With `tunedNorms`, its norm gains are the searched model's: the
   * float tensors of a packed export of the searched model.
   */
  transformedModel(tunedNorms = false): Model {
    const load = (l: number) => {
      const f = this.normFactors[l];
      return tunedNorms && f ? withNormFactors(this.transformed(l), f) : this.transformed(l);
    };
    const cache = new BlockCache(load, 1);
    const m = { ...this.model, blocks: lazyBlocks(this.nLayers, Object.keys(this.model.blocks[0]) as BlockKey[], cache) };
    return tunedNorms ? withFinalNorm(m, this.finalNormFactors) : m;
  }

  /** The quantized transformed model the objective scored (with the tuned final norm, if any). */
  quantizedModel(): Model {
    return withFinalNorm({ ...this.model, blocks: this.q.map((_, l) => this.quantized(l)) }, this.finalNormFactors);
  }

  /** The quantized model with `qBlock` in place of block l (a candidate's). */
  quantizedWith(l: number, qBlock: Block): Model {
    const m = this.quantizedModel();
    m.blocks[l] = qBlock;
    return m;
  }

  /** Drop the least recently used transformed blocks past half the budget (never the pinned one, nor the newest). */
  private evict(): void {
    const keys = [...this.resident.keys()];
    const newest = keys[keys.length - 1];
    for (const l of keys) {
      if (this.resident.size * this.blockBytes <= this.residentBytes / 2) return;
      if (l !== this.pinned && l !== newest) this.resident.delete(l);
    }
  }

  /** Floats while every block's would fit half the budget, else packed (exactly; floats if some linear is off the grid). */
  private hold(l: number, q: Block): HeldQuantized {
    if (this.nLayers * this.blockBytes <= this.residentBytes / 2) return { floats: q };
    const packed: Partial<Record<LinearName, PaletteWeights>> = {};
    const rest: Partial<Block> = { ...q };
    for (const name of blockLinears(this.model.config)) {
      const [rows, cols] = linearShape(this.model.config, name);
      const p = packPalette(q[name]!, rows, cols, Math.min(this.grid.group, cols), 2 ** this.grid.bits);
      if (!p) return { floats: q };
      packed[name] = p;
      delete rest[name];
    }
    // the other arrays (norms, biases) are small: copied, so later changes to `q` do not leak in
    for (const [k, v] of Object.entries(rest)) if (v) (rest as Record<string, F32>)[k] = (v as F32).slice();
    return { packed, rest };
  }

  private unpack(l: number): Block {
    const h = this.q[l];
    if ('floats' in h) return h.floats;
    const out: Record<string, F32> = { ...(h.rest as Record<string, F32>) };
    for (const [name, p] of Object.entries(h.packed)) out[name] = unpackPalette(p!);
    return out as unknown as Block;
  }

  /** Bytes of quantized weights held (floats or packed). */
  quantizedBytes(): number {
    let n = 0;
    for (const h of this.q) {
      if (!h) continue;
      if ('floats' in h) n += this.blockBytes;
      else for (const p of Object.values(h.packed)) n += paletteBytes(p!);
    }
    return n;
  }
}

/** What setQuantized changes of `q` under factors `f`: its norm gains and gained linears as they were (copies). */
function untunedParts(q: Block, f: NormFactors): Partial<Block> {
  const out: Partial<Block> = { attnNorm: q.attnNorm.slice(), ffnNorm: q.ffnNorm.slice() };
  for (const name of Object.keys(f.rows ?? {}) as GainedLinear[]) out[name] = q[name]!.slice();
  return out;
}
