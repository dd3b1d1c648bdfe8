/**
 * Helper threads for the wasm kernels (matmul rows, few-row product columns, Hessian lines,
 * float64 tiles, decode attention units, whole-sequence attention heads, token draws; the jobs are in ./threadJobs.ts): each
 * worker_thread instantiates the kernels against the same shared WebAssembly.Memory, and
 * all threads (the caller included) take pieces of a job from a shared counter until none
 * are left.
 * Grabbing chunks rather than fixed halves keeps both cores busy when one of them is
 * also running something else (machines here are shared); which thread computes a row
 * never changes its value, so results are bit-identical for any thread count.
 *
 * Hand-off is through Atomics on control words at the bottom of that memory, not
 * postMessage, so a call stays synchronous (the caller blocks in Atomics.wait once its
 * own chunks are done) and costs microseconds. The worker source is a string evaluated
 * in the thread, so it works the same from the TypeScript sources and from the esbuild
 * bundle in dist/, with no worker file to locate; it holds the very loops this thread
 * runs (their source text), so the two cannot drift apart.
 */
import { Worker } from 'node:worker_threads';
import type { WasmMemory, WasmModule } from './api';
import type { KernelExports } from './module';
import {
  attendArgs, attendRowsArgs, drawArgs, runAttend, runAttendRows, runChunks, runDraw, runHessian, runTiles, runXt, tileArgs, xtArgs,
  type AttendJob, type AttendRowsJob, type DrawJob, type HessianJob, type MatmulJob, type TileJob, type XtJob,
} from './threadJobs';

/** Below this many multiply-adds a product runs on one thread: the hand-off (~10–50 µs) would dominate. */
export const MT_MIN_MACS = 1 << 21;
/** Chunks per thread when a product is split: enough to even out a core that is also busy elsewhere. */
export const CHUNKS_PER_THREAD = 8;

/** Int32 words per thread in the control block; thread t (helpers 1…) owns words [t·CTL_STRIDE, +CTL_STRIDE). */
export const CTL_STRIDE = 32;
const MAX_THREADS = 64;
/** Bytes at the bottom of the memory reserved for control words. */
export const CTL_BYTES = CTL_STRIDE * MAX_THREADS * 4;
/** Per-thread slots: GEN (bumped by the caller per job), DONE (set to GEN when finished), STATUS, OP, then the job. */
const GEN = 0, DONE = 1, STATUS = 2, OP = 3, ARGS = 4;
const OP_QUIT = 0, OP_MATMUL = 1, OP_HESSIAN = 2, OP_TILES = 3, OP_ATTEND = 4, OP_XT = 5, OP_ATTEND_ROWS = 6, OP_DRAW = 7;
/** STATUS values. */
const READY = 1, FAILED = -1;
/** The shared next-chunk counter lives in thread 0's (the caller's) otherwise unused slots. */
const COUNTER = 1;

const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { module, memory, t } = workerData;
const base = t * ${CTL_STRIDE};
const ctl = new Int32Array(memory.buffer, 0, ${CTL_STRIDE * MAX_THREADS});
const runChunks = ${runChunks.toString()};
const runHessian = ${runHessian.toString()};
const runTiles = ${runTiles.toString()};
const runAttend = ${runAttend.toString()};
const runXt = ${runXt.toString()};
const runAttendRows = ${runAttendRows.toString()};
const runDraw = ${runDraw.toString()};
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
  if (ctl[base + ${OP}] === ${OP_QUIT}) break;
  let status = ${READY};
  try {
    const args = Array.from(ctl.subarray(base + ${ARGS}, base + ${CTL_STRIDE}));
    const op = ctl[base + ${OP}];
    if (op === ${OP_HESSIAN}) runHessian(k, ctl, ${COUNTER}, args, memory.buffer);
    else if (op === ${OP_TILES}) runTiles(k, ctl, ${COUNTER}, args);
    else if (op === ${OP_ATTEND}) runAttend(k, ctl, ${COUNTER}, args, memory.buffer, t);
    else if (op === ${OP_XT}) runXt(k, ctl, ${COUNTER}, args);
    else if (op === ${OP_ATTEND_ROWS}) runAttendRows(k, ctl, ${COUNTER}, args, memory.buffer, t);
    else if (op === ${OP_DRAW}) runDraw(k, ctl, ${COUNTER}, args, t);
    else runChunks(k, ctl, ${COUNTER}, args, t);
  } catch (e) {
    status = ${FAILED};
  }
  Atomics.store(ctl, base + ${STATUS}, status);
  Atomics.store(ctl, base + ${DONE}, gen);
  Atomics.notify(ctl, base + ${DONE});
}
`;

export class HelperThreads {
  private readonly workers: Worker[] = [];
  private readonly ctl: Int32Array;
  private gen = 0;

  /** `count` helpers (threads 1…count) on `memory`, which must reserve CTL_BYTES at its bottom. */
  constructor(module: WasmModule, memory: WasmMemory, readonly count: number) {
    if (count + 1 > MAX_THREADS) throw new RangeError(`at most ${MAX_THREADS - 1} helper threads`);
    this.ctl = new Int32Array(memory.buffer, 0, CTL_STRIDE * MAX_THREADS);
    for (let t = 1; t <= count; t++) {
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { module, memory, t } });
      w.unref(); // idle helpers must not keep the process alive
      this.workers.push(w);
    }
  }

  /**
   * Runs `job` on this thread and the first `helpers` helper threads; returns when every
   * chunk is done. `ownDone` gets the first rows of the chunks this thread computed, as
   * soon as it runs out of chunks and before it waits for the helpers, so the caller can
   * copy those rows out while the helpers finish theirs.
   */
  matmul(k: KernelExports, job: MatmulJob, helpers: number, ownDone?: (rowStarts: number[]) => void): void {
    const args = [job.x, job.wp, job.y, job.rows, job.K, job.N, job.kcMax, job.beta, job.chunk, job.scratch];
    this.run(OP_MATMUL, args, helpers, () => ownDone?.(runChunks(k, this.ctl, COUNTER, args, 0)));
  }

  /** Runs the Hessian `job` on this thread and the first `helpers` helper threads; returns when every line is done. */
  hessian(k: KernelExports, job: HessianJob, memory: WasmMemory, helpers: number): void {
    const args = [job.x, job.ld, job.cols, job.acc, job.seg, job.segments, job.blockRows, job.chunk];
    this.run(OP_HESSIAN, args, helpers, () => runHessian(k, this.ctl, COUNTER, args, memory.buffer));
  }

  /** Runs the tile `job` on this thread and the first `helpers` helper threads; returns when every tile is done. */
  tiles(k: KernelExports, job: TileJob, helpers: number): void {
    const args = tileArgs(job);
    this.run(OP_TILES, args, helpers, () => runTiles(k, this.ctl, COUNTER, args));
  }

  /** Runs the attention `job` on this thread and the first `helpers` helper threads; returns when every unit is done. */
  attend(k: KernelExports, job: AttendJob, memory: WasmMemory, helpers: number): void {
    const args = attendArgs(job);
    this.run(OP_ATTEND, args, helpers, () => runAttend(k, this.ctl, COUNTER, args, memory.buffer, 0));
  }

  /** Runs the whole-sequence attention `job` on this thread and the first `helpers` helper threads; returns when every head is done. */
  attendRows(k: KernelExports, job: AttendRowsJob, memory: WasmMemory, helpers: number): void {
    const args = attendRowsArgs(job);
    this.run(OP_ATTEND_ROWS, args, helpers, () => runAttendRows(k, this.ctl, COUNTER, args, memory.buffer, 0));
  }

  /** Runs the few-row product `job` (matmul_xt) on this thread and the first `helpers` helper threads; returns when every column is done. */
  xt(k: KernelExports, job: XtJob, helpers: number): void {
    const args = xtArgs(job);
    this.run(OP_XT, args, helpers, () => runXt(k, this.ctl, COUNTER, args));
  }

  /** Runs the token-draw `job` on this thread and the first `helpers` helper threads; returns when every row is drawn. */
  draw(k: KernelExports, job: DrawJob, helpers: number): void {
    const args = drawArgs(job);
    this.run(OP_DRAW, args, helpers, () => runDraw(k, this.ctl, COUNTER, args, 0));
  }

  /** Starts the helpers on job `op`, runs this thread's share (`own`), then waits for them. */
  private run(op: number, args: number[], helpers: number, own: () => void): void {
    const c = this.ctl;
    Atomics.store(c, COUNTER, 0);
    this.gen = (this.gen + 1) | 0 || 1;
    for (let t = 1; t <= helpers; t++) {
      const base = t * CTL_STRIDE;
      if (Atomics.load(c, base + STATUS) === FAILED) throw new Error(`wasm helper thread ${t} failed`);
      c.set(args, base + ARGS);
      c[base + OP] = op;
      Atomics.store(c, base + GEN, this.gen);
      Atomics.notify(c, base + GEN);
    }
    try {
      own();
    } finally {
      for (let t = 1; t <= helpers; t++) this.finish(t);
    }
  }

  /** Blocks until helper t has finished its current job. */
  private finish(t: number): void {
    const base = t * CTL_STRIDE;
    const c = this.ctl;
    const deadline = Date.now() + 120_000;
    for (;;) {
      const done = Atomics.load(c, base + DONE);
      if (done === this.gen) break;
      if (done === -1) throw new Error(`wasm helper thread ${t} failed to start`);
      if (Date.now() > deadline) throw new Error(`wasm helper thread ${t} did not answer within 120 s`);
      Atomics.wait(c, base + DONE, done, 1000);
    }
    if (Atomics.load(c, base + STATUS) === FAILED) throw new Error(`wasm helper thread ${t} trapped in a kernel`);
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
