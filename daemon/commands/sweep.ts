/**
 * `invarx sweep`: submits the cross product of models × bits × bases × seeds (the other
 * options as `invarx run` takes them) to the daemon of --home, local or queue-backed, with
 * the same `submit` verb as `invarx submit`.
 *
 * `invarx sweep-report`: one comparison table of the daemon's finished jobs (searched
 * perplexity and KL, the share of RTN's log-perplexity gap closed, with and without the
 * search) and, with --html, a self-contained page with one SVG plot per model: closes vs
 * bits for each method, the mean over seeds as a line and the seeds' spread as a bar.
 */
import { writeFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import type { Command } from 'commander';
import { fail } from '../../core/errors';
import { validateRunConfig } from '../../search/config';
import type { FinalReport, RunConfig } from '../../search/contract';
import { callDaemon } from '../client';
import { resolveHome, socketPath } from '../home';
import type { Verb } from '../protocol';
import { niceTicks } from '../report';
import type { JobView } from '../view';
import { addRunOptions, runConfigFromOptions, tuningFromOptions } from './runOptions';

const PATH_KEYS = ['model', 'tokenizer', 'calibTokens', 'evalTokens', 'calibText', 'evalText'] as const;

const call = (o: { home?: string }, verb: Verb, args: Record<string, unknown> = {}) => callDaemon(socketPath(resolveHome(o.home)), verb, args);

function list(option: string, v: string): string[] {
  const items = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) fail('bad-config', `${option} needs at least one value`);
  return [...new Set(items)];
}

/** Every combination, each a complete run config (validated before anything is submitted). */
export function sweepConfigs(o: Record<string, string>): RunConfig[] {
  const out: RunConfig[] = [];
  for (const model of list('--model', o.model))
    for (const bits of list('--bits', o.bits))
      for (const base of list('--base', o.base))
        for (const seed of list('--seed', o.seed)) {
          const c = runConfigFromOptions({ ...o, model, bits, base, seed });
          for (const k of PATH_KEYS) if (c[k]) c[k] = resolve(c[k]!);
          for (const k of Object.keys(c) as (keyof RunConfig)[]) if (c[k] === undefined) delete c[k];
          out.push(validateRunConfig(c));
        }
  return out;
}

export interface SweepRow {
  id: string;
  model: string;
  bits: number;
  group: number;
  base: string;
  seed: number;
  steps: number;
  ppl: number;
  kl: number;
  /** Share of RTN's log-perplexity gap to FP closed by the search (on its base). */
  closes: number;
  /** The same for the base quantizer alone (0 for RTN; GPTQ's own gain otherwise). */
  baseCloses: number;
}

type Report = Omit<FinalReport, 'models'>;

export function sweepRow(id: string, config: RunConfig, r: Report): SweepRow {
  const gap = Math.log(r.rtn.ppl) - Math.log(r.fp.ppl);
  return {
    id, model: config.model, bits: config.bits, group: config.group, base: config.base, seed: config.seed, steps: r.steps,
    ppl: r.searched.ppl, kl: r.searched.kl ?? NaN, closes: r.closes, baseCloses: (Math.log(r.rtn.ppl) - Math.log(r.base.ppl)) / gap,
  };
}

const fmt = (x: number, d: number) => (x === null || !Number.isFinite(x) ? '-' : x.toFixed(d));
const pct = (x: number) => (x === null || !Number.isFinite(x) ? '-' : `${(100 * x).toFixed(1)}%`);

function byKey(a: SweepRow, b: SweepRow): number {
  return a.model.localeCompare(b.model) || a.bits - b.bits || a.base.localeCompare(b.base) || a.seed - b.seed;
}

export function sweepTable(rows: SweepRow[]): string {
  const t = [['MODEL', 'BITS', 'GROUP', 'BASE', 'SEED', 'STEPS', 'PPL', 'KL', 'CLOSES', 'BASE CLOSES', 'JOB']];
  for (const r of [...rows].sort(byKey)) {
    t.push([basename(r.model), String(r.bits), String(r.group), r.base, String(r.seed), String(r.steps), fmt(r.ppl, 3), fmt(r.kl, 4), pct(r.closes), pct(r.baseCloses), r.id]);
  }
  const w = t[0].map((_, i) => Math.max(...t.map((r) => r[i].length)));
  const lines = t.map((r) => r.map((c, i) => (i >= 5 && i <= 9 ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ').trimEnd());
  lines.push('(held-out tokens; closes = share of RTN\'s log-perplexity gap to FP removed by base+search; base closes = by the base quantizer alone)');
  return lines.join('\n') + '\n';
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

/** Methods plotted: each base with the search, and GPTQ alone where it was the base. */
function methodPoints(rows: SweepRow[]): Map<string, [number, number][]> {
  const m = new Map<string, [number, number][]>();
  const add = (name: string, bits: number, y: number) => {
    if (Number.isFinite(y)) m.set(name, [...(m.get(name) ?? []), [bits, y]]);
  };
  for (const r of rows) {
    add(`${r.base}+search`, r.bits, r.closes);
    if (r.base !== 'rtn') add(r.base, r.bits, r.baseCloses);
  }
  return m;
}

/** One model's plot: closes (%) vs bits, a line through each method's mean over seeds and a bar over their range. */
export function modelSvg(model: string, rows: SweepRow[]): string {
  const W = 560, H = 300, L = 60, R = 150, T = 30, B = 40;
  const methods = methodPoints(rows);
  const all = [...methods.values()].flat();
  const xs = [...new Set(all.map(([x]) => x))].sort((a, b) => a - b);
  const ysAll = all.map(([, y]) => 100 * y);
  let [ylo, yhi] = [Math.min(0, ...ysAll), Math.max(1, ...ysAll)];
  const pad = (yhi - ylo) * 0.08;
  ylo -= pad;
  yhi += pad;
  const [xlo, xhi] = xs.length > 1 ? [xs[0] - 0.3, xs[xs.length - 1] + 0.3] : [xs[0] - 1, xs[0] + 1];
  const sx = (x: number) => L + ((x - xlo) / (xhi - xlo)) * (W - L - R);
  const sy = (y: number) => T + (1 - (y - ylo) / (yhi - ylo)) * (H - T - B);
  const p = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">`,
    `<text x="${L}" y="18" font-size="14" font-weight="bold">${esc(basename(model))}: share of RTN's gap closed vs bits</text>`,
    `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#999"/>`];
  for (const t of niceTicks(ylo, yhi)) {
    p.push(`<line x1="${L}" x2="${W - R}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" stroke="#eee"/>`);
    p.push(`<text x="${L - 6}" y="${(sy(t) + 4).toFixed(1)}" font-size="11" text-anchor="end">${t}%</text>`);
  }
  for (const x of xs) p.push(`<text x="${sx(x).toFixed(1)}" y="${H - B + 16}" font-size="11" text-anchor="middle">W${x}</text>`);
  p.push(`<text x="${(L + W - R) / 2}" y="${H - 6}" font-size="12" text-anchor="middle">bits</text>`);
  [...methods.entries()].forEach(([name, pts], i) => {
    const color = COLORS[i % COLORS.length];
    const stats = xs.filter((x) => pts.some(([px]) => px === x)).map((x) => {
      const ys = pts.filter(([px]) => px === x).map(([, y]) => 100 * y);
      return { x, mean: ys.reduce((a, b) => a + b, 0) / ys.length, lo: Math.min(...ys), hi: Math.max(...ys), ys };
    });
    const d = stats.map((s, j) => `${j ? 'L' : 'M'}${sx(s.x).toFixed(1)},${sy(s.mean).toFixed(1)}`).join('');
    p.push(`<g class="method" data-method="${esc(name)}"><path d="${d}" fill="none" stroke="${color}" stroke-width="2"/>`);
    for (const s of stats) {
      p.push(`<line class="spread" x1="${sx(s.x).toFixed(1)}" x2="${sx(s.x).toFixed(1)}" y1="${sy(s.lo).toFixed(1)}" y2="${sy(s.hi).toFixed(1)}" stroke="${color}" stroke-width="6" stroke-opacity="0.3"/>`);
      for (const y of s.ys) p.push(`<circle cx="${sx(s.x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${color}"/>`);
    }
    p.push(`</g><rect x="${W - R + 12}" y="${T + 8 + 18 * i}" width="12" height="3" fill="${color}"/>`);
    p.push(`<text x="${W - R + 30}" y="${T + 13 + 18 * i}" font-size="12">${esc(name)}</text>`);
  });
  p.push('</svg>');
  return p.join('');
}

export function sweepHtml(rows: SweepRow[]): string {
  const models = [...new Set(rows.map((r) => r.model))].sort();
  const head = ['model', 'bits', 'group', 'base', 'seed', 'steps', 'ppl', 'KL', 'closes', 'base closes', 'job'];
  const body = [...rows].sort(byKey).map((r) =>
    `<tr><td>${esc(basename(r.model))}</td><td>${r.bits}</td><td>${r.group}</td><td>${esc(r.base)}</td><td>${r.seed}</td><td>${r.steps}</td><td>${fmt(r.ppl, 3)}</td><td>${fmt(r.kl, 4)}</td><td>${pct(r.closes)}</td><td>${pct(r.baseCloses)}</td><td>${r.id}</td></tr>`);
  return ['<!doctype html><html><head><meta charset="utf-8"><title>invarx sweep</title>',
    '<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}td:first-child{text-align:left}</style></head><body>',
    `<h1>invarx sweep: ${rows.length} finished job${rows.length === 1 ? '' : 's'}</h1>`,
    `<table><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr>${body.join('')}</table>`,
    ...models.map((m) => `<h2>${esc(basename(m))}</h2>${modelSvg(m, rows.filter((r) => r.model === m))}`),
    '</body></html>\n'].join('\n');
}

export function register(program: Command): void {
  addRunOptions(program.command('sweep').description('submit every combination of --model, --bits, --base and --seed (comma-separated lists) to the daemon'))
    .option('--home <dir>', 'daemon home (default: as `invarx submit`)')
    .option('--json', 'print a JSON array of the submitted jobs')
    .action(async (o: Record<string, string>) => {
      const configs = sweepConfigs(o);
      const tuning = tuningFromOptions(o);
      const jobs: { id: string; model: string; bits: number; base: string; seed: number }[] = [];
      for (const c of configs) {
        const v = (await call(o, 'submit', { config: c, ...(tuning ? { tuning } : {}) })) as JobView;
        jobs.push({ id: v.id, model: c.model, bits: c.bits, base: c.base, seed: c.seed });
      }
      if (o.json) return void process.stdout.write(JSON.stringify(jobs) + '\n');
      for (const j of jobs) process.stdout.write(`${j.id}  ${basename(j.model)} W${j.bits} ${j.base} seed ${j.seed}\n`);
    });

  program
    .command('sweep-report')
    .description("compare the daemon's finished jobs in one table (and an HTML page with a plot per model)")
    .option('--home <dir>', 'daemon home (default: as `invarx submit`)')
    .option('--html <file>', 'also write a self-contained HTML page with one SVG plot per model')
    .action(async (o: { home?: string; html?: string }) => {
      const done = ((await call(o, 'list')) as JobView[]).filter((v) => v.state === 'done');
      if (done.length === 0) fail('no-jobs', 'the daemon has no finished jobs to compare');
      const rows: SweepRow[] = [];
      for (const v of done) {
        const r = (await call(o, 'report', { job: v.id })) as { id: string; config: RunConfig; report: Report };
        rows.push(sweepRow(r.id, r.config, r.report));
      }
      process.stdout.write(sweepTable(rows));
      if (o.html) {
        writeFileSync(resolve(o.html), sweepHtml(rows));
        process.stdout.write(`wrote ${resolve(o.html)}\n`);
      }
    });
}
