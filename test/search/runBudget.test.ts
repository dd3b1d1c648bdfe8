import { describe, expect, it } from 'vitest';
import { Rng } from '../../core/rng';
import { freshBoundary } from '../../search/boundary';
import { DEFAULT_CONFIG, DEFAULT_TUNING } from '../../search/config';
import { EXPORT_BYTES_PER_SECOND, exportBytes, exportSeconds } from '../../search/export';
import { RunBudget } from '../../search/runBudget';
import { MODEL_PATH, shippedModel } from '../helpers';

const model = shippedModel();
const tokens = { calib: [[1, 2, 3]], valid: [[1, 2, 3]], eval: [[1, 2, 3]] };
const sets = { calibSeqs: 1, validSeqs: 1, evalSeqs: 1 };

/** A budget of 1000 s that started now, for a job that exports the shipped model or none. */
function budget(exports: boolean): RunBudget {
  const config = { ...DEFAULT_CONFIG, model: MODEL_PATH, bits: 4, group: 32, timeBudget: 1000 };
  const b = new RunBudget(config, DEFAULT_TUNING, model.config, tokens, Date.now(), exports ? model : undefined);
  b.calibrationSeconds = 100;
  b.baseSeconds = 300;
  return b;
}

describe('the time budget keeps time for the export', () => {
  it('predicts the export from the bytes it writes and the codes it re-derives (a calibration pass and a base quantization)', () => {
    const costs = { calibrationSeconds: 100, baseSeconds: 300 };
    const writing = exportBytes(model) / EXPORT_BYTES_PER_SECOND;
    expect(exportSeconds(model, { calibrationSeconds: 0, baseSeconds: 0 })).toBeCloseTo(writing, 12);
    expect(exportSeconds(model, costs)).toBeGreaterThan(writing + 400);
    // a model llama2.c cannot hold gets no llama2.c files: 8 bytes fewer per weight
    const opt = { ...model, config: { ...model.config, normEps: 1e-6 } };
    expect(exportBytes(model) - exportBytes(opt)).toBe((exportBytes(model) / 14) * 8);
  });

  it('reserves it before the report and the search only when the job exports', () => {
    const b = freshBoundary('h', Rng.fromSeed(1).state(), model.config.nLayers, sets);
    const none = budget(false);
    const some = budget(true);
    expect(none.exportReserve()).toBe(0);
    expect(some.exportReserve()).toBeCloseTo(exportSeconds(model, some), 9);
    // 600 s more work fits a 1000 s budget only without the export's ~480 s
    expect(none.mustStop(b, 600)).toBe(false);
    expect(some.mustStop(b, 600)).toBe(true);
    expect(none.leftForReport()! - some.leftForReport()!).toBeCloseTo(some.exportReserve(), 1);
    // the table may run 5% of the budget past it (a budgeted run ends within 1.1 times it)
    expect(none.leftForReport()! - none.left()!).toBeCloseTo(50, 1);
  });

  it('predicts the table\'s plain-RTN row from its own timing once measured, the base rows from the base pass', () => {
    const b = budget(false);
    expect(b.reportCosts().quantize).toEqual({ rtn: 300, base: 300, baseClip: 300 });
    b.rtnSeconds = 12;
    expect(b.reportCosts().quantize).toEqual({ rtn: 12, base: 300, baseClip: 300 });
  });
});
