/**
 * Reading the packed GPTQ checkpoints ./gptq.ts writes (and AutoGPTQ/GPTQModel ones):
 * weight(o, i) = scales[g, o] · (code(i, o) − zero(g, o)), zero = stored + 1 in v1
 * checkpoints, g = g_idx[i]; every packed linear is dequantized to float32 on load.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../errors';
import { readJsonFile } from '../files';
import type { Model } from '../model/types';
import { hfModelSpec, modelFromHf, readHfConfig, type TensorSource } from '../model/hf';
import { SafetensorsReader } from '../model/safetensors';
import { GPTQ_BITS, type CheckpointFormat } from './gptq';
import { unpackQweight, unpackQzeros } from './pack';

export interface GptqParams {
  bits: number;
  /** −1: one group per row. */
  groupSize: number;
  checkpointFormat: CheckpointFormat;
}

/** The GPTQ settings of an HF directory, or null if it is not a GPTQ checkpoint. */
export function gptqParams(dir: string, json: Record<string, unknown> = readHfConfig(dir)): GptqParams | null {
  let qc = json.quantization_config as Record<string, unknown> | undefined;
  if (!qc && existsSync(join(dir, 'quantize_config.json'))) {
    qc = readJsonFile(join(dir, 'quantize_config.json'), 'quantize config', 'bad-model') as Record<string, unknown>;
  }
  if (!qc || typeof qc !== 'object') return null;
  const method = qc.quant_method ?? 'gptq';
  if (method !== 'gptq') fail('bad-model', `${dir}: quantization method ${JSON.stringify(method)} is not supported (only gptq)`);
  const bits = qc.bits;
  if (!GPTQ_BITS.includes(bits as number)) fail('bad-model', `${dir}: GPTQ bits ${JSON.stringify(bits)} not supported (${GPTQ_BITS.join(', ')})`);
  const groupSize = qc.group_size ?? 128;
  if (!(Number.isSafeInteger(groupSize) && ((groupSize as number) > 0 || groupSize === -1))) {
    fail('bad-model', `${dir}: GPTQ group_size ${JSON.stringify(groupSize)} must be a positive integer or -1`);
  }
  const format = qc.checkpoint_format ?? 'gptq';
  if (format !== 'gptq' && format !== 'gptq_v2') fail('bad-model', `${dir}: GPTQ checkpoint_format ${JSON.stringify(format)} is not supported (gptq or gptq_v2)`);
  return { bits: bits as number, groupSize: groupSize as number, checkpointFormat: format };
}

/**
 * Dequantize one packed linear M into float32 [out, in]: scale · (code − zero), with
 * zero = stored + 1 for v1 checkpoints. g_idx (if present) maps columns to groups, so
 * act-order (desc_act) checkpoints read correctly too.
 */
export function dequantizeGptqLinear(r: SafetensorsReader, M: string, out: number, inDim: number, p: GptqParams): Float32Array {
  const { bits } = p;
  if ((inDim * bits) % 32 !== 0 || (out * bits) % 32 !== 0) {
    fail('bad-model', `${M}: a [${out}, ${inDim}] weight cannot be packed in ${bits}-bit words`);
  }
  const scalesShape = r.info(`${M}.scales`).shape;
  const nG = scalesShape[0];
  if (scalesShape.length !== 2 || scalesShape[1] !== out || !(nG >= 1)) {
    fail('bad-model', `tensor "${M}.scales" has shape [${scalesShape.join(', ')}], expected [nGroups, ${out}]`);
  }
  const codes = unpackQweight(r.readI32(`${M}.qweight`, [(inDim * bits) / 32, out]), out, inDim, bits);
  const zeros = unpackQzeros(r.readI32(`${M}.qzeros`, [nG, (out * bits) / 32]), nG, out, bits);
  const scales = r.readF32(`${M}.scales`, [nG, out]);
  const group = p.groupSize === -1 ? inDim : p.groupSize;
  const gIdx = r.has(`${M}.g_idx`) ? r.readI32(`${M}.g_idx`, [inDim]) : Int32Array.from({ length: inDim }, (_, i) => Math.floor(i / group));
  for (let i = 0; i < inDim; i++) if (!(gIdx[i] >= 0 && gIdx[i] < nG)) fail('bad-model', `tensor "${M}.g_idx" has group ${gIdx[i]} outside [0, ${nG})`);
  const zOff = p.checkpointFormat === 'gptq' ? 1 : 0;
  const w = new Float32Array(out * inDim);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inDim; i++) {
      const g = gIdx[i];
      // + 0 turns the −0 of a mirrored group's zero code into +0.
      w[o * inDim + i] = (codes[o * inDim + i] - (zeros[g * out + o] + zOff)) * scales[g * out + o] + 0;
    }
  }
  return w;
}

/** A TensorSource over a GPTQ checkpoint: `M.weight` of a packed linear M is its dequantized weight. */
export function gptqTensorSource(r: SafetensorsReader, p: GptqParams): TensorSource {
  const packed = (name: string) => name.endsWith('.weight') && r.has(name.replace(/\.weight$/, '.qweight'));
  return {
    has: (name) => r.has(name) || packed(name),
    readF32: (name, shape) => {
      if (!packed(name)) return r.readF32(name, shape);
      if (shape.length !== 2) fail('bad-model', `${name}: a packed tensor must be a matrix`);
      return dequantizeGptqLinear(r, name.replace(/\.weight$/, ''), shape[0], shape[1], p);
    },
  };
}

/** Load a GPTQ checkpoint directory as a float32 model (every packed linear dequantized). */
export function loadGptqModel(dir: string): Model {
  const json = readHfConfig(dir);
  const p = gptqParams(dir, json);
  if (!p) return fail('bad-model', `${dir}: config.json has no GPTQ quantization_config`);
  const r = SafetensorsReader.open(dir);
  try {
    hfModelSpec(json, (n) => r.has(n), dir); // architecture errors before tensor errors
    return modelFromHf(json, gptqTensorSource(r, p), dir);
  } finally {
    r.close();
  }
}

/** Whether dir is an HF directory whose config declares GPTQ quantization. */
export function isGptqDir(dir: string): boolean {
  if (!existsSync(join(dir, 'config.json'))) return false;
  try {
    const json = readJsonFile(join(dir, 'config.json'), 'model config', 'bad-model') as Record<string, unknown>;
    return (typeof json.quantization_config === 'object' && json.quantization_config !== null) || existsSync(join(dir, 'quantize_config.json'));
  } catch {
    return false; // the HF loader reports the broken config.json
  }
}
