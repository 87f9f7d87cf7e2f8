/* q4_x86.h - the 256-bit int4 head (q4) kernel (kernels.h, bl_q4_fn), shared by isa_avx2.c
 * (vpmaddubsw + vpmaddwd), isa_avxvnni.c and isa_avx512vnni.c (vpdpbusd). Included once by each,
 * after it defines:
 *   Q4_DOT2(p, ul, xl, uh, xh)  p (8 int32 lanes) plus, in lane l, the products of the unsigned
 *                               bytes 4l..4l+3 of ul and the signed bytes 4l..4l+3 of xl, and the
 *                               same of uh and xh (exact: nibbles times int8)
 *   Q4_MT                       tokens per call, 1 or 2 (accumulators: 2 * NR * Q4_MT registers)
 * It defines q4_kernel, a bl_q4_fn for the file's table (q4_mt = Q4_MT).
 *
 * A chunk of 64 weights of a row is one 32-byte load: the low nibbles (k = 64c + j) line up with
 * the 32 activations x[64c ..], the high nibbles (k = 64c + 32 + j) with x[64c + 32 ..], so lane l
 * of the dot products holds exactly bitlinear.h's lane l. The nibbles are used unsigned
 * (u = q + 8): the group's lane sums start from the token's corrections (-8 * sum of x over the
 * lane's bytes, kernels.h), giving p[l] exactly. Then per group one vcvtdq2ps (exact: |p| < 2^24)
 * and one vfmadd with the broadcast scale (one rounding, as fmaf) per lane; at the end the lanes
 * are summed in bitlinear.h's tree: halves (f_l + f_l+4), then (s0 + s2) + (s1 + s3). Each
 * activation load serves the BL_Q4_NR rows of the tile. */
#ifndef BITLINEAR_Q4_X86_H
#define BITLINEAR_Q4_X86_H
#include "simd_x86.h"

/* ((f0 + f4) + (f2 + f6)) + ((f1 + f5) + (f3 + f7)) */
BL_INLINE float q4_sum8(__m256 f) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s)); /* s0 + s2, s1 + s3 */
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

/* Software prefetch of the weight stream: Q4_PF_DIST bytes ahead (0: none), into L2. A 4-row
 * tile is 4 streams of Kp4 / 2 bytes (1280 at K = 2560) that end at the tile, too short for the
 * hardware prefetchers. Measured on the 2-core Zen 4 test machine (AVX-512 VNNI path, M = 1,
 * K = 2560, N = 128256, weights from DRAM, 1 thread): no prefetch 21 ms, 4 KiB ahead 9.3 ms,
 * 8 KiB 7.1-8.6 ms (into L1 or L2: the same within the noise of the shared machine; into L2
 * slightly ahead at 2 threads), 16 KiB no better. Overridable for tuning (-DQ4_PF_DIST=...). */
#ifndef Q4_PF_DIST
#define Q4_PF_DIST 8192
#endif
#ifndef Q4_PF_HINT
#define Q4_PF_HINT _MM_HINT_T1
#endif

/* NR rows x MT tokens; G64: G is 64 (one chunk per group, a constant loop). */
BL_INLINE void q4_body(const uint8_t *w, int64_t rb, const float *ws, int64_t Kg, int64_t G,
                       const int8_t *x, int64_t ldq, const int32_t *corr, int64_t ldc, float *out,
                       const int NR, const int MT, const int G64) {
  const __m256i m0f = _mm256_set1_epi8(0x0f);
  const int64_t cpg = G64 ? 1 : G / 64;
  const uintptr_t pf_s = Q4_PF_DIST / (uintptr_t)(G / 8); /* the scales' distance */
  __m256 f[BL_Q4_MT][BL_Q4_NR];
  for (int t = 0; t < MT; t++)
    for (int r = 0; r < NR; r++) f[t][r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < Kg; g++) {
    if (Q4_PF_DIST) {
      /* the NR rows are NR * rb contiguous bytes read at NR * G / 2 bytes per group: sweep the
       * bytes Q4_PF_DIST ahead at that rate (into the next tiles), and the scales likewise */
      const uintptr_t a = (uintptr_t)w + Q4_PF_DIST + (uintptr_t)(g * NR * (G / 2));
      for (int64_t i = 0; i < NR * (G / 2); i += 64)
        _mm_prefetch((const char *)(a + i), Q4_PF_HINT);
      _mm_prefetch((const char *)((uintptr_t)ws + pf_s + (uintptr_t)(g * NR * 4)), Q4_PF_HINT);
    }
    __m256i p[BL_Q4_MT][BL_Q4_NR];
    for (int t = 0; t < MT; t++) {
      const __m256i c0 = _mm256_loadu_si256((const __m256i *)(corr + t * ldc + 8 * g));
      for (int r = 0; r < NR; r++) p[t][r] = c0;
    }
    for (int64_t c = g * cpg; c < (g + 1) * cpg; c++) {
      __m256i xl[BL_Q4_MT], xh[BL_Q4_MT];
      for (int t = 0; t < MT; t++) {
        xl[t] = _mm256_loadu_si256((const __m256i *)(x + t * ldq + 64 * c));
        xh[t] = _mm256_loadu_si256((const __m256i *)(x + t * ldq + 64 * c + 32));
      }
      for (int r = 0; r < NR; r++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(w + r * rb + 32 * c));
        const __m256i ul = _mm256_and_si256(raw, m0f);
        const __m256i uh = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m0f);
        for (int t = 0; t < MT; t++) {
          p[t][r] = Q4_DOT2(p[t][r], ul, xl[t], uh, xh[t]);
          BL_PIN(p[t][r]);
        }
      }
    }
    for (int r = 0; r < NR; r++) {
      const __m256 s = _mm256_broadcast_ss(ws + r * Kg + g);
      for (int t = 0; t < MT; t++) {
        f[t][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p[t][r]), s, f[t][r]);
      }
    }
  }
  for (int t = 0; t < MT; t++)
    for (int r = 0; r < NR; r++) out[t * BL_Q4_NR + r] = q4_sum8(f[t][r]);
}

#define Q4_DEF(NR, MT)                                                                        \
  static void q4_##NR##x##MT(const uint8_t *w, int64_t rb, const float *ws, int64_t Kg,        \
                             int64_t G, const int8_t *x, int64_t ldq, const int32_t *corr,     \
                             int64_t ldc, float *out) {                                        \
    if (G == 64)                                                                              \
      q4_body(w, rb, ws, Kg, G, x, ldq, corr, ldc, out, NR, MT, 1);                           \
    else                                                                                      \
      q4_body(w, rb, ws, Kg, G, x, ldq, corr, ldc, out, NR, MT, 0);                           \
  }
#define Q4_DEF_NR(MT) Q4_DEF(1, MT) Q4_DEF(2, MT) Q4_DEF(3, MT) Q4_DEF(4, MT)
Q4_DEF_NR(1)
#if Q4_MT == 2
Q4_DEF_NR(2)
#endif

static void q4_kernel(const uint8_t *w, int64_t rb, const float *ws, int64_t Kg, int64_t G,
                      const int8_t *x, int64_t ldq, const int32_t *corr, int64_t ldc, int nr,
                      int mt, float *out) {
  typedef void (*fn)(const uint8_t *, int64_t, const float *, int64_t, int64_t, const int8_t *,
                     int64_t, const int32_t *, int64_t, float *);
#if Q4_MT == 2
  static const fn tab[2][BL_Q4_NR] = {{q4_1x1, q4_2x1, q4_3x1, q4_4x1},
                                      {q4_1x2, q4_2x2, q4_3x2, q4_4x2}};
#else
  static const fn tab[1][BL_Q4_NR] = {{q4_1x1, q4_2x1, q4_3x1, q4_4x1}};
#endif
  tab[mt - 1][nr - 1](w, rb, ws, Kg, G, x, ldq, corr, ldc, out);
}
#endif
