/* INT4 x float products on AVX512-VNNI CPUs, reading the checkpoint's own packing.

   Weights: uint8 [N, K/2], two values per byte (low nibble = even column), stored as u = q + 8 for
   q in [-8, 7]; scales: bf16 [N, K/32], one per 32-column group. This is K2.6's weight_packed read
   as bytes: no kernel layout.

   Activations are quantized per 32-column group to int8, x ~ s * a with s = max|x| / 127 (as
   llama.cpp's Q8_0 and IPEX's INT8 low-precision mode do for INT4 weights): the error is of the
   order of bf16 activations' (see test_model_int4_vnni.py). vpdpbusd multiplies the unsigned bytes
   u by the signed a; the +8 is taken off by starting each dot from -8 * sum(a) per 8 columns,
   computed once per row of x.

   Per 128 columns a weight row's 64 bytes give, after masking, the even columns (low nibbles) and
   the odd ones (high nibbles); the activation is stored even/odd-split to match, so int32 lane l of
   the dot holds columns 8l..8l+7 of the chunk, which all lie in group l / 4. */

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#include "vmath.h"

#define CHUNK 128    /* columns per step: 64 weight bytes */
#define GROUP 32
/* Bytes ahead in the weight stream, into L1. On 2 MB pages (hugepages.py) 8 KB ahead reads a
   cold [2048x7168] weight at the speed of a plain read: 1.2-1.35x faster than 4 KB ahead plus an
   L2 hint 16 KB ahead, which round 5 chose on 4 KB pages, where both distances do as well. */
#define PREFETCH 8192

/* One activation row, quantized, per chunk: even and odd columns, 16 lane corrections (the dots'
   starting values), 16 lane scales. */
typedef struct {
  int8_t even[64], odd[64];
  int32_t start[16];
  float scale[16];
} chunk_t;

static void quantize_row(const float* x, int K, chunk_t* out) {
  const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
  const __m512i ones = _mm512_set1_epi8(1);
  for (int c = 0; c < K / CHUNK; c++) {
    chunk_t* o = out + c;
    for (int g = 0; g < CHUNK / GROUP; g++) {
      const float* xg = x + c * CHUNK + g * GROUP;
      __m512 x0 = _mm512_loadu_ps(xg), x1 = _mm512_loadu_ps(xg + 16);
      float m = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
      __m512 inv = _mm512_set1_ps(m > 0.f ? 127.f / m : 0.f);
      __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, inv)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, inv));
      /* the group's 16 even and 16 odd columns are the chunk's even / odd bytes 16g..16g+15 */
      _mm_storeu_si128((__m128i*)(o->even + g * 16), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(q0, evens, q1)));
      _mm_storeu_si128((__m128i*)(o->odd + g * 16), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(q0, odds, q1)));
      _mm_storeu_ps(o->scale + g * 4, _mm_set1_ps(m / 127.f));
    }
    /* lane l's 8 columns are even and odd bytes 4l..4l+3: sum each 4 with a dot against ones */
    __m512i sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, _mm512_loadu_si512(o->even));
    sum = _mm512_dpbusd_epi32(sum, ones, _mm512_loadu_si512(o->odd));
    _mm512_storeu_si512(o->start, _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, 3)));
  }
}

/* sum_k W[row, k] * x[k] for one weight row against one quantized activation row. */
static inline float row_dot(const uint8_t* w, const uint16_t* s, const chunk_t* x, int chunks) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  /* 16-bit word sources: the high word of 32-bit lane l takes bf16 scale l / 4 of the chunk, and the
     low words are zeroed by the mask, which widens bf16 to float (its top half) in the same op */
  const __m512i spread = _mm512_set_epi16(3, 0, 3, 0, 3, 0, 3, 0, 2, 0, 2, 0, 2, 0, 2, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0,
                                          0, 0, 0, 0, 0, 0);
  __m512 acc = _mm512_setzero_ps();
  for (int c = 0; c < chunks; c++) {
    _mm_prefetch((const char*)(w + c * 64 + PREFETCH), _MM_HINT_T0);
    __m512i b = _mm512_loadu_si512(w + c * 64);
    __m512i even = _mm512_and_si512(b, low);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi16(b, 4), low);
    const chunk_t* xc = x + c;
    __m512i d = _mm512_dpbusd_epi32(_mm512_loadu_si512(xc->start), even, _mm512_loadu_si512(xc->even));
    d = _mm512_dpbusd_epi32(d, odd, _mm512_loadu_si512(xc->odd));
    __m512i s4 = _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i*)(s + c * 4)));
    __m512 ws = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, spread, s4));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(ws, _mm512_loadu_ps(xc->scale)), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

/* row n of expert e's [N, K] weight in a bank (W uint8 [E, N, K/2], S bf16 [E, N, K/32]) against x. */
static inline float bank_row_dot(const uint8_t* W, const uint16_t* S, int64_t e, int64_t n, int N, int K,
                                 const chunk_t* x) {
  int64_t row = e * N + n;
  return row_dot(W + row * (K / 2), S + row * (K / GROUP), x, K / CHUNK);
}

/* Y[j] = X[j] @ W[experts[j]].T for J jobs: X[j] is T rows of K floats at X + j * x_stride (x_stride 0:
   one X shared by all jobs, quantized once), W[e] uint8 [N, K/2] at W + e * N * K/2 with scales at
   S + e * N * K/32, Y[j] float [T, N] at Y + j * T * N. K must be a multiple of 128.
   Returns 0, or -1 if the scratch could not be allocated. */
int kimidoc_int4_matmul(const float* X, int64_t x_stride, int T, int K, const uint8_t* W, const uint16_t* S,
                        const int64_t* experts, int J, int N, float* Y, int threads) {
  int chunks = K / CHUNK, rows_x = (x_stride ? J : 1) * T;
  chunk_t* xq = aligned_alloc(64, sizeof(chunk_t) * (size_t)chunks * rows_x);
  if (!xq) return -1;
  for (int r = 0; r < rows_x; r++) quantize_row(X + (r / T) * x_stride + (int64_t)(r % T) * K, K, xq + (size_t)r * chunks);
  int64_t rows = (int64_t)J * N;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    int64_t j = i / N, n = i % N;
    const chunk_t* xj = xq + (size_t)(x_stride ? j : 0) * T * chunks;
    /* one weight row (K/2 bytes) stays in L1 while every token of the job reads it */
    for (int t = 0; t < T; t++) Y[((size_t)j * T + t) * N + n] = bank_row_dot(W, S, experts[j], n, N, K, xj + (size_t)t * chunks);
  }
  free(xq);
  return 0;
}

/* One token through k routed SwiGLU experts, as kimidoc_int4_matmul's two calls and the SwiGLU between
   them compute it, in one call:
     h_j = W_gu[e_j] x                    [2W]   gate and up, fused as the bank stores them
     a_j = silu(h_j[:W]) * h_j[W:]        [W]
     Y_j = W_d[e_j] a_j, rounded to bf16  [H]    the bank's compute dtype
   W_gu uint8 [E, 2W, H/2] with scales S_gu bf16 [E, 2W, H/32]; W_d [E, H, W/2] with S_d [E, H, W/32];
   H and W multiples of 128; Y bf16 [k, H]. Each expert's result depends on nothing else in the call.
   Returns 0, or -1 if the scratch could not be allocated. */
int kimidoc_int4_swiglu(const float* x, int H, int W, const uint8_t* Wgu, const uint16_t* Sgu, const uint8_t* Wd,
                        const uint16_t* Sd, const int64_t* experts, int k, uint16_t* Y, int threads) {
  int ch = H / CHUNK, cw = W / CHUNK;
  chunk_t* q = aligned_alloc(64, sizeof(chunk_t) * ((size_t)ch + (size_t)k * cw));
  float* h = malloc(sizeof(float) * (size_t)k * 3 * W); /* h, then a */
  if (!q || !h) {
    free(q);
    free(h);
    return -1;
  }
  chunk_t *xq = q, *aq = q + ch;
  float* a = h + (size_t)k * 2 * W;
  quantize_row(x, H, xq);
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < (int64_t)k * 2 * W; i++) {
      h[i] = bank_row_dot(Wgu, Sgu, experts[i / (2 * W)], i % (2 * W), 2 * W, H, xq);
    }
#pragma omp for schedule(static)
    for (int j = 0; j < k; j++) {
      float* aj = a + (size_t)j * W;
      swiglu_row(h + (size_t)j * 2 * W, W, aj);
      quantize_row(aj, W, aq + (size_t)j * cw);
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < (int64_t)k * H; i++) {
      int64_t j = i / H;
      Y[i] = to_bf16(bank_row_dot(Wd, Sd, experts[j], i % H, H, W, aq + j * cw));
    }
  }
  free(q);
  free(h);
  return 0;
}
