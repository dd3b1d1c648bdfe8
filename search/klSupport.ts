/**
 * The tokens the final-norm tuning takes its KL over. A small vocabulary is taken whole; in
 * a large one (32,000 and up) each row keeps the FP model's `K` most likely next tokens,
 * where nearly all of its probability lies, and both distributions are renormalised on
 * them: a try then costs K exponentials a row, not the vocabulary's size.
 */

/** Per row, the tokens its KL is taken over. */
export interface KlSupport {
  /** Tokens a row keeps (all rows keep as many). */
  K: number;
  /** Every token some row keeps, ascending ([U]). */
  tokens: Int32Array;
  /** Per row, its K tokens as positions in `tokens`, ascending ([N, K]). */
  pos: Int32Array;
}

/** The k-th largest (k from 0) of a[0 … n), reordering a (quickselect on the median of three). */
function kthLargest(a: Float32Array, n: number, k: number): number {
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const [x, y, z] = [a[lo], a[mid], a[hi]];
    const pivot = x > y ? (y > z ? y : x > z ? z : x) : x > z ? x : y > z ? z : y;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] > pivot) i++;
      while (a[j] < pivot) j--;
      if (i <= j) {
        const s = a[i];
        a[i++] = a[j];
        a[j--] = s;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k];
  }
  return a[k];
}

/**
 * Indices of the K largest of row[off … off + V), ascending (of equal values, the lower
 * indices). `scratch` holds at least V floats. The row must hold no NaN.
 */
export function topIndices(row: ArrayLike<number>, off: number, V: number, K: number, scratch: Float32Array, out: Int32Array): void {
  for (let i = 0; i < V; i++) scratch[i] = row[off + i];
  const thr = kthLargest(scratch, V, K - 1);
  let above = 0;
  for (let i = 0; i < V; i++) if (row[off + i] > thr) above++;
  let ties = K - above;
  let n = 0;
  for (let i = 0; i < V && n < K; i++) {
    const v = row[off + i];
    if (v > thr || (v === thr && ties-- > 0)) out[n++] = i;
  }
}

/**
 * Each row's K most likely tokens under the logits `forRows(r0, r1)` gives for rows
 * [r0, r1) ([r1 − r0, V] each, asked for in order), or the whole vocabulary when K ≥ V;
 * with those logits at the kept tokens ([N, K], in each row's order), so the caller need
 * not compute them again.
 */
export function topSupport(
  N: number, V: number, K: number, chunks: [number, number][], forRows: (r0: number, r1: number) => ArrayLike<number>,
): { support: KlSupport; logits: Float32Array } {
  const k = Math.min(K, V);
  const idx = new Int32Array(N * k);
  const logits = new Float32Array(N * k);
  const scratch = new Float32Array(V);
  for (const [r0, r1] of chunks) {
    const z = forRows(r0, r1);
    for (let t = r0; t < r1; t++) {
      const kept = idx.subarray(t * k, (t + 1) * k);
      const o = (t - r0) * V;
      if (k === V) for (let i = 0; i < V; i++) kept[i] = i;
      else topIndices(z, o, V, k, scratch, kept);
      for (let j = 0; j < k; j++) logits[t * k + j] = z[o + kept[j]];
    }
  }
  const used = new Uint8Array(V);
  for (const i of idx) used[i] = 1;
  const at = new Int32Array(V).fill(-1);
  const tokens: number[] = [];
  for (let i = 0; i < V; i++) if (used[i]) at[i] = tokens.push(i) - 1;
  return { support: { K: k, tokens: Int32Array.from(tokens), pos: idx.map((i) => at[i]) }, logits };
}
