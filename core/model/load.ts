/**
 * Open any supported model by path. Today: llama2.c `.bin`. (HF safetensors directories
 * and packed GPTQ exports are added by the formats work.)
 */
import { readLlama2c } from './llama2c';
import type { Model } from './types';

export function loadModel(path: string): Model {
  return readLlama2c(path);
}
