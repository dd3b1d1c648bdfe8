/*
 * Native product (the wasm backend's products past a few rows, kernels/native/native.ts):
 * y[n, N] (+)= x[n, K] · w[N, K]ᵀ with the arithmetic of
 * the wasm kernel's matmul_t (kernels.wat), so the same bits: per output, K is cut into the
 * same chunks of kcMax columns; within a chunk one multiply-add chain from 0 in k order
 * (fused when the wasm kernel fuses), the chunk's sum written (the first chunk, without
 * beta) or added to y. Outputs are independent, so the vector width and the split over
 * threads change no bit. Built for the machine it runs on (-march=native); 16 columns a
 * vector with AVX-512, one at a time otherwise (correct, not faster than wasm: the backend
 * leaves such a build unused; an AVX2 tile measured no faster than wasm either).
 */
#include "args.h"
#include "attend.h"
#include "madd.h"
#include "pool.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define PANEL 16

static size_t panels_of(size_t N) { return (N + PANEL - 1) / PANEL; }

/* Packed layout: per K-chunk (k0, kc), at k0·Np (Np = panels·16), panel p at + p·kc·16,
 * holding w[p·16 + j, k0 + k] at + k·16 + j; columns past N are zero. Panels [p0, p1). */
static void pack(const float *w, size_t N, size_t K, size_t kcMax, float *wp, size_t p0, size_t p1) {
  size_t Np = panels_of(N) * PANEL;
  for (size_t k0 = 0; k0 < K; k0 += kcMax) {
    size_t kc = K - k0 < kcMax ? K - k0 : kcMax;
    float *chunk = wp + k0 * Np;
    for (size_t p = p0; p < p1; p++) {
      float *panel = chunk + p * kc * PANEL;
      for (size_t j = 0; j < PANEL; j++) {
        size_t col = p * PANEL + j;
        if (col < N) {
          const float *src = w + col * K + k0;
          for (size_t k = 0; k < kc; k++) panel[k * PANEL + j] = src[k];
        } else {
          for (size_t k = 0; k < kc; k++) panel[k * PANEL + j] = 0.0f;
        }
      }
    }
  }
}

/* One thread's share of a call: panels [p0, p1) of the product, or of packing w into y when `w` is set. */
typedef struct {
  float *y;
  const float *x, *wp;
  size_t n, K, N, kcMax, p0, p1;
  int beta, fused;
  const float *w;
} Job;

#ifdef __AVX512F__
/* Rows [i, i+rows) (rows ≤ 4) of panel p in one chunk. */
static void tile(const Job *J, const float *panel, size_t k0, size_t kc, size_t i, size_t rows, size_t p, int b) {
  __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
  const float *x0 = J->x + i * J->K + k0;
  const float *x1 = rows > 1 ? x0 + J->K : x0, *x2 = rows > 2 ? x0 + 2 * J->K : x0, *x3 = rows > 3 ? x0 + 3 * J->K : x0;
  for (size_t k = 0; k < kc; k++) {
    __m512 w = _mm512_loadu_ps(panel + k * PANEL);
    c0 = madd16(_mm512_set1_ps(x0[k]), w, c0, J->fused);
    c1 = madd16(_mm512_set1_ps(x1[k]), w, c1, J->fused);
    c2 = madd16(_mm512_set1_ps(x2[k]), w, c2, J->fused);
    c3 = madd16(_mm512_set1_ps(x3[k]), w, c3, J->fused);
  }
  size_t col = p * PANEL, cols = J->N - col < PANEL ? J->N - col : PANEL;
  __mmask16 m = (__mmask16)((1u << cols) - 1u);
  __m512 acc[4] = {c0, c1, c2, c3};
  for (size_t r = 0; r < rows; r++) {
    float *yr = J->y + (i + r) * J->N + col;
    __m512 v = acc[r];
    if (b) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, yr));
    _mm512_mask_storeu_ps(yr, m, v);
  }
}
#else
static void tile(const Job *J, const float *panel, size_t k0, size_t kc, size_t i, size_t rows, size_t p, int b) {
  size_t col = p * PANEL, cols = J->N - col < PANEL ? J->N - col : PANEL;
  for (size_t r = 0; r < rows; r++) {
    const float *xr = J->x + (i + r) * J->K + k0;
    float *yr = J->y + (i + r) * J->N + col;
    for (size_t j = 0; j < cols; j++) {
      float acc = 0.0f;
      for (size_t k = 0; k < kc; k++) {
        float w = panel[k * PANEL + j];
        acc = madd1(xr[k], w, acc, J->fused);
      }
      yr[j] = b ? acc + yr[j] : acc;
    }
  }
}
#endif

/* Cache tiling as matmul_t's: per K-chunk, blocks of panels of about 256 KiB (kept in L2)
 * while 4 rows of x at a time (in L1) pass over every panel of the block. */
static void run(void *arg) {
  const Job *J = arg;
  if (J->w) {
    pack(J->w, J->N, J->K, J->kcMax, J->y, J->p0, J->p1);
    return;
  }
  size_t Np = panels_of(J->N) * PANEL;
  for (size_t k0 = 0; k0 < J->K; k0 += J->kcMax) {
    size_t kc = J->K - k0 < J->kcMax ? J->K - k0 : J->kcMax;
    int b = J->beta || k0 > 0;
    const float *chunk = J->wp + k0 * Np;
    size_t per_block = (256 * 1024) / (kc * PANEL * sizeof(float));
    if (per_block == 0) per_block = 1;
    for (size_t q0 = J->p0; q0 < J->p1; q0 += per_block) {
      size_t q1 = q0 + per_block < J->p1 ? q0 + per_block : J->p1;
      for (size_t i = 0; i < J->n; i += 4) {
        size_t rows = J->n - i < 4 ? J->n - i : 4;
        for (size_t p = q0; p < q1; p++) tile(J, chunk + p * kc * PANEL, k0, kc, i, rows, p, b);
      }
    }
  }
}

/* ---- N-API glue ---- */

/* packedLength(N, K): floats of the packed weight. */
static napi_value packed_length(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value a[2], out;
  size_t N, K;
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 2 || !size_arg(env, a[0], &N) || !size_arg(env, a[1], &K)) {
    napi_throw_type_error(env, NULL, "packedLength(N, K)");
    return NULL;
  }
  CHECK(napi_create_double(env, (double)(panels_of(N) * PANEL * K), &out));
  return out;
}

/* `job`'s panels split over at most `threads` threads (at least one panel each), and run. */
static void pool_split(Pool *pool, Job job, size_t threads) {
  size_t P = panels_of(job.N);
  size_t T = pool_threads(threads, P);
  if (T == 0) return; /* no columns */
  Job jobs[MAX_THREADS];
  for (size_t t = 0; t < T; t++) {
    jobs[t] = job;
    jobs[t].p0 = P * t / T;
    jobs[t].p1 = P * (t + 1) / T;
  }
  pool_run(pool, run, jobs, sizeof(Job), T);
}

/* pack(w, N, K, kcMax, out, threads) */
static napi_value pack_js(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value a[6];
  float *w, *out;
  size_t wl, ol, N, K, kcMax, threads;
  Pool *pool;
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  CHECK(napi_get_instance_data(env, (void **)&pool));
  if (argc < 6 || !f32_arg(env, a[0], &w, &wl) || !size_arg(env, a[1], &N) || !size_arg(env, a[2], &K) ||
      !size_arg(env, a[3], &kcMax) || kcMax == 0 || !f32_arg(env, a[4], &out, &ol) || !size_arg(env, a[5], &threads) ||
      wl < N * K || ol < panels_of(N) * PANEL * K) {
    napi_throw_type_error(env, NULL, "pack(w: Float32Array, N, K, kcMax > 0, out: Float32Array of packedLength(N, K), threads)");
    return NULL;
  }
  pool_split(pool, (Job){ .y = out, .K = K, .N = N, .kcMax = kcMax, .w = w }, threads);
  return NULL;
}

/* matmulT(y, x, wp, n, K, N, kcMax, beta, fused, threads) */
static napi_value matmul_js(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value a[10];
  float *y, *x, *wp;
  size_t yl, xl, wl, n, K, N, kcMax, threads;
  bool beta, fused;
  Pool *pool;
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  CHECK(napi_get_instance_data(env, (void **)&pool));
  if (argc < 10 || !f32_arg(env, a[0], &y, &yl) || !f32_arg(env, a[1], &x, &xl) || !f32_arg(env, a[2], &wp, &wl) ||
      !size_arg(env, a[3], &n) || !size_arg(env, a[4], &K) || !size_arg(env, a[5], &N) || !size_arg(env, a[6], &kcMax) || kcMax == 0 ||
      napi_get_value_bool(env, a[7], &beta) != napi_ok || napi_get_value_bool(env, a[8], &fused) != napi_ok ||
      !size_arg(env, a[9], &threads) || yl < n * N || xl < n * K || wl < panels_of(N) * PANEL * K) {
    napi_throw_type_error(env, NULL, "matmulT(y, x, wp, n, K, N, kcMax > 0, beta, fused, threads): bad arguments or short arrays");
    return NULL;
  }
  if (K == 0) { /* an empty sum: y = 0, or y as it is */
    if (!beta) memset(y, 0, n * N * sizeof(float));
    return NULL;
  }
  pool_split(pool, (Job){ .y = y, .x = x, .wp = wp, .n = n, .K = K, .N = N, .kcMax = kcMax, .beta = beta, .fused = fused }, threads);
  return NULL;
}

static void free_pool(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  pool_free(data);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value f, v;
  Pool *pool = pool_new();
  if (!pool) {
    napi_throw_error(env, NULL, "invarx native: out of memory");
    return NULL;
  }
  CHECK(napi_set_instance_data(env, pool, free_pool, NULL));
  CHECK(napi_create_function(env, "packedLength", NAPI_AUTO_LENGTH, packed_length, NULL, &f));
  CHECK(napi_set_named_property(env, exports, "packedLength", f));
  CHECK(napi_create_function(env, "pack", NAPI_AUTO_LENGTH, pack_js, NULL, &f));
  CHECK(napi_set_named_property(env, exports, "pack", f));
  CHECK(napi_create_function(env, "matmulT", NAPI_AUTO_LENGTH, matmul_js, NULL, &f));
  CHECK(napi_set_named_property(env, exports, "matmulT", f));
  CHECK(napi_create_function(env, "attendCached", NAPI_AUTO_LENGTH, attend_js, NULL, &f));
  CHECK(napi_set_named_property(env, exports, "attendCached", f));
#ifdef __AVX512F__
  CHECK(napi_get_boolean(env, true, &v));
#else
  CHECK(napi_get_boolean(env, false, &v));
#endif
  CHECK(napi_set_named_property(env, exports, "vectorized", v));
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
