/* Float rows times BF16 or float32 weights on AVX512 CPUs, many weights in one call: the one-row
   products of decode (linears, float routed experts).

   A bf16 value is the top half of a float32, so widening is exact and costs one integer op: in a
   32-bit lane of the weight row, the even column is the low half (shift it up 16 bits) and the odd
   column the high half (mask the low 16 bits off). The activation row is split into its even and
   odd columns once per call to match, and the products are accumulated in float32: the result is
   the float32 product with the BF16 weights, without rounding the activations to bf16.

   PyTorch's one-row BF16 product on the plain layout reads 26 GB/s on the 2-core development
   machine (and rounds the activations to bf16); this reads at the memory's speed. */

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#define STEP 32       /* columns per step: 64 weight bytes */
#define PREFETCH 4096 /* bytes ahead in the weight stream, as in int4_vnni.c */

/* sum_k W[row, k] * x[k]; xe / xo are x's even and odd columns (K/2 each). */
static inline float row_dot(const uint16_t* w, const float* xe, const float* xo, int K) {
  const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int k = 0; k < K; k += STEP) {
    _mm_prefetch((const char*)(w + k) + PREFETCH, _MM_HINT_T0);
    __m512i b = _mm512_loadu_si512(w + k);
    __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(b, 16));
    __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(b, high));
    acc0 = _mm512_fmadd_ps(even, _mm512_loadu_ps(xe + k / 2), acc0);
    acc1 = _mm512_fmadd_ps(odd, _mm512_loadu_ps(xo + k / 2), acc1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* Y[j] = X[j] @ W[experts[j]].T for J jobs: X[j] is T rows of K floats at X + j * x_stride (x_stride 0:
   one X shared by all jobs), W[e] bf16 [N, K] at W + e * N * K, Y[j] float [T, N] at Y + j * T * N.
   K must be a multiple of 32. Returns 0, or -1 if the scratch could not be allocated. */
int kimidoc_bf16_matmul(const float* X, int64_t x_stride, int T, int K, const uint16_t* W, const int64_t* experts,
                        int J, int N, float* Y, int threads) {
  int rows_x = (x_stride ? J : 1) * T;
  float* xs = aligned_alloc(64, sizeof(float) * (size_t)K * rows_x); /* per row: K/2 even, then K/2 odd */
  if (!xs) return -1;
  for (int r = 0; r < rows_x; r++) {
    const float* x = X + (r / T) * x_stride + (int64_t)(r % T) * K;
    float* o = xs + (size_t)r * K;
    for (int i = 0; i < K / 2; i++) {
      o[i] = x[2 * i];
      o[K / 2 + i] = x[2 * i + 1];
    }
  }
  int64_t rows = (int64_t)J * N;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    int64_t j = i / N, n = i % N;
    const uint16_t* w = W + (experts[j] * N + n) * K;
    const float* xj = xs + (size_t)(x_stride ? j : 0) * T * K;
    /* one weight row (2K bytes) stays in L1 while every token of the job reads it */
    for (int t = 0; t < T; t++) {
      const float* x = xj + (size_t)t * K;
      Y[((size_t)j * T + t) * N + n] = row_dot(w, x, x + K / 2, K);
    }
  }
  free(xs);
  return 0;
}

/* kimidoc_bf16_matmul for float32 weights W[e] [N, K]: K a multiple of 16 (the caller asks 32). One
   call reads its weights faster than oneDNN's one-row product, whose per-call cost dominates small
   shapes (benchmarks/bench_linear.py). */
int kimidoc_f32_matmul(const float* X, int64_t x_stride, int T, int K, const float* W, const int64_t* experts, int J,
                       int N, float* Y, int threads) {
  int64_t rows = (int64_t)J * N;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    int64_t j = i / N, n = i % N;
    const float* w = W + (experts[j] * N + n) * K;
    for (int t = 0; t < T; t++) {
      const float* x = X + j * x_stride + (int64_t)t * K;
      __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
      int k = 0;
      for (; k + 32 <= K; k += 32) {
        _mm_prefetch((const char*)(w + k) + PREFETCH, _MM_HINT_T0);
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(x + k + 16), acc1);
      }
      if (k < K) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), acc0);
      Y[((size_t)j * T + t) * N + n] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    }
  }
  return 0;
}
