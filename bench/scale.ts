/**
 * Time and memory at real sizes (`node dist/bench.js scale`; figures only, never pass/fail).
 * For each shape of INVARX_SCALE_SHAPES (default 260k,15m,110m; 1b when named), a random-
 * weight bf16 checkpoint is written once with `invarx gen-model` into INVARX_SCALE_DIR/NAME
 * (default <tmpdir>/invarx-scale/NAME; reused while its config.json names the same shape,
 * seed and dtype), then these run as child processes of the built CLI:
 *
 *   invarx eval --model DIR --bits 4 --group 128 --method M --json          (M = INVARX_SCALE_EVAL, default fp,rtn,gptq)
 *   invarx run  --model DIR --bits 4 --group 128 --time-budget S --json
 *
 * S is INVARX_SCALE_BUDGET: one number of seconds for every shape, or per shape as
 * "110m=900,1b=1800"; by default the budgets the scale targets are stated for (260k 120,
 * 15m 300, 110m 900, 1b 1800).
 *
 * One JSON line per (shape, command): wall seconds, the child's peak RSS (VmHWM from
 * /proc/PID/status every 200 ms, the maximum seen), the exit code, what the child's own JSON
 * reports about itself (peakRssMB, phases, candidates, candidatesPerSec, steps) when it has
 * those fields, and on failure the last stderr line. A child past INVARX_SCALE_TIMEOUT
 * seconds (default 3600) is killed and reported as timed out. Settings come from the
 * environment because bench/index.ts takes only module names as arguments.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SYNTHETIC_SHAPES, planSynthetic } from '../core/model/synthetic';
import { emit, note, type BenchModule } from './emit';
import { vmHwmMB } from './proc';

const DEFAULT_SHAPES = ['260k', '15m', '110m'];
const DEFAULT_BUDGETS: Record<string, number> = { '260k': 120, '15m': 300, '110m': 900, '1b': 1800 };
const DEFAULT_EVAL = 'fp,rtn,gptq';
const SEED = 1;
const DTYPE = 'bf16';
const POLL_MS = 200;

/** The CLI bundle beside this one (dist/bench.js → dist/invarx.js). */
const CLI = join(dirname(fileURLToPath(import.meta.url)), 'invarx.js');

interface Settings {
  shapes: string[];
  /** Time budget of the run per shape. */
  budgetS: Record<string, number>;
  evalMethods: string;
  timeoutS: number;
  cacheDir: string;
}

/** INVARX_SCALE_* settings, or a message naming the bad one. */
function settings(): Settings | string {
  const env = process.env;
  const shapes = (env.INVARX_SCALE_SHAPES ?? DEFAULT_SHAPES.join(',')).split(',').map((s) => s.trim()).filter((s) => s !== '');
  const writable = Object.keys(SYNTHETIC_SHAPES).filter((s) => !SYNTHETIC_SHAPES[s].headerOnly);
  const bad = shapes.filter((s) => !writable.includes(s));
  if (bad.length > 0 || shapes.length === 0) return `INVARX_SCALE_SHAPES: unknown or unwritable shape ${bad.join(', ') || '(none given)'} (have: ${writable.join(', ')})`;
  const num = (name: string, dflt: number): number | string => {
    const v = env[name];
    if (v === undefined) return dflt;
    const n = Number(v);
    return Number.isFinite(n) && n > 0 ? n : `${name} must be a positive number of seconds, got "${v}"`;
  };
  const budgetS = budgets(env.INVARX_SCALE_BUDGET, shapes);
  const timeoutS = num('INVARX_SCALE_TIMEOUT', 3600);
  if (typeof budgetS === 'string') return budgetS;
  if (typeof timeoutS === 'string') return timeoutS;
  const evalMethods = env.INVARX_SCALE_EVAL ?? DEFAULT_EVAL;
  return { shapes, budgetS, evalMethods, timeoutS, cacheDir: env.INVARX_SCALE_DIR ?? join(tmpdir(), 'invarx-scale') };
}

/** INVARX_SCALE_BUDGET ("900" or "110m=900,1b=1800") over the defaults, or a message naming what is wrong. */
function budgets(v: string | undefined, shapes: string[]): Record<string, number> | string {
  const out: Record<string, number> = {};
  for (const shape of shapes) out[shape] = DEFAULT_BUDGETS[shape] ?? 120;
  if (v === undefined) return out;
  const bad = `INVARX_SCALE_BUDGET must be seconds or shape=seconds pairs such as 110m=900,1b=1800, got "${v}"`;
  if (/^\s*[\d.]+\s*$/.test(v)) {
    const n = Number(v);
    if (!(n > 0)) return bad;
    for (const shape of shapes) out[shape] = n;
    return out;
  }
  for (const pair of v.split(',')) {
    const [shape, secs] = pair.split('=').map((x) => x.trim());
    const n = Number(secs);
    if (!shape || !(n > 0)) return bad;
    out[shape] = n;
  }
  return out;
}

interface ChildFigures {
  wallS: number;
  peakRssMB: number;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  timeoutS: number;
  stdout: string;
  lastStderr: string;
}

/** Run `node dist/invarx.js ...args`, polling its peak RSS, killed after timeoutS. */
function runCli(args: string[], timeoutS: number): Promise<ChildFigures> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderrTail = ''; // only the end matters; a chatty child must not grow our memory
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderrTail = (stderrTail + d).slice(-8192)));
    let peak = 0;
    const poll = setInterval(() => (peak = Math.max(peak, vmHwmMB(child.pid!))), POLL_MS);
    let timedOut = false;
    const killer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutS * 1000);
    child.on('error', (e) => {
      clearInterval(poll);
      clearTimeout(killer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearInterval(poll);
      clearTimeout(killer);
      const lines = stderrTail.trimEnd().split('\n');
      resolve({
        wallS: +((performance.now() - t0) / 1000).toFixed(2), peakRssMB: Math.round(peak), exitCode: code, signal, timedOut, timeoutS,
        stdout, lastStderr: lines[lines.length - 1] ?? '',
      });
    });
  });
}

/** The child's JSON report (the whole of stdout, or its last line), or undefined. */
function childJson(stdout: string): Record<string, unknown> | undefined {
  const text = stdout.trim();
  for (const candidate of [text, text.split('\n').pop() ?? '']) {
    try {
      const v: unknown = JSON.parse(candidate);
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
    } catch {
      // not JSON: try the last line
    }
  }
  return undefined;
}

/** The figures of one child as a JSON line. */
function report(shape: string, command: string, f: ChildFigures, extra: Record<string, unknown> = {}): void {
  const own = childJson(f.stdout) ?? {};
  const fromChild: Record<string, unknown> = {};
  for (const k of ['peakRssMB', 'phases', 'candidates', 'candidatesPerSec', 'steps', 'cut']) {
    if (own[k] !== undefined) fromChild[k === 'peakRssMB' ? 'childPeakRssMB' : k] = own[k];
  }
  const failed = f.exitCode !== 0;
  const why = f.timedOut
    ? `killed after INVARX_SCALE_TIMEOUT=${f.timeoutS} s${f.lastStderr ? `; last stderr: ${f.lastStderr}` : ''}`
    : f.lastStderr || (f.signal ? `ended by ${f.signal}` : '');
  emit({
    bench: 'scale', shape, command, ...extra, wallS: f.wallS, peakRssMB: f.peakRssMB, ...fromChild,
    exitCode: f.exitCode, ...(f.timedOut ? { timedOut: true } : {}),
    ...(failed ? { error: why } : {}),
  });
}

/** Whether dir holds a complete checkpoint written by gen-model with our shape, seed and dtype. */
function cached(dir: string, shape: string): boolean {
  try {
    const made = (JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { invarx_synthetic?: Record<string, unknown> }).invarx_synthetic;
    return made?.shape === shape && made.seed === SEED && made.dtype === DTYPE;
  } catch {
    return false;
  }
}

/** The checkpoint of `shape` in the cache, written (and its writing measured) if it is not there. */
async function checkpoint(s: Settings, shape: string): Promise<string | undefined> {
  const dir = join(s.cacheDir, shape);
  if (cached(dir, shape)) {
    note(`${shape}: reusing ${dir}`);
    return dir;
  }
  // Only the cache's own leftovers are removed: a partial write (no config.json) or another synthetic model.
  if (existsSync(join(dir, 'config.json')) && !/"invarx_synthetic"/.test(readFileSync(join(dir, 'config.json'), 'utf8'))) {
    emit({ bench: 'scale', shape, command: 'gen-model', error: `${dir} holds a model gen-model did not write; set INVARX_SCALE_DIR elsewhere` });
    return undefined;
  }
  rmSync(dir, { recursive: true, force: true });
  note(`${shape}: writing ${dir}`);
  const f = await runCli(['gen-model', '--shape', shape, '--out', dir, '--dtype', DTYPE, '--seed', String(SEED)], s.timeoutS);
  report(shape, 'gen-model', f, { parameters: planSynthetic(shape).parameters });
  return f.exitCode === 0 ? dir : undefined;
}

async function run(): Promise<void> {
  const s = settings();
  if (typeof s === 'string') {
    process.stderr.write(`bench scale: ${s}\n`);
    process.exit(2);
  }
  if (!existsSync(CLI)) {
    process.stderr.write(`bench scale: ${CLI} is missing (npm run build)\n`);
    process.exit(2);
  }
  for (const shape of s.shapes) {
    const dir = await checkpoint(s, shape);
    if (!dir) continue;
    const parameters = planSynthetic(shape).parameters;
    const q = ['--model', dir, '--bits', '4', '--group', '128'];
    note(`${shape}: eval ${s.evalMethods}`);
    report(shape, 'eval', await runCli(['eval', ...q, '--method', s.evalMethods, '--json'], s.timeoutS), { parameters, methods: s.evalMethods });
    const budgetS = s.budgetS[shape];
    note(`${shape}: run, time budget ${budgetS} s`);
    report(shape, 'run', await runCli(['run', ...q, '--time-budget', String(budgetS), '--json'], s.timeoutS), { parameters, budgetS });
  }
}

export const scaleBench: BenchModule = { name: 'scale', byNameOnly: true, run };
