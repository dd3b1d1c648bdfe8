import { describe, expect, it } from 'vitest';
import { forward } from '../../core/forward';
import { jsOps } from '../../core/ops';
import { meanKl } from '../../core/metrics';
import { quantizeModel } from '../../core/quant/model';
import { QualityProbe } from '../../search/validation';
import { shippedModel } from '../helpers';

describe('quality probe', () => {
  const m = shippedModel();
  const seqs = [[1, 403, 407, 261, 378, 432, 383, 286, 261, 376], [1, 20, 300, 41, 7, 9, 11]];
  const q = quantizeModel(m, { bits: 3, group: 32, method: 'rtn' });
  const probe = new QualityProbe(m, seqs, jsOps);

  it('KL(FP ‖ q) matches core/metrics; the FP model scores 0', () => {
    expect(probe.measure(m).kl).toBe(0);
    const kl = probe.measure(q).kl;
    expect(kl).toBeGreaterThan(0.05);
    expect(Math.abs(kl - meanKl(m, q, seqs, { ops: jsOps }))).toBeLessThan(1e-12);
  });

  it('run from any block on that block\'s inputs, it gives what the whole model gives', () => {
    const whole = probe.measure(q);
    for (let l = 0; l < m.config.nLayers; l++) {
      const xs = seqs.map((s) => forward(q, s, { ops: jsOps, capture: true }).hidden![l]);
      expect(probe.measureFrom(q, l, xs)).toEqual(whole);
    }
  });
});
