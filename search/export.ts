/**
 * What `--out DIR` / `invarx export` writes, a deterministic function of (model, config, seed):
 *
 *   transforms.msgpack   the accepted moves (compact transforms) and the run config
 *   gptq/                the searched model as a packed GPTQ checkpoint (HF safetensors,
 *                        AutoGPTQ layout, fp16 scales): `invarx eval --model DIR/gptq`
 *                        and GPTQ loaders read it; it dequantizes to the searched model
 *   transformed-fp/      the transformed full-precision model, HF safetensors
 *   transformed-fp.bin   the same in llama2.c format (llama models llama2.c can hold)
 *   quantized-fake.bin   the fake-quantized (dequantized float32) searched model, llama2.c
 *   model.gguf           on a ggml format (then instead of gptq/): the searched model as a
 *                        llama GGUF in that format, what llama.cpp runs
 *   export.json          what was written, the GPTQ packing report, and what was skipped and why
 *
 * Every file is written a tensor at a time from models whose blocks may be lazy, so a
 * streamed model's export holds O(1 block) of weights (plus, for gptq/, the fp16 scales).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvarxError } from '../core/errors';
import { llama2cIncompatibility, writeGptqExport, writeHfExport, writeLlama2cExport, type BlockQuantized } from '../core/export';
import type { LlamaGgufReport } from '../core/gguf';
import { blockWeightBytes, type Model } from '../core/model/types';

export interface ExportManifest {
  files: string[];
  gptq: { bits: number; groupSize: number; checkpointFormat: string; paddedHidden?: { from: number; to: number }; scalesRounded: number } | null;
  skipped: { what: string; why: string }[];
  /** model.gguf on a ggml format: the linears' format, embedding type and llama-quantize's fallbacks. */
  gguf?: { format: string; embed: string; fallbacks: LlamaGgufReport['fallbacks'] };
}

export interface SearchExport {
  /** transforms.msgpack's bytes. */
  transforms: Uint8Array;
  /** The transformed FP model. */
  transformed: Model;
  /** The same with the searched model's norm gains (normTune.ts): where the packed exports take their float tensors. */
  packedFloats: Model;
  /** The searched fake-quant model. */
  quantized: Model;
  /** The integer codes of block l of the searched model (asked once per block, in the GPTQ writer's order). */
  codesOf: (l: number) => BlockQuantized;
  /** On a ggml format: writes the searched model as GGUF at a path (the GPTQ checkpoint holds the int grid only). */
  gguf?: { format: string; write: (path: string) => LlamaGgufReport };
}

export function writeSearchExport(dir: string, { transforms, transformed, packedFloats, quantized, codesOf, gguf }: SearchExport): ExportManifest {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'transforms.msgpack'), transforms);
  const m: ExportManifest = { files: ['transforms.msgpack'], gptq: null, skipped: [] };
  if (gguf) {
    const rep = gguf.write(join(dir, 'model.gguf'));
    const embed = rep.tensors.find((t) => t.name === 'token_embd.weight')!.type;
    m.gguf = { format: gguf.format, embed, fallbacks: rep.fallbacks };
    m.files.push('model.gguf');
    m.skipped.push({ what: 'gptq/', why: `the run quantized in ggml format ${gguf.format}, which a GPTQ checkpoint (int grid) cannot hold: model.gguf holds the searched model` });
  } else {
    try {
      const rep = writeGptqExport(join(dir, 'gptq'), packedFloats, codesOf);
      const { bits, groupSize, checkpointFormat, paddedHidden, scalesRounded } = rep;
      m.gptq = { bits, groupSize, checkpointFormat, paddedHidden, scalesRounded };
      m.files.push(...rep.files.map((f) => `gptq/${f}`));
    } catch (e) {
      // A setting GPTQ loaders cannot hold (5-7 bits, a dim not divisible by 32) is reported, not fatal.
      if (!(e instanceof InvarxError)) throw e;
      m.skipped.push({ what: 'gptq/', why: e.message });
    }
  }
  m.files.push(...writeHfExport(join(dir, 'transformed-fp'), transformed).map((f) => `transformed-fp/${f}`));
  const why = llama2cIncompatibility(transformed);
  if (why) {
    m.skipped.push({ what: 'transformed-fp.bin, quantized-fake.bin', why });
  } else {
    writeLlama2cExport(join(dir, 'transformed-fp.bin'), transformed);
    writeLlama2cExport(join(dir, 'quantized-fake.bin'), quantized);
    m.files.push('transformed-fp.bin', 'quantized-fake.bin');
  }
  m.files.push('export.json');
  writeFileSync(join(dir, 'export.json'), JSON.stringify(m, null, 2) + '\n');
  return m;
}

/**
 * Bytes per second `writeSearchExport` writes its files at, everything counted (each block
 * transformed, encoded and written): measured 1.9 GB in 6 s at the 110M shape (the page
 * cache) and ~15 GB in ~45 s at 1B (the disk); the slow side of both, with room.
 */
export const EXPORT_BYTES_PER_SECOND = 200e6;
/** Re-deriving the packed codes costs a calibration pass and a base quantization, plus this share (the codes kept and checked). */
const CODES_OVERHEAD = 1.2;

/** What a run measured that the export repeats: its calibration pass and base quantization, in seconds. */
export interface ExportCosts {
  calibrationSeconds: number;
  baseSeconds: number;
}

/**
 * Bytes writeSearchExport writes for `model`, an upper bound: the transformed model in
 * float32 as HF safetensors and, where llama2.c can hold it, as two llama2.c files (FP and
 * fake-quantized); the packed model (gptq/ or model.gguf) at most 2 bytes per weight.
 */
export function exportBytes(model: Model): number {
  const cfg = model.config;
  const perBlock = blockWeightBytes(cfg) / 4 + 2 * cfg.dim;
  const params = cfg.nLayers * perBlock + cfg.vocabSize * cfg.dim * (cfg.sharedClassifier ? 1 : 2) + cfg.dim;
  const floatFiles = llama2cIncompatibility(model) ? 1 : 3;
  return params * (4 * floatFiles + 2);
}

/**
 * Predicted seconds of writeSearchExport for `model` (an upper bound): its bytes at
 * EXPORT_BYTES_PER_SECOND, plus the packed model's codes, which re-run every block's
 * calibration pass and quantization (searchedCodes in report.ts).
 */
export function exportSeconds(model: Model, costs: ExportCosts): number {
  return exportBytes(model) / EXPORT_BYTES_PER_SECOND + CODES_OVERHEAD * (costs.calibrationSeconds + costs.baseSeconds);
}
