import { describe, expect, it } from 'vitest';
import { outOfTime, PhaseClock, reportPlan, reportSeconds, type ReportCosts } from '../../search/phases';

describe('phases and the time budget', () => {
  it('PhaseClock adds up the seconds of each phase, the running one included, in phase order', () => {
    let t = 0;
    const clock = new PhaseClock(() => t);
    expect(clock.phase).toBeNull();
    clock.enter('calibration');
    t = 2;
    clock.enter('tokens');
    t = 3.5;
    expect(clock.phase).toBe('tokens');
    expect(clock.inPhase).toBe(1.5);
    clock.enter('calibration');
    t = 4;
    expect(clock.seconds()).toEqual({ tokens: 1.5, calibration: 2.5 });
    expect(Object.keys(clock.seconds())).toEqual(['tokens', 'calibration']);
    clock.stop();
    t = 10;
    expect(clock.seconds()).toEqual({ tokens: 1.5, calibration: 2.5 });
    expect(clock.phase).toBeNull();
  });

  it('PhaseClock tells each phase as it begins with its predicted seconds (once, however often it is re-entered), and counts down the running one', () => {
    let t = 0;
    const told: [string, number | null][] = [];
    const clock = new PhaseClock(() => t, (phase, planned) => told.push([phase, planned]));
    clock.planned = { tokens: 10, base: 4 };
    clock.enter('tokens');
    t = 3;
    expect(clock.etaSeconds).toBe(7);
    t = 12;
    expect(clock.etaSeconds).toBe(0); // over its prediction: 0, never negative
    clock.enter('calibration');
    expect(clock.etaSeconds).toBeNull();
    clock.enter('base');
    clock.stop();
    clock.enter('base'); // the search enters its phase at every step: told once
    expect(told).toEqual([['tokens', 10], ['calibration', null], ['base', 4]]);
    clock.enter('report');
    expect(told.at(-1)).toEqual(['report', null]);
  });

  const costs: ReportCosts = { evalPass: 10, quantize: { rtn: 1, base: 30, baseClip: 50 } };

  it('the report keeps every row when they fit, and drops base+clip, then the base, then RTN when they do not', () => {
    expect(reportSeconds(['rtn', 'base', 'baseClip'], costs)).toBe(20 + 11 + 40 + 60);
    expect(reportPlan(null, costs)).toEqual({ rows: ['rtn', 'base', 'baseClip'], cut: [] });
    expect(reportPlan(131, costs)).toEqual({ rows: ['rtn', 'base', 'baseClip'], cut: [] });
    expect(reportPlan(130, costs)).toEqual({ rows: ['rtn', 'base'], cut: ['baseClip'] });
    expect(reportPlan(70, costs)).toEqual({ rows: ['rtn'], cut: ['baseClip', 'base'] });
    expect(reportPlan(5, costs)).toEqual({ rows: [], cut: ['baseClip', 'base', 'rtn'] });
    expect(reportPlan(31, costs, ['rtn', 'baseClip'])).toEqual({ rows: ['rtn'], cut: ['baseClip'] });
  });

  it('the search stops when one more step would eat into the reserve, never without a budget', () => {
    expect(outOfTime(0, 1e9, 1e9, 1)).toBe(false);
    expect(outOfTime(100, 50, 40, 5)).toBe(false);
    expect(outOfTime(100, 50, 40, 11)).toBe(true);
  });
});
