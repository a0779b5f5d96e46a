/* Float rows times BF16 or float32 weights on AVX512 CPUs, many weights in one call: the one-row
   products of decode (linears, float routed experts).

   The dot products themselves are in rows.h (shared with decode_ops.c).

   PyTorch's one-row BF16 product on the plain layout reads 26 GB/s on the 2-core development
   machine (and rounds the activations to bf16); this reads at the memory's speed. */

#include <stdlib.h>

#include "rows.h"

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
    split_even_odd(x, K, xs + (size_t)r * K);
  }
  int64_t rows = (int64_t)J * N;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    int64_t j = i / N, n = i % N;
    const uint16_t* w = W + (experts[j] * N + n) * K;
    const float* xj = xs + (size_t)(x_stride ? j : 0) * T * K;
    /* one weight row (2K bytes) stays in L1 while every token of the job reads it */
    for (int t = 0; t < T; t++) Y[((size_t)j * T + t) * N + n] = dot_bf16_row(w, xj + (size_t)t * K, K);
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
    for (int t = 0; t < T; t++) Y[((size_t)j * T + t) * N + n] = dot_f32_row(w, X + j * x_stride + (int64_t)t * K, K);
  }
  return 0;
}
