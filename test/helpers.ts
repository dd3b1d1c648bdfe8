import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { readLlama2c } from '../core/model/llama2c';
import type { Model } from '../core/model/types';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const MODEL_PATH = join(ROOT, 'models', 'stories260K.bin');
export const TOKENIZER_PATH = join(ROOT, 'models', 'tok512.bin');

let cached: Model | undefined;
/** The shipped stories260K model, read once per test file. Do not mutate it. */
export function shippedModel(): Model {
  cached ??= readLlama2c(MODEL_PATH);
  return cached;
}
