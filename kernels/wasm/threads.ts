/**
 * Helper threads for a multi-threaded wasm matmul: each worker_thread instantiates the
 * kernels against the same shared WebAssembly.Memory and computes a band of rows of y.
 *
 * Hand-off is through Atomics on control words at the bottom of that memory, not
 * postMessage, so a call stays synchronous (the caller blocks in Atomics.wait while its
 * own band is done) and costs microseconds. The worker source is a string evaluated in
 * the thread, so it works the same from the TypeScript sources and from the esbuild
 * bundle in dist/, with no worker file to locate.
 */
import { Worker } from 'node:worker_threads';
import type { WasmMemory, WasmModule } from './api';

/** Int32 words per thread in the control block. */
export const CTL_STRIDE = 16;
/** Slots: GEN (bumped by the caller per job), DONE (set to GEN when finished), STATUS, then the job. */
const GEN = 0, DONE = 1, STATUS = 2, OP = 3, ARGS = 4;
const OP_QUIT = 0, OP_MATMUL = 1;
/** STATUS values. */
const READY = 1, FAILED = -1;

const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { module, memory, base } = workerData;
const ctl = new Int32Array(memory.buffer, 0, ${CTL_STRIDE} * 64);
let k;
try {
  k = new WebAssembly.Instance(module, { env: { memory } }).exports;
  Atomics.store(ctl, base + ${STATUS}, ${READY});
} catch (e) {
  Atomics.store(ctl, base + ${STATUS}, ${FAILED});
  Atomics.store(ctl, base + ${DONE}, -1);
  Atomics.notify(ctl, base + ${DONE});
  throw e;
}
let seen = 0;
for (;;) {
  Atomics.wait(ctl, base + ${GEN}, seen);
  const gen = Atomics.load(ctl, base + ${GEN});
  if (gen === seen) continue;
  seen = gen;
  const a = base + ${ARGS};
  if (ctl[base + ${OP}] === ${OP_QUIT}) break;
  let status = ${READY};
  try {
    k.matmul_t(ctl[a], ctl[a + 1], ctl[a + 2], ctl[a + 3], ctl[a + 4], ctl[a + 5], ctl[a + 6], ctl[a + 7], ctl[a + 8], ctl[a + 9]);
  } catch (e) {
    status = ${FAILED};
  }
  Atomics.store(ctl, base + ${STATUS}, status);
  Atomics.store(ctl, base + ${DONE}, gen);
  Atomics.notify(ctl, base + ${DONE});
}
`;

/** Arguments of kernels.wat's matmul_t, in order. */
export type MatmulArgs = [x: number, wp: number, y: number, r0: number, r1: number, K: number, N: number, kcMax: number, beta: number, scratch: number];

export class HelperThreads {
  private readonly workers: Worker[] = [];
  private readonly ctl: Int32Array;
  private gen = 0;

  /** `count` helpers; control words of helper t (1-based) at Int32 index t·CTL_STRIDE. */
  constructor(module: WasmModule, memory: WasmMemory, readonly count: number) {
    if (count + 1 > 64) throw new RangeError('at most 63 helper threads');
    this.ctl = new Int32Array(memory.buffer, 0, CTL_STRIDE * 64);
    for (let t = 1; t <= count; t++) {
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { module, memory, base: t * CTL_STRIDE } });
      w.unref(); // idle helpers must not keep the process alive
      this.workers.push(w);
    }
  }

  /** Starts matmul_t(args with rows [r0, r1)) on helper t (1-based); returns at once. */
  start(t: number, args: MatmulArgs): void {
    const base = t * CTL_STRIDE;
    const c = this.ctl;
    if (Atomics.load(c, base + STATUS) === FAILED) throw new Error(`wasm helper thread ${t} failed`);
    for (let i = 0; i < args.length; i++) c[base + ARGS + i] = args[i];
    c[base + OP] = OP_MATMUL;
    this.gen = (this.gen + 1) | 0 || 1;
    Atomics.store(c, base + GEN, this.gen);
    Atomics.notify(c, base + GEN);
  }

  /** Blocks until helper t has finished the job `start` gave it. */
  finish(t: number): void {
    const base = t * CTL_STRIDE;
    const c = this.ctl;
    const want = Atomics.load(c, base + GEN);
    const deadline = Date.now() + 120_000;
    for (;;) {
      const done = Atomics.load(c, base + DONE);
      if (done === want) break;
      if (done === -1) throw new Error(`wasm helper thread ${t} failed to start`);
      if (Date.now() > deadline) throw new Error(`wasm helper thread ${t} did not answer within 120 s`);
      Atomics.wait(c, base + DONE, done, 1000);
    }
    if (Atomics.load(c, base + STATUS) === FAILED) throw new Error(`wasm helper thread ${t} trapped in matmul_t`);
  }

  dispose(): void {
    for (let t = 1; t <= this.count; t++) {
      const base = t * CTL_STRIDE;
      this.ctl[base + OP] = OP_QUIT;
      Atomics.add(this.ctl, base + GEN, 1);
      Atomics.notify(this.ctl, base + GEN);
    }
    for (const w of this.workers) void w.terminate();
    this.workers.length = 0;
  }
}

/** Bytes at the bottom of the memory reserved for control words. */
export const CTL_BYTES = CTL_STRIDE * 64 * 4;
