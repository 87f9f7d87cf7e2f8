/* isa_avxvnni.c - AVX-VNNI (VEX vpdpbusd, e.g. Alder Lake, Zen 5) packed ternary tiles.
 * The rest of the path (absmax, quantization, epilogue) is the AVX2 one. */
#if defined(__x86_64__)
#include "kernels.h"

#include <immintrin.h>

#include "simd_x86.h"

#define INLINE static inline __attribute__((always_inline))
#define CHUNK_BLOCKS 64
/* keeps an accumulator in its register here (gcc otherwise copies them around) */
#ifndef PIN
#define PIN(v) __asm__("" : "+x"(v))
#endif

/* codes (unsigned 0..2) x signed x, four products per int32 lane with vpdpbusd. Chunks of
 * blocks with chunk-local accumulators: gcc keeps those in registers. */
INLINE void tile_body(const int8_t *x, int64_t ldq, const uint8_t *w, int64_t rb, int64_t nblk,
                      int32_t *out, int64_t ldo, const int MR, const int NR) {
  const __m256i mask = _mm256_set1_epi8(3);
  __m256i acc[BL_MAX_MR][BL_MAX_NR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_si256();
  for (int64_t b0 = 0; b0 < nblk; b0 += CHUNK_BLOCKS) {
    const int64_t b1 = b0 + CHUNK_BLOCKS < nblk ? b0 + CHUNK_BLOCKS : nblk;
    __m256i a[BL_MAX_MR][BL_MAX_NR];
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) a[i][j] = _mm256_setzero_si256();
    for (int64_t b = b0; b < b1; b++) {
      const uint8_t *wb = w + b * BL_BLOCK_BYTES;
      const int8_t *xb = x + b * BL_QK;
      for (int s = 0; s < 4; s++) {
        __m256i c[BL_MAX_NR];
        for (int j = 0; j < NR; j++) {
          __m256i raw = _mm256_loadu_si256((const __m256i *)(wb + j * rb));
          c[j] = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * s), mask);
        }
        for (int i = 0; i < MR; i++) {
          __m256i xv = _mm256_loadu_si256((const __m256i *)(xb + i * ldq + 32 * s));
          for (int j = 0; j < NR; j++) {
            a[i][j] = _mm256_dpbusd_avx_epi32(a[i][j], c[j], xv);
            PIN(a[i][j]);
          }
        }
      }
    }
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) acc[i][j] = _mm256_add_epi32(acc[i][j], a[i][j]);
  }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) out[i * ldo + j] = bl_hsum8(acc[i][j]);
}

#define DEF_ROW(MR) BL_DEF_TILE(MR, 1) BL_DEF_TILE(MR, 2) BL_DEF_TILE(MR, 3)
DEF_ROW(1)
DEF_ROW(2)
DEF_ROW(3)
DEF_ROW(4)
#define SET_ROW(k, MR) BL_SET_TILE(k, MR, 1), BL_SET_TILE(k, MR, 2), BL_SET_TILE(k, MR, 3)

void bl_kernels_avxvnni(bl_cpu_kernels *k) {
  k->mr = 4;
  k->nr = 3; /* 12 accumulators + 3 codes + 1 x = the 16 ymm registers */
  k->nr1 = 0;
  SET_ROW(k, 1);
  SET_ROW(k, 2);
  SET_ROW(k, 3);
  SET_ROW(k, 4);
}
#endif
