/*
 * Decode attention over resident KV caches (the wasm backend's attendCached) with the wasm
 * kernels' arithmetic (kernels/wasm/threadJobs.ts's runAttend), so the same bits, reading
 * both caches laid out by position: keys and values [sequence, KV head, position, hd]. (The
 * wasm kernels read the values transposed; so laid out, each unit's values are one
 * contiguous span, which more than doubled their rate here.) One unit per (row, KV head),
 * taken by whichever thread is free; each writes only its own heads' context.
 * - Up to 3 query heads per KV head (`packed` 0): dot_t's order. Per output, four lane
 *   sums (lane l takes k ≡ l mod 4 below the last multiple of 4, one multiply-add chain
 *   each), summed as (l0 + l1) + (l2 + l3), then the remaining terms one at a time,
 *   multiplied and added unfused.
 * - More (`packed` 1): matmul_t's order. Per output, chunks of kcMax terms, each one chain
 *   from 0; the first chunk's sum written, the others added.
 * - Between the two, softmax_causal's: the max, exp4's polynomial lane by lane, the sum in
 *   float64 as its two f64x2 accumulators add it, and one float32 reciprocal.
 * Multiply-adds are fused where the wasm kernels fuse them (`fused`).
 */
#include "attend.h"
#include "args.h"
#include "madd.h"
#include "pool.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

typedef struct {
  float *ctx;
  const float *q, *keys, *values;
  const int *rows;
  size_t n, nKv, group, hd, cap, kcMax, maxS;
  int packed, fused;
  float scale;
  size_t *next; /* the next unit to take, shared by the threads */
} AttendJob;

static inline uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static inline float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* wasm's f32.max: NaN if either is, +0 over −0. */
static inline float wasm_max(float a, float b) {
  if (a != a) return a;
  if (b != b) return b;
  if (a == b) return bits_of(a) & 0x80000000u ? b : a;
  return a > b ? a : b;
}

/* kernels.wat's exp4 on one lane. */
static inline float exp_lane(float x) {
  int under = x < -87.3f;
  x = x < -87.3f ? -87.3f : x; /* pmax(x, −87.3) */
  x = 88.3f < x ? 88.3f : x;   /* pmin(x, 88.3) */
  float n = nearbyintf(x * 1.44269504088896341f);
  float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = (p * (r * r) + r) + 1.0f;
  p = p * float_of(bits_of(n + 8388735.0f) << 23);
  return under ? 0.0f : p;
}

/* row[j] ← exp((row[j] − max)·scale) for j < S, lane by lane as exp_lane. */
static void exp_row(float *row, size_t S, float m, float scale) {
  size_t j = 0;
#ifdef __AVX512F__
  const __m512 M = _mm512_set1_ps(m), SC = _mm512_set1_ps(scale);
  for (; j < S; j += 16) {
    __mmask16 live = S - j >= 16 ? 0xFFFF : (__mmask16)((1u << (S - j)) - 1u);
    __m512 x = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, row + j), M), SC);
    __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
    /* maxps(c, x) is c > x ? c : x and minps(c, x) c < x ? c : x: pmax and pmin, NaN included */
    x = _mm512_min_ps(_mm512_set1_ps(88.3f), _mm512_max_ps(_mm512_set1_ps(-87.3f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f))), _mm512_mul_ps(n, _mm512_set1_ps(-2.12194440e-4f)));
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r), _mm512_set1_ps(1.0f));
    __m512 two = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(_mm512_add_ps(n, _mm512_set1_ps(8388735.0f))), 23));
    p = _mm512_maskz_mov_ps((__mmask16)~under, _mm512_mul_ps(p, two));
    _mm512_mask_storeu_ps(row + j, live, p);
  }
#else
  for (; j < S; j++) row[j] = exp_lane((row[j] - m) * scale);
#endif
}

/* softmax_causal of one row whose S keys are all visible, in place. */
static void softmax_row(float *row, size_t S, float scale) {
  float m = -INFINITY;
  for (size_t j = 0; j < S; j++) m = wasm_max(m, row[j]); /* max is exact: any order */
  exp_row(row, S, m, scale);
  size_t S4 = S & ~(size_t)3;
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (size_t j = 0; j < S4; j += 4) {
    a0 += (double)row[j];
    a1 += (double)row[j + 1];
    a2 += (double)row[j + 2];
    a3 += (double)row[j + 3];
  }
  double sum = (a0 + a2) + (a1 + a3);
  for (size_t j = S4; j < S; j++) sum += (double)row[j];
  float inv = (float)(1.0 / sum);
  for (size_t j = 0; j < S; j++) row[j] = row[j] * inv;
}

/* dot_t's sum of x[k]·w[k] for k < K. */
static inline float dot_lanes(const float *x, const float *w, size_t K, int fused) {
  size_t K4 = K & ~(size_t)3, k = 0;
  float s;
#ifdef __AVX512F__
  __m128 a = _mm_setzero_ps();
  if (fused)
    for (; k < K4; k += 4) a = _mm_fmadd_ps(_mm_loadu_ps(x + k), _mm_loadu_ps(w + k), a);
  else
    for (; k < K4; k += 4) a = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(x + k), _mm_loadu_ps(w + k)), a);
  float l[4];
  _mm_storeu_ps(l, a);
  s = (l[0] + l[1]) + (l[2] + l[3]);
#else
  float l0 = 0, l1 = 0, l2 = 0, l3 = 0;
  for (; k < K4; k += 4) {
    l0 = madd1(x[k], w[k], l0, fused);
    l1 = madd1(x[k + 1], w[k + 1], l1, fused);
    l2 = madd1(x[k + 2], w[k + 2], l2, fused);
    l3 = madd1(x[k + 3], w[k + 3], l3, fused);
  }
  s = (l0 + l1) + (l2 + l3);
#endif
  for (; k < K; k++) s = s + x[k] * w[k];
  return s;
}

/* y[o] = dot_lanes(x, w + o·ldw, K) for o < N, four outputs at a time sharing x's loads. */
static void dot_rows(float *y, const float *x, const float *w, size_t ldw, size_t K, size_t N, int fused) {
  size_t o = 0;
#ifdef __AVX512F__
  size_t K4 = K & ~(size_t)3;
  for (; o + 4 <= N; o += 4) {
    const float *w0 = w + o * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
    __m128 a0 = _mm_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t k = 0;
    if (fused) {
      for (; k < K4; k += 4) {
        __m128 xv = _mm_loadu_ps(x + k);
        a0 = _mm_fmadd_ps(xv, _mm_loadu_ps(w0 + k), a0);
        a1 = _mm_fmadd_ps(xv, _mm_loadu_ps(w1 + k), a1);
        a2 = _mm_fmadd_ps(xv, _mm_loadu_ps(w2 + k), a2);
        a3 = _mm_fmadd_ps(xv, _mm_loadu_ps(w3 + k), a3);
      }
    } else {
      for (; k < K4; k += 4) {
        __m128 xv = _mm_loadu_ps(x + k);
        a0 = _mm_add_ps(_mm_mul_ps(xv, _mm_loadu_ps(w0 + k)), a0);
        a1 = _mm_add_ps(_mm_mul_ps(xv, _mm_loadu_ps(w1 + k)), a1);
        a2 = _mm_add_ps(_mm_mul_ps(xv, _mm_loadu_ps(w2 + k)), a2);
        a3 = _mm_add_ps(_mm_mul_ps(xv, _mm_loadu_ps(w3 + k)), a3);
      }
    }
    float l[16];
    _mm_storeu_ps(l, a0);
    _mm_storeu_ps(l + 4, a1);
    _mm_storeu_ps(l + 8, a2);
    _mm_storeu_ps(l + 12, a3);
    for (size_t i = 0; i < 4; i++) {
      const float *wi = w + (o + i) * ldw, *li = l + 4 * i;
      float s = (li[0] + li[1]) + (li[2] + li[3]);
      for (size_t t = K4; t < K; t++) s = s + x[t] * wi[t];
      y[o + i] = s;
    }
  }
#endif
  for (; o < N; o++) y[o] = dot_lanes(x, w + o * ldw, K, fused);
}

/* y[o] = matmul_t's sum of x[k]·w[o·ldw + k] for k < K (chunks of kcMax, each one chain). */
static void chunked_rows(float *y, const float *x, const float *w, size_t ldw, size_t K, size_t N, size_t kcMax, int fused) {
  for (size_t o = 0; o < N; o++) {
    const float *wo = w + o * ldw;
    float s = 0;
    for (size_t k0 = 0; k0 < K; k0 += kcMax) {
      size_t k1 = K - k0 < kcMax ? K : k0 + kcMax;
      float a = 0;
      for (size_t k = k0; k < k1; k++) a = madd1(x[k], wo[k], a, fused);
      s = k0 == 0 ? a : s + a;
    }
    y[o] = s;
  }
}

/*
 * y[i] = Σ_{k<S} att[k]·v[k·hd + i] for i < hd, from values laid out by position (as the
 * keys): in dot_t's order (`chunk` 0: four lane chains, (l0 + l1) + (l2 + l3), the rest
 * unfused) or matmul_t's (`chunk` = kcMax: chains of kcMax, the first written, the others
 * added), each output's own; sixteen outputs a vector, so each value row is read once.
 */
#ifdef __AVX512F__
/* Outputs [i0, i0 + 16·nb) (the last vector cut to `last` lanes). */
static inline void values_block(float *y, const float *att, const float *v, size_t hd, size_t S, size_t chunk, int fused,
                                size_t i0, const size_t nb, __mmask16 last) {
  __m512 A[4][4], s[4] = { _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps() };
  const float *vi = v + i0;
#define LOAD(k, b) _mm512_maskz_loadu_ps((b) == nb - 1 ? last : 0xFFFF, vi + (k) * hd + 16 * (b))
  if (chunk == 0) {
    size_t S4 = S & ~(size_t)3;
    for (size_t b = 0; b < nb; b++) A[b][0] = A[b][1] = A[b][2] = A[b][3] = _mm512_setzero_ps();
    for (size_t k = 0; k < S4; k += 4)
      for (size_t l = 0; l < 4; l++) {
        __m512 x = _mm512_set1_ps(att[k + l]);
        for (size_t b = 0; b < nb; b++) A[b][l] = madd16(x, LOAD(k + l, b), A[b][l], fused);
      }
    for (size_t b = 0; b < nb; b++) s[b] = _mm512_add_ps(_mm512_add_ps(A[b][0], A[b][1]), _mm512_add_ps(A[b][2], A[b][3]));
    for (size_t k = S4; k < S; k++)
      for (size_t b = 0; b < nb; b++) s[b] = _mm512_add_ps(s[b], _mm512_mul_ps(_mm512_set1_ps(att[k]), LOAD(k, b)));
  } else {
    for (size_t k0 = 0; k0 < S; k0 += chunk) {
      size_t k1 = S - k0 < chunk ? S : k0 + chunk;
      for (size_t b = 0; b < nb; b++) A[b][0] = _mm512_setzero_ps();
      for (size_t k = k0; k < k1; k++) {
        __m512 x = _mm512_set1_ps(att[k]);
        for (size_t b = 0; b < nb; b++) A[b][0] = madd16(x, LOAD(k, b), A[b][0], fused);
      }
      for (size_t b = 0; b < nb; b++) s[b] = k0 == 0 ? A[b][0] : _mm512_add_ps(s[b], A[b][0]);
    }
  }
#undef LOAD
  for (size_t b = 0; b < nb; b++) _mm512_mask_storeu_ps(y + i0 + 16 * b, b == nb - 1 ? last : 0xFFFF, s[b]);
}

static void values_rows(float *y, const float *att, const float *v, size_t hd, size_t S, size_t chunk, int fused) {
  size_t i0 = 0;
  for (; i0 + 64 <= hd; i0 += 64) values_block(y, att, v, hd, S, chunk, fused, i0, 4, 0xFFFF);
  for (; i0 < hd; i0 += 16) {
    __mmask16 last = hd - i0 >= 16 ? 0xFFFF : (__mmask16)((1u << (hd - i0)) - 1u);
    values_block(y, att, v, hd, S, chunk, fused, i0, 1, last);
  }
}
#else
static void values_rows(float *y, const float *att, const float *v, size_t hd, size_t S, size_t chunk, int fused) {
  for (size_t i = 0; i < hd; i++) {
    float s = 0;
    if (chunk == 0) {
      size_t S4 = S & ~(size_t)3;
      float l[4] = { 0, 0, 0, 0 };
      for (size_t k = 0; k < S4; k++) l[k & 3] = madd1(att[k], v[k * hd + i], l[k & 3], fused);
      s = (l[0] + l[1]) + (l[2] + l[3]);
      for (size_t k = S4; k < S; k++) s = s + att[k] * v[k * hd + i];
    } else {
      for (size_t k0 = 0; k0 < S; k0 += chunk) {
        size_t k1 = S - k0 < chunk ? S : k0 + chunk;
        float a = 0;
        for (size_t k = k0; k < k1; k++) a = madd1(att[k], v[k * hd + i], a, fused);
        s = k0 == 0 ? a : s + a;
      }
    }
    y[i] = s;
  }
}
#endif

static void attend_task(void *arg) {
  const AttendJob *J = arg;
  float *att = malloc(J->group * J->maxS * sizeof(float));
  if (!att) return; /* the other threads take its units; with none left, the caller throws */
  size_t qDim = J->group * J->nKv * J->hd, hd = J->hd, cap = J->cap;
  for (;;) {
    size_t u = __atomic_fetch_add(J->next, 1, __ATOMIC_RELAXED);
    if (u >= J->n * J->nKv) break;
    size_t r = u / J->nKv, g = u % J->nKv;
    size_t p = (size_t)J->rows[2 * r + 1], S = p + 1;
    size_t base = ((size_t)J->rows[2 * r] * J->nKv + g) * cap * hd;
    const float *keys = J->keys + base, *values = J->values + base;
    const float *q = J->q + r * qDim + g * J->group * hd;
    float *ctx = J->ctx + r * qDim + g * J->group * hd;
    for (size_t j = 0; j < J->group; j++) {
      float *row = att + j * S;
      if (J->packed) chunked_rows(row, q + j * hd, keys, hd, hd, S, J->kcMax, J->fused);
      else dot_rows(row, q + j * hd, keys, hd, hd, S, J->fused);
      softmax_row(row, S, J->scale);
      values_rows(ctx + j * hd, row, values, hd, S, J->packed ? J->kcMax : 0, J->fused);
    }
  }
  free(att);
}

/* attendCached(ctx, q, keys, values, rows, n, nKvHeads, group, headDim, capacity, kcMax, packed, scale, fused, threads) */
napi_value attend_js(napi_env env, napi_callback_info info) {
  size_t argc = 15;
  napi_value a[15];
  float *ctx, *q, *keys, *values;
  int *rows;
  size_t cl, ql, kl, vl, rl, n, nKv, group, hd, cap, kcMax, threads;
  bool packed, fused;
  double scale;
  Pool *pool;
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  CHECK(napi_get_instance_data(env, (void **)&pool));
  if (argc < 15 || !f32_arg(env, a[0], &ctx, &cl) || !f32_arg(env, a[1], &q, &ql) || !f32_arg(env, a[2], &keys, &kl) ||
      !f32_arg(env, a[3], &values, &vl) || !i32_arg(env, a[4], &rows, &rl) || !size_arg(env, a[5], &n) || !size_arg(env, a[6], &nKv) ||
      !size_arg(env, a[7], &group) || !size_arg(env, a[8], &hd) || !size_arg(env, a[9], &cap) || !size_arg(env, a[10], &kcMax) ||
      napi_get_value_bool(env, a[11], &packed) != napi_ok || napi_get_value_double(env, a[12], &scale) != napi_ok ||
      napi_get_value_bool(env, a[13], &fused) != napi_ok || !size_arg(env, a[14], &threads) ||
      nKv == 0 || group == 0 || hd == 0 || cap == 0 || kcMax == 0 || rl < 2 * n || cl < n * nKv * group * hd || ql < n * nKv * group * hd) {
    napi_throw_type_error(env, NULL, "attendCached(ctx, q, keys, values, rows, n, nKvHeads, group, headDim, capacity, kcMax, packed, scale, fused, threads): bad arguments or short arrays");
    return NULL;
  }
  size_t maxS = 1;
  for (size_t r = 0; r < n; r++) {
    int s = rows[2 * r], p = rows[2 * r + 1];
    size_t end = ((size_t)s + 1) * nKv * cap * hd;
    if (s < 0 || p < 0 || (size_t)p >= cap || end > kl || end > vl) {
      napi_throw_range_error(env, NULL, "attendCached: a row's sequence or position lies outside the caches");
      return NULL;
    }
    if ((size_t)p + 1 > maxS) maxS = (size_t)p + 1;
  }
  size_t next = 0;
  size_t T = pool_threads(threads, n * nKv);
  if (T == 0) return NULL;
  AttendJob jobs[MAX_THREADS];
  for (size_t t = 0; t < T; t++)
    jobs[t] = (AttendJob){ ctx, q, keys, values, rows, n, nKv, group, hd, cap, kcMax, maxS, packed, fused, (float)scale, &next };
  pool_run(pool, attend_task, jobs, sizeof(AttendJob), T);
  if (next < n * nKv) {
    napi_throw_error(env, NULL, "invarx native: out of memory for attention scratch");
    return NULL;
  }
  return NULL;
}
