/**
 * Clip initialisation: after a block's scale initialisation, each linear's clip codes are
 * shifted together, all groups by the same number of codes from the ones they are
 * quantized with now (a shift of −2 … +2, ±0.05 in ratio), and the shift that lowers the
 * block loss most is kept. The RTN base chose each group's ratio by its own weight error;
 * this moves every group of a linear towards what the block's output prefers, in a few
 * exact evaluations per linear. Each accepted shift is one recorded clip move (step 0).
 */
import { blockLinears, type Block, type LinearName, type ModelConfig } from '../core/model/types';
import { CLIP_RATIOS, type QuantSpec } from '../core/quant/rtn';
import { clipShape, currentCode, type BlockClips, type ClipSet } from './clipMoves';
import type { BlockObjective } from './objective';
import type { Move } from './proposals';

export const CLIP_SHIFTS = [-2, -1, 1, 2];

/** Every group of linear `name` set to its current code shifted by `d`, clamped to the grid. */
export function shiftedLinear(cfg: ModelConfig, spec: QuantSpec, cur: Block, clips: BlockClips | undefined, name: LinearName, d: number): ClipSet[] {
  const [rows, nG] = clipShape(cfg, spec, name);
  const last = CLIP_RATIOS.length - 1;
  const out: ClipSet[] = [];
  for (let row = 0; row < rows; row++) {
    for (let group = 0; group < nG; group++) {
      const now = currentCode(cfg, spec, cur[name]!, clips, { linear: name, row, group });
      out.push({ linear: name, row, group, code: Math.min(last, Math.max(0, now + d)) });
    }
  }
  return out;
}

/**
 * Clip initialisation of one block: per linear, the shifts scored together (`score`), the
 * best kept (`accept`) if it strictly lowers the block loss.
 */
export async function clipInit(
  cfg: ModelConfig, spec: QuantSpec, obj: BlockObjective, cur: Block,
  score: (moves: Move[]) => Promise<number[]>, accept: (move: Move) => void,
): Promise<void> {
  for (const name of blockLinears(cfg)) {
    const moves: Move[] = CLIP_SHIFTS.map((d) => ({ kind: 'clip', transforms: [], clips: shiftedLinear(cfg, spec, cur, obj.clips, name, d) }));
    const losses = await score(moves);
    let best = 0;
    for (let i = 1; i < losses.length; i++) if (losses[i] < losses[best]) best = i;
    if (losses[best] < obj.loss) accept(moves[best]);
  }
}
