/**
 * Sampling token sets: sequential decoding (one Decoder per sequence, every token a
 * matrix–vector pass over all weights: how sets were sampled before BatchDecoder) vs
 * sampleTokens (all sequences together, one matmul per layer and step), on the best backend.
 *
 * The model is INVARX_BENCH_MODEL (default the shipped stories260K), or with
 * INVARX_BENCH_SHAPE an in-memory random llama: a named synthetic shape (e.g. 110m) or
 * dim,hidden,layers,heads,kvHeads,vocab. INVARX_BENCH_COUNT × INVARX_BENCH_LENGTH tokens
 * (default 32 × 256, as the default sets) are sampled batched; the sequential path samples
 * the first INVARX_BENCH_OLD_COUNT of those sequences (default: all below 10M parameters,
 * else 4), at the full length, and its time is scaled to `count` sequences: each sequence is
 * the same work, so that is exact up to timing noise (scaling a shorter length instead would
 * miss that later tokens attend over more keys). The backend is the CLI's (on the main
 * thread the wasm backend splits large products over one thread per core, see
 * kernels/registry.ts's defaultWasmThreads; a matrix–vector product is too small to split,
 * so the sequential path does not gain from them); when it has several threads, the
 * batched path is also timed on one. Machines shared with other work make the figures
 * noisy: compare runs made back to back.
 */
import os from 'node:os';
import { join } from 'node:path';
import { argmax, drawToken, sampleSoftmax, sampleTokens } from '../core/data';
import { Decoder } from '../core/forward';
import { loadModel } from '../core/model/load';
import { randomModel, syntheticShape, type SyntheticShape } from '../core/model/synthetic';
import type { Model } from '../core/model/types';
import type { Ops } from '../core/ops';
import { Rng } from '../core/rng';
import { bestBackend, chooseBackend } from '../kernels/registry';
import { createWasmBackend } from '../kernels/wasm/backend';
import { emit, note, type BenchModule } from './emit';

const SEED = 3003;

/** The sampling loop as it was before batching: a Decoder per sequence, one Rng draw per token. */
export function sampleSequential(model: Model, count: number, length: number, seed: number, ops: Ops, temperature = 1): number[][] {
  const rng = Rng.fromSeed(seed);
  const weights = new Float64Array(model.config.vocabSize);
  const seqs: number[][] = [];
  for (let s = 0; s < count; s++) {
    const dec = new Decoder(model, ops);
    const seq = [model.config.bosId];
    while (seq.length < length) {
      const logits = dec.step(seq[seq.length - 1]);
      seq.push(temperature === 0 ? argmax(logits) : sampleSoftmax(logits, temperature, weights, rng));
    }
    seqs.push(seq);
  }
  return seqs;
}

function benchModel(): { model: Model; label: string } {
  const shape = process.env.INVARX_BENCH_SHAPE;
  if (shape) {
    const dims = shape.split(',').map(Number);
    let s: SyntheticShape;
    if (dims.length === 6) {
      const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize] = dims;
      s = syntheticShape({ dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen: 1024, sharedClassifier: false });
    } else {
      s = syntheticShape(shape);
    }
    note(`sample: building a random llama of shape ${shape}…`);
    return { model: randomModel(s), label: `random ${shape}` };
  }
  const path = process.env.INVARX_BENCH_MODEL ?? join(process.cwd(), 'models', 'stories260K.bin');
  return { model: loadModel(path), label: path };
}

function parameters(m: Model): number {
  let n = m.embedding.length + (m.classifier === m.embedding ? 0 : m.classifier.length);
  for (const b of m.blocks) for (const w of Object.values(b)) n += (w as Float32Array | undefined)?.length ?? 0;
  return n;
}

function envInt(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!(Number.isInteger(n) && n >= 1)) throw new Error(`${name} must be a positive integer, got ${v}`);
  return n;
}

/** Wall seconds, and CPU seconds of the whole process (helper threads included): steadier than wall time on a busy machine. */
function timed<T>(f: () => T): { value: T; s: number; cpu: number } {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = f();
  const c = process.cpuUsage(c0);
  return { value, s: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

const r3 = (v: number) => Math.round(v * 1000) / 1000;

export const sampleBench: BenchModule = {
  name: 'sample',
  byNameOnly: true,
  run() {
    const { model, label } = benchModel();
    const params = parameters(model);
    const ops = bestBackend();
    const threads = (ops as { threads?: number }).threads ?? 1;
    const count = envInt('INVARX_BENCH_COUNT', 32);
    const length = Math.min(envInt('INVARX_BENCH_LENGTH', 256), model.config.seqLen);
    const oldCount = Math.min(envInt('INVARX_BENCH_OLD_COUNT', params < 10e6 ? count : 4), count);
    const base = { bench: 'sample', load_average: os.loadavg().map((l) => Math.round(l * 100) / 100), model: label, parameters: params, backend: ops.name, backend_reason: chooseBackend().reason, length, seed: SEED };
    // generated tokens: the BOS of each sequence is given, not sampled
    const tokens = (n: number) => n * (length - 1);

    note(`sample: sequential, ${oldCount} × ${length} tokens…`);
    const seq = timed(() => sampleSequential(model, oldCount, length, SEED, ops));
    emit({ ...base, figure: 'sequential', count: oldCount, seconds: r3(seq.s), cpu_seconds: r3(seq.cpu), tokens_per_s: r3(tokens(oldCount) / seq.s) });

    note(`sample: batched, ${count} × ${length} tokens…`);
    const full = timed(() => sampleTokens(model, { count, length, seed: SEED, ops }));
    emit({ ...base, figure: 'batched', count, threads, seconds: r3(full.s), cpu_seconds: r3(full.cpu), tokens_per_s: r3(tokens(count) / full.s) });

    const seqFull = (seq.s * count) / oldCount;
    emit({
      ...base, figure: 'speedup', count,
      sequential_seconds: r3(seqFull), sequential_scaled_from_count: oldCount === count ? null : oldCount,
      batched_seconds: r3(full.s), ratio: r3(seqFull / full.s),
      // one thread each: the ratio of CPU seconds, which a busy machine disturbs less than wall time
      ratio_cpu: threads === 1 ? r3((seq.cpu * count) / oldCount / full.cpu) : null,
      // whether both paths sampled the same tokens (a smaller count samples a prefix of the
      // set): on a backend whose one-row matmul rounds differently from its batched one, a
      // few logits differ in the last bits and a draw near a boundary may go the other way
      identical_tokens: JSON.stringify(seq.value) === JSON.stringify(full.value.slice(0, oldCount)),
    });

    if (ops.name === 'wasm' && threads > 1) {
      const one = createWasmBackend({ threads: 1 });
      note(`sample: batched on wasm with 1 thread, ${count} × ${length} tokens…`);
      const single = timed(() => sampleTokens(model, { count, length, seed: SEED, ops: one }));
      one.dispose?.();
      emit({
        ...base, backend: 'wasm', backend_reason: '1 thread', figure: 'batched', count, threads: 1,
        seconds: r3(single.s), cpu_seconds: r3(single.cpu), tokens_per_s: r3(tokens(count) / single.s), ratio_vs_sequential: r3(seqFull / single.s),
        ratio_cpu_vs_sequential: r3((seq.cpu * count) / oldCount / single.cpu),
        identical_tokens: JSON.stringify(single.value) === JSON.stringify(full.value),
      });
    }
    if (ops.drawTokens) emit({ ...base, figure: 'draw', ...drawFigures(ops, count, model.config.vocabSize) });
  },
};

/**
 * The per-step draws alone (a softmax over the vocabulary per row, then the walk): in JS
 * (drawToken, Math.exp) vs the backend's drawTokens, on `rows` random logits rows, as ns per
 * vocabulary entry; both draw the same tokens.
 */
function drawFigures(ops: Ops, rows: number, V: number) {
  const rng = Rng.fromSeed(5);
  const logits = Float32Array.from({ length: rows * V }, () => (rng.float() - 0.5) * 24);
  const T = new Float64Array(rows).fill(1);
  const u = Float64Array.from({ length: rows }, () => rng.float());
  const w = new Float64Array(V);
  const reps = Math.max(1, Math.ceil(4e7 / (rows * V)));
  const js = new Int32Array(rows), kernel = new Int32Array(rows);
  const perEntry = (f: () => void) => {
    f(); // warm-up
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) f();
    return ((performance.now() - t0) * 1e6) / (reps * rows * V);
  };
  const jsNs = perEntry(() => {
    for (let r = 0; r < rows; r++) js[r] = drawToken(logits.subarray(r * V, (r + 1) * V), 1, u[r], w);
  });
  const kernelNs = perEntry(() => ops.drawTokens!(kernel, logits, rows, V, T, u));
  return { rows, vocabulary: V, js_ns_per_entry: r3(jsNs), backend_ns_per_entry: r3(kernelNs), ratio: r3(jsNs / kernelNs), same_tokens: js.every((t, r) => t === kernel[r]) };
}
