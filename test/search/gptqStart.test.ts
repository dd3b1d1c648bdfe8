import { describe, expect, it } from 'vitest';
import { blockLinears, type Model } from '../../core/model/types';
import { loadModel } from '../../core/model/load';
import { jsOps, type Ops } from '../../core/ops';
import { quantizeModel } from '../../core/quant/model';
import { getBackend } from '../../kernels';
import { DEFAULT_CONFIG, GPTQ_REFINE_SWEEPS, resolveTuning } from '../../search/config';
import type { RunConfig } from '../../search/contract';
import { createSearchJob } from '../../search/run';
import { tuningSets } from '../../search/plan';
import { resolveTokenSets } from '../../search/tokens';
import { MODEL_PATH } from '../helpers';
import { formatByName } from '../../core/quant/formats';

/** A small search (few short calibration sequences); scale initialisation off, so the start is the identity transform. */
const tuning = { calibSeqs: 4, validSeqs: 2, evalSeqs: 4, seqTokens: 64, blockSteps: 4, scaleInit: false };

function config(): RunConfig {
  return { ...DEFAULT_CONFIG, model: MODEL_PATH, bits: 3, group: 32, base: 'gptq', steps: 8, patience: 0 };
}

function expectSameLinears(a: Model, b: Model): void {
  for (let l = 0; l < a.config.nLayers; l++) {
    for (const name of blockLinears(a.config)) expect(a.blocks[l][name], `block ${l} ${name}`).toEqual(b.blocks[l][name]);
  }
}

// The report's base rows quantize the FP model with core/quant (true-sequential GPTQ over
// the calibration sequences); the search quantizes the same blocks with its own base
// quantizer (search/baseGptq.ts). Both take their Hessians from core/quant/hessian.ts, so
// before any move the search's model is the report's base, bit for bit (on the int grid
// both refine GPTQ's codes, tuning gptqRefine, and its scales, gptqRefitScales).
describe("the search's GPTQ start", () => {
  it.each([['js', jsOps], ['wasm', getBackend('wasm')]] as [string, Ops][])(
    "is the report's base GPTQ model bit for bit (%s, no clip search)",
    async (_name, ops) => {
      const job = await createSearchJob(config(), { tuning: { ...tuning, clip: false }, ops });
      const r = await job.report();
      expectSameLinears(r.models!.searched, r.models!.base);
      await job.close();
    },
  );

  it.each([[false, false, 0], [true, false, 0], [false, true, 0], [false, true, 0.5], [true, false, 1]])('with clip search and refined codes (act order %s, scales refitted %s, asymmetric %s) is core GPTQ with the same (the report\'s base-with-clip row) bit for bit', async (actOrder, refit, asym) => {
    const ops = getBackend('wasm');
    const t = resolveTuning({ ...tuning, clip: true, gptqRefine: GPTQ_REFINE_SWEEPS, gptqActOrder: actOrder, gptqRefitScales: refit, gptqAsym: asym });
    const job = await createSearchJob(config(), { tuning: t, ops });
    const r = await job.report();
    const model = loadModel(MODEL_PATH);
    const calib = resolveTokenSets(model, config(), t, tuningSets(t), ops).calib;
    const opts = { bits: 3, group: 32, method: 'gptq', clip: true, f16Scales: t.f16Scales, calib, ops, refineSweeps: t.gptqRefine, actOrder, refitScales: refit, asymmetric: asym } as const;
    expectSameLinears(r.models!.searched, quantizeModel(model, opts));
    // each setting changes the model: without refinement, in the other column order, with the scales refitted or not
    const unrefined = quantizeModel(model, { ...opts, refineSweeps: 0 });
    expect(r.models!.searched.blocks[0].w2).not.toEqual(unrefined.blocks[0].w2);
    const otherOrder = quantizeModel(model, { ...opts, actOrder: !actOrder });
    expect(r.models!.searched.blocks[0].w2).not.toEqual(otherOrder.blocks[0].w2);
    const otherScales = quantizeModel(model, { ...opts, refitScales: !refit });
    expect(r.models!.searched.blocks[0].w2).not.toEqual(otherScales.blocks[0].w2);
    const otherAsym = quantizeModel(model, { ...opts, asymmetric: asym ? 0 : 0.5 });
    // (block 0's wq/wk/wv read the same inputs in both models: their targets are W itself)
    expect(r.models!.searched.blocks[0].w2).not.toEqual(otherAsym.blocks[0].w2);
    expect(r.models!.searched.blocks[1].wq).not.toEqual(otherAsym.blocks[1].wq);
    await job.close();
  });

  it.each(['q4_0', 'q4_k'])("on ggml format %s is the report's base GPTQ model, and with clip search core GPTQ with clip, bit for bit", async (format) => {
    const ops = getBackend('wasm');
    const cfg: RunConfig = { ...config(), bits: 4, group: format === 'q4_k' ? 256 : 32, format, steps: 2 };
    const plain = await createSearchJob(cfg, { tuning: { ...tuning, clip: false }, ops });
    const r = await plain.report();
    expectSameLinears(r.models!.searched, r.models!.base);
    await plain.close();
    const t = resolveTuning({ ...tuning, clip: true });
    const clipped = await createSearchJob(cfg, { tuning: t, ops });
    const rc = await clipped.report();
    const model = loadModel(MODEL_PATH);
    const calib = resolveTokenSets(model, cfg, t, tuningSets(t), ops).calib;
    const core = quantizeModel(model, { bits: 4, group: 32, method: 'gptq', clip: true, calib, ops, format: formatByName(format) });
    expectSameLinears(rc.models!.searched, core);
    await clipped.close();
  });
});
