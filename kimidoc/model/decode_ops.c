/* Fused one-token ops of a decode step on AVX512 CPUs: RMSNorm, the rotary embedding, the router's
   expert choice, the absorbed attention of one query over the latent cache (with kv_b_proj's
   products), the attention's projections of one token into its query and its cached latent, the
   SwiGLU MLP of one row (the dense layer, the shared experts), and a decoder layer's two halves made
   of them (at the end of the file).

   A decode step runs each of these once per layer on one row. In PyTorch they are 6 to 12 ops each,
   and after the step's weight stream has flushed the caches every op costs 10-40 us of dispatch
   (a whole norm, ~25 us; the attention, ~200 us at 1K cached tokens against ~40 us of arithmetic).
   Here each is one call, with float32 arithmetic throughout. */

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rows.h"
#include "vmath.h"

#define KEYS 16    /* keys per block: one vector of scores per head */
#define COLS 256   /* accumulator columns held in registers at once: 16 vectors */

static inline __m512 widen_bf16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}

/* y = x * rsqrt(mean(x^2) + eps) * w for one row of K floats (K a multiple of 16); w float32 or, with
   w_bf16, bf16 (widened exactly). As transformers' DeepseekV3RMSNorm on float32 rows. */
static void rms_row(const float* x, int K, const void* W, int w_bf16, float eps, float* y) {
  __m512 ss = _mm512_setzero_ps();
  for (int k = 0; k < K; k += 16) {
    __m512 v = _mm512_loadu_ps(x + k);
    ss = _mm512_fmadd_ps(v, v, ss);
  }
  __m512 inv = _mm512_set1_ps(1.f / sqrtf(_mm512_reduce_add_ps(ss) / K + eps));
  for (int k = 0; k < K; k += 16) {
    __m512 w = w_bf16 ? widen_bf16((const uint16_t*)W + k) : _mm512_loadu_ps((const float*)W + k);
    _mm512_storeu_ps(y + k, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + k), inv), w));
  }
}

/* rms_row for R rows of K floats. */
int kimidoc_rms_norm(const float* X, int R, int K, const void* W, int w_bf16, float eps, float* Y) {
  for (int r = 0; r < R; r++) rms_row(X + (int64_t)r * K, K, W, w_bf16, eps, Y + (int64_t)r * K);
  return 0;
}

/* y = x [P] rotated by one position's cos / sin [P/2], in DeepSeek's interleaved layout:
   y = [x_even cos - x_odd sin, x_odd cos + x_even sin]. Built without FMA contraction, so each
   product is rounded as in PyTorch's ops: the same bits. */
static void rope_row(const float* x, int P, const float* cos, const float* sin, float* y) {
  int half = P / 2;
  for (int i = 0; i < half; i++) {
    float even = x[2 * i], odd = x[2 * i + 1];
    y[i] = even * cos[i] - odd * sin[i];
    y[half + i] = odd * cos[i] + even * sin[i];
  }
}

/* rope_row for R rows of P values, row r at X + r * x_stride, Y contiguous [R, P]. */
int kimidoc_rope(const float* X, int R, int64_t x_stride, int P, const float* cos, const float* sin, float* Y) {
  for (int r = 0; r < R; r++) rope_row(X + r * x_stride, P, cos, sin, Y + (int64_t)r * P);
  return 0;
}

/* a before b in torch.topk's order: NaN above every number. */
static inline int above(float a, float b) { return a != a ? b == b : a > b; }

/* One token's expert choice: logits = W x (the router's float32 [E, H] weight, H a multiple of 16, as
   the row kernels' products), scores = sigmoid(logits); the k experts with the largest scores + bias
   (DeepSeek-V3's correction bias only chooses), the lower index first among equals; their weights the
   scores themselves, divided by their sum (+1e-20) when norm, times factor. idx int64 [k], weight [k]. */
int kimidoc_route(const float* x, int H, const float* W, const float* bias, int E, int k, int norm, float factor,
                  int64_t* idx, float* weight, int threads) {
  float* scores = malloc(sizeof(float) * 2 * (size_t)E);
  unsigned char* taken = calloc((size_t)E, 1);
  if (!scores || !taken) {
    free(scores);
    free(taken);
    return -1;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int e = 0; e < E; e++) scores[e] = dot_f32_row(W + (int64_t)e * H, x, H); /* the logits, first */
  float* choice = scores + E;
  for (int e = 0; e < E; e++) {
    scores[e] = 1.f / (1.f + expf(-scores[e]));
    choice[e] = scores[e] + bias[e];
  }
  float total = 0.f;
  for (int i = 0; i < k; i++) {
    int best = -1;
    for (int e = 0; e < E; e++)
      if (!taken[e] && (best < 0 || above(choice[e], choice[best]))) best = e;
    taken[best] = 1;
    idx[i] = best;
    weight[i] = scores[best];
    total += scores[best];
  }
  for (int i = 0; i < k; i++) weight[i] = (norm ? weight[i] / (total + 1e-20f) : weight[i]) * factor;
  free(scores);
  free(taken);
  return 0;
}

/* s[i * KEYS + b] = the sum of v[i][b]'s lanes for 4 x 4 vectors: a transposing tree of adds (15 adds and
   30 shuffles in all, against 16 reductions of 8 ops each). */
static inline void store_sums4x4(__m512 v[4][4], float* s) {
  __m512 t[8], u[4], w[2];
  for (int k = 0; k < 8; k++) { /* per 128-bit lane: [a0 + a2, c0 + c2, a1 + a3, c1 + c3] for a, c = v_2k, v_2k+1 */
    __m512 a = v[k / 2][2 * (k % 2)], c = v[k / 2][2 * (k % 2) + 1];
    t[k] = _mm512_add_ps(_mm512_unpacklo_ps(a, c), _mm512_unpackhi_ps(a, c));
  }
  for (int k = 0; k < 4; k++) /* per 128-bit lane: that lane's sums of v_4k .. v_4k+3 */
    u[k] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * k], t[2 * k + 1], 0x44), _mm512_shuffle_ps(t[2 * k], t[2 * k + 1], 0xEE));
  for (int k = 0; k < 2; k++)
    w[k] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], 0x88),
                         _mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], 0xDD));
  __m512 sums = _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x88), _mm512_shuffle_f32x4(w[0], w[1], 0xDD));
  _mm_storeu_ps(s, _mm512_extractf32x4_ps(sums, 0)); /* 128-bit lane i: v[i][0..3] */
  _mm_storeu_ps(s + KEYS, _mm512_extractf32x4_ps(sums, 1));
  _mm_storeu_ps(s + 2 * KEYS, _mm512_extractf32x4_ps(sums, 2));
  _mm_storeu_ps(s + 3 * KEYS, _mm512_extractf32x4_ps(sums, 3));
}

/* s[i * KEYS + b] = q[i] . k[b] for i < HEADS query rows and 4 key rows, all D values apart: 4 HEADS
   accumulators, so that each load serves several products and enough of them are in flight. The
   float32 tiles (T float, STEP 16 values a vector, FMA) and the bf16 ones (T uint16_t, STEP 32, vdpbf16ps:
   two products a lane) differ only in their loads and product: LOAD(mask, pointer), MUL_ADD(acc, q, k). */
#define DOT_TILE(NAME, ATTR, T, VEC, STEP, MASK, LOAD, MUL_ADD, HEADS)                                      \
  ATTR static inline void NAME(const T* q, const T* k, int D, float* s) {                                 \
    __m512 acc[HEADS][4];                                                                                 \
    for (int i = 0; i < (HEADS); i++)                                                                     \
      for (int b = 0; b < 4; b++) acc[i][b] = _mm512_setzero_ps();                                        \
    for (int d = 0; d < D; d += (STEP)) {                                                                 \
      MASK m = D - d >= (STEP) ? (MASK)~0u : (MASK)((1u << (D - d)) - 1);                                 \
      VEC kv[4];                                                                                          \
      for (int b = 0; b < 4; b++) kv[b] = LOAD(m, k + (int64_t)b * D + d);                                \
      for (int i = 0; i < (HEADS); i++) {                                                                 \
        VEC qv = LOAD(m, q + (int64_t)i * D + d);                                                         \
        for (int b = 0; b < 4; b++) acc[i][b] = MUL_ADD(acc[i][b], qv, kv[b]);                            \
      }                                                                                                   \
    }                                                                                                     \
    if ((HEADS) == 4)                                                                                     \
      store_sums4x4((__m512(*)[4])acc, s);                                                                \
    else                                                                                                  \
      for (int i = 0; i < (HEADS); i++)                                                                   \
        for (int b = 0; b < 4; b++) s[i * KEYS + b] = _mm512_reduce_add_ps(acc[i][b]);                    \
  }

static inline __m512 fma_acc(__m512 acc, __m512 a, __m512 b) { return _mm512_fmadd_ps(a, b, acc); }
DOT_TILE(dot4x4, , float, __m512, 16, __mmask16, _mm512_maskz_loadu_ps, fma_acc, 4)
DOT_TILE(dot1x4, , float, __m512, 16, __mmask16, _mm512_maskz_loadu_ps, fma_acc, 1)

/* Float32 values, 16 at W + off: bf16 widened exactly, or float32 as they are. */
static inline __m512 load_w(const void* W, int w_bf16, int64_t off) {
  return w_bf16 ? widen_bf16((const uint16_t*)W + off) : _mm512_loadu_ps((const float*)W + off);
}

/* y[0:16 VECS] = y * alpha + sum_i a[i] * W[i][0:16 VECS] over n rows `stride` values apart from W + off:
   the accumulators stay in registers while the rows stream, when VECS is a constant. */
#define WEIGHTED_ROWS(VECS)                                                                          \
  do {                                                                                               \
    __m512 acc[VECS], al = _mm512_set1_ps(alpha);                                                    \
    for (int v = 0; v < (VECS); v++) acc[v] = _mm512_mul_ps(_mm512_loadu_ps(y + 16 * v), al);        \
    for (int i = 0; i < n; i++) {                                                                    \
      __m512 ai = _mm512_set1_ps(a[i]);                                                              \
      for (int v = 0; v < (VECS); v++)                                                               \
        acc[v] = _mm512_fmadd_ps(ai, load_w(W, w_bf16, off + (int64_t)i * stride + 16 * v), acc[v]); \
    }                                                                                                \
    for (int v = 0; v < (VECS); v++) _mm512_storeu_ps(y + 16 * v, acc[v]);                           \
  } while (0)

/* y[0:width] = y * alpha + sum_i a[i] * W[i][0:width] for n rows (width a multiple of 16): COLS-wide
   slices with a fixed trip count (16 registers), a narrower rest 16 columns at a time. The attention's
   running accumulator (alpha rescales it) and kv_b_proj's q_nope @ W_uk (y zeroed, alpha 1). */
static inline void weighted_rows(float* y, int width, float alpha, const float* a, int n, const void* W, int w_bf16,
                                 int64_t off, int64_t stride) {
  for (; width >= COLS; width -= COLS, y += COLS, off += COLS) WEIGHTED_ROWS(COLS / 16);
  for (; width > 0; width -= 16, y += 16, off += 16) WEIGHTED_ROWS(1);
}

/* The online softmax of one head over a block's scores sh[0:16] (lanes outside `valid` ignored): the
   running max *m and sum *l move on, sh becomes the block's weights e^(s - m) (0 outside `valid`), rounded
   to bf16 values with `round` (the sum is then of the weights the products use, so that the normalised
   weights still sum to 1), and the factor the head's accumulator is to be rescaled by is returned. */
static inline float online_softmax(float* sh, __mmask16 valid, float* m, float* l, int round) {
  __m512 sv = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), valid, sh);
  float m_new = fmaxf(*m, _mm512_reduce_max_ps(sv));
  float alpha = expf(*m - m_new); /* 0 for the first block: *m is -inf */
  __m512 p = _mm512_maskz_mov_ps(valid, exp_ps(_mm512_sub_ps(sv, _mm512_set1_ps(m_new))));
  if (round) p = round_bf16_ps(p);
  *l = *l * alpha + _mm512_reduce_add_ps(p);
  *m = m_new;
  _mm512_storeu_ps(sh, p);
  return alpha;
}

/* y[i][c:c + 16 VECS] = y[i] * alpha[i] + sum_j weight_ij * key_j for 4 heads i at once (y their 4
   accumulator rows, R apart), over N keys: each key load serves the 4 heads, the accumulators stay in
   registers. KEY(j, v) loads key j's v-th vector of 16 columns, WEIGHT(i, j) broadcasts head i's weight
   of it, MUL_ADD(acc, weight, key) adds the product: float32 keys (weighted_rows4) or bf16 key pairs
   with bf16 weight pairs, two keys a product (weighted_pairs4). */
#define WEIGHTED4(VECS, VEC, N, KEY, WEIGHT, MUL_ADD)                                                          \
  do {                                                                                                         \
    __m512 acc[4][VECS];                                                                                       \
    for (int i = 0; i < 4; i++)                                                                                \
      for (int v = 0; v < (VECS); v++)                                                                         \
        acc[i][v] = _mm512_mul_ps(_mm512_loadu_ps(y + (int64_t)i * R + c + 16 * v), _mm512_set1_ps(alpha[i])); \
    for (int j = 0; j < (N); j++) {                                                                            \
      VEC kv[VECS];                                                                                            \
      for (int v = 0; v < (VECS); v++) kv[v] = KEY(j, v);                                                      \
      for (int i = 0; i < 4; i++) {                                                                            \
        VEC pv = WEIGHT(i, j);                                                                                 \
        for (int v = 0; v < (VECS); v++) acc[i][v] = MUL_ADD(acc[i][v], pv, kv[v]);                            \
      }                                                                                                        \
    }                                                                                                          \
    for (int i = 0; i < 4; i++)                                                                                \
      for (int v = 0; v < (VECS); v++) _mm512_storeu_ps(y + (int64_t)i * R + c + 16 * v, acc[i][v]);          \
  } while (0)

/* weighted_rows for 4 heads at once over a block's float32 keys kb [cnt, D], p their weights [4, KEYS]:
   each value summed in weighted_rows' order, so the same bits. */
#define ROW_KEY(j, v) _mm512_loadu_ps(kb + (int64_t)(j) * D + c + 16 * (v))
#define ROW_WEIGHT(i, j) _mm512_set1_ps(p[(i) * KEYS + (j)])
static inline void weighted_rows4(float* y, int R, const float* alpha, const float* p, int cnt, const float* kb,
                                  int D) {
  int c = 0;
  for (; c + 64 <= R; c += 64) WEIGHTED4(4, __m512, cnt, ROW_KEY, ROW_WEIGHT, fma_acc);
  for (; c < R; c += 16) WEIGHTED4(1, __m512, cnt, ROW_KEY, ROW_WEIGHT, fma_acc);
}

/* The heads' loop over one block of cnt keys, shared by block_f32 and block_bf16: each 4 heads' scores (the
   DOT4 tile, or DOT1 per head for the last heads), their online softmax (the weights rounded to bf16 with
   ROUND) and their weighted sum of the keys (SUM4 for 4 heads at h0, else SUM1 for each head h0 + i). */
#define EACH_FOUR_HEADS(Q, KB, DOT4, DOT1, ROUND, SUM4, SUM1)                                                      \
  for (int h0 = 0; h0 < H; h0 += 4) {                                                                              \
    int heads = H - h0 < 4 ? H - h0 : 4;                                                                           \
    float s[4 * KEYS], alpha[4];                                                                                   \
    for (int b = 0; b < cnt; b += 4) {                                                                             \
      if (heads == 4)                                                                                              \
        DOT4((Q) + (int64_t)h0 * D, (KB) + (int64_t)b * D, D, s + b);                                              \
      else                                                                                                         \
        for (int i = 0; i < heads; i++) DOT1((Q) + (int64_t)(h0 + i) * D, (KB) + (int64_t)b * D, D, s + i * KEYS + b); \
    }                                                                                                              \
    for (int i = 0; i < heads; i++) alpha[i] = online_softmax(s + i * KEYS, valid, m + h0 + i, l + h0 + i, ROUND); \
    if (heads == 4)                                                                                                \
      SUM4;                                                                                                        \
    else                                                                                                           \
      for (int i = 0; i < heads; i++) SUM1;                                                                        \
  }

/* One block of cnt <= KEYS float32 keys kb [cnt, D] (4-row groups whole: zero rows after the last key)
   into every head's running softmax (m, l [H]) and accumulator acc [H, R], q the scaled queries [H, D]. */
static void block_f32(const float* q, const float* kb, int cnt, int H, int R, int D, float* m, float* l, float* acc) {
  __mmask16 valid = (__mmask16)((1u << cnt) - 1);
  EACH_FOUR_HEADS(q, kb, dot4x4, dot1x4, 0, weighted_rows4(acc + (int64_t)h0 * R, R, alpha, s, cnt, kb, D),
                  weighted_rows(acc + (int64_t)(h0 + i) * R, R, alpha[i], s + i * KEYS, cnt, kb, 0, 0, D));
}

#define BF16 __attribute__((target("avx512bf16,avx512bw")))

BF16 static inline __m512bh load_bf16(__mmask32 m, const uint16_t* p) { return (__m512bh)_mm512_maskz_loadu_epi16(m, p); }
DOT_TILE(dot_bf16_4x4, BF16, uint16_t, __m512bh, 32, __mmask32, load_bf16, _mm512_dpbf16_ps, 4)
DOT_TILE(dot_bf16_1x4, BF16, uint16_t, __m512bh, 32, __mmask32, load_bf16, _mm512_dpbf16_ps, 1)

/* The bf16 pair of the weights p[0], p[1] (float32 values that are bf16): one 32-bit lane, p[0] low. */
static inline uint32_t bf16_pair(const float* p) {
  uint32_t even, odd;
  memcpy(&even, p, 4);
  memcpy(&odd, p + 1, 4);
  return (even >> 16) | (odd & 0xFFFF0000u);
}

/* weighted_rows for weights p that are bf16 values, over keys paired as block_bf16 pairs them (lane c of
   pairs[t]: key 2t's column c, then key 2t+1's): one vdpbf16ps adds both keys' products. */
#define WEIGHTED_PAIRS(VECS)                                                                                 \
  do {                                                                                                       \
    __m512 acc[VECS], al = _mm512_set1_ps(alpha);                                                            \
    for (int v = 0; v < (VECS); v++) acc[v] = _mm512_mul_ps(_mm512_loadu_ps(y + 16 * v), al);                \
    for (int t = 0; t < n; t++) {                                                                            \
      __m512bh pv = (__m512bh)_mm512_set1_epi32((int)bf16_pair(p + 2 * t));                                  \
      const uint32_t* row = pairs + (int64_t)t * R + off;                                                    \
      for (int v = 0; v < (VECS); v++)                                                                       \
        acc[v] = _mm512_dpbf16_ps(acc[v], pv, (__m512bh)_mm512_loadu_si512(row + 16 * v));                  \
    }                                                                                                        \
    for (int v = 0; v < (VECS); v++) _mm512_storeu_ps(y + 16 * v, acc[v]);                                  \
  } while (0)

BF16 static inline void weighted_pairs(float* y, int R, float alpha, const float* p, int n, const uint32_t* pairs) {
  int width = R, off = 0;
  for (; width >= COLS; width -= COLS, y += COLS, off += COLS) WEIGHTED_PAIRS(COLS / 16);
  for (; width > 0; width -= 16, y += 16, off += 16) WEIGHTED_PAIRS(1);
}

/* weighted_pairs for 4 heads at once (WEIGHTED4): n key pairs, pw[i][t] head i's weights of keys 2t, 2t + 1. */
#define PAIR_KEY(t, v) (__m512bh) _mm512_loadu_si512(pairs + (int64_t)(t) * R + c + 16 * (v))
#define PAIR_WEIGHT(i, t) (__m512bh) _mm512_set1_epi32((int)pw[i][t])
BF16 static inline void weighted_pairs4(float* y, int R, const float* alpha, const float* p, int n,
                                        const uint32_t* pairs) {
  uint32_t pw[4][KEYS / 2]; /* each head's weights of keys 2t and 2t + 1 as one bf16 pair */
  for (int i = 0; i < 4; i++)
    for (int t = 0; t < n; t++) pw[i][t] = bf16_pair(p + i * KEYS + 2 * t);
  int c = 0;
  for (; c + 64 <= R; c += 64) WEIGHTED4(4, __m512bh, n, PAIR_KEY, PAIR_WEIGHT, _mm512_dpbf16_ps);
  for (; c < R; c += 16) WEIGHTED4(1, __m512bh, n, PAIR_KEY, PAIR_WEIGHT, _mm512_dpbf16_ps);
}

/* block_f32 for bf16 keys kb [cnt, D] and the queries rounded to bf16, qb [H, D], with vdpbf16ps: twice
   the products an instruction, and no widened copy of the keys. The softmax weights are rounded to bf16
   for their products with the keys (as GPU MLA decode kernels do); every sum stays float32. `pairs` holds
   KEYS / 2 * R words, `tail` KEYS * D halves (a partial block's keys, then zero rows). */
BF16 static void block_bf16(const uint16_t* qb, const uint16_t* kb, int cnt, int H, int R, int D, float* m, float* l,
                            float* acc, uint32_t* pairs, uint16_t* tail) {
  if (cnt % 4) { /* the scores read keys 4 at a time, the pairing 2 */
    memcpy(tail, kb, sizeof(uint16_t) * (size_t)cnt * D);
    memset(tail + (size_t)cnt * D, 0, sizeof(uint16_t) * (size_t)(-cnt & 3) * D);
    kb = tail;
  }
  int n = (cnt + 1) / 2;
  /* word 2i from the first key's column i, word 2i + 1 from the second's (columns 0-15; +16: 16-31) */
  const __m512i low = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6,
                                       37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i high = _mm512_add_epi16(low, _mm512_set1_epi16(16));
  for (int t = 0; t < n; t++) {
    const uint16_t *a = kb + (int64_t)2 * t * D, *b = a + D;
    for (int c = 0; c < R; c += 32) {
      __mmask32 mk = R - c >= 32 ? 0xFFFFFFFFu : 0xFFFFu; /* R is a multiple of 16 */
      __m512i ka = _mm512_maskz_loadu_epi16(mk, a + c), kn = _mm512_maskz_loadu_epi16(mk, b + c);
      _mm512_storeu_si512(pairs + (int64_t)t * R + c, _mm512_permutex2var_epi16(ka, low, kn));
      if (R - c > 16) _mm512_storeu_si512(pairs + (int64_t)t * R + c + 16, _mm512_permutex2var_epi16(ka, high, kn));
    }
  }
  __mmask16 valid = (__mmask16)((1u << cnt) - 1);
  EACH_FOUR_HEADS(qb, kb, dot_bf16_4x4, dot_bf16_1x4, 1, weighted_pairs4(acc + (int64_t)h0 * R, R, alpha, s, n, pairs),
                  weighted_pairs(acc + (int64_t)(h0 + i) * R, R, alpha[i], s + i * KEYS, n, pairs));
}

/* One query's absorbed attention, all heads, over the first `length` rows of `keys`:
     q[h]   = [q_lat[h], q_pe[h]] * scale                          (D = R + P values)
     out[h] = sum_j softmax_j(q[h] . keys[j]) * keys[j][0:R]        for j < length
   q_lat float32 [H, R], q_pe float32 [H, P], keys [>= length, D] float32 (keys_bf16 0) or bf16 (1: float32
   products; 2: bf16 products, for a CPU with AVX512-BF16), out float32 [H, R]; R a multiple of 16. The keys are split into 16-key blocks, a contiguous
   run of blocks per thread, each thread with its own running max, sum and accumulator per head
   (online softmax), merged at the end: every key is read from memory once. bf16 products (block_bf16:
   the queries and the softmax weights rounded to bf16, as a bf16 model has them) run 1.5x faster at
   K2.6's widths, and at long contexts decode's attention is bound by its products, not by memory.
   Returns 0, or -1 if the scratch could not be allocated. */
int kimidoc_attend_one(const float* q_lat, const float* q_pe, float scale, const void* keys, int keys_bf16,
                       int length, int H, int R, int P, float* out, int threads) {
  int D = R + P, blocks = (length + KEYS - 1) / KEYS;
  int parts = threads < blocks ? threads : blocks;
  if (parts < 1) parts = 1;
  int bf16_products = keys_bf16 == 2;
  /* per part: max [H], sum [H], accumulators [H * R], a key block's scratch [KEYS * D]; then q [H * D]
     and its bf16 copy */
  size_t per_part = (size_t)2 * H + (size_t)H * R + (size_t)KEYS * D;
  size_t floats = per_part * parts + (size_t)H * D + ((size_t)H * D + 1) / 2;
  float* scratch = aligned_alloc(64, ((floats * sizeof(float) + 63) / 64) * 64);
  if (!scratch) return -1;
  float* q = scratch + per_part * parts;
  uint16_t* qb = (uint16_t*)(q + (size_t)H * D);
  for (int h = 0; h < H; h++) {
    for (int i = 0; i < R; i++) q[(int64_t)h * D + i] = q_lat[(int64_t)h * R + i] * scale;
    for (int i = 0; i < P; i++) q[(int64_t)h * D + R + i] = q_pe[(int64_t)h * P + i] * scale;
  }
  if (bf16_products)
    for (int64_t i = 0; i < (int64_t)H * D; i++) qb[i] = to_bf16(q[i]);
#pragma omp parallel num_threads(parts)
  {
    /* each thread takes parts t, t + team, ...: all of them are done even if the team is smaller */
    for (int part = omp_get_thread_num(); part < parts; part += omp_get_num_threads()) {
      float* m = scratch + per_part * part;
      float* l = m + H;
      float* acc = l + H;
      float* wide = acc + (size_t)H * R;
      for (int h = 0; h < H; h++) m[h] = -INFINITY, l[h] = 0.f;
      memset(acc, 0, sizeof(float) * (size_t)H * R);
      int first = (int)((int64_t)blocks * part / parts), last = (int)((int64_t)blocks * (part + 1) / parts);
      for (int blk = first; blk < last; blk++) {
        int j0 = blk * KEYS, cnt = length - j0 < KEYS ? length - j0 : KEYS;
        if (blk + 1 < last) { /* the next block into L1 while this one computes: 1.4x at 1K cached tokens */
          int size = keys_bf16 ? 2 : 4, next_cnt = length - j0 - KEYS < KEYS ? length - j0 - KEYS : KEYS;
          const char* next = (const char*)keys + (int64_t)(j0 + KEYS) * D * size;
          for (int i = 0; i < next_cnt * D * size; i += 64) _mm_prefetch(next + i, _MM_HINT_T0);
        }
        if (bf16_products) {
          uint32_t* pairs = (uint32_t*)wide;
          block_bf16(qb, (const uint16_t*)keys + (int64_t)j0 * D, cnt, H, R, D, m, l, acc, pairs,
                     (uint16_t*)(pairs + (size_t)KEYS / 2 * R));
          continue;
        }
        const float* kb = (const float*)keys + (int64_t)j0 * D;
        if (keys_bf16 || cnt % 4) { /* widened, or zero rows after a partial block's last key: dot4 reads 4 */
          int n = cnt * D, i = 0;
          if (keys_bf16) {
            const uint16_t* src = (const uint16_t*)keys + (int64_t)j0 * D;
            for (; i + 16 <= n; i += 16) _mm512_storeu_ps(wide + i, widen_bf16(src + i));
            for (; i < n; i++) ((uint32_t*)wide)[i] = (uint32_t)src[i] << 16;
          } else {
            memcpy(wide, kb, sizeof(float) * n);
          }
          memset(wide + n, 0, sizeof(float) * (size_t)((-cnt & 3) * D));
          kb = wide;
        }
        block_f32(q, kb, cnt, H, R, D, m, l, acc);
      }
    }
#pragma omp barrier
#pragma omp for schedule(static)
    for (int h = 0; h < H; h++) {
      float top = -INFINITY, total = 0.f;
      for (int t = 0; t < parts; t++) top = fmaxf(top, scratch[per_part * t + h]);
      float* o = out + (int64_t)h * R;
      memset(o, 0, sizeof(float) * R);
      for (int t = 0; t < parts; t++) {
        const float* mt = scratch + per_part * t;
        float w = expf(mt[h] - top);
        total += mt[H + h] * w;
        const float* at = mt + 2 * H + (int64_t)h * R;
        for (int i = 0; i < R; i++) o[i] += w * at[i];
      }
      for (int i = 0; i < R; i++) o[i] /= total;
    }
  }
  free(scratch);
  return 0;
}

/* One token's absorbed attention with kv_b_proj's two products, all heads, for N = qk_nope_head_dim =
   v_head_dim: kv_b_proj [2 H N, R] holds per head its N k_nope rows (W_uk[h]), then its N v rows (W_uv[h]).
     q_lat[h] = q_nope[h] @ W_uk[h]                     (R values)
     o_lat[h] = the attention of kimidoc_attend_one     (R values)
     out[h]   = W_uv[h] @ o_lat[h]                      (N values)
   q_nope float32 [H, N], q_pe float32 [H, P], kv_b float32 or (w_bf16) bf16, keys as for kimidoc_attend_one,
   out float32 [H, N]; R a multiple of 16. kv_b_proj is read as stored, once; no float copy of it is made.
   Returns 0, or -1 if the scratch could not be allocated. */
int kimidoc_attend_absorbed(const float* q_nope, const float* q_pe, const void* kv_b, int w_bf16, float scale,
                            const void* keys, int keys_bf16, int length, int H, int N, int R, int P, float* out,
                            int threads) {
  float* lat = calloc(2 * (size_t)H * R, sizeof(float));
  if (!lat) return -1;
  float* q_lat = lat;
  float* o_lat = lat + (size_t)H * R;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int h = 0; h < H; h++)
    weighted_rows(q_lat + (int64_t)h * R, R, 1.f, q_nope + (int64_t)h * N, N, kv_b, w_bf16, (int64_t)h * 2 * N * R, R);
  int rc = kimidoc_attend_one(q_lat, q_pe, scale, keys, keys_bf16, length, H, R, P, o_lat, threads);
  if (!rc) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t hj = 0; hj < (int64_t)H * N; hj++) { /* row j of W_uv[h] against o_lat[h] */
      int64_t h = hj / N, off = ((2 * h + 1) * N + hj % N) * R;
      const float* o = o_lat + h * R;
      __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
      int r = 0;
      for (; r + 32 <= R; r += 32) {
        acc0 = _mm512_fmadd_ps(load_w(kv_b, w_bf16, off + r), _mm512_loadu_ps(o + r), acc0);
        acc1 = _mm512_fmadd_ps(load_w(kv_b, w_bf16, off + r + 16), _mm512_loadu_ps(o + r + 16), acc1);
      }
      if (r < R) acc0 = _mm512_fmadd_ps(load_w(kv_b, w_bf16, off + r), _mm512_loadu_ps(o + r), acc0);
      out[hj] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    }
  }
  free(lat);
  return rc;
}

/* y[n] = W[n] . x for rows n of a bf16 (xs split as split_even_odd makes it) or float32 weight of K
   columns; inside a parallel region, the rows split over the team. */
static inline float dot_row(const void* W, int w_bf16, int64_t n, const float* x, const float* xs, int K) {
  return w_bf16 ? dot_bf16_row((const uint16_t*)W + n * K, xs, K) : dot_f32_row((const float*)W + n * K, x, K);
}

/* One token's MLA projections, as MLAttention.project runs them with the q_lora path, in one call:
     qa  = W_qa x                                      [Q]      q_a_proj
     kva = W_kva x                                     [R + P]  kv_a_proj_with_mqa (one loop with qa: x read once)
     q   = W_qb rms(qa) g_qa                           [H, N + P]
     q_nope = q[:, :N], q_pe = rope(q[:, N:])          per head
     latent = [rms(kva[:R]) g_kva, rope(kva[R:])]      written to `latent` (float32 or, latent_bf16, bf16)
   The three weights are [rows, cols] contiguous, all bf16 (w_bf16) or all float32; the two norm weights
   bf16 (g_bf16) or float32. Hidden and Q multiples of 32, R of 16, P even. Each row's products and each
   norm and rotation are the ones the separate kernels compute (rows.h, rms_row, rope_row): the same bits.
   Returns 0, or -1 if the scratch could not be allocated. */
int kimidoc_mla_project(const float* x, int hidden, const void* w_qa, int Q, const void* w_kva, int R, int P,
                        const void* w_qb, int H, int N, int w_bf16, const void* g_qa, const void* g_kva, int g_bf16,
                        float eps_q, float eps_kv, const float* cos, const float* sin, float* q_nope, float* q_pe,
                        void* latent, int latent_bf16, int threads) {
  int D = N + P, first = Q + R + P;
  /* x split, qa then kva, normed qa, its split, q, the latent */
  float* scratch = malloc(sizeof(float) * ((size_t)hidden + first + 2 * (size_t)Q + (size_t)H * D + R + P));
  if (!scratch) return -1;
  float *xs = scratch, *a = xs + hidden, *qn = a + first, *qs = qn + Q, *q = qs + Q, *lat = q + (size_t)H * D;
  if (w_bf16) split_even_odd(x, hidden, xs);
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int i = 0; i < first; i++)
      a[i] = i < Q ? dot_row(w_qa, w_bf16, i, x, xs, hidden) : dot_row(w_kva, w_bf16, i - Q, x, xs, hidden);
#pragma omp single
    {
      rms_row(a, Q, g_qa, g_bf16, eps_q, qn);
      if (w_bf16) split_even_odd(qn, Q, qs);
      rms_row(a + Q, R, g_kva, g_bf16, eps_kv, lat);
      rope_row(a + Q + R, P, cos, sin, lat + R);
    }
#pragma omp for schedule(static)
    for (int n = 0; n < H * D; n++) q[n] = dot_row(w_qb, w_bf16, n, qn, qs, Q);
  }
  for (int h = 0; h < H; h++) {
    memcpy(q_nope + (int64_t)h * N, q + (int64_t)h * D, sizeof(float) * N);
    rope_row(q + (int64_t)h * D + N, P, cos, sin, q_pe + (int64_t)h * P);
  }
  if (latent_bf16)
    for (int i = 0; i < R + P; i++) ((uint16_t*)latent)[i] = to_bf16(lat[i]);
  else
    memcpy(latent, lat, sizeof(float) * (R + P));
  free(scratch);
  return 0;
}

/* One row through a SwiGLU MLP (the dense first layer, a shared expert), as SwiGLU.forward runs it:
     out = W_down (silu(W_gate x) * (W_up x))      W_gate, W_up [W, H], W_down [H, W]
   all bf16 (w_bf16) or all float32, contiguous; H and W multiples of 32. gate and up run as one loop
   (x read once), as row products the same as the separate linears'. Returns 0, or -1 if the scratch
   could not be allocated. */
int kimidoc_swiglu_mlp(const float* x, int H, int W, const void* w_gate, const void* w_up, const void* w_down,
                       int w_bf16, float* out, int threads) {
  float* scratch = malloc(sizeof(float) * ((size_t)H + 4 * (size_t)W)); /* x split, gate then up, a, a split */
  if (!scratch) return -1;
  float *xs = scratch, *h = xs + H, *a = h + 2 * W, *as = a + W;
  if (w_bf16) split_even_odd(x, H, xs);
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int i = 0; i < 2 * W; i++) h[i] = i < W ? dot_row(w_gate, w_bf16, i, x, xs, H) : dot_row(w_up, w_bf16, i - W, x, xs, H);
#pragma omp single
    {
      swiglu_row(h, W, a);
      if (w_bf16) split_even_odd(a, W, as);
    }
#pragma omp for schedule(static)
    for (int n = 0; n < H; n++) out[n] = dot_row(w_down, w_bf16, n, a, as, W);
  }
  free(scratch);
  return 0;
}

/* A decoder layer's two halves for one token, each in one call, so that a decode step makes two calls
   a layer instead of ~10 kernel calls and ~20 PyTorch ops (each 5-20 us of dispatch once the weight
   stream has flushed the caches). They run the kernels above in decode.py's order, on the same rows,
   with the same residual adds. */

/* The attention half's weights and widths (kimidoc_mla_project's, kv_b_proj's, o_proj's). */
typedef struct {
  const void *norm, *w_qa, *w_kva, *w_qb, *g_qa, *g_kva, *kv_b, *w_o;
  int hidden, Q, R, P, H, N;
  int norm_bf16, proj_bf16, kv_b_bf16, o_bf16; /* each weight bf16, or float32 */
  float eps, eps_q, eps_kv, scale;
} kimidoc_attention;

/* x += o_proj(attention(project(rms(x)))) for one token: its latent is written to row `length` of the
   layer's cache `keys` [capacity, R + P] (keys_bf16 as kimidoc_attend_one takes it), and the attention reads
   rows 0..length.
   Returns 0, or -1 if scratch could not be allocated. */
int kimidoc_decode_attention(const kimidoc_attention* L, float* x, const float* cos, const float* sin, void* keys,
                             int keys_bf16, int length, int threads) {
  int hidden = L->hidden, D = L->R + L->P, HN = L->H * L->N;
  /* normed x, q_nope, q_pe, the heads' outputs, their split, o_proj's output */
  float* scratch = malloc(sizeof(float) * (2 * (size_t)hidden + (size_t)L->H * (L->N + L->P) + 2 * (size_t)HN));
  if (!scratch) return -1;
  float *h = scratch, *q_nope = h + hidden, *q_pe = q_nope + HN, *o = q_pe + (size_t)L->H * L->P, *os = o + HN;
  float* y = os + HN;
  rms_row(x, hidden, L->norm, L->norm_bf16, L->eps, h);
  char* row = (char*)keys + (int64_t)length * D * (keys_bf16 ? 2 : 4);
  int rc = kimidoc_mla_project(h, hidden, L->w_qa, L->Q, L->w_kva, L->R, L->P, L->w_qb, L->H, L->N, L->proj_bf16,
                               L->g_qa, L->g_kva, L->norm_bf16, L->eps_q, L->eps_kv, cos, sin, q_nope, q_pe, row,
                               keys_bf16, threads);
  if (!rc)
    rc = kimidoc_attend_absorbed(q_nope, q_pe, L->kv_b, L->kv_b_bf16, L->scale, keys, keys_bf16, length + 1, L->H,
                                 L->N, L->R, L->P, o, threads);
  if (!rc) {
    if (L->o_bf16) split_even_odd(o, HN, os);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int n = 0; n < hidden; n++) y[n] = dot_row(L->w_o, L->o_bf16, n, o, os, HN);
    for (int i = 0; i < hidden; i++) x[i] += y[i];
  }
  free(scratch);
  return rc;
}

/* One token's routed experts, kimidoc_int4_swiglu's signature (int4_vnni.c): a pointer, so that this file
   needs no VNNI flags. */
typedef int (*experts_fn)(const float* x, int H, int W, const void* Wgu, const void* Sgu, const void* Wd,
                          const void* Sd, const int64_t* experts, int k, uint16_t* Y, int threads);

/* The feed-forward half's weights and widths: a SwiGLU MLP (the dense layer, or the MoE's shared experts;
   gate NULL: none), and for a MoE layer the router (kimidoc_route's) and the routed experts (router NULL:
   a dense layer). */
typedef struct {
  const void* norm;
  int hidden, norm_bf16;
  float eps;
  const void *gate, *up, *down;
  int width, mlp_bf16;
  const float *router, *bias;
  int E, k, norm_topk;
  float factor;
  experts_fn experts;
  const void *w_gu, *s_gu, *w_d, *s_d;
  int expert_width;
} kimidoc_ffn;

/* x += mlp(rms(x)) for a dense layer; for a MoE layer
   x += (sum_j w_j expert_j(h) + shared(h)),  h = rms(x), (expert_j, w_j) the router's choice,
   each expert's output rounded to bf16 as the bank returns it, the sum in float32 in the router's order.
   Returns 0, or -1 if scratch could not be allocated. */
int kimidoc_decode_ffn(const kimidoc_ffn* L, float* x, int threads) {
  int hidden = L->hidden, k = L->router ? L->k : 0;
  /* the chosen experts, normed x, the MLP's output, the experts' weights and outputs */
  int64_t* idx = malloc(sizeof(int64_t) * k + sizeof(float) * (2 * (size_t)hidden + k) +
                        sizeof(uint16_t) * (size_t)k * hidden);
  if (!idx) return -1;
  float *h = (float*)(idx + k), *y = h + hidden, *w = y + hidden;
  uint16_t* ys = (uint16_t*)(w + k);
  rms_row(x, hidden, L->norm, L->norm_bf16, L->eps, h);
  int rc = 0;
  if (L->router) {
    rc = kimidoc_route(h, hidden, L->router, L->bias, L->E, k, L->norm_topk, L->factor, idx, w, threads);
    if (!rc) rc = L->experts(h, hidden, L->expert_width, L->w_gu, L->s_gu, L->w_d, L->s_d, idx, k, ys, threads);
  }
  if (!rc && L->gate) rc = kimidoc_swiglu_mlp(h, hidden, L->width, L->gate, L->up, L->down, L->mlp_bf16, y, threads);
  if (!rc) {
    for (int i = 0; i < hidden; i++) {
      float acc = 0.f;
      if (L->router) {
        for (int j = 0; j < k; j++) {
          uint32_t bits = (uint32_t)ys[(size_t)j * hidden + i] << 16;
          float v;
          memcpy(&v, &bits, sizeof v);
          acc += w[j] * v;
        }
        if (L->gate) acc += y[i];
      } else {
        acc = y[i];
      }
      x[i] += acc;
    }
  }
  free(idx);
  return rc;
}
