/**
 * Argument checks shared by every backend, so that a bad call fails the same way (a
 * RangeError naming the mismatch) whichever backend runs it, before any copying.
 */
import type { F32 } from '../core/model/types';

function isDim(v: number): boolean {
  return Number.isInteger(v) && v >= 0;
}

export function checkMatmulT(y: F32, x: F32, w: F32, n: number, inDim: number, outDim: number): void {
  if (!(isDim(n) && isDim(inDim) && isDim(outDim))) {
    throw new RangeError(`matmulT: sizes must be non-negative integers, got n=${n} in=${inDim} out=${outDim}`);
  }
  if (x.length < n * inDim) throw new RangeError(`matmulT: x holds ${x.length} values, need ${n} × ${inDim}`);
  if (w.length < outDim * inDim) throw new RangeError(`matmulT: w holds ${w.length} values, need ${outDim} × ${inDim}`);
  if (y.length < n * outDim) throw new RangeError(`matmulT: y holds ${y.length} values, need ${n} × ${outDim}`);
}

/** Same bounds core's fakeQuantRtnRect enforces, checked up front. */
export function checkQuantRect(
  w: F32, out: F32, cols: number, nGroups: number, r0: number, r1: number, g0: number, g1: number,
): void {
  if (!(Number.isInteger(r0) && Number.isInteger(r1) && r0 >= 0 && r1 >= r0 && r1 * cols <= w.length && r1 * cols <= out.length)) {
    throw new RangeError(`rows [${r0}, ${r1}) do not fit weights of ${w.length} values with ${cols} columns`);
  }
  if (!(Number.isInteger(g0) && Number.isInteger(g1) && g0 >= 0 && g1 >= g0 && g1 <= nGroups)) {
    throw new RangeError(`groups [${g0}, ${g1}) outside [0, ${nGroups})`);
  }
}

export function checkSqErr(a: F32, b: F32, n: number): void {
  if (!isDim(n)) throw new RangeError(`sqErr: n must be a non-negative integer, got ${n}`);
  if (a.length < n || b.length < n) throw new RangeError(`sqErr: need ${n} values, a holds ${a.length} and b ${b.length}`);
}

export function checkSoftmax(att: F32, T: number, S: number, past: number): void {
  if (!(isDim(T) && isDim(S) && isDim(past) && S === past + T)) {
    throw new RangeError(`softmaxCausal: need S = past + T with non-negative integers, got T=${T} S=${S} past=${past}`);
  }
  if (att.length < T * S) throw new RangeError(`softmaxCausal: att holds ${att.length} values, need ${T} × ${S}`);
}

export function checkDraw(out: Int32Array, logits: F32, rows: number, V: number, temperature: ArrayLike<number>, u: ArrayLike<number>): void {
  if (!(isDim(rows) && isDim(V) && V >= 1)) throw new RangeError(`drawTokens: need rows ≥ 0 and V ≥ 1 integers, got rows=${rows} V=${V}`);
  if (logits.length < rows * V) throw new RangeError(`drawTokens: logits hold ${logits.length} values, need ${rows} × ${V}`);
  if (out.length < rows || temperature.length < rows || u.length < rows) throw new RangeError(`drawTokens: need ${rows} outputs, temperatures and uniforms`);
  for (let r = 0; r < rows; r++) {
    if (!(temperature[r] > 0)) throw new RangeError(`drawTokens: temperature ${r} must be > 0, got ${temperature[r]}`);
  }
}

export function checkSiluMul(a: F32, g: F32, n: number): void {
  if (!isDim(n)) throw new RangeError(`siluMul: n must be a non-negative integer, got ${n}`);
  if (a.length < n || g.length < n) throw new RangeError(`siluMul: need ${n} values, a holds ${a.length} and g ${g.length}`);
}

export function checkHessian(H: Float64Array, xT: F32, N: number, cols: number, rows: ArrayLike<number> | null): void {
  if (!(isDim(N) && isDim(cols))) throw new RangeError(`hessianEntries: sizes must be non-negative integers, got N=${N} cols=${cols}`);
  if (xT.length < cols * N) throw new RangeError(`hessianEntries: xT holds ${xT.length} values, need ${cols} × ${N}`);
  if (H.length < cols * cols) throw new RangeError(`hessianEntries: H holds ${H.length} values, need ${cols} × ${cols}`);
  if (rows) {
    for (let i = 0; i < rows.length; i++) {
      if (!(Number.isInteger(rows[i]) && rows[i] >= 0 && rows[i] < cols)) throw new RangeError(`hessianEntries: row ${rows[i]} outside [0, ${cols})`);
    }
  }
}

export function checkAttendCached(
  ctx: F32, q: F32, keys: F32, values: F32, seqs: ArrayLike<number>, pos: ArrayLike<number>,
  shape: { nHeads: number; nKvHeads: number; headDim: number; capacity: number },
): void {
  const { nHeads, nKvHeads, headDim, capacity } = shape;
  if (!([nHeads, nKvHeads, headDim, capacity].every((v) => isDim(v) && v > 0) && nHeads % nKvHeads === 0)) {
    throw new RangeError(`attendCached: bad cache shape ${JSON.stringify(shape)}`);
  }
  const n = seqs.length;
  if (pos.length !== n) throw new RangeError(`attendCached: ${n} sequences but ${pos.length} positions`);
  const qDim = nHeads * headDim;
  if (q.length < n * qDim || ctx.length < n * qDim) throw new RangeError(`attendCached: q and ctx need ${n} × ${qDim} values`);
  const perSeq = nKvHeads * capacity * headDim;
  for (let r = 0; r < n; r++) {
    if (!(isDim(pos[r]) && pos[r] < capacity)) throw new RangeError(`attendCached: position ${pos[r]} outside [0, ${capacity})`);
    if (!(isDim(seqs[r]) && (seqs[r] + 1) * perSeq <= Math.min(keys.length, values.length))) {
      throw new RangeError(`attendCached: sequence ${seqs[r]} is outside the caches`);
    }
  }
}

export function checkAttendRows(
  ctx: F32, q: F32, k: F32, v: F32, T: number, heads: ArrayLike<number> | null,
  shape: { nHeads: number; nKvHeads: number; headDim: number },
): void {
  const { nHeads, nKvHeads, headDim } = shape;
  if (!([nHeads, nKvHeads, headDim].every((d) => isDim(d) && d > 0) && nHeads % nKvHeads === 0 && isDim(T))) {
    throw new RangeError(`attendRows: bad shape ${JSON.stringify(shape)} or T=${T}`);
  }
  if (q.length < T * nHeads * headDim || ctx.length < T * nHeads * headDim) throw new RangeError(`attendRows: q and ctx need ${T} × ${nHeads * headDim} values`);
  if (k.length < T * nKvHeads * headDim || v.length < T * nKvHeads * headDim) throw new RangeError(`attendRows: k and v need ${T} × ${nKvHeads * headDim} values`);
  if (heads) {
    for (let i = 0; i < heads.length; i++) {
      if (!(Number.isInteger(heads[i]) && heads[i] >= 0 && heads[i] < nHeads)) throw new RangeError(`attendRows: head ${heads[i]} outside [0, ${nHeads})`);
    }
  }
}
