/**
 * `invarx run`: the search in the foreground with a progress bar, then the quality table
 * (FP / base / base+clip / searched on held-out tokens) and greedy samples side by side.
 */
import type { Command } from 'commander';
import { SingleBar } from 'cli-progress';
import { argmax } from '../../core/data';
import { isLazyBlock } from '../../core/model/lazy';
import { Decoder } from '../../core/forward';
import type { Model } from '../../core/model/types';
import { loadTokenizer, tokenizerPathFor } from '../../core/tokenizer';
import type { FinalReport, RunConfig } from '../../search/contract';
import type { SearchJob } from '../../search/contract';
import { addRunOptions, runConfigFromOptions, tuningFromOptions } from './runOptions';
import { recommendedTuning } from '../../search/config';

export function register(program: Command): void {
  addRunOptions(program.command('run').description('search invariances in the foreground and print the before/after quality table'))
    .option('--out <dir>', 'write the searched transforms and the quantized model here')
    .option('--json', 'print one JSON object on stdout instead of the table')
    .option('--sample <n>', 'tokens of greedy text to print per model (0 = none)', '40')
    .action(async (o: Record<string, string>) => {
      const config = runConfigFromOptions(o);
      const json = Boolean(o.json);
      const show = process.stderr.isTTY || !json;
      // the phases outside the bar (before the search's first step, and the report and export
      // after its last): one line each, with the predicted time
      let barOn = false;
      const onPhase = (phase: string, planned: number | null) => {
        if (show && !barOn) process.stderr.write(`${phase}…${planned === null ? '' : ` (about ${duration(planned)})`}\n`);
      };
      // (the search and its kernels load here, not at startup)
      const { createSearchJob } = await import('../../search/run');
      const job = await createSearchJob(config, { tuning: recommendedTuning(config, tuningFromOptions(o)), onPhase, exports: o.out !== undefined });
      const bar = new SingleBar({
        format: '{phase} |{bar}| {value}/{total} steps | loss {loss} | valid KL {valid} | accept {accept} | {cps} cand/s | ETA {phaseEta}',
        stream: process.stderr,
        hideCursor: true,
      });
      if (show) bar.start(config.steps, 0, fields(job.progress()));
      barOn = show;
      try {
        while (!job.done) {
          await job.step();
          const p = job.progress();
          if (show) bar.update(p.step, fields(p));
        }
        if (show) bar.stop();
        barOn = false;
        const report = await job.report();
        if (o.out) await job.exportTo(o.out);
        if (json) {
          const { models: _m, history: _h, blocks: _b, ...rest } = report;
          const phases = job.progress().phases ?? rest.phases;
          process.stdout.write(JSON.stringify({ ...rest, phases, peakRssMB: peakRssMB() }) + '\n');
        } else {
          process.stdout.write(table(report, config.base, gridLabel(config)));
          const n = Number(o.sample);
          if (n > 0 && report.models) {
            // token-by-token decoding reads a streamed model whole into memory: not for a summary line
            if (isLazyBlock(report.models.fp.blocks[0])) process.stdout.write('\n(greedy samples skipped: the model is streamed block by block; use invarx generate)\n');
            else process.stdout.write(samples(report.models, config.model, config.tokenizer, n));
          }
          if (o.out) process.stdout.write(`\nwrote ${o.out}\n`);
        }
      } finally {
        if (show) bar.stop();
        await job.close();
      }
    });
}

function fields(p: ReturnType<SearchJob['progress']>) {
  return {
    phase: (p.phase ?? 'search').padEnd(10),
    loss: p.bestLoss.toFixed(4),
    valid: p.validationLoss === null ? '-' : p.validationLoss.toFixed(4),
    accept: `${Math.round(p.acceptRate * 100)}%`,
    cps: p.candidatesPerSec.toFixed(1),
    phaseEta: p.phaseEtaSeconds === null || p.phaseEtaSeconds === undefined ? '-' : duration(p.phaseEtaSeconds),
  };
}

/** 75 → "1m15s", 4000 → "1h06m". */
function duration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** The grid as the table names it: W3 g32, or a ggml format's name. */
function gridLabel(c: RunConfig): string {
  return c.format && c.format !== 'int' ? c.format : `W${c.bits} g${c.group}`;
}

function table(r: FinalReport, base: string, grid: string): string {
  const B = r.baseName ?? base.toUpperCase();
  const rows: [string, number, number | undefined][] = [['FP', r.fp.ppl, undefined]];
  const ggml = !grid.startsWith('W');
  if (base !== 'rtn') rows.push([`RTN ${grid}`, r.rtn.ppl, r.rtn.kl]);
  // on a ggml format the base row is ggml's reference quantizer
  rows.push([`${B} ${grid}${ggml ? ' (ggml)' : ''}`, r.base.ppl, r.base.kl], [`${B}+clip`, r.baseClip.ppl, r.baseClip.kl], [`${B}+search`, r.searched.ppl, r.searched.kl]);
  const closes = (ppl: number) => (Math.log(r.rtn.ppl) - Math.log(ppl)) / (Math.log(r.rtn.ppl) - Math.log(r.fp.ppl));
  const lines = [`${'model'.padEnd(18)} ${'ppl'.padStart(9)} ${'KL'.padStart(8)} ${'closes'.padStart(7)}`];
  for (const [name, ppl, kl] of rows) {
    const share = closes(ppl);
    const c = kl === undefined ? '' : Number.isNaN(share) ? '-' : `${(100 * share).toFixed(1)}%`;
    if (Number.isNaN(ppl)) lines.push(`${name.padEnd(18)} ${'(cut: time budget)'.padStart(18)}`);
    else lines.push(`${name.padEnd(18)} ${ppl.toFixed(3).padStart(9)} ${kl === undefined ? '-'.padStart(8) : kl.toFixed(4).padStart(8)} ${c.padStart(7)}`);
  }
  lines.push(`(held-out tokens; "closes" = share of RTN's log-perplexity gap to FP removed; ${r.steps} steps, ${r.accepted} accepted, ${r.candidatesPerSec.toFixed(1)} candidates/s)`);
  if (r.cut?.length) lines.push(`(the time budget left out: ${r.cut.join('; ')})`);
  return lines.join('\n') + '\n';
}

/** Greedy continuation from BOS. */
function greedy(m: Model, steps: number): number[] {
  const dec = new Decoder(m);
  const out: number[] = [];
  let tok = m.config.bosId;
  for (let i = 0; i < steps && dec.position < m.config.seqLen; i++) {
    tok = argmax(dec.step(tok));
    out.push(tok);
  }
  return out;
}

function samples(models: NonNullable<FinalReport['models']>, modelPath: string, tokenizer: string | undefined, n: number): string {
  let tok;
  try {
    tok = loadTokenizer(tokenizerPathFor(modelPath, tokenizer));
  } catch {
    return '\n(no tokenizer found beside the model: samples skipped; pass --tokenizer)\n';
  }
  const lines = ['', 'greedy samples from BOS:'];
  for (const [name, m] of Object.entries(models)) lines.push(`  ${name.padEnd(9)} ${JSON.stringify(tok.decode(greedy(m, n)))}`);
  return lines.join('\n') + '\n';
}

/** The process's peak resident memory so far, in MiB. */
function peakRssMB(): number {
  return Math.round(process.resourceUsage().maxRSS / 1024);
}
