/* INT4 x float products on AVX512-VNNI CPUs, reading the checkpoint's own packing.

   Weights: uint8 [N, K/2], two values per byte (low nibble = even column), stored as u = q + 8 for
   q in [-8, 7]; scales: bf16 [N, K/32], one per 32-column group. This is K2.6's weight_packed read
   as bytes: no kernel layout.

   Activations are quantized per 32-column group to int8, x ~ s * a with s = max|x| / 127 (as
   llama.cpp's Q8_0 and IPEX's INT8 low-precision mode do for INT4 weights): the error is of the
   order of bf16 activations' (see test_model_int4_vnni.py). vpdpbusd multiplies the unsigned bytes
   u by the signed a; the +8 is taken off with 8 * sum(a) per 8 columns, computed once per row of x.

   Per 128 columns a weight row's 64 bytes give, after masking, the even columns (low nibbles) and
   the odd ones (high nibbles); the activation is stored even/odd-split to match, so int32 lane l of
   the dot holds columns 8l..8l+7 of the chunk, which all lie in group l / 4. */

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#define CHUNK 128    /* columns per step: 64 weight bytes */
#define GROUP 32
/* Bytes ahead in the weight stream: into L1 (1.2-1.4x at one row over no prefetch), and further
   ahead into L2, which keeps more lines in flight per core (another 1.05-1.15x at one row). */
#define PREFETCH 4096
#define PREFETCH_L2 16384

/* One activation row, quantized, per chunk: even and odd columns, 16 corrections, 16 lane scales. */
typedef struct {
  int8_t even[64], odd[64];
  int32_t corr[16];
  float scale[16];
} chunk_t;

static void quantize_row(const float* x, int K, chunk_t* out) {
  int8_t a[CHUNK];
  for (int c = 0; c < K / CHUNK; c++) {
    chunk_t* o = out + c;
    for (int g = 0; g < CHUNK / GROUP; g++) {
      const float* xg = x + c * CHUNK + g * GROUP;
      __m512 x0 = _mm512_loadu_ps(xg), x1 = _mm512_loadu_ps(xg + 16);
      float m = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
      __m512 inv = _mm512_set1_ps(m > 0.f ? 127.f / m : 0.f);
      _mm_storeu_si128((__m128i*)(a + g * GROUP), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(x0, inv))));
      _mm_storeu_si128((__m128i*)(a + g * GROUP + 16), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(x1, inv))));
      for (int l = 0; l < 4; l++) o->scale[g * 4 + l] = m / 127.f;
    }
    for (int j = 0; j < 64; j++) {
      o->even[j] = a[2 * j];
      o->odd[j] = a[2 * j + 1];
    }
    for (int l = 0; l < 16; l++) {
      int32_t sum = 0;
      for (int j = 0; j < 8; j++) sum += a[l * 8 + j];
      o->corr[l] = 8 * sum;
    }
  }
}

/* sum_k W[row, k] * x[k] for one weight row against one quantized activation row. */
static inline float row_dot(const uint8_t* w, const uint16_t* s, const chunk_t* x, int chunks) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  __m512 acc = _mm512_setzero_ps();
  for (int c = 0; c < chunks; c++) {
    _mm_prefetch((const char*)(w + c * 64 + PREFETCH), _MM_HINT_T0);
    _mm_prefetch((const char*)(w + c * 64 + PREFETCH_L2), _MM_HINT_T1);
    __m512i b = _mm512_loadu_si512(w + c * 64);
    __m512i even = _mm512_and_si512(b, low);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi16(b, 4), low);
    const chunk_t* xc = x + c;
    __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), even, _mm512_loadu_si512(xc->even));
    d = _mm512_sub_epi32(_mm512_dpbusd_epi32(d, odd, _mm512_loadu_si512(xc->odd)), _mm512_loadu_si512(xc->corr));
    /* 4 bf16 group scales -> float (bf16 is the top half of a float), each spread over 4 lanes */
    __m128i s4 = _mm_slli_epi32(_mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i*)(s + c * 4))), 16);
    __m512 ws = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_castsi128_ps(s4)));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(ws, _mm512_loadu_ps(xc->scale)), acc);
  }
  return _mm512_reduce_add_ps(acc);
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
    int64_t j = i / N, n = i % N, e = experts[j];
    const uint8_t* w = W + (e * N + n) * (K / 2);
    const uint16_t* s = S + (e * N + n) * (K / GROUP);
    const chunk_t* xj = xq + (size_t)(x_stride ? j : 0) * T * chunks;
    /* one weight row (K/2 bytes) stays in L1 while every token of the job reads it */
    for (int t = 0; t < T; t++) Y[((size_t)j * T + t) * N + n] = row_dot(w, s, xj + (size_t)t * chunks, chunks);
  }
  free(xq);
  return 0;
}
