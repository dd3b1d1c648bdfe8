/**
 * Open any supported model by path:
 *   a directory with config.json declaring GPTQ quantization -> packed GPTQ checkpoint, dequantized
 *   a directory with config.json (+ model.safetensors or a sharded index) -> HF checkpoint
 *   a `.bin` file -> llama2.c
 *   a `.gguf` file -> llama GGUF (./gguf.ts), dequantized
 */
import { fail } from '../errors';
import { inputKind } from '../files';
import { isGptqDir, loadGptqModel } from '../export/gptqRead';
import { isHfDir, loadHfModel } from './hf';
import { loadGgufModel } from './gguf';
import { readLlama2c } from './llama2c';
import type { Model } from './types';

export interface LoadOptions {
  /** HF checkpoints and GGUF files: read blocks when used (core/model/hf.ts loadHfModel); 'auto' (default) for large ones. */
  stream?: boolean | 'auto';
}

export function loadModel(path: string, opts: LoadOptions = {}): Model {
  // A FIFO or a device would block or never end: regular files and directories only.
  if (inputKind(path, 'model file', 'bad-model', { directory: true }) === 'dir') {
    if (isGptqDir(path)) return loadGptqModel(path);
    if (isHfDir(path)) return loadHfModel(path, { stream: opts.stream ?? 'auto' });
    return fail('bad-model', `${path}: a model directory needs a config.json (Hugging Face checkpoint)`);
  }
  if (path.endsWith('.bin')) return readLlama2c(path);
  if (path.endsWith('.gguf')) return loadGgufModel(path, { stream: opts.stream ?? 'auto' });
  if (path.endsWith('.safetensors') || path.endsWith('.json')) {
    return fail('bad-model', `${path}: give the checkpoint directory (with config.json), not one of its files`);
  }
  return fail('bad-model', `${path}: unknown model format (expected a llama2.c .bin file, a .gguf file or a Hugging Face checkpoint directory)`);
}
