import { readFileSync, readdirSync, statSync } from 'node:fs';
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

/** What a search export of the shipped (llama2.c) model holds, sorted. */
export const SEARCH_EXPORT_FILES = [
  'export.json',
  'gptq/config.json', 'gptq/model.safetensors', 'gptq/quantize_config.json',
  'quantized-fake.bin',
  'transformed-fp.bin', 'transformed-fp/config.json', 'transformed-fp/model.safetensors',
  'transforms.msgpack',
];

/** Relative path → bytes of every file under a directory. */
export function readDir(dir: string): Map<string, Buffer> {
  const files = (readdirSync(dir, { recursive: true, encoding: 'utf8' }) as string[]).filter((n) => statSync(join(dir, n)).isFile());
  return new Map(files.sort().map((n) => [n, readFileSync(join(dir, n))]));
}

/** Same file names, same bytes (Buffer.equals: a deep toEqual on megabytes is slow). */
export function sameFiles(a: Map<string, Buffer>, b: Map<string, Buffer>): boolean {
  return a.size === b.size && [...a].every(([name, bytes]) => b.get(name)?.equals(bytes) === true);
}
