/**
 * `invarx sweep` and `invarx sweep-report` against a daemon (the local one here: the verbs
 * are the same for a queue daemon), plus the pure pieces: the cross product and the plot.
 */
import { copyFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { modelSvg, sweepConfigs, type SweepRow } from '../../daemon/commands/sweep';
import { DaemonProc, MODEL_PATH, TUNING, call, cli, ensureBuilt, tmpHome, waitFor } from './harness';
import type { JobView } from '../../daemon/view';

const daemons: DaemonProc[] = [];

beforeAll(() => ensureBuilt());
afterAll(async () => {
  for (const d of daemons) if (d.alive()) await d.kill('SIGKILL');
});

const RUN = { model: MODEL_PATH, bits: '2,3', group: '32', base: 'rtn,gptq', steps: '4', timeBudget: '0', seed: '0,1', invariances: 'all', candidates: '4', workers: '1', patience: '0' };

describe('sweep', () => {
  it('the cross product of models, bits, bases and seeds, each a validated run config', () => {
    const cs = sweepConfigs({ ...RUN, model: `${MODEL_PATH},${MODEL_PATH}` });
    expect(cs.length).toBe(2 * 2 * 2); // a model named twice counts once
    expect(new Set(cs.map((c) => `${c.bits}/${c.base}/${c.seed}`)).size).toBe(8);
    expect(cs.every((c) => c.group === 32 && c.steps === 4 && c.model === MODEL_PATH)).toBe(true);
    expect(() => sweepConfigs({ ...RUN, bits: '3,9' })).toThrow(/bits/);
    expect(() => sweepConfigs({ ...RUN, base: 'rtn,awq' })).toThrow(/base must be rtn or gptq/);
    expect(() => sweepConfigs({ ...RUN, seed: ',' })).toThrow(/--seed needs at least one value/);
  });

  it('the plot draws each method through its mean over seeds, with a bar over the seeds\' range', () => {
    const row = (bits: number, base: string, seed: number, closes: number, baseCloses = 0): SweepRow =>
      ({ id: 'x', model: '/m/a.bin', bits, group: 32, base, seed, steps: 1, ppl: 1, kl: 0, closes, baseCloses });
    const svg = modelSvg('/m/a.bin', [row(2, 'rtn', 0, 0.1), row(2, 'rtn', 1, 0.3), row(3, 'rtn', 0, 0.2), row(2, 'gptq', 0, 0.5, 0.4)]);
    const groups = [...svg.matchAll(/<g class="method" data-method="([^"]+)">([\s\S]*?)<\/g>/g)].map((m) => [m[1], m[2]] as const);
    expect(groups.map(([name]) => name)).toEqual(['rtn+search', 'gptq+search', 'gptq']);
    const spreads = (body: string) => [...body.matchAll(/class="spread"[^>]*y1="([\d.]+)" y2="([\d.]+)"/g)].map((m) => Math.abs(Number(m[1]) - Number(m[2])));
    const [rtn, gptq] = [spreads(groups[0][1]), spreads(groups[1][1])];
    expect(rtn.length).toBe(2);
    expect(rtn[0]).toBeGreaterThan(1); // two seeds at W2: a bar
    expect(rtn[1]).toBe(0); // one seed at W3: none
    expect(gptq).toEqual([0]);
    expect((groups[0][1].match(/<circle/g) ?? []).length).toBe(3);
  });

  it('submits every combination to the daemon, and sweep-report compares the finished jobs', async () => {
    const home = tmpHome();
    const d = await DaemonProc.start(home, ['--concurrency', '2']);
    daemons.push(d);
    const other = join(mkdtempSync(join(tmpdir(), 'ixq-sweep-')), 'other.bin');
    copyFileSync(MODEL_PATH, other);
    copyFileSync(join(MODEL_PATH, '..', 'tok512.bin'), join(other, '..', 'tok512.bin'));
    const tuning = JSON.stringify({ ...TUNING, scaleInit: false });
    const s = cli(home, 'sweep', '--model', `${MODEL_PATH},${other}`, '--bits', '2,3', '--group', '32', '--base', 'rtn,gptq', '--seed', '0', '--steps', '4',
      '--candidates', '4', '--workers', '1', '--patience', '0', '--tuning', tuning, '--json');
    expect(s.code, s.stderr).toBe(0);
    const submitted = JSON.parse(s.stdout) as { id: string; model: string; bits: number; base: string; seed: number }[];
    expect(submitted.length).toBe(8);
    expect(new Set(submitted.map((j) => `${j.model}/${j.bits}/${j.base}`)).size).toBe(8);
    const jobs = await waitFor('every sweep job done', async () => {
      const vs = (await call(home, 'list')) as JobView[];
      return vs.length === 8 && vs.every((v) => v.state === 'done') ? vs : undefined;
    }, 240_000, 250);
    for (const j of submitted) {
      const v = jobs.find((x) => x.id === j.id)!;
      expect([v.model, v.bits, v.base, v.seed]).toEqual([j.model, j.bits, j.base, j.seed]);
    }
    const html = join(mkdtempSync(join(tmpdir(), 'ixq-sweep-')), 'sweep.html');
    const r = cli(home, 'sweep-report', '--html', html);
    expect(r.code, r.stderr).toBe(0);
    const rows = r.stdout.split('\n').filter((l) => /^\S+\.bin\s/.test(l));
    expect(rows.length).toBe(8);
    for (const j of submitted) {
      const rep = (await call(home, 'report', { job: j.id })) as { report: { closes: number; searched: { ppl: number } } };
      const line = rows.find((l) => l.includes(j.id))!;
      expect(line.split(/\s+/).slice(0, 5)).toEqual([j.model.split('/').pop(), String(j.bits), '32', j.base, String(j.seed)]);
      expect(line).toContain(`${(100 * rep.report.closes).toFixed(1)}%`);
      expect(line).toContain(rep.report.searched.ppl.toFixed(3));
    }
    const page = readFileSync(html, 'utf8');
    expect((page.match(/<svg /g) ?? []).length).toBe(2);
    expect(page).toContain('<h2>stories260K.bin</h2>');
    expect(page).toContain('<h2>other.bin</h2>');
    expect((page.match(/<tr><td>/g) ?? []).length).toBe(8);
  });
});
