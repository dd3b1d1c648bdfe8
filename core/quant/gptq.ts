/**
 * GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate Post-Training
 * Quantization for Generative Pre-trained Transformers"), Algorithm 1: quantize the columns
 * of W one at a time, in order, spreading each column's rounding error over the columns not
 * yet quantized so as to minimize the layer-wise output error ||XWᵀ − XŴᵀ||².
 *
 * `accumulateHessian` and `gptqQuantize` mirror `add_batch` and `fasterquant` of the
 * reference gptq.py nearly line for line (the comments quote it). Same group layout and
 * quantization grid as RTN (./rtn.ts), so search can run on top of either. The column loop
 * (`gptqColumns`) takes any grid; ./gptqFormat.ts gives it llama.cpp's formats.
 *
 * One deliberate difference from gptq.py: with groups (static_groups=False) gptq.py computes
 * a group's (scale, zero) from `W[:, i:i+groupsize]`, which inside a lazy batch has not yet
 * received the updates of the batch's earlier columns (they live in W1). Here the grid is
 * computed from the fully error-updated weights at the moment the column loop enters the
 * group, i.e. what the un-batched Algorithm 1 does. This makes the lazy batching purely an
 * implementation detail: the result does not depend on blockSize.
 *
 * With `actOrder` (gptq.py act_order with static_groups) the columns are quantized in
 * decreasing order of their Hessian diagonal, the most active inputs first, while every
 * group keeps the grid RTN gives it from the original weights: the codes stay in the usual
 * group layout (no column-order table in the export).
 *
 * Float64 throughout (Hessian, Cholesky, working weights); outputs are float32 like RTN's.
 */
import { InvarxError } from '../errors';
import type { F32 } from '../model/types';
import type { Ops } from '../ops';
import { refineCodes } from './refine';
import { choleskyInverse, choleskyLower } from './cholesky';
import { clipGrid, groupParams, numGroups, quantCode, validateSpec, type QuantSpec, type Quantized } from './rtn';

/** Number of input rows folded into a running Hessian so far. */
export interface HessianState {
  nsamples: number;
}

/** An empty Hessian [cols, cols] and its running-average state. */
export function newHessian(cols: number): { H: Float64Array; state: HessianState } {
  return { H: new Float64Array(cols * cols), state: { nsamples: 0 } };
}

/**
 * gptq.py `add_batch`: fold the inputs x [n, cols] (one row per token) into the running
 * average H = 2/N · Σ x xᵀ over all N rows seen so far (the Hessian of the layer-wise
 * squared error, paper §3 eq. (1)). gptq.py counts sequences where this counts tokens; the
 * constant factor between them does not change GPTQ (damping is relative to mean diag H).
 */
export function accumulateHessian(H: Float64Array, x: Float32Array, n: number, cols: number, state: HessianState): void {
  if (H.length !== cols * cols) throw new RangeError(`Hessian holds ${H.length} values, not ${cols} × ${cols}`);
  if (x.length < n * cols) throw new RangeError(`inputs hold ${x.length} values, not ${n} × ${cols}`);
  if (n === 0) return;
  // self.H *= self.nsamples / (self.nsamples + tmp); self.nsamples += tmp
  const total = state.nsamples + n;
  const decay = state.nsamples / total;
  state.nsamples = total;
  // inp = math.sqrt(2 / self.nsamples) * inp.float(); self.H += inp.matmul(inp.t())
  // (upper triangle only, then mirrored: H is symmetric)
  const f = 2 / total;
  for (let i = 0; i < cols; i++) for (let j = i; j < cols; j++) H[i * cols + j] *= decay;
  for (let t = 0; t < n; t++) {
    const xo = t * cols;
    for (let i = 0; i < cols; i++) {
      const xi = f * x[xo + i];
      if (xi === 0) continue;
      const ho = i * cols;
      for (let j = i; j < cols; j++) H[ho + j] += xi * x[xo + j];
    }
  }
  for (let i = 0; i < cols; i++) for (let j = 0; j < i; j++) H[i * cols + j] = H[j * cols + i];
}

export interface GptqOptions {
  /** Dampening λ added to the diagonal, as a fraction of mean diag H (gptq.py percdamp). Default 0.01. */
  dampPercent?: number;
  /** Columns per lazy batch update (paper §3 "Lazy Batch-Updates"). Default 128. */
  blockSize?: number;
  /**
   * gptq.py static_groups: compute every group's grid up front from the original weights
   * (so the grid is RTN's) instead of when the column loop enters the group. Default false.
   */
  staticGroups?: boolean;
  /**
   * gptq.py act_order (with static_groups, which it implies): quantize the columns in
   * decreasing order of diag H. Taken by gptqFactor, whose factor then carries the order.
   */
  actOrder?: boolean;
  /** A backend with faster float64 steps (Cholesky, inverse, lazy batch update): the same bits. */
  ops?: Ops;
  /**
   * Coordinate-descent sweeps over the int grid's codes after the column loop (./refine.ts);
   * 0 (the default) is GPTQ as published. Not applied on ggml formats (./gptqFormat.ts).
   */
  refineSweeps?: number;
  /**
   * With refineSweeps: each sweep also moves every group's scale to its best value for the
   * layer error given the codes (./refine.ts), stored as the spec says (fp16 or float32).
   */
  refitScales?: boolean;
  /** gptqFactor also keeps the damped H⁻¹ itself (GptqFactor.inv), for ./asymmetric.ts. */
  keepInverse?: boolean;
}

export interface GptqResult {
  qz: Quantized;
  /** dequantize(qz): the fake-quant weights. */
  deq: F32;
  /** gptq.py's `Losses.sum()`: Σ (w − q)² / (2 [H⁻¹]_qq), the predicted increase of the layer error (of the column loop, before any refinement). */
  loss: number;
}

/**
 * What GPTQ needs of the Hessian, computed once and shared by every linear (and every row
 * set) that reads the same input: the upper Cholesky factor U of the damped H⁻¹ and the
 * dead columns (zero diagonal). Row q of U holds exactly the entries of the successively
 * reduced inverse Hessians [H_F⁻¹]_q,: / sqrt([H_F⁻¹]_qq) that the OBS update needs
 * (paper §3 "Cholesky Reformulation").
 */
export interface GptqFactor {
  cols: number;
  /** Upper factor U [cols, cols] of H⁻¹ = Uᵀ U (after dampening), of the columns in `order`. */
  U: Float64Array;
  /** 1 for a column whose input is always 0 (indexed by column). */
  dead: Uint8Array;
  /** With act order, the columns in the order they are quantized (U's row i is column order[i]); absent: 0, 1, … */
  order?: Int32Array;
  /** The Hessian the factor was made from (not copied: the caller must not change it while the factor is used), for ./refine.ts. */
  H: Float64Array;
  /** The dampening added to its diagonal. */
  damp: number;
  /** With GptqOptions.keepInverse: the damped H⁻¹ [cols, cols], in column order (not `order`'s). */
  inv?: Float64Array;
}

function checkOptions(opts: GptqOptions): { percdamp: number; blocksize: number } {
  const percdamp = opts.dampPercent ?? 0.01;
  const blocksize = opts.blockSize ?? 128;
  const sweeps = opts.refineSweeps ?? 0;
  if (!(Number.isInteger(sweeps) && sweeps >= 0)) throw new InvarxError('bad-config', `GPTQ refinement sweeps must be an integer ≥ 0, got ${sweeps}`);
  if (!(percdamp >= 0)) throw new InvarxError('bad-config', `GPTQ dampening must be ≥ 0, got ${percdamp}`);
  if (!(Number.isInteger(blocksize) && blocksize >= 1)) {
    throw new InvarxError('bad-config', `GPTQ block size must be a positive integer, got ${blocksize}`);
  }
  return { percdamp, blocksize };
}

/** The first half of gptq.py `fasterquant`: dead columns, dampening, H⁻¹ and its Cholesky factor. */
export function gptqFactor(H: Float64Array, cols: number, opts: GptqOptions = {}): GptqFactor {
  if (H.length !== cols * cols) throw new RangeError(`Hessian holds ${H.length} values, not ${cols} × ${cols}`);
  const { percdamp } = checkOptions(opts);
  const Hd = H.slice();
  // dead = torch.diag(H) == 0; H[dead, dead] = 1   (W[:, dead] = 0 is done per row)
  // (a column whose input is always 0 cannot affect the output: quantize it to 0 and
  // keep H invertible)
  const dead = new Uint8Array(cols);
  for (let i = 0; i < cols; i++) {
    if (Hd[i * cols + i] === 0) {
      Hd[i * cols + i] = 1;
      dead[i] = 1;
    }
  }
  // if actorder: perm = torch.argsort(torch.diag(H), descending=True); H = H[perm][:, perm]
  // (ties in column order, so the order is a function of H)
  const order = opts.actOrder ? actOrder(Hd, cols) : undefined;
  if (order) permuteSymmetric(Hd, cols, order);
  // damp = percdamp * torch.mean(torch.diag(H)); H[diag, diag] += damp
  let meanDiag = 0;
  for (let i = 0; i < cols; i++) meanDiag += Hd[i * cols + i];
  meanDiag /= cols;
  const damp = percdamp * meanDiag;
  for (let i = 0; i < cols; i++) Hd[i * cols + i] += damp;
  // H = torch.linalg.cholesky(H); H = torch.cholesky_inverse(H); H = torch.linalg.cholesky(H, upper=True)
  const lower = opts.ops?.choleskyLower ?? choleskyLower;
  const inverse = opts.ops?.choleskyInverse ?? choleskyInverse;
  if (!lower(Hd, cols)) {
    throw new InvarxError('bad-config', `GPTQ: the damped Hessian is not positive definite; raise dampPercent (now ${percdamp})`);
  }
  const U = inverse(Hd, cols);
  const inv = opts.keepInverse ? inColumnOrder(U, cols, order) : undefined;
  if (!lower(U, cols)) {
    throw new InvarxError('bad-config', `GPTQ: the inverse Hessian is not positive definite; raise dampPercent (now ${percdamp})`);
  }
  transposeInPlace(U, cols); // upper factor U = Lᵀ, Hinv = Uᵀ U
  const f: GptqFactor = order ? { cols, U, dead, H, damp, order } : { cols, U, dead, H, damp };
  if (inv) f.inv = inv;
  return f;
}

/** A copy of A [cols, cols], whose row and column i are column order[i] (identity when absent), in column order. */
function inColumnOrder(A: Float64Array, cols: number, order?: Int32Array): Float64Array {
  if (!order) return A.slice();
  const out = new Float64Array(cols * cols);
  for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) out[order[i] * cols + order[j]] = A[i * cols + j];
  return out;
}

/** The columns by decreasing diagonal of H [cols, cols], ties in column order. */
function actOrder(H: Float64Array, cols: number): Int32Array {
  return Int32Array.from({ length: cols }, (_, i) => i).sort((a, b) => H[b * cols + b] - H[a * cols + a] || a - b);
}

/** H ← H[order][:, order], in place. */
function permuteSymmetric(H: Float64Array, cols: number, order: Int32Array): void {
  const src = H.slice();
  for (let i = 0; i < cols; i++) {
    const ro = order[i] * cols;
    for (let j = 0; j < cols; j++) H[i * cols + j] = src[ro + order[j]];
  }
}

/**
 * gptq.py `fasterquant`: quantize w [rows, cols] given the Hessian H [cols, cols] of its
 * inputs (from accumulateHessian; not modified). Returns the integer codes and the
 * fake-quant weights on the same grid layout as RTN.
 */
export function gptqQuantize(
  w: F32, rows: number, cols: number, H: Float64Array, spec: QuantSpec, opts: GptqOptions = {},
): GptqResult {
  validateSpec(spec, cols);
  if (w.length !== rows * cols) throw new RangeError(`weight holds ${w.length} values, not ${rows} × ${cols}`);
  return gptqQuantizeRows(w, cols, gptqFactor(H, cols, opts), spec, opts);
}

/**
 * What the GPTQ column loop asks of a quantization grid: the int grid's here, the ggml
 * formats' in ./gptqFormat.ts. Parameters are fixed per group of `group` columns, from the
 * row's error-updated weights when the loop reaches the group's first column.
 */
export interface ColumnGrid {
  readonly group: number;
  /** Fix row r's parameters for the group starting at column i from its current weights cur[0, glen). */
  enter(r: number, i: number, cur: Float64Array, glen: number): void;
  /** Row r's current weight w at column i quantized with those parameters: the float32 value it dequantizes to. */
  round(r: number, i: number, w: number): number;
}

/**
 * The second half of `fasterquant`, the column loop, on the rows `rowSet` of w [·, cols]
 * (all rows when omitted). Each row's updates read only that row and the shared factor, so
 * the rows come out bit for bit as in a run over the whole matrix; the result holds the
 * chosen rows in the order given.
 */
export function gptqQuantizeRows(
  w: F32, cols: number, factor: GptqFactor, spec: QuantSpec, opts: GptqOptions = {}, rowSet?: ArrayLike<number>,
): GptqResult {
  validateSpec(spec, cols);
  const rows = rowSet ? rowSet.length : w.length / cols;
  const { bits, group } = spec;
  const maxq = 2 ** bits - 1;
  const clip = clipGrid(spec);
  const nG = numGroups(cols, group);
  const q = new Uint8Array(rows * cols);
  const scale = new Float32Array(rows * nG);
  const zero = new Uint8Array(rows * nG);
  const params = new Float64Array(2);
  const grid: ColumnGrid = {
    group,
    enter(r, i, cur, glen) {
      groupParams(cur, 0, glen, maxq, clip, params, spec.f16Scales);
      scale[r * nG + i / group] = params[0];
      zero[r * nG + i / group] = params[1];
    },
    round(r, i, wi) {
      const g = Math.floor(i / group);
      const s = scale[r * nG + g];
      const z = zero[r * nG + g];
      // q = quantize(w, scale, zero, maxq)
      const qi = quantCode(wi, s, z, maxq);
      q[r * cols + i] = qi;
      return Math.fround((qi - z) * s);
    },
  };
  const { deq, loss } = gptqColumns(w, cols, factor, grid, opts, rowSet);
  const qz = { rows, cols, bits, group, q, scale, zero };
  const sweeps = opts.refineSweeps ?? 0; // checked with the other options before the column loop
  const scales = opts.refitScales ? { f16: spec.f16Scales === true } : undefined;
  if (sweeps > 0) refineCodes(w, qz, deq, factor, sweeps, opts.ops?.gptqLazyUpdate ?? lazyUpdate, rowSet, scales);
  return { qz, deq, loss };
}

/**
 * The column loop itself on any grid: W = the chosen rows with dead columns zeroed, each
 * column quantized in turn and its error spread over the columns after it. Returns the
 * fake-quant rows and gptq.py's loss. With the factor's act order, W holds the columns in
 * that order and the grid is static (entered for every group before the loop); the grid is
 * always addressed, and the result laid out, by the original column.
 */
export function gptqColumns(
  w: F32, cols: number, factor: GptqFactor, grid: ColumnGrid, opts: GptqOptions = {}, rowSet?: ArrayLike<number>,
): { deq: F32; loss: number } {
  if (factor.cols !== cols) throw new RangeError(`GPTQ factor is for ${factor.cols} columns, not ${cols}`);
  if (w.length % cols !== 0) throw new RangeError(`weight holds ${w.length} values, not a multiple of ${cols} columns`);
  const { blocksize } = checkOptions(opts);
  const rows = rowSet ? rowSet.length : w.length / cols;
  const { group } = grid;
  const nG = numGroups(cols, group);
  const Hinv = factor.U;
  const update = opts.ops?.gptqLazyUpdate ?? lazyUpdate;
  const order = factor.order;
  // W's column i is the weights' column colOf[i]; at is its inverse
  const colOf = order ?? Int32Array.from({ length: cols }, (_, i) => i);
  const at = new Int32Array(cols);
  for (let i = 0; i < cols; i++) at[colOf[i]] = i;

  // W = layer.weight.data.clone().float(); W[:, dead] = 0   (if actorder: W = W[:, perm])
  const W = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const src = (rowSet ? rowSet[r] : r) * cols;
    for (let i = 0; i < cols; i++) W[r * cols + i] = factor.dead[colOf[i]] ? 0 : w[src + colOf[i]];
  }

  const deq = new Float32Array(rows * cols);
  const Err1 = new Float64Array(rows * blocksize); // [rows, count] errors of the current batch
  const cur = new Float64Array(Math.min(group, cols)); // current weights of one row of a group
  let loss = 0;

  // if static_groups: groups.append(quantizer.find_params(W[:, i:(i + groupsize)])) for every group
  const staticGroups = order !== undefined || (opts.staticGroups ?? false);
  if (staticGroups) {
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g < nG; g++) {
        const glen = Math.min(group, cols - g * group);
        for (let c = 0; c < glen; c++) cur[c] = W[r * cols + at[g * group + c]];
        grid.enter(r, g * group, cur, glen);
      }
    }
  }

  // for i1 in range(0, self.columns, blocksize):
  for (let i1 = 0; i1 < cols; i1 += blocksize) {
    const i2 = Math.min(i1 + blocksize, cols);
    const count = i2 - i1;
    // for i in range(count):   (here i is the absolute column index i1 + i)
    for (let i = i1; i < i2; i++) {
      // if (i1 + i) % groupsize == 0: self.quantizer.find_params(W[:, (i1 + i):(i1 + i + groupsize)])
      if (!staticGroups && i % group === 0) {
        const glen = Math.min(group, cols - i);
        for (let r = 0; r < rows; r++) {
          currentGroupRow(cur, W, Err1, Hinv, r, cols, blocksize, i1, i, i2, glen);
          grid.enter(r, i, cur, glen);
        }
      }
      // d = Hinv1[i, i]
      const d = Hinv[i * cols + i];
      const hrow = i * cols;
      for (let r = 0; r < rows; r++) {
        // q = quantize(w, scale, zero, maxq)
        const wi = W[r * cols + i];
        const qv = grid.round(r, colOf[i], wi);
        deq[r * cols + colOf[i]] = qv;
        // Losses1[:, i] = (w - q) ** 2 / d ** 2   (halved below, like Losses[:, i1:i2] = Losses1 / 2)
        const err1 = (wi - qv) / d;
        loss += (err1 * err1) / 2;
        // W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))   (paper eq. (2) within the batch)
        const wo = r * cols;
        for (let j = i + 1; j < i2; j++) W[wo + j] -= err1 * Hinv[hrow + j];
        // Err1[:, i] = err1
        Err1[r * blocksize + (i - i1)] = err1;
      }
    }
    // W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])   (the lazy batch update, paper §3)
    if (i2 < cols) update(W, Err1, Hinv, rows, cols, blocksize, i1, count, i2);
  }
  return { deq, loss };
}

/**
 * W[:, i2:] −= Err1 · Hinv[i1 : i1+count, i2:] (W [rows, cols], Err1 [rows, blocksize]),
 * each entry's updates in k order and a zero error skipped, as lazyUpdateRow does it row by
 * row (skipping keeps a −0 weight −0); four rows at a time share each read of a row of Hinv
 * (with a zero among their four errors, those rows take the one-row path).
 */
export function lazyUpdate(
  W: Float64Array, Err1: Float64Array, Hinv: Float64Array, rows: number, cols: number, blocksize: number, i1: number, count: number, i2: number,
): void {
  let r = 0;
  for (; r + 3 < rows; r += 4) {
    const w0 = r * cols;
    const w1 = w0 + cols;
    const w2 = w1 + cols;
    const w3 = w2 + cols;
    for (let k = 0; k < count; k++) {
      const e0 = Err1[r * blocksize + k];
      const e1 = Err1[(r + 1) * blocksize + k];
      const e2 = Err1[(r + 2) * blocksize + k];
      const e3 = Err1[(r + 3) * blocksize + k];
      const ho = (i1 + k) * cols;
      if (e0 !== 0 && e1 !== 0 && e2 !== 0 && e3 !== 0) {
        for (let j = i2; j < cols; j++) {
          const h = Hinv[ho + j];
          W[w0 + j] -= e0 * h;
          W[w1 + j] -= e1 * h;
          W[w2 + j] -= e2 * h;
          W[w3 + j] -= e3 * h;
        }
      } else {
        for (let q = 0; q < 4; q++) rowUpdate(W, (r + q) * cols, Err1[(r + q) * blocksize + k], Hinv, ho, i2, cols);
      }
    }
  }
  for (; r < rows; r++) lazyUpdateRow(W, Err1, Hinv, r, cols, blocksize, i1, count, i2);
}

/** Row r of lazyUpdate. */
export function lazyUpdateRow(
  W: Float64Array, Err1: Float64Array, Hinv: Float64Array, r: number, cols: number, blocksize: number, i1: number, count: number, i2: number,
): void {
  for (let k = 0; k < count; k++) rowUpdate(W, r * cols, Err1[r * blocksize + k], Hinv, (i1 + k) * cols, i2, cols);
}

function rowUpdate(W: Float64Array, wo: number, e: number, Hinv: Float64Array, ho: number, i2: number, cols: number): void {
  if (e === 0) return;
  for (let j = i2; j < cols; j++) W[wo + j] -= e * Hinv[ho + j];
}

/**
 * Row r of the group starting at column i (length glen) with every error update so far
 * applied: columns inside the batch [i1, i2) are already current in W; columns past i2 still
 * wait for the lazy update of the batch's quantized columns [i1, i).
 */
function currentGroupRow(
  cur: Float64Array, W: Float64Array, Err1: Float64Array, Hinv: Float64Array,
  r: number, cols: number, blocksize: number, i1: number, i: number, i2: number, glen: number,
): void {
  const wo = r * cols;
  for (let c = 0; c < glen; c++) {
    const col = i + c;
    let v = W[wo + col];
    if (col >= i2) for (let k = i1; k < i; k++) v -= Err1[r * blocksize + (k - i1)] * Hinv[k * cols + col];
    cur[c] = v;
  }
}

function transposeInPlace(A: Float64Array, n: number): void {
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const t = A[i * n + j];
      A[i * n + j] = A[j * n + i];
      A[j * n + i] = t;
    }
  }
}
