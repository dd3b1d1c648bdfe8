/**
 * `invarx generate`: text from the model (FP, or fake-quantized with --bits), so a user can
 * read a quantized model beside the FP one. The loop is run.c's `generate`: the prompt is
 * encoded with BOS, `--steps` counts positions including the prompt (capped at the model's
 * seqLen), prompt tokens are forced and then tokens are sampled, and a sampled BOS ends the
 * text. Temperature 0 is greedy; otherwise softmax(logits / T) is sampled with the seeded Rng
 * (run.c's default top-p 0.9 is not applied: plain temperature sampling).
 *
 * One deliberate difference from run.c's printing: the first piece after the initial BOS
 * keeps its leading space (run.c strips it), so the output is the decoded continuation —
 * " Once upon a time, …" for the shipped model. Later BOS-following pieces are stripped.
 */
import type { Command } from 'commander';
import { fail } from '../../core/errors';
import { Decoder } from '../../core/forward';
import { loadModel } from '../../core/model/load';
import { Rng } from '../../core/rng';
import { argmax, defaultCalibTokens, loadTokenFile, sampleSoftmax } from '../../core/data';
import { loadTokenizer, tokenizerPathFor, type Tokenizer } from '../../core/tokenizer';
import { quantizeModel } from '../../core/quant/model';
import { parseBits, parseGroup, parseInteger, parseMethods, parseNumber, parseSeed } from './modelArgs';

interface GenerateOptions {
  model: string;
  tokenizer?: string;
  prompt: string;
  steps: string;
  temperature: string;
  seed: string;
  bits?: string;
  group?: string;
  method?: string;
  calibTokens?: string;
}

export function register(program: Command): void {
  program
    .command('generate')
    .description('print text sampled from the model (FP, or quantized with --bits)')
    .requiredOption('--model <path>', 'model: llama2.c .bin, HF safetensors directory (also a packed GPTQ export)')
    .option('--tokenizer <path>', 'tokenizer (default: tok512.bin or tokenizer.bin beside the model)')
    .option('--prompt <text>', 'text to continue', '')
    .option('--steps <n>', 'positions to run, prompt included (capped at the model sequence length)', '256')
    .option('--temperature <t>', 'sampling temperature; 0 = greedy', '1')
    .option('--seed <n>', 'random seed of the sampler', '42')
    .option('--bits <n>', 'quantize the weights to this many bits (2-8) first')
    .option('--group <n>', 'quantization group size along the input dimension (with --bits)', '32')
    .option('--method <m>', 'quantizer with --bits: rtn or gptq', 'rtn')
    .option('--calib-tokens <file>', 'GPTQ calibration tokens (default: sampled from the model)')
    .action((o: GenerateOptions, cmd: Command) => generate(o, cmd));
}

async function generate(o: GenerateOptions, cmd: Command): Promise<void> {
  // Validate every option before the slow work.
  const steps = parseInteger('--steps', o.steps, 1);
  const temperature = parseNumber('--temperature', o.temperature);
  if (temperature < 0) fail('bad-config', `--temperature must be ≥ 0, got ${o.temperature}`);
  const seed = parseSeed(o.seed);
  const quantize = o.bits !== undefined;
  const explicit = (name: string) => cmd.getOptionValueSource(name) === 'cli';
  if (!quantize && (explicit('method') || explicit('group') || explicit('calibTokens'))) {
    fail('bad-config', '--method, --group and --calib-tokens only apply with --bits');
  }
  const bits = quantize ? parseBits(o.bits!) : 0;
  const group = parseGroup(o.group ?? '32');
  const [method] = parseMethods(o.method ?? 'rtn', ['rtn', 'gptq']);

  let model = loadModel(o.model);
  const tok = loadTokenizer(tokenizerPathFor(o.model, o.tokenizer), model.config.vocabSize);
  const { bestBackend } = await import('../../kernels/registry'); // (the kernels compile when loaded: not at startup)
  const ops = bestBackend();
  if (quantize) {
    const calib = method !== 'gptq' ? undefined
      : o.calibTokens ? loadTokenFile(o.calibTokens, model.config) : defaultCalibTokens(model, ops);
    model = quantizeModel(model, { bits, group, method: method as 'rtn' | 'gptq', calib, ops, f16Scales: true });
  }

  const prompt = tok.encode(o.prompt, { bos: true });
  const { seqLen, bosId, vocabSize } = model.config;
  const total = Math.min(steps, seqLen);
  const rng = Rng.fromSeed(seed);
  const weights = new Float64Array(vocabSize);
  const out = new PieceWriter(tok);
  const dec = new Decoder(model, ops);
  let token = prompt[0];
  for (let pos = 0; pos < total; ) {
    const logits = dec.step(token);
    const next = pos < prompt.length - 1 ? prompt[pos + 1]
      : temperature === 0 ? argmax(logits) : sampleSoftmax(logits, temperature, weights, rng);
    pos++;
    if (next === bosId) break; // BOS delimits sequences (run.c)
    out.write(pos === 1 ? -1 : token, next);
    token = next;
  }
  out.end();
}

/**
 * Streams pieces to stdout as UTF-8 text. A character spelled by several byte pieces is held
 * back until complete. Like run.c's safe_printf, a byte piece that is an ASCII control byte
 * (not whitespace) is dropped; bytes ≥ 0x80 are kept, since they spell UTF-8 characters.
 */
class PieceWriter {
  private utf8 = new TextDecoder('utf-8');

  constructor(private tok: Tokenizer) {}

  write(prev: number, id: number): void {
    const bytes = this.tok.decodePiece(prev, id);
    if (bytes.length === 1 && this.tok.isBytePiece(id) && isControl(bytes[0])) return;
    const s = this.utf8.decode(bytes, { stream: true });
    if (s) process.stdout.write(s);
  }

  end(): void {
    process.stdout.write(this.utf8.decode() + '\n');
  }
}

function isControl(b: number): boolean {
  const space = b === 0x09 || b === 0x0a || b === 0x0b || b === 0x0c || b === 0x0d || b === 0x20;
  return (b < 0x20 && !space) || b === 0x7f;
}
