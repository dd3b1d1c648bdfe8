/**
 * `invarx export-gguf`: any model we read (llama2.c, HF, packed GPTQ, GGUF), optionally with
 * a search's transforms (DIR/transforms.msgpack) applied first, written as a llama GGUF in
 * one of llama.cpp's formats, each linear quantized by the format's reference quantizer
 * (what llama-quantize does without an importance matrix). Prints what was written and
 * which tensors fell back to another type (rows the format's block does not divide).
 */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { fail } from '../../core/errors';
import { writeLlamaGguf, type EmbedType, type LlamaGgufReport } from '../../core/gguf';
import { readAcceptedMoves, withMoves } from '../../core/invariance/acceptedMoves';
import { loadModel } from '../../core/model/load';
import { loadTokenizer, tokenizerPathFor } from '../../core/tokenizer';

interface ExportGgufOptions {
  model: string;
  tokenizer?: string;
  transforms?: string;
  format: string;
  embed?: string;
  out: string;
  force?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('export-gguf')
    .description('write a model (optionally with searched transforms) as a llama.cpp GGUF in a ggml format')
    .requiredOption('--model <path>', 'model: llama2.c .bin, HF directory, packed GPTQ directory or .gguf')
    .option('--tokenizer <path>', 'llama2.c tokenizer (default: tok512.bin or tokenizer.bin beside the model)')
    .option('--transforms <file>', "a run's DIR/transforms.msgpack: its accepted moves are applied to the model first")
    .requiredOption('--format <name>', 'q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, f16 or f32')
    .option('--embed <type>', 'token embedding and classifier type: q8_0 or f16 (default q8_0; f16/f32 formats keep their own)')
    .requiredOption('--out <file>', 'the .gguf file to write')
    .option('--force', 'overwrite --out if it exists')
    .option('--json', 'print the report as one JSON object')
    .action((o: ExportGgufOptions) => exportGguf(o));
}

function exportGguf(o: ExportGgufOptions): void {
  if (!o.out.endsWith('.gguf')) fail('bad-config', `--out ${o.out}: give a file name ending in .gguf`);
  if (existsSync(o.out) && !o.force) fail('bad-config', `--out ${o.out} exists; pass --force to overwrite it`);
  if (o.embed !== undefined && !['q8_0', 'f16'].includes(o.embed)) fail('bad-config', `--embed must be q8_0 or f16, got "${o.embed}"`);
  let model = loadModel(o.model);
  const tokenizer = loadTokenizer(tokenizerPathFor(o.model, o.tokenizer), model.config.vocabSize);
  // Blocks are transformed as the writer reaches them: a streamed model stays O(block) in memory.
  if (o.transforms) model = withMoves(model, readAcceptedMoves(o.transforms, model), o.transforms);
  const report = writeLlamaGguf(model, tokenizer, o.out, { format: o.format, embed: o.embed as EmbedType | undefined });
  process.stdout.write(o.json ? `${JSON.stringify({ out: o.out, ...report })}\n` : describe(o.out, o.format, report));
}

function describe(out: string, format: string, r: LlamaGgufReport): string {
  const counts = new Map<string, number>();
  for (const t of r.tensors) counts.set(t.type, (counts.get(t.type) ?? 0) + 1);
  const lines = [
    `wrote ${out}: ${(r.bytes / 1e6).toFixed(2)} MB, ${r.tensors.length} tensors (${[...counts].map(([t, n]) => `${n} ${t}`).join(', ')})`,
  ];
  for (const f of r.fallbacks) lines.push(`  ${f.tensor}: rows of ${f.rowLength} are not a whole number of ${format} blocks, written as ${f.used}`);
  return `${lines.join('\n')}\n`;
}
