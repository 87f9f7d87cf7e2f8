/* tile256_x86.h - the 256-bit packed ternary tile, shared by isa_avx2.c (vpmaddubsw into int16)
 * and isa_avxvnni.c (vpdpbusd into int32). Included once by each, after it defines:
 *   TILE256_CHUNK_BLOCKS    blocks summed in chunk-local accumulators (gcc keeps those in
 *                           registers) before they are added to the int32 totals
 *   TILE256_STEP(a, c, x)   a plus the products of the codes c (unsigned 0..2) and x (int8)
 *   TILE256_FLUSH(acc, a)   acc plus the chunk sums a, as int32 lanes
 *   TILE256_PREFETCH        1 to prefetch the next tile's weight rows, else 0
 * It defines tile256_body(x, ldq, w, rb, nblk, out, ldo, MR, NR), a tile body for BL_DEF_TILES
 * (kernels.h): out[i * ldo + j] = sum over k of code(w_j, k) * x_i[k]. Each weight vector is
 * decoded once per tile and used for MR rows. */
#ifndef BITLINEAR_TILE256_X86_H
#define BITLINEAR_TILE256_X86_H
#include "simd_x86.h"

BL_INLINE void tile256_body(const int8_t *x, int64_t ldq, const uint8_t *w, int64_t rb,
                            int64_t nblk, int32_t *out, int64_t ldo, const int MR, const int NR) {
  const __m256i mask = _mm256_set1_epi8(3);
  __m256i acc[BL_MAX_MR][BL_MAX_NR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_si256();
  for (int64_t b0 = 0; b0 < nblk; b0 += TILE256_CHUNK_BLOCKS) {
    const int64_t b1 = b0 + TILE256_CHUNK_BLOCKS < nblk ? b0 + TILE256_CHUNK_BLOCKS : nblk;
    __m256i a[BL_MAX_MR][BL_MAX_NR];
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) a[i][j] = _mm256_setzero_si256();
    for (int64_t b = b0; b < b1; b++) {
      const uint8_t *wb = w + b * BL_BLOCK_BYTES;
      const int8_t *xb = x + b * BL_QK;
      if (TILE256_PREFETCH)
        for (int j = 0; j < NR; j++) BL_PREFETCH_NEXT_TILE(wb, (j + NR) * rb);
      for (int s = 0; s < 4; s++) {
        __m256i c[BL_MAX_NR];
        for (int j = 0; j < NR; j++) {
          __m256i raw = _mm256_loadu_si256((const __m256i *)(wb + j * rb));
          c[j] = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * s), mask);
        }
        for (int i = 0; i < MR; i++) {
          __m256i xv = _mm256_loadu_si256((const __m256i *)(xb + i * ldq + 32 * s));
          for (int j = 0; j < NR; j++) {
            a[i][j] = TILE256_STEP(a[i][j], c[j], xv);
            BL_PIN(a[i][j]);
          }
        }
      }
    }
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) acc[i][j] = TILE256_FLUSH(acc[i][j], a[i][j]);
  }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) out[i * ldo + j] = bl_hsum8(acc[i][j]);
}
#endif
