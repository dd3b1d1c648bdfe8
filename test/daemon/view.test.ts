import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../search/config';
import type { Progress } from '../../search/contract';
import type { JobSpec, JobStatus } from '../../daemon/store';
import { jobView } from '../../daemon/view';

const spec: JobSpec = { id: 'j1', seq: 1, createdAt: '2026-01-01T00:00:00Z', config: { ...DEFAULT_CONFIG, model: '/m.bin', bits: 3, group: 32 } };
const progress: Progress = {
  step: 3, totalSteps: 10, bestLoss: 0.9, validationLoss: 0.4, acceptRate: 0.5, candidatesPerSec: 2, etaSeconds: 7, done: false, phase: 'search',
};
const x = { queuePosition: null, rateKnown: true };

describe('job view: the phase', () => {
  it('names the phase a running job is in, before its first progress report too, and none once it is not running', () => {
    const at = (s: Partial<JobStatus>) => jobView(spec, { state: 'running', updatedAt: 'now', ...s }, x).phase;
    expect(at({ phase: 'calibration' })).toBe('calibration');
    expect(at({ phase: 'calibration', progress })).toBe('search');
    expect(at({ progress: { ...progress, phase: 'report' } })).toBe('report');
    expect(at({})).toBeNull();
    expect(jobView(spec, { state: 'done', updatedAt: 'now', phase: 'report', progress }, x).phase).toBeNull();
  });
});
