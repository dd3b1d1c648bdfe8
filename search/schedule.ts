/**
 * Which block the next stint works on (SearchTuning.schedule). A pure function of the
 * per-block record kept in the snapshot, so a resumed run picks the same blocks.
 */
import type { SearchTuning } from './config';

export interface BlockRecord {
  /** Per block: normalised loss decrease of its last stint. */
  lastGain: number[];
  /** Per block: the stint it was last visited in (−1: never). */
  lastVisit: number[];
  /** Stints done so far (the next one's index). */
  stint: number;
}

/**
 * 'round-robin': the block after `current`. 'gain': a block never visited or left alone
 * for 2·nLayers stints (so none is starved), else the largest last gain; ties go to the
 * least recently visited, then the lowest index.
 */
export function nextBlock(schedule: SearchTuning['schedule'], current: number, r: BlockRecord, nLayers: number): number {
  if (schedule === 'round-robin') return (current + 1) % nLayers;
  let best = 0;
  let bestKey = -Infinity;
  for (let l = 0; l < nLayers; l++) {
    const starved = r.lastVisit[l] < 0 || r.stint - r.lastVisit[l] >= 2 * nLayers;
    const key = starved ? Infinity : r.lastGain[l];
    if (key > bestKey || (key === bestKey && r.lastVisit[l] < r.lastVisit[best])) {
      best = l;
      bestKey = key;
    }
  }
  return best;
}
