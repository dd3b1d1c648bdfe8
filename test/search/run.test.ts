import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { forward } from '../../core/forward';
import { readLlama2c } from '../../core/model/llama2c';
import { DEFAULT_CONFIG } from '../../search/config';
import type { RunConfig, SearchJob } from '../../search/contract';
import { createSearchJob } from '../../search/run';
import { MODEL_PATH, ROOT, shippedModel } from '../helpers';

/** A small, quick search: few short calibration sequences, short stints. */
const tuning = { calibSeqs: 4, validSeqs: 2, evalSeqs: 4, seqTokens: 64, blockSteps: 4 };

function config(over: Partial<RunConfig> = {}): RunConfig {
  return { ...DEFAULT_CONFIG, model: MODEL_PATH, bits: 3, group: 32, steps: 24, patience: 0, ...over };
}

async function runToEnd(job: SearchJob): Promise<void> {
  while (!job.done) await job.step();
}

const packr = new Packr({ moreTypes: true });
const tmp = () => mkdtempSync(join(tmpdir(), 'invarx-search-'));

describe('search run', () => {
  it('is a function of (model, config, seed): same seed, same trajectory and export', async () => {
    const a = await createSearchJob(config(), { tuning });
    const b = await createSearchJob(config(), { tuning });
    await runToEnd(a);
    await runToEnd(b);
    expect(packr.pack(a.snapshot())).toEqual(packr.pack(b.snapshot()));
    const [da, db] = [tmp(), tmp()];
    await a.exportTo(da);
    await b.exportTo(db);
    for (const f of ['transforms.msgpack', 'quantized-fake.bin', 'transformed-fp.bin']) {
      expect(readFileSync(join(da, f)).equals(readFileSync(join(db, f)))).toBe(true);
    }
    await a.close();
    await b.close();
  });

  it('improves on the base quantizer, with another seed too, and keeps the FP function', async () => {
    const job = await createSearchJob(config({ seed: 12345, invariances: DEFAULT_CONFIG.invariances.filter((k) => k !== 'ffn-rot') }), { tuning });
    await runToEnd(job);
    const r = await job.report();
    expect(r.accepted).toBeGreaterThan(0);
    expect(r.searched.kl!).toBeLessThan(r.base.kl!);
    expect(r.searched.ppl).toBeLessThan(r.base.ppl);
    // Only exact invariances were on: the transformed FP model computes the same function.
    const dir = tmp();
    await job.exportTo(dir);
    const transformed = readLlama2c(join(dir, 'transformed-fp.bin'));
    const tokens = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315];
    const a = forward(shippedModel(), tokens).logits;
    const b = forward(transformed, tokens).logits;
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    expect(maxDiff).toBeLessThan(2e-3);
    // ...while the weights really changed.
    expect(Array.from(transformed.blocks[0].w2)).not.toEqual(Array.from(shippedModel().blocks[0].w2));
    await job.close();
  });

  it('resumes from a mid-run snapshot to exactly the uninterrupted result', async () => {
    const whole = await createSearchJob(config(), { tuning });
    await runToEnd(whole);
    const first = await createSearchJob(config(), { tuning });
    for (let i = 0; i < 10; i++) await first.step(); // stops mid-stint: the snapshot is the boundary at step 8
    const snap = packr.unpack(packr.pack(first.snapshot()));
    expect(snap.step).toBe(8);
    await first.close();
    const resumed = await createSearchJob(config(), { tuning, resumeFrom: snap });
    await runToEnd(resumed);
    expect(packr.pack(resumed.snapshot())).toEqual(packr.pack(whole.snapshot()));
    await whole.close();
    await resumed.close();
  });

  it('gives the same result on 2 workers as on 1', async () => {
    if (!existsSync(join(ROOT, 'dist', 'worker.js'))) throw new Error('dist/worker.js missing: npm test builds it (npm run build)');
    const one = await createSearchJob(config({ steps: 8 }), { tuning });
    const two = await createSearchJob(config({ steps: 8, workers: 2 }), { tuning });
    await runToEnd(one);
    await runToEnd(two);
    expect(packr.pack(two.snapshot())).toEqual(packr.pack(one.snapshot()));
    await one.close();
    await two.close();
  });

  it('rejects an impossible configuration with one clear error', async () => {
    await expect(createSearchJob(config({ bits: 1 }))).rejects.toThrow(/bits must be an integer in \[2, 8\]/);
    await expect(createSearchJob(config({ model: '/nonexistent/model.bin' }))).rejects.toThrow(/cannot read model file/);
  });
});
