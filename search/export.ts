/**
 * What `--out DIR` / `invarx export` writes, a deterministic function of (model, config, seed):
 *   transforms.msgpack   the accepted moves (compact transforms) and the run config
 *   transformed-fp.bin   the transformed full-precision model (llama2.c format, llama models)
 *   quantized-fake.bin   the fake-quantized (dequantized float32) searched model, llama2.c format
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeLlama2c } from '../core/model/llama2c';
import type { Model } from '../core/model/types';

export function writeLlamaExports(dir: string, transformed: Model, quantized: Model): void {
  if (transformed.config.arch !== 'llama' || transformed.config.ropeLayout !== 'interleaved') return;
  writeFileSync(join(dir, 'transformed-fp.bin'), encodeLlama2c(transformed));
  writeFileSync(join(dir, 'quantized-fake.bin'), encodeLlama2c(quantized));
}
