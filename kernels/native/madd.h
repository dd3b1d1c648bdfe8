/* The multiply-add a·b + c, fused or not, as the wasm kernels' relaxed madd gives it (`fused`). */
#ifndef INVARX_MADD_H
#define INVARX_MADD_H
#include <math.h>
#ifdef __AVX512F__
#include <immintrin.h>

static inline __m512 madd16(__m512 a, __m512 b, __m512 c, int fused) {
  return fused ? _mm512_fmadd_ps(a, b, c) : _mm512_add_ps(_mm512_mul_ps(a, b), c);
}
#endif

static inline float madd1(float a, float b, float c, int fused) { return fused ? fmaf(a, b, c) : c + a * b; }

#endif
