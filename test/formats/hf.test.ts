/**
 * HF checkpoints in: random LLaMA / Mistral / Qwen2 / OPT checkpoints written by the test in
 * fp16, bf16 and fp32, single-file and sharded, load through loadModel and match a float64
 * reference forward that reads the HF tensors by name. llama2.c <-> HF conversion round-trips
 * exactly. Broken or unsupported checkpoints give one clear InvarxError.
 */
import { mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InvarxError } from '../../core/errors';
import { forward } from '../../core/forward';
import { withRopeLayout } from '../../core/model/hf';
import { readLlama2c } from '../../core/model/llama2c';
import { loadModel } from '../../core/model/load';
import { INDEX_FILE } from '../../core/model/safetensors';
import type { Model } from '../../core/model/types';
import { writeHfExport, writeLlama2cExport } from '../../core/export/fp';
import { shippedModel } from '../helpers';
import { SMALL, hfReferenceLogits, randomHf, relDiff, writeHf, type HfKind } from './hfFixtures';

const tmp = mkdtempSync(join(tmpdir(), 'invarx-hf-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(tmp, `m${n++}`);

const TOKENS = [1, 5, 9, 3, 17, 30, 2, 11, 7, 39];

function expectBadModel(f: () => unknown, msg: RegExp): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(InvarxError);
  expect((err as InvarxError).code).toBe('bad-model');
  expect((err as Error).message).toMatch(msg);
}

function sameWeights(a: Model, b: Model): void {
  expect(b.config).toEqual(a.config);
  expect(b.embedding).toEqual(a.embedding);
  expect(b.classifier).toEqual(a.classifier);
  expect(b.finalNorm).toEqual(a.finalNorm);
  expect(b.finalNormBias).toEqual(a.finalNormBias);
  expect(b.positions).toEqual(a.positions);
  a.blocks.forEach((blk, l) => expect(b.blocks[l]).toEqual(blk));
}

describe('HF checkpoints load and match the float64 reference', () => {
  const kinds: HfKind[] = ['llama', 'mistral', 'qwen2', 'opt'];
  for (const kind of kinds) {
    for (const dtype of ['F16', 'BF16', 'F32'] as const) {
      for (const sharded of [false, true]) {
        it(`${kind} ${dtype} ${sharded ? 'sharded' : 'single file'}`, () => {
          const ck = randomHf(kind, { ...SMALL, tied: kind === 'opt' }, 7);
          const dir = fresh();
          const files = writeHf(dir, ck, dtype, sharded ? 3000 : undefined);
          expect(files.includes(INDEX_FILE)).toBe(sharded);
          if (sharded) expect(files.length).toBeGreaterThan(3);
          const m = loadModel(dir);
          const ref = hfReferenceLogits(ck, TOKENS);
          expect(relDiff(forward(m, TOKENS).logits, ref)).toBeLessThan(2e-5);
        });
      }
    }
  }

  it('reads the config fields', () => {
    const dir = fresh();
    writeHf(dir, randomHf('qwen2', { ...SMALL, tied: true }), 'BF16');
    const c = loadModel(dir).config;
    expect(c).toMatchObject({
      arch: 'llama', dim: 16, hiddenDim: 24, nLayers: 2, nHeads: 4, nKvHeads: 2, headDim: 4, vocabSize: 40, seqLen: 12,
      normEps: 1e-6, ropeTheta: 1e6, ropeLayout: 'half', sharedClassifier: true, bosId: 1, eosId: 2,
    });
    const m = loadModel(dir);
    expect(m.classifier).toBe(m.embedding);
    expect(m.blocks[0].bq).toBeDefined();
    expect(m.blocks[0].bo).toBeUndefined();
    const od = fresh();
    writeHf(od, randomHf('opt', { ...SMALL, tied: true }), 'F16');
    const o = loadModel(od);
    expect(o.config).toMatchObject({ arch: 'opt', nKvHeads: 4, normEps: 1e-5, seqLen: 12, bosId: 2, sharedClassifier: true });
    expect(o.positions!.length).toBe(12 * 16); // the table has 14 rows; HF's offset rows are dropped
  });

  it('the same checkpoint in fp16, bf16 and fp32 gives the same model', () => {
    const ck = randomHf('llama', SMALL, 3);
    const models = (['F16', 'BF16', 'F32'] as const).map((dt) => {
      const dir = fresh();
      writeHf(dir, ck, dt);
      return loadModel(dir);
    });
    sameWeights(models[0], models[1]);
    sameWeights(models[0], models[2]);
  });

  it('caps a sliding-window model at its window', () => {
    const ck = randomHf('mistral');
    ck.config.sliding_window = 8;
    const dir = fresh();
    writeHf(dir, ck, 'F16');
    expect(loadModel(dir).config.seqLen).toBe(8);
  });
});

describe('llama2.c <-> HF', () => {
  const src = shippedModel();
  const tokens = [1, 403, 407, 261, 378, 410, 268, 422, 1, 300, 290, 12, 18, 77];
  const fp = forward(src, tokens).logits;

  it('llama2.c -> HF safetensors -> back gives identical weights and logits; the HF (half RoPE) model the same function', () => {
    const dir = fresh();
    writeHfExport(dir, src);
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({
      architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 64, intermediate_size: 172, num_hidden_layers: 5,
      num_attention_heads: 8, num_key_value_heads: 4, vocab_size: 512, max_position_embeddings: 512, rms_norm_eps: 1e-5,
      rope_theta: 10000, tie_word_embeddings: true, hidden_act: 'silu', torch_dtype: 'float32',
    });
    const hf = loadModel(dir);
    expect(hf.config.ropeLayout).toBe('half');
    const half = forward(hf, tokens).logits;
    let d = 0;
    for (let i = 0; i < fp.length; i++) d = Math.max(d, Math.abs(half[i] - fp[i]));
    expect(d).toBeLessThan(1e-4);
    expect(hf.blocks[0].wq).not.toEqual(src.blocks[0].wq); // rows really were permuted
    const back = withRopeLayout(hf, 'interleaved');
    sameWeights(src, back);
    expect(forward(back, tokens).logits).toEqual(fp);
  });

  it('HF (half) -> llama2.c .bin -> back', () => {
    const dir = fresh();
    writeHfExport(dir, src, { dtype: 'F32' });
    const path = join(fresh() + '.bin');
    writeLlama2cExport(path, loadModel(dir));
    const again = readLlama2c(path);
    sameWeights(src, again);
  });

  it('the permutation is the one of HF convert_llama_weights_to_hf', () => {
    // permute(w) = w.view(n_heads, hd/2, 2, dim).transpose(1, 2).reshape(n_heads*hd, dim)
    const m = withRopeLayout(src, 'half');
    const { headDim: hd, dim, nHeads } = src.config;
    const w = src.blocks[2].wq;
    const expected = new Float32Array(w.length);
    for (let h = 0; h < nHeads; h++) {
      for (let j = 0; j < 2; j++) {
        for (let i = 0; i < hd / 2; i++) {
          const from = (h * hd + 2 * i + j) * dim;
          expected.set(w.subarray(from, from + dim), (h * hd + j * (hd / 2) + i) * dim);
        }
      }
    }
    expect(m.blocks[2].wq).toEqual(expected);
  });

  it('refuses to write a model llama2.c cannot hold', () => {
    const dir = fresh();
    writeHf(dir, randomHf('qwen2'), 'F32');
    expect(() => writeLlama2cExport(join(tmp, 'x.bin'), loadModel(dir))).toThrow(/llama2\.c/);
  });
});

describe('FP export round-trips every kind', () => {
  for (const kind of ['qwen2', 'opt', 'llama'] as HfKind[]) {
    for (const dtype of ['F32', 'BF16'] as const) {
      it(`${kind} ${dtype}`, () => {
        const ck = randomHf(kind, { ...SMALL, tied: kind !== 'llama' }, 11);
        const dir = fresh();
        writeHf(dir, ck, 'BF16');
        const m = loadModel(dir);
        const out = fresh();
        writeHfExport(out, m, { dtype, baseConfig: ck.config, maxShardBytes: 4000 });
        sameWeights(m, loadModel(out)); // values are bf16-exact, so even BF16 is lossless here
        const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
        expect(cfg.architectures).toEqual(ck.config.architectures);
        expect(cfg.pad_token_id).toBe(ck.config.pad_token_id); // carried over from the base config
      });
    }
  }
});

describe('broken and unsupported checkpoints', () => {
  function variant(mutate: (cfg: Record<string, unknown>, dir: string) => void, kind: HfKind = 'llama', sharded = false): string {
    const ck = randomHf(kind);
    const dir = fresh();
    writeHf(dir, ck, 'F16', sharded ? 3000 : undefined);
    mutate(ck.config, dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(ck.config));
    return dir;
  }

  it('unknown architecture names it and the supported list', () => {
    const dir = variant((c) => (c.architectures = ['GPTNeoXForCausalLM']));
    expectBadModel(() => loadModel(dir), /GPTNeoXForCausalLM is not supported \(supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, OPTForCausalLM\)/);
    expectBadModel(() => loadModel(variant((c) => delete c.architectures)), /no "architectures"/);
  });

  it('OPT variants we cannot run', () => {
    expectBadModel(() => loadModel(variant((c) => (c.do_layer_norm_before = false), 'opt')), /do_layer_norm_before=false/);
    expectBadModel(() => loadModel(variant((c) => (c.word_embed_proj_dim = 8), 'opt')), /word_embed_proj_dim 8 differs from hidden_size 16/);
    expectBadModel(() => loadModel(variant((c) => (c.activation_function = 'gelu'), 'opt')), /activation_function "gelu"/);
  });

  it('llama variants we cannot run', () => {
    expectBadModel(() => loadModel(variant((c) => (c.rope_scaling = { rope_type: 'llama3', factor: 8 }))), /rope_scaling "llama3" is not supported/);
    expectBadModel(() => loadModel(variant((c) => (c.num_key_value_heads = 3))), /not a multiple of num_key_value_heads 3/);
    expectBadModel(() => loadModel(variant((c) => (c.hidden_size = 'big'))), /"hidden_size" must be a positive integer/);
  });

  it('tensor and shard problems', () => {
    expectBadModel(() => loadModel(variant((c) => (c.intermediate_size = 20))), /"model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[24, 16\], expected \[20, 16\]/);
    expectBadModel(() => loadModel(variant((c) => (c.num_hidden_layers = 3))), /tensor "model\.layers\.2\.input_layernorm\.weight" is missing/);
    expectBadModel(() => loadModel(variant((c) => (c.tie_word_embeddings = false), 'opt')), /"lm_head\.weight" is missing/);
    const shards = (dir: string) => {
      const index = JSON.parse(readFileSync(join(dir, INDEX_FILE), 'utf8'));
      return { index, files: [...new Set(Object.values(index.weight_map as Record<string, string>))].sort() };
    };
    let second = '';
    const missing = variant((_, dir) => {
      second = shards(dir).files[1];
      unlinkSync(join(dir, second));
    }, 'llama', true);
    expectBadModel(() => loadModel(missing), new RegExp(`shard file ${second.replace(/\./g, '\\.')} is missing`));
    const wrongShard = variant((_, dir) => {
      const { index, files } = shards(dir);
      const [name] = Object.keys(index.weight_map).filter((k) => index.weight_map[k] === files[0]);
      index.weight_map[name] = files[1];
      writeFileSync(join(dir, INDEX_FILE), JSON.stringify(index));
    }, 'llama', true);
    expectBadModel(() => loadModel(wrongShard), /is listed in shard model-\d+-of-\d+\.safetensors but is not in it/);
    const escape = variant((_, dir) => {
      const index = JSON.parse(readFileSync(join(dir, INDEX_FILE), 'utf8'));
      index.weight_map['model.norm.weight'] = '../../etc/passwd';
      writeFileSync(join(dir, INDEX_FILE), JSON.stringify(index));
    }, 'llama', true);
    expectBadModel(() => loadModel(escape), /invalid shard name/);
    expectBadModel(() => loadModel(variant((_, dir) => unlinkSync(join(dir, 'model.safetensors')))), /no model\.safetensors or model\.safetensors\.index\.json/);
  });

  it('paths that are not models', () => {
    const empty = fresh();
    writeHf(empty, randomHf('llama'), 'F16');
    unlinkSync(join(empty, 'config.json'));
    expectBadModel(() => loadModel(empty), /needs a config\.json/);
    expectBadModel(() => loadModel(join(empty, 'model.safetensors')), /give the checkpoint directory/);
    expectBadModel(() => loadModel(join(empty, 'nothing.bin')), /cannot read model file .*nothing\.bin: ENOENT/);
    writeFileSync(join(empty, 'weights.pt'), 'x');
    expectBadModel(() => loadModel(join(empty, 'weights.pt')), /unknown model format/);
    const badJson = variant(() => undefined);
    writeFileSync(join(badJson, 'config.json'), '{"architectures": [');
    expectBadModel(() => loadModel(badJson), /config\.json: not valid JSON/);
  });
});
