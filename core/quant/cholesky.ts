/**
 * Float64 Cholesky factor and inverse for GPTQ's Hessians (./gptq.ts gptqFactor), with the
 * bits of the textbook loops: every entry is the same float64 sum, over k ascending, as
 *
 *   L[i][j] = (A[i][j] − Σ_{k<j} L[i][k] L[j][k]) / L[j][j]
 *   L⁻¹[i][j] = −(Σ_{j≤k<i} L[i][k] L⁻¹[k][j]) / L[i][i]
 *   A⁻¹[i][j] = Σ_{k≥max(i,j)} L⁻¹[k][i] L⁻¹[k][j]
 *
 * only laid out for the cache: L⁻¹ is kept by columns (row j of `T` is column j of L⁻¹), so
 * every sum reads two contiguous rows, and four entries are summed side by side, each in its
 * own order, sharing the reads of one row. At 2048 columns the inverse went from 11.6 s
 * (column-strided reads of L⁻¹) to about 2 s.
 */

/** In-place lower Cholesky factor of A [n, n] (A = L Lᵀ; upper triangle zeroed). False if A is not positive definite. */
export function choleskyLower(A: Float64Array, n: number): boolean {
  for (let j = 0; j < n; j++) {
    const rj = j * n;
    let d = A[rj + j];
    for (let k = 0; k < j; k++) d -= A[rj + k] * A[rj + k];
    if (!(d > 0)) return false;
    const ljj = Math.sqrt(d);
    A[rj + j] = ljj;
    let i = j + 1;
    for (; i + 3 < n; i += 4) {
      const r0 = i * n;
      const r1 = r0 + n;
      const r2 = r1 + n;
      const r3 = r2 + n;
      let s0 = A[r0 + j];
      let s1 = A[r1 + j];
      let s2 = A[r2 + j];
      let s3 = A[r3 + j];
      for (let k = 0; k < j; k++) {
        const a = A[rj + k];
        s0 -= A[r0 + k] * a;
        s1 -= A[r1 + k] * a;
        s2 -= A[r2 + k] * a;
        s3 -= A[r3 + k] * a;
      }
      A[r0 + j] = s0 / ljj;
      A[r1 + j] = s1 / ljj;
      A[r2 + j] = s2 / ljj;
      A[r3 + j] = s3 / ljj;
    }
    for (; i < n; i++) {
      const ri = i * n;
      let s = A[ri + j];
      for (let k = 0; k < j; k++) s -= A[ri + k] * A[rj + k];
      A[ri + j] = s / ljj;
    }
    for (let r = 0; r < j; r++) A[r * n + j] = 0;
  }
  return true;
}

/** torch.cholesky_inverse: A⁻¹ = L⁻ᵀ L⁻¹ from the lower factor L [n, n] of A. */
export function choleskyInverse(L: Float64Array, n: number): Float64Array {
  const T = inverseColumns(L, n);
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ti = i * n;
    let j = i;
    // four entries (i, j…j+3) at a time; each sum starts at its own k = j (the first
    // terms of the later ones are added alone, in order, before the shared loop)
    for (; j + 3 < n; j += 4) {
      const t0 = j * n;
      const t1 = t0 + n;
      const t2 = t1 + n;
      const t3 = t2 + n;
      // (each sum starts from +0, as the plain loop's does: the sign of a zero sum is kept)
      let s0 = 0;
      s0 += T[ti + j] * T[t0 + j];
      s0 += T[ti + j + 1] * T[t0 + j + 1];
      s0 += T[ti + j + 2] * T[t0 + j + 2];
      let s1 = 0;
      s1 += T[ti + j + 1] * T[t1 + j + 1];
      s1 += T[ti + j + 2] * T[t1 + j + 2];
      let s2 = 0;
      s2 += T[ti + j + 2] * T[t2 + j + 2];
      let s3 = 0;
      for (let k = j + 3; k < n; k++) {
        const a = T[ti + k];
        s0 += a * T[t0 + k];
        s1 += a * T[t1 + k];
        s2 += a * T[t2 + k];
        s3 += a * T[t3 + k];
      }
      inv[ti + j] = s0;
      inv[ti + j + 1] = s1;
      inv[ti + j + 2] = s2;
      inv[ti + j + 3] = s3;
    }
    for (; j < n; j++) {
      const tj = j * n;
      let s = 0;
      for (let k = j; k < n; k++) s += T[ti + k] * T[tj + k];
      inv[ti + j] = s;
    }
    for (let c = i; c < n; c++) inv[c * n + i] = inv[ti + c];
  }
  return inv;
}

/** L⁻¹ by columns: T[j·n + i] = L⁻¹[i][j] (zero for i < j), by forward substitution. */
function inverseColumns(L: Float64Array, n: number): Float64Array {
  const T = new Float64Array(n * n);
  let j = 0;
  // four columns at a time share the reads of row i of L; entry (i, j_c) sums k = j_c … i−1
  for (; j + 3 < n; j += 4) {
    const t0 = j * n;
    const t1 = t0 + n;
    const t2 = t1 + n;
    const t3 = t2 + n;
    T[t0 + j] = 1 / L[j * n + j];
    T[t1 + j + 1] = 1 / L[(j + 1) * n + j + 1];
    T[t2 + j + 2] = 1 / L[(j + 2) * n + j + 2];
    T[t3 + j + 3] = 1 / L[(j + 3) * n + j + 3];
    // rows j+1 … j+3 of the first columns, before the shared loop
    for (let i = j + 1; i < j + 4; i++) {
      const ri = i * n;
      for (let c = 0; c < i - j; c++) {
        const tc = t0 + c * n;
        let s = 0;
        for (let k = j + c; k < i; k++) s -= L[ri + k] * T[tc + k];
        T[tc + i] = s / L[ri + i];
      }
    }
    for (let i = j + 4; i < n; i++) {
      const ri = i * n;
      let s0 = 0;
      s0 -= L[ri + j] * T[t0 + j];
      s0 -= L[ri + j + 1] * T[t0 + j + 1];
      s0 -= L[ri + j + 2] * T[t0 + j + 2];
      let s1 = 0;
      s1 -= L[ri + j + 1] * T[t1 + j + 1];
      s1 -= L[ri + j + 2] * T[t1 + j + 2];
      let s2 = 0;
      s2 -= L[ri + j + 2] * T[t2 + j + 2];
      let s3 = 0;
      for (let k = j + 3; k < i; k++) {
        const l = L[ri + k];
        s0 -= l * T[t0 + k];
        s1 -= l * T[t1 + k];
        s2 -= l * T[t2 + k];
        s3 -= l * T[t3 + k];
      }
      const d = L[ri + i];
      T[t0 + i] = s0 / d;
      T[t1 + i] = s1 / d;
      T[t2 + i] = s2 / d;
      T[t3 + i] = s3 / d;
    }
  }
  for (; j < n; j++) {
    const tj = j * n;
    T[tj + j] = 1 / L[j * n + j];
    for (let i = j + 1; i < n; i++) {
      const ri = i * n;
      let s = 0;
      for (let k = j; k < i; k++) s -= L[ri + k] * T[tj + k];
      T[tj + i] = s / L[ri + i];
    }
  }
  return T;
}
