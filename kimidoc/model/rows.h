/* The one-row dot products of decode, shared by rows.c (the linears and float experts) and
   decode_ops.c (the fused MLA projections), so that both give a row the same bits.

   A bf16 value is the top half of a float32, so widening is exact and costs one integer op: in a
   32-bit lane of the weight row, the even column is the low half (shift it up 16 bits) and the odd
   column the high half (mask the low 16 bits off). The activation row is split into its even and
   odd columns once (split_even_odd) to match, and the products are accumulated in float32: the
   result is the float32 product with the BF16 weights, without rounding the activations to bf16. */

#ifndef KIMIDOC_ROWS_H
#define KIMIDOC_ROWS_H

#include <immintrin.h>
#include <stdint.h>

/* Bytes ahead in the weight stream, into L1. On 2 MB pages 8 KB ahead reads as fast as a plain read
   (5-7% more than 4 KB ahead for bf16 rows when the memory reads 80 GB/s; see int4_vnni.c). */
#define ROW_PREFETCH 8192

/* xs = x's K/2 even columns, then its K/2 odd ones. */
static inline void split_even_odd(const float* x, int K, float* xs) {
  for (int i = 0; i < K / 2; i++) {
    xs[i] = x[2 * i];
    xs[K / 2 + i] = x[2 * i + 1];
  }
}

/* sum_k w[k] * x[k] for a bf16 row w of K columns (a multiple of 32); xs as split_even_odd made it. */
static inline float dot_bf16_row(const uint16_t* w, const float* xs, int K) {
  const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
  const float *xe = xs, *xo = xs + K / 2;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int k = 0; k < K; k += 32) {
    _mm_prefetch((const char*)(w + k) + ROW_PREFETCH, _MM_HINT_T0);
    __m512i b = _mm512_loadu_si512(w + k);
    __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(b, 16));
    __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(b, high));
    acc0 = _mm512_fmadd_ps(even, _mm512_loadu_ps(xe + k / 2), acc0);
    acc1 = _mm512_fmadd_ps(odd, _mm512_loadu_ps(xo + k / 2), acc1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* sum_k w[k] * x[k] for float32 rows of K columns (a multiple of 16). */
static inline float dot_f32_row(const float* w, const float* x, int K) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int k = 0;
  for (; k + 32 <= K; k += 32) {
    _mm_prefetch((const char*)(w + k) + ROW_PREFETCH, _MM_HINT_T0);
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(x + k + 16), acc1);
  }
  if (k < K) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(x + k), acc0);
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

#endif
