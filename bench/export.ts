/**
 * Memory and time of a search's export at real sizes (`node dist/bench.js export`; figures
 * only, never pass/fail). INVARX_EXPORT_MODEL names an HF checkpoint directory (for the 1B
 * shape: `node dist/invarx.js gen-model --shape 1b --out DIR`, 2.2 GB); without it the bench
 * says so and measures nothing. The model is loaded streamed and held as a search holds a
 * big one (SearchBlocks with no room for resident blocks, no moves), and each export is
 * written from its transformed model in a child process of this bundle, so each peak RSS is
 * that export's own:
 *
 *   hf       transformed-fp/ (F32 safetensors)
 *   llama2c  transformed-fp.bin
 *   gptq     gptq/ with RTN codes made per block when asked (4 bits, group 128, or the
 *            model's dim when smaller)
 *   gguf     transformed.gguf in INVARX_EXPORT_GGUF_FORMAT (default q4_k), with the
 *            tokenizer beside the checkpoint (gen-model writes one)
 *
 * One JSON line per export: wall seconds, peak RSS (the child's maxRSS), bytes written,
 * float32 bytes of one block and of the whole model for scale. INVARX_EXPORT_KINDS picks
 * some (default hf,llama2c,gptq,gguf). The files go to a fresh directory under INVARX_EXPORT_OUT
 * (default the system's tmpdir), removed after each export.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeGptqExport, type BlockQuantized } from '../core/export/gptq';
import { writeHfExport, writeLlama2cExport } from '../core/export/fp';
import { writeLlamaGguf } from '../core/gguf';
import { blockBytes, loadHfModel } from '../core/model/hf';
import { blockLinears, linearShape, type Model } from '../core/model/types';
import { quantizeRtn } from '../core/quant/rtn';
import { loadTokenizer, tokenizerPathFor } from '../core/tokenizer';
import { SearchBlocks } from '../search/blocks';
import { emit, note, type BenchModule } from './emit';

const KINDS = ['hf', 'llama2c', 'gptq', 'gguf'] as const;
type Kind = (typeof KINDS)[number];
const BITS = 4;
const GROUP = 128;
const CHILD_ENV = 'INVARX_EXPORT_CHILD';

/** RTN codes of one block, as an RTN-base search's export holds them. */
function rtnCodes(m: Model, l: number): BlockQuantized {
  const b = m.blocks[l];
  const out: BlockQuantized = {};
  for (const name of blockLinears(m.config)) {
    const [rows, cols] = linearShape(m.config, name);
    out[name] = quantizeRtn(b[name]!, rows, cols, { bits: BITS, group: Math.min(GROUP, m.config.dim), clip: false, f16Scales: true });
  }
  return out;
}

function bytesUnder(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((n, f) => n + bytesUnder(join(path, f)), 0);
}

/** In the child: write one export of the model at `modelDir` into `outDir` and print its figures. */
function exportOnce(kind: Kind, modelDir: string, outDir: string): void {
  const t0 = performance.now();
  const fp = loadHfModel(modelDir, { stream: true });
  const transformed = new SearchBlocks(fp, { bits: BITS, group: GROUP }, 0).transformedModel();
  const out = join(outDir, kind === 'llama2c' ? 'transformed-fp.bin' : kind === 'gguf' ? 'transformed.gguf' : kind);
  const format = kind === 'gguf' ? process.env.INVARX_EXPORT_GGUF_FORMAT ?? 'q4_k' : undefined;
  if (kind === 'hf') writeHfExport(out, transformed);
  else if (kind === 'llama2c') writeLlama2cExport(out, transformed);
  else if (kind === 'gguf') writeLlamaGguf(transformed, loadTokenizer(tokenizerPathFor(modelDir), fp.config.vocabSize), out, { format: format! });
  else writeGptqExport(out, transformed, (l) => rtnCodes(transformed, l));
  const cfg = fp.config;
  emit({
    bench: 'export', kind, ...(format ? { format } : {}), model: modelDir, wallS: +((performance.now() - t0) / 1000).toFixed(1),
    peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024), bytesWritten: bytesUnder(out),
    blockMB: Math.round(blockBytes(cfg) / cfg.nLayers / 2 ** 20), modelF32MB: Math.round((blockBytes(cfg) + 4 * cfg.vocabSize * cfg.dim * (cfg.sharedClassifier ? 1 : 2)) / 2 ** 20),
  });
}

export const exportBench: BenchModule = {
  name: 'export',
  byNameOnly: true,
  run() {
    const modelDir = process.env.INVARX_EXPORT_MODEL;
    const child = process.env[CHILD_ENV];
    if (child) {
      exportOnce(child as Kind, modelDir!, process.env.INVARX_EXPORT_OUT!);
      return;
    }
    if (!modelDir) {
      note('export: set INVARX_EXPORT_MODEL to an HF checkpoint directory (e.g. node dist/invarx.js gen-model --shape 1b --out DIR)');
      return;
    }
    const kinds = (process.env.INVARX_EXPORT_KINDS ?? KINDS.join(',')).split(',').map((k) => k.trim());
    const unknown = kinds.filter((k) => !(KINDS as readonly string[]).includes(k));
    if (unknown.length > 0) {
      note(`export: unknown INVARX_EXPORT_KINDS ${unknown.join(', ')} (have: ${KINDS.join(', ')})`);
      return;
    }
    for (const kind of kinds) {
      const outDir = mkdtempSync(join(process.env.INVARX_EXPORT_OUT ?? tmpdir(), 'invarx-export-bench-'));
      note(`export: ${kind} of ${modelDir} into ${outDir}`);
      try {
        const r = spawnSync(process.execPath, [process.argv[1], 'export'], {
          env: { ...process.env, [CHILD_ENV]: kind, INVARX_EXPORT_OUT: outDir }, stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8',
        });
        const lines = r.stderr.trim().split('\n');
        if (r.status !== 0) emit({ bench: 'export', kind, model: modelDir, exitCode: r.status, error: lines.find((l) => /Error\b/.test(l)) ?? lines.pop() });
      } finally {
        rmSync(outDir, { recursive: true, force: true });
      }
    }
  },
};
