/**
 * `--format` as run and submit take it: a ggml format fixes bits and block, anything that
 * contradicts it (or asks for the GPTQ base on it) is one clear error, and the format is
 * part of the job's identity (configHash) and of submit's payload.
 */
import { describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import { runConfigFromOptions } from '../../daemon/commands/runOptions';
import { parseSubmitArgs } from '../../daemon/submit';
import { configHash, searchSpec, DEFAULT_TUNING, validateRunConfig, resolveTuning } from '../../search/config';

const base = { model: 'm.bin', base: 'rtn', steps: '10', timeBudget: '0', seed: '1', invariances: 'all', candidates: '2', workers: '1', patience: '0' };

function error(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(InvarxError);
    return (e as Error).message;
  }
  throw new Error('no error');
}

describe('--format', () => {
  it('a ggml format fixes bits and group; the int grid needs both', () => {
    expect(runConfigFromOptions({ ...base, format: 'q4_1' })).toMatchObject({ bits: 4, group: 32, format: 'q4_1' });
    expect(runConfigFromOptions({ ...base, format: 'Q3_K' })).toMatchObject({ bits: 3, group: 256, format: 'q3_k' });
    expect(runConfigFromOptions({ ...base, format: 'q5_0', bits: '5', group: '32' })).toMatchObject({ bits: 5, group: 32 });
    const int = runConfigFromOptions({ ...base, bits: '3', group: '64' });
    expect(int).toMatchObject({ bits: 3, group: 64 });
    expect('format' in int).toBe(false); // an int run's config is as before
    expect(error(() => runConfigFromOptions({ ...base, bits: '3' }))).toMatch(/--bits and --group are required/);
  });

  it('unknown formats, contradicting bits/group and a misplaced --embed are one clear error each; GPTQ takes a ggml format', () => {
    expect(error(() => runConfigFromOptions({ ...base, format: 'q9_0' }))).toMatch(/unknown quantization format "q9_0"/);
    const cfg = (o: Record<string, string>) => validateRunConfig(runConfigFromOptions({ ...base, ...o }));
    expect(error(() => cfg({ format: 'q4_0', bits: '3' }))).toMatch(/format q4_0 fixes 4 bits in blocks of 32; bits 3 group 32 contradict it/);
    expect(error(() => cfg({ format: 'q4_k', group: '32' }))).toMatch(/format q4_k fixes 4 bits in blocks of 256/);
    expect(cfg({ format: 'q4_0', base: 'gptq' })).toMatchObject({ format: 'q4_0', base: 'gptq', bits: 4, group: 32 });
    expect(cfg({ format: 'q3_k', base: 'gptq' })).toMatchObject({ format: 'q3_k', base: 'gptq', bits: 3, group: 256 });
    expect(error(() => cfg({ format: 'q4_0', embed: 'q4_0' }))).toMatch(/embed must be q8_0 or f16/);
    expect(error(() => cfg({ bits: '4', group: '32', embed: 'f16' }))).toMatch(/embed applies to a ggml format/);
    expect(cfg({ format: 'q4_0', embed: 'f16' }).embed).toBe('f16');
  });

  it('changes the job\'s identity and the search\'s spec', () => {
    const q40 = runConfigFromOptions({ ...base, format: 'q4_0' });
    const q41 = runConfigFromOptions({ ...base, format: 'q4_1' });
    const int = runConfigFromOptions({ ...base, bits: '4', group: '32' });
    expect(new Set([configHash(q40), configHash(q41), configHash(int)]).size).toBe(3);
    expect(searchSpec(q41, DEFAULT_TUNING)).toEqual({ bits: 4, group: 32, clip: true, f16Scales: true, format: 'q4_1' });
    expect(searchSpec(int, DEFAULT_TUNING)).toEqual({ bits: 4, group: 32, clip: true, f16Scales: true });
  });

  it('takes GPTQ\'s refinement on the int grid only; refitted scales without refinement are one clear error', () => {
    const gptq = runConfigFromOptions({ ...base, base: 'gptq', bits: '3', group: '32' });
    const refit = { ...DEFAULT_TUNING, gptqRefine: 2, gptqRefitScales: true };
    expect(searchSpec(gptq, refit)).toEqual({ bits: 3, group: 32, clip: true, f16Scales: true, gptqRefine: 2, gptqRefitScales: true });
    expect(searchSpec(runConfigFromOptions({ ...base, base: 'gptq', format: 'q3_k' }), refit)).toEqual({ bits: 3, group: 256, clip: true, f16Scales: true, format: 'q3_k' });
    expect(error(() => searchSpec(gptq, { ...refit, gptqRefine: 0 }))).toMatch(/gptqRefitScales .*needs gptqRefine > 0/);
  });

  it('takes asymmetric GPTQ on the GPTQ base on the int grid only, with one clear error elsewhere', () => {
    const gptq = runConfigFromOptions({ ...base, base: 'gptq', bits: '3', group: '32' });
    const asym = { ...DEFAULT_TUNING, gptqAsym: 0.5 };
    expect(searchSpec(gptq, asym)).toEqual({ bits: 3, group: 32, clip: true, f16Scales: true, gptqAsym: 0.5 });
    expect(error(() => searchSpec(runConfigFromOptions({ ...base, base: 'gptq', format: 'q3_k' }), asym))).toMatch(/gptqAsym .*int grid only/);
    expect(error(() => searchSpec(runConfigFromOptions({ ...base, bits: '3', group: '32' }), asym))).toMatch(/gptqAsym .*GPTQ base/);
    expect(error(() => resolveTuning({ gptqAsym: 1.5 }))).toMatch(/gptqAsym must be a number in \[0, 1\]/);
  });

  it('is a key of submit\'s payload (a short string)', () => {
    const { config } = parseSubmitArgs({ config: { model: '/m.bin', bits: 4, group: 32, format: 'q4_0', embed: 'f16' } });
    expect(config).toMatchObject({ format: 'q4_0', embed: 'f16' });
    expect(() => parseSubmitArgs({ config: { model: '/m.bin', bits: 4, group: 32, format: 4 } })).toThrow(/config.format must be a short string/);
  });
});
