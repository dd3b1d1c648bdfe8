/**
 * Quality of the search on the shipped model with the default budget, as the README and
 * the issue notes quote it: one JSON line per run with perplexity, KL and the share of
 * RTN's log-perplexity gap closed (held-out tokens), steps, accepted moves, wall time and
 * candidates/s. `quality`: W2/W3/W4 × RTN/GPTQ base. `ablation`: W3 g32 RTN with
 * invariance groups switched off and with the search's options (annealing, by-gain
 * schedule, global term). Minutes each; run by name only.
 */
import { join } from 'node:path';
import { ALL_INVARIANCES, autoWorkers, DEFAULT_CONFIG, type SearchTuning } from '../search/config';
import type { Invariance, RunConfig } from '../search/contract';
import { createSearchJob } from '../search/run';
import { emit, note, type BenchModule } from './emit';

const MODEL = join(process.cwd(), 'models', 'stories260K.bin');

async function run(label: string, over: Partial<RunConfig>, tuning: Partial<SearchTuning> = {}): Promise<void> {
  // workers as `invarx run` picks them (they change only speed)
  const config: RunConfig = { ...DEFAULT_CONFIG, workers: autoWorkers(DEFAULT_CONFIG.candidates), model: MODEL, bits: 3, group: 32, ...over };
  note(`${label}: W${config.bits} g${config.group} ${config.base}, ${config.steps} steps`);
  const t0 = performance.now();
  const job = await createSearchJob(config, { tuning });
  while (!job.done) await job.step();
  const r = await job.report();
  const seconds = (performance.now() - t0) / 1000;
  await job.close();
  const row = (q: { ppl: number; kl?: number }) => ({ ppl: +q.ppl.toFixed(4), kl: q.kl === undefined ? undefined : +q.kl.toFixed(4) });
  emit({
    bench: 'quality', label, bits: config.bits, group: config.group, base: config.base, invariances: config.invariances.join(','), tuning,
    fp: row(r.fp), rtn: row(r.rtn), baseRow: row(r.base), baseClip: row(r.baseClip), searched: row(r.searched),
    closes: +r.closes.toFixed(4), closesBase: +r.closesBase.toFixed(4),
    steps: r.steps, accepted: r.accepted, stop: job.progress().stopReason, seconds: +seconds.toFixed(1), candidatesPerSec: +r.candidatesPerSec.toFixed(1),
  });
}

export const qualityBench: BenchModule = {
  name: 'quality',
  byNameOnly: true,
  async run() {
    for (const bits of [3, 4, 2]) for (const base of ['rtn', 'gptq'] as const) await run(`W${bits} ${base}`, { bits, base });
  },
};

const without = (prefix: string): Invariance[] => ALL_INVARIANCES.filter((k) => !k.startsWith(prefix));

export const ablationBench: BenchModule = {
  name: 'ablation',
  byNameOnly: true,
  async run() {
    await run('all invariances', {});
    await run('no scale init', {}, { scaleInit: false });
    await run('scale init only', { steps: 0 });
    await run('without ffn', { invariances: without('ffn') });
    await run('without attn', { invariances: without('attn') });
    await run('without norm', { invariances: without('norm') });
    await run('attention share 0.25', {}, { attnShare: 0.25 });
    await run('annealing', {}, { accept: 'anneal' });
    await run('by-gain schedule', {}, { schedule: 'gain' });
    await run('global term every 5 steps', {}, { globalEvery: 5 });
  },
};
