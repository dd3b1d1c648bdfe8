/**
 * configHash is the identity a checkpoint is written under: a resumed job must find the
 * checkpoints older versions wrote for it, so settings added later must not change the hash
 * at the value that runs as before, and must change it at any other.
 */
import { describe, expect, it } from 'vitest';
import { configHash, DEFAULT_CONFIG, DEFAULT_TUNING, recommendedTuning, COOL_CALIB_TEMPERATURE, GPTQ_REFINE_SWEEPS, GPTQ_ASYM_SHARE } from '../../search/config';

const config = { ...DEFAULT_CONFIG, model: '/models/m.bin', bits: 3, group: 32, steps: 50, seed: 1 };
const clipOn = { ...DEFAULT_TUNING, clipShare: 0.2, clipInit: true };

describe('configHash', () => {
  it('is the hash older versions wrote (before the move mix and calibration temperature settings), with the clip search off and on', () => {
    // printed by the version before `mix` existed (commit 5c617ad's parent) for these two jobs
    expect(configHash(config)).toBe('ba74e7c3c0afc4f6245981c378c7482ecc56995f9b38e7d1282c0a2f1490eb65');
    expect(configHash(config, clipOn)).toBe('c84ac994e1d59d0e9fda2d213ac7d4accfdcf6657076402a181b4ed41b7cb264');
  });

  it('changes with a setting that changes the run, not with one that changes only its speed or budget', () => {
    const h = configHash(config);
    expect(configHash(config, { ...DEFAULT_TUNING, mix: 'adaptive' })).not.toBe(h);
    expect(configHash(config, { ...DEFAULT_TUNING, calibTemperature: 0.8 })).not.toBe(h);
    expect(configHash(config, { ...DEFAULT_TUNING, gptqRefine: 4 })).not.toBe(h);
    expect(configHash(config, { ...DEFAULT_TUNING, gate: true })).not.toBe(h);
    expect(configHash(config, { ...DEFAULT_TUNING, gptqActOrder: true })).not.toBe(h);
    expect(configHash(config, { ...DEFAULT_TUNING, gptqAsym: 0.5 })).not.toBe(h);
    expect(configHash(config, { ...DEFAULT_TUNING, gptqAsym: 0 })).toBe(h);
    expect(configHash(config, { ...DEFAULT_TUNING, gptqRefine: 2, gptqRefitScales: true })).not.toBe(configHash(config, { ...DEFAULT_TUNING, gptqRefine: 2 }));
    expect(configHash(config, { ...DEFAULT_TUNING, normTune: true })).not.toBe(h);
    expect(configHash(config, { ...DEFAULT_TUNING, normTune: true, rowGains: true })).not.toBe(configHash(config, { ...DEFAULT_TUNING, normTune: true }));
    expect(configHash(config, { ...clipOn, mix: 'adaptive' })).not.toBe(configHash(config, clipOn));
    expect(configHash({ ...config, seed: 2 })).not.toBe(h);
    expect(configHash({ ...config, workers: 7, timeBudget: 60, memoryBudget: 1 << 30 })).toBe(h);
  });
});

describe('recommendedTuning (what a new job records)', () => {
  it('cools the calibration set for RTN at 3 and 4 bits and GPTQ at 2, refines GPTQ (its scales too at 2 and 3 bits) and makes it asymmetric, on the int grid only, tunes the norm gains (and RTN\'s row gains on the int grid), and keeps what the job sets', () => {
    const norms = { normTune: true };
    const rows = { rowGains: true };
    const cool = { calibTemperature: COOL_CALIB_TEMPERATURE, ...norms };
    const refine = { gptqRefine: GPTQ_REFINE_SWEEPS, gptqAsym: GPTQ_ASYM_SHARE, ...norms };
    const refit = { ...refine, gptqRefitScales: true };
    expect(recommendedTuning({ base: 'rtn', bits: 4 })).toEqual({ ...cool, ...rows });
    expect(recommendedTuning({ base: 'gptq', bits: 2 })).toEqual({ ...cool, ...refit });
    expect(recommendedTuning({ base: 'gptq', bits: 3, format: 'int' })).toEqual(refit);
    expect(recommendedTuning({ base: 'gptq', bits: 4 })).toEqual(refine);
    expect(recommendedTuning({ base: 'gptq', bits: 3 }, { gptqRefitScales: false })).toEqual({ ...refine, gptqRefitScales: false });
    expect(recommendedTuning({ base: 'gptq', bits: 4 }, { gptqRefine: 0 })).toEqual({ gptqRefine: 0, gptqAsym: GPTQ_ASYM_SHARE, ...norms });
    expect(recommendedTuning({ base: 'gptq', bits: 3 }, { gptqRefine: 0, gptqAsym: 0 })).toEqual({ gptqRefine: 0, gptqAsym: 0, ...norms });
    expect(recommendedTuning({ base: 'rtn', bits: 3, format: 'int' }, { seqTokens: 64 })).toEqual({ seqTokens: 64, ...cool, ...rows });
    expect(recommendedTuning({ base: 'rtn', bits: 3 }, { calibTemperature: 1 })).toEqual({ calibTemperature: 1, ...norms, ...rows });
    expect(recommendedTuning({ base: 'rtn', bits: 3 }, { normTune: false })).toEqual({ normTune: false, calibTemperature: COOL_CALIB_TEMPERATURE, ...rows });
    expect(recommendedTuning({ base: 'rtn', bits: 3 }, { rowGains: false })).toEqual({ rowGains: false, calibTemperature: COOL_CALIB_TEMPERATURE, ...norms });
    for (const c of [{ base: 'rtn', bits: 2 }, { base: 'rtn', bits: 5 }] as const) expect(recommendedTuning(c)).toEqual({ ...norms, ...rows });
    const plain = [{ base: 'rtn', bits: 4, format: 'q4_0' }, { base: 'gptq', bits: 4, format: 'q4_0' }] as const;
    for (const c of plain) {
      expect(recommendedTuning(c)).toEqual(norms);
      expect(recommendedTuning(c, { seqTokens: 64 })).toEqual({ seqTokens: 64, ...norms });
    }
  });

  it('leaves the default itself at 1, so a job recorded without the setting (by an older version) keeps its identity and its run', () => {
    expect(DEFAULT_TUNING.calibTemperature).toBe(1);
    expect(DEFAULT_TUNING.gptqRefine).toBe(0);
    expect(DEFAULT_TUNING.gptqRefitScales).toBe(false);
    expect(DEFAULT_TUNING.gptqAsym).toBe(0);
    expect(DEFAULT_TUNING.normTune).toBe(false);
    expect(DEFAULT_TUNING.rowGains).toBe(false);
    expect(configHash(config, { ...DEFAULT_TUNING, ...recommendedTuning(config) })).not.toBe(configHash(config));
  });
});

