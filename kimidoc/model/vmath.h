/* Vector math and float conversions shared by the C kernels (decode_ops.c, int4_vnni.c). */

#ifndef KIMIDOC_VMATH_H
#define KIMIDOC_VMATH_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* e^x for x <= 0 (scores minus their running max; silu's e^-|x|), within ~2 float ulps: x = n ln2 + r with
   |r| <= ln2/2, e^r by its degree-7 Taylor polynomial (error < 5e-9), times 2^n by scalef. */
static inline __m512 exp_ps(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.f)); /* below this e^x is 0 in float32 */
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x); /* ln2 in two parts: exact n*hi */
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

/* x * sigmoid(x) = x / (1 + e^-x), with e^-|x| so that the exponential never overflows. */
static inline __m512 silu_ps(__m512 x) {
  __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
  __m512 num = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_set1_ps(1.f), e);
  return _mm512_mul_ps(x, _mm512_div_ps(num, _mm512_add_ps(_mm512_set1_ps(1.f), e)));
}

/* a[0:W] = silu(h[0:W]) * h[W:2W]: SwiGLU's activation from gate then up (W a multiple of 16). */
static inline void swiglu_row(const float* h, int W, float* a) {
  for (int c = 0; c < W; c += 16)
    _mm512_storeu_ps(a + c, _mm512_mul_ps(silu_ps(_mm512_loadu_ps(h + c)), _mm512_loadu_ps(h + W + c)));
}

/* float32 -> bf16 as PyTorch rounds it (c10::BFloat16): to nearest, ties to even; NaN -> 0x7FC0. */
static inline uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return f != f ? 0x7FC0 : (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

/* to_bf16 of 16 finite floats, kept as the float32 values they round to. */
static inline __m512 round_bf16_ps(__m512 x) {
  __m512i u = _mm512_castps_si512(x);
  __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  u = _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
  return _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32((int)0xFFFF0000u)));
}

#endif
