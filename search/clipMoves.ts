/**
 * Clip moves: the search's discrete analogue of learned weight clipping. The RTN base picks
 * each group's clip ratio by the group's own weight error; a clip move fixes one group's
 * ratio (a code into rtn.ts CLIP_RATIOS) and is accepted when it lowers the block's output
 * loss. It changes only how a group is quantized, never the FP weights, so the FP function
 * is untouched. A block's clip codes live beside its transformed weights (blocks.ts), are
 * recorded with the accepted moves (replayed on resume) and quantize the export.
 *
 * A fixed code belongs to the group's position: an invariance move that later changes the
 * group's weights keeps its ratio (a ratio of the group's own range, so scale-free).
 * RTN on the int grid only: GPTQ's group parameters and the ggml formats' rounding do not
 * read these codes.
 */
import { linearShape, type Block, type LinearName, type ModelConfig, blockLinears } from '../core/model/types';
import { CLIP_AUTO, CLIP_RATIOS, clipGrid, groupParams, numGroups, type QuantSpec } from '../core/quant/rtn';
import type { Rng } from '../core/rng';
import type { Alloc } from './blockState';

/** Per linear, the clip codes of its groups, [rows, nGroups]; a linear without a table is all CLIP_AUTO. */
export type BlockClips = Partial<Record<LinearName, Uint8Array>>;

/** One group's clip code set: what a clip move does and what the accepted-move record holds. */
export interface ClipSet {
  linear: LinearName;
  row: number;
  group: number;
  code: number;
}

/** [rows, nGroups] of linear `name`. */
export function clipShape(cfg: ModelConfig, spec: QuantSpec, name: LinearName): [number, number] {
  const [rows, cols] = linearShape(cfg, name);
  return [rows, numGroups(cols, spec.group)];
}

function autoTable(cfg: ModelConfig, spec: QuantSpec, name: LinearName, alloc?: Alloc): Uint8Array {
  const [rows, nG] = clipShape(cfg, spec, name);
  const t = alloc ? new Uint8Array(alloc.bytes(rows * nG)) : new Uint8Array(rows * nG);
  return t.fill(CLIP_AUTO);
}

/** A table for every linear of the block in `alloc`'s memory: `clips`' codes where it has them, else CLIP_AUTO. */
export function fullClips(cfg: ModelConfig, spec: QuantSpec, clips: BlockClips | undefined, alloc: Alloc): BlockClips {
  const out: BlockClips = {};
  for (const n of blockLinears(cfg)) {
    const t = autoTable(cfg, spec, n, alloc);
    const src = clips?.[n];
    if (src) t.set(src);
    out[n] = t;
  }
  return out;
}

/** `clips` with codes `cs` set: copies of their linears' tables, the other tables shared. */
export function withClips(cfg: ModelConfig, spec: QuantSpec, clips: BlockClips | undefined, cs: readonly ClipSet[]): BlockClips {
  const out: BlockClips = { ...clips };
  const copied = new Set<LinearName>();
  for (const c of cs) {
    if (!copied.has(c.linear)) {
      out[c.linear] = clips?.[c.linear]?.slice() ?? autoTable(cfg, spec, c.linear);
      copied.add(c.linear);
    }
    out[c.linear]![c.row * clipShape(cfg, spec, c.linear)[1] + c.group] = c.code;
  }
  return out;
}

/** Set `c` in `clips` in place (a linear without a table gets one). */
export function setClip(cfg: ModelConfig, spec: QuantSpec, clips: BlockClips, c: ClipSet): void {
  const t = (clips[c.linear] ??= autoTable(cfg, spec, c.linear));
  t[c.row * clipShape(cfg, spec, c.linear)[1] + c.group] = c.code;
}

const scratch = new Float64Array(2);

/**
 * The code a group is quantized with now: its fixed code, or for CLIP_AUTO the code nearest
 * the ratio the spec's clip search picks for the group's current weights `w` (of the linear).
 */
export function currentCode(cfg: ModelConfig, spec: QuantSpec, w: Float32Array, clips: BlockClips | undefined, c: Omit<ClipSet, 'code'>): number {
  const [, nG] = clipShape(cfg, spec, c.linear);
  const fixed = clips?.[c.linear]?.[c.row * nG + c.group] ?? CLIP_AUTO;
  if (fixed !== CLIP_AUTO) return fixed;
  const cols = linearShape(cfg, c.linear)[1];
  const off = c.row * cols + c.group * spec.group;
  const len = Math.min(spec.group, cols - c.group * spec.group);
  const r = groupParams(w, off, len, 2 ** spec.bits - 1, clipGrid(spec), scratch, spec.f16Scales);
  let best = 0;
  for (let k = 1; k < CLIP_RATIOS.length; k++) if (Math.abs(CLIP_RATIOS[k] - r) < Math.abs(CLIP_RATIOS[best] - r)) best = k;
  return best;
}

/**
 * One clip move: a group drawn uniformly over all the block's groups and, with probability
 * `rowShare`, every group of its row with it (a single group's gain is small; a row's is
 * a row of the block's output error). Each group's code moves by the same 1 or 2 steps
 * (±0.025 or ±0.05 in ratio) from the one it is quantized with now, reflected at the ends
 * of the grid.
 */
export function drawClipMove(cfg: ModelConfig, spec: QuantSpec, rng: Rng, cur: Block, clips: BlockClips | undefined, rowShare = 0): ClipSet[] {
  const names = blockLinears(cfg);
  const sizes = names.map((n) => clipShape(cfg, spec, n)).map(([r, g]) => r * g);
  let i = rng.int(sizes.reduce((s, x) => s + x, 0));
  let li = 0;
  while (i >= sizes[li]) i -= sizes[li++];
  const linear = names[li];
  const nG = clipShape(cfg, spec, linear)[1];
  const row = Math.floor(i / nG);
  const groups = rowShare > 0 && rng.float() < rowShare ? Array.from({ length: nG }, (_, g) => g) : [i % nG];
  const step = (1 + rng.int(2)) * (rng.float() < 0.5 ? -1 : 1);
  const last = CLIP_RATIOS.length - 1;
  return groups.map((group) => {
    const now = currentCode(cfg, spec, cur[linear]!, clips, { linear, row, group });
    const code = now + step < 0 || now + step > last ? now - step : now + step;
    return { linear, row, group, code };
  });
}

/**
 * The FFN units whose incremental evaluation (the base's FFN move) covers clip codes `cs`
 * on w1/w3 (their rows) or on w2 (the units of their column groups), sorted.
 */
export function clipUnits(cfg: ModelConfig, spec: QuantSpec, cs: readonly ClipSet[]): Int32Array {
  const H = cfg.hiddenDim;
  const units = new Set<number>();
  for (const c of cs) {
    if (c.linear === 'w1' || c.linear === 'w3') units.add(c.row);
    else for (let j = c.group * spec.group; j < Math.min(H, (c.group + 1) * spec.group); j++) units.add(j);
  }
  return Int32Array.from(units).sort();
}
