/**
 * `invarx report`: a self-contained report of a finished job — the quality table, the
 * search's loss and held-out validation curves (FinalReport.history) and each block's
 * gain — as one HTML page or one SVG image. Hand-written SVG: no scripts, no fonts, no
 * network, so it opens anywhere.
 */
import type { FinalReport, RunConfig } from '../search/contract';

export interface ReportInput {
  id: string;
  config: RunConfig;
  report: Omit<FinalReport, 'models'>;
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const fmt = (x: number | null | undefined, digits = 4) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toPrecision(digits));

/** About `n` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

interface Series {
  name: string;
  color: string;
  points: [number, number][];
}

const W = 640;
const H = 240;
const M = { left: 64, right: 16, top: 28, bottom: 40 };

/** One line chart, drawn at (x0, y0) in the parent SVG. */
function lineChart(x0: number, y0: number, title: string, xLabel: string, yLabel: string, series: Series[]): string {
  const pts = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y));
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const parts = [`<g transform="translate(${x0},${y0})">`, `<text x="${M.left}" y="16" font-size="14" font-weight="bold">${esc(title)}</text>`];
  if (pts.length === 0) {
    parts.push(`<text x="${M.left}" y="${M.top + 20}" font-size="12">no data</text></g>`);
    return parts.join('');
  }
  let [xmin, xmax] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [ymin, ymax] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (xmax === xmin) xmax = xmin + 1;
  const pad = (ymax - ymin || Math.abs(ymax) || 1) * 0.08;
  ymin -= pad;
  ymax += pad;
  const sx = (x: number) => M.left + ((x - xmin) / (xmax - xmin)) * pw;
  const sy = (y: number) => M.top + (1 - (y - ymin) / (ymax - ymin)) * ph;
  parts.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  for (const t of niceTicks(ymin, ymax)) {
    parts.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" stroke="#eee"/>`);
    parts.push(`<text x="${M.left - 6}" y="${(sy(t) + 4).toFixed(1)}" font-size="11" text-anchor="end">${esc(fmt(t, 3))}</text>`);
  }
  for (const t of niceTicks(xmin, xmax)) {
    parts.push(`<text x="${sx(t).toFixed(1)}" y="${M.top + ph + 16}" font-size="11" text-anchor="middle">${esc(String(t))}</text>`);
  }
  parts.push(`<text x="${M.left + pw / 2}" y="${H - 4}" font-size="12" text-anchor="middle">${esc(xLabel)}</text>`);
  parts.push(`<text transform="translate(14,${M.top + ph / 2}) rotate(-90)" font-size="12" text-anchor="middle">${esc(yLabel)}</text>`);
  series.forEach((s, i) => {
    const ok = s.points.filter(([, y]) => Number.isFinite(y));
    const d = ok.map(([x, y], j) => `${j ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`);
    for (const [x, y] of ok) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${s.color}"/>`);
    const lx = M.left + pw - 150;
    parts.push(`<rect x="${lx}" y="${M.top + 8 + i * 16}" width="12" height="3" fill="${s.color}"/>`);
    parts.push(`<text x="${lx + 18}" y="${M.top + 13 + i * 16}" font-size="11">${esc(s.name)}</text>`);
  });
  parts.push('</g>');
  return parts.join('');
}

/** Per-block gain: share of the block's starting loss removed by the search. */
function blockChart(x0: number, y0: number, blocks: FinalReport['blocks']): string {
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const gains = blocks.map((b) => (b.startLoss > 0 ? 1 - b.endLoss / b.startLoss : 0));
  const parts = [`<g transform="translate(${x0},${y0})">`, `<text x="${M.left}" y="16" font-size="14" font-weight="bold">Per-block gain (1 − end loss / start loss)</text>`];
  if (blocks.length === 0) return parts.join('') + `<text x="${M.left}" y="${M.top + 20}" font-size="12">no data</text></g>`;
  const lo = Math.min(0, ...gains);
  const hi = Math.max(0.01, ...gains) * 1.1;
  const sy = (g: number) => M.top + (1 - (g - lo) / (hi - lo)) * ph;
  const bw = pw / blocks.length;
  parts.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  for (const t of niceTicks(lo, hi)) {
    parts.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" stroke="#eee"/>`);
    parts.push(`<text x="${M.left - 6}" y="${(sy(t) + 4).toFixed(1)}" font-size="11" text-anchor="end">${(100 * t).toFixed(0)}%</text>`);
  }
  blocks.forEach((b, i) => {
    const g = gains[i];
    const top = Math.min(sy(g), sy(0));
    const h = Math.abs(sy(g) - sy(0));
    const x = M.left + i * bw + bw * 0.15;
    parts.push(`<rect x="${x.toFixed(1)}" y="${top.toFixed(1)}" width="${(bw * 0.7).toFixed(1)}" height="${h.toFixed(1)}" fill="${g >= 0 ? '#2b8a3e' : '#c92a2a'}"><title>block ${b.block}: ${fmt(b.startLoss)} → ${fmt(b.endLoss)}</title></rect>`);
    parts.push(`<text x="${(x + bw * 0.35).toFixed(1)}" y="${(top - 4).toFixed(1)}" font-size="10" text-anchor="middle">${(100 * g).toFixed(1)}%</text>`);
    parts.push(`<text x="${(x + bw * 0.35).toFixed(1)}" y="${M.top + ph + 16}" font-size="11" text-anchor="middle">${b.block}</text>`);
  });
  parts.push(`<text x="${M.left + pw / 2}" y="${H - 4}" font-size="12" text-anchor="middle">block</text></g>`);
  return parts.join('');
}

function qualityRows(r: ReportInput['report'], c: RunConfig): [string, number, number | undefined][] {
  const B = r.baseName ?? c.base.toUpperCase();
  const rows: [string, number, number | undefined][] = [['FP', r.fp.ppl, undefined]];
  if (c.base !== 'rtn') rows.push([`RTN W${c.bits} g${c.group}`, r.rtn.ppl, r.rtn.kl]);
  rows.push([`${B} W${c.bits} g${c.group}`, r.base.ppl, r.base.kl], [`${B}+clip`, r.baseClip.ppl, r.baseClip.kl], [`${B}+search`, r.searched.ppl, r.searched.kl]);
  return rows;
}

function charts(input: ReportInput, y0: number): { svg: string; height: number } {
  const h = input.report.history;
  const loss = lineChart(0, y0, 'Search objective (mean block loss / starting loss)', 'step', 'relative loss', [
    { name: 'calibration loss', color: '#1971c2', points: h.map((e) => [e.step, e.loss]) },
  ]);
  const valid = lineChart(0, y0 + H, 'Held-out validation (KL of FP ‖ quantized)', 'step', 'KL', [
    { name: 'validation KL', color: '#e8590c', points: h.map((e) => [e.step, e.validation]) },
  ]);
  return { svg: loss + valid + blockChart(0, y0 + 2 * H, input.report.blocks), height: 3 * H };
}

function summary(input: ReportInput): string[] {
  const { config: c, report: r } = input;
  return [
    `job ${input.id}: ${c.model}`,
    `W${c.bits} g${c.group}, base ${c.base}, seed ${c.seed}; ${r.steps} steps, ${r.accepted} accepted, ${fmt(r.candidatesPerSec, 3)} candidates/s`,
    `closes ${(100 * r.closes).toFixed(1)}% of RTN's log-perplexity gap to FP${c.base !== 'rtn' ? ` (${(100 * r.closesBase).toFixed(1)}% of ${c.base.toUpperCase()}'s)` : ''}`,
  ];
}

export function renderSvg(input: ReportInput): string {
  const lines = summary(input);
  const rows = qualityRows(input.report, input.config);
  const head: string[] = [`<text x="16" y="24" font-size="16" font-weight="bold">invarx report</text>`];
  lines.forEach((l, i) => head.push(`<text x="16" y="${46 + i * 16}" font-size="12">${esc(l)}</text>`));
  let y = 46 + lines.length * 16 + 12;
  head.push(`<text x="16" y="${y}" font-size="12" font-family="monospace" font-weight="bold" xml:space="preserve">${esc(`${'model'.padEnd(18)} ${'ppl'.padStart(9)} ${'KL'.padStart(8)}`)}</text>`);
  for (const [name, ppl, kl] of rows) {
    y += 15;
    head.push(`<text x="16" y="${y}" font-size="12" font-family="monospace" xml:space="preserve">${esc(`${name.padEnd(18)} ${fmt(ppl, 5).padStart(9)} ${fmt(kl, 4).padStart(8)}`)}</text>`);
  }
  const ch = charts(input, y + 16);
  const height = y + 16 + ch.height;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...head,
    ch.svg,
    '</svg>',
    '',
  ].join('\n');
}

export function renderHtml(input: ReportInput): string {
  const rows = qualityRows(input.report, input.config);
  const ch = charts(input, 0);
  const table = rows.map(([name, ppl, kl]) => `<tr><td>${esc(name)}</td><td>${fmt(ppl, 5)}</td><td>${fmt(kl, 4)}</td></tr>`).join('\n');
  const blocks = input.report.blocks
    .map((b) => `<tr><td>${b.block}</td><td>${fmt(b.startLoss)}</td><td>${fmt(b.endLoss)}</td><td>${b.startLoss > 0 ? (100 * (1 - b.endLoss / b.startLoss)).toFixed(1) + '%' : '–'}</td></tr>`)
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>invarx report ${esc(input.id)}</title>
<style>body{font-family:sans-serif;max-width:${W + 40}px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #ddd}td:first-child,th:first-child{text-align:left}</style>
</head><body>
<h1>invarx report</h1>
${summary(input).map((l) => `<p>${esc(l)}</p>`).join('\n')}
<h2>Quality on held-out tokens</h2>
<table><tr><th>model</th><th>ppl</th><th>KL(FP‖q)</th></tr>
${table}
</table>
<h2>Search</h2>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${ch.height}" viewBox="0 0 ${W} ${ch.height}" font-family="sans-serif">
${ch.svg}
</svg>
<h2>Blocks</h2>
<table><tr><th>block</th><th>start loss</th><th>end loss</th><th>gain</th></tr>
${blocks}
</table>
</body></html>
`;
}
