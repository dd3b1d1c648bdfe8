/**
 * Quality of the search on the shipped model with the default budget, as the README and
 * the issue notes quote it: one JSON line per run with perplexity, KL and the share of
 * RTN's log-perplexity gap closed (held-out tokens), steps, accepted moves, wall and CPU
 * time (wall time on a shared machine says little; CPU seconds of this process, worker
 * threads included, do) and candidates/s. `quality`: W2/W3/W4 × RTN/GPTQ base for seeds
 * QUALITY_SEEDS (default 1,2,3) with tuning QUALITY_TUNING (a JSON object, default none),
 * then per row the means over seeds (a 'quality-mean' line, and the table on stderr),
 * with wall and CPU time per row. `ablation`: W3 g32 RTN with invariance groups switched off and with
 * the search's options (annealing, by-gain schedule, global term). Minutes each; run by
 * name only.
 */
import { join } from 'node:path';
import { ALL_INVARIANCES, autoWorkers, DEFAULT_CONFIG, recommendedTuning, type SearchTuning } from '../search/config';
import type { Invariance, RunConfig } from '../search/contract';
import { createSearchJob } from '../search/run';
import { emit, note, type BenchModule } from './emit';

const MODEL = join(process.cwd(), 'models', 'stories260K.bin');

interface QualityLine {
  bits: number;
  base: string;
  seed: number;
  searched: { ppl: number };
  closes: number;
  seconds: number;
  cpuSeconds: number;
}

async function run(label: string, over: Partial<RunConfig>, tuning: Partial<SearchTuning> = {}): Promise<QualityLine> {
  // workers as `invarx run` picks them (they change only speed)
  const config: RunConfig = { ...DEFAULT_CONFIG, workers: autoWorkers(DEFAULT_CONFIG.candidates), model: MODEL, bits: 3, group: 32, ...over };
  note(`${label}: W${config.bits} g${config.group} ${config.base}, ${config.steps} steps`);
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const effective = recommendedTuning(config, tuning);
  const job = await createSearchJob(config, { tuning: effective });
  while (!job.done) await job.step();
  const r = await job.report();
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  await job.close();
  const row = (q: { ppl: number; kl?: number }) => ({ ppl: +q.ppl.toFixed(4), kl: q.kl === undefined ? undefined : +q.kl.toFixed(4) });
  const line = {
    bench: 'quality', label, bits: config.bits, group: config.group, base: config.base, seed: config.seed, invariances: config.invariances.join(','), tuning: effective,
    fp: row(r.fp), rtn: row(r.rtn), baseRow: row(r.base), baseClip: row(r.baseClip), searched: row(r.searched),
    closes: +r.closes.toFixed(4), closesBase: +r.closesBase.toFixed(4),
    steps: r.steps, accepted: r.accepted, stop: job.progress().stopReason,
    seconds: +seconds.toFixed(1), cpuSeconds: +cpuSeconds.toFixed(1), candidatesPerSec: +r.candidatesPerSec.toFixed(1),
  };
  emit(line);
  return line;
}

/** QUALITY_SEEDS (comma-separated), default 1,2,3. */
function seeds(): number[] {
  const s = (process.env.QUALITY_SEEDS ?? '1,2,3').split(',').map((x) => Number(x.trim()));
  if (s.length === 0 || s.some((x) => !Number.isInteger(x) || x < 0)) throw new Error(`QUALITY_SEEDS must be seeds separated by commas, got ${process.env.QUALITY_SEEDS}`);
  return s;
}

/** Per bits × base, means over seeds of searched ppl, closes, wall and CPU seconds: one 'quality-mean' line each, and the table. */
function qualityTable(lines: QualityLine[]): string {
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const out = ['bits base  seeds  searched ppl  closes  wall s  cpu s'];
  const keys = [...new Set(lines.map((l) => `${l.bits} ${l.base}`))];
  for (const k of keys) {
    const ls = lines.filter((l) => `${l.bits} ${l.base}` === k);
    const [bits, base] = k.split(' ');
    const m = {
      ppl: mean(ls.map((l) => l.searched.ppl)), closes: mean(ls.map((l) => l.closes)),
      seconds: mean(ls.map((l) => l.seconds)), cpuSeconds: mean(ls.map((l) => l.cpuSeconds)),
    };
    emit({ bench: 'quality-mean', bits: Number(bits), base, seeds: ls.map((l) => l.seed), searched: { ppl: +m.ppl.toFixed(4) }, closes: +m.closes.toFixed(4), seconds: +m.seconds.toFixed(1), cpuSeconds: +m.cpuSeconds.toFixed(1) });
    out.push(
      `W${bits}   ${base.padEnd(5)} ${ls.map((l) => l.seed).join(',').padEnd(6)} ${m.ppl.toFixed(3).padStart(12)}` +
      `  ${(100 * m.closes).toFixed(1).padStart(5)}%  ${m.seconds.toFixed(0).padStart(6)}  ${m.cpuSeconds.toFixed(0).padStart(5)}`,
    );
  }
  return out.join('\n');
}

export const qualityBench: BenchModule = {
  name: 'quality',
  byNameOnly: true,
  async run() {
    const lines: QualityLine[] = [];
    const tuning = JSON.parse(process.env.QUALITY_TUNING ?? '{}') as Partial<SearchTuning>;
    for (const bits of [3, 4, 2]) {
      for (const base of ['rtn', 'gptq'] as const) for (const seed of seeds()) lines.push(await run(`W${bits} ${base} seed ${seed}`, { bits, base, seed }, tuning));
    }
    note(`means over seeds (held-out ppl; closes: share of RTN's log-perplexity gap to FP):\n${qualityTable(lines)}`);
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
