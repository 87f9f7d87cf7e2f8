/* tile256_x86.h - the 256-bit packed ternary tile, shared by isa_avx2.c (vpmaddubsw into int16)
 * and isa_avxvnni.c (vpdpbusd into int32). Included once by each, after it defines:
 *   TILE256_CHUNK_BLOCKS    blocks summed in chunk-local accumulators (gcc keeps those in
 *                           registers) before they are added to the int32 totals
 *   TILE256_STEP(a, c, x)   a plus the products of the codes c (unsigned 0..2) and x (int8)
 *   TILE256_FLUSH(acc, a)   acc plus the chunk sums a, as int32 lanes
 *   TILE256_PREFETCH        prefetch distance in bytes of the weight stream (BL_PREFETCH_AHEAD,
 *                           simd_x86.h), 0 for none
 *   TILE256_LUT_DECODE      which decode (below); may depend on MR, a constant in the tile
 * It defines tile256_body(x, ldq, w, rb, nblk, out, ldo, MR, NR), a tile body for BL_DEF_TILES
 * (kernels.h): out[i * ldo + j] = sum over k of code(w_j, k) * x_i[k].
 *
 * The invalid code 3 reads as 2 (weight +1, docs/packed_format.md), so the codes stay in 0..2 on
 * any byte pattern and the sums are those of the reference. Two decodes give those codes:
 *   lookup (TILE256_LUT_DECODE 1): a nibble (two 2-bit fields), byte & 0x0F or (byte >> 4) &
 *     0x0F, indexes two 16-byte tables (vpshufb) holding min(field, 2) of its low and its high
 *     field: 7 instructions per 32 bytes of a weight row, as many as the shift-and-mask decode
 *     of unchecked codes;
 *   mask + min (0): (byte >> 2s) & 3, then an unsigned byte min against 2: 11 instructions.
 * Each code vector is decoded once per tile row and used for the MR rows of x at once, so only
 * one is live: with the NR x MR accumulators that fits the 16 ymm registers without spilling. */
#ifndef BITLINEAR_TILE256_X86_H
#define BITLINEAR_TILE256_X86_H
#include "simd_x86.h"

/* min(field, 2) of the low (lut0) and the high (lut1) 2-bit field of a nibble, per 128-bit lane */
#define TILE256_LUT0                                                                       \
  _mm256_setr_epi8(0, 1, 2, 2, 0, 1, 2, 2, 0, 1, 2, 2, 0, 1, 2, 2, 0, 1, 2, 2, 0, 1, 2, 2, 0, 1, \
                   2, 2, 0, 1, 2, 2)
#define TILE256_LUT1                                                                       \
  _mm256_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, \
                   2, 2, 2, 2, 2, 2)

BL_INLINE void tile256_body(const int8_t *x, int64_t ldq, const uint8_t *w, int64_t rb,
                            int64_t nblk, int32_t *out, int64_t ldo, const int MR, const int NR) {
  const __m256i m03 = _mm256_set1_epi8(3), two = _mm256_set1_epi8(2);
  const __m256i m0f = _mm256_set1_epi8(0x0f), lut0 = TILE256_LUT0, lut1 = TILE256_LUT1;
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
      if (TILE256_PREFETCH) BL_PREFETCH_AHEAD(w, TILE256_PREFETCH, b, NR);
      if (TILE256_LUT_DECODE) {
        /* nibble h of every byte: the codes of subgroups 2h and 2h + 1 */
        for (int h = 0; h < 2; h++)
          for (int j = 0; j < NR; j++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(wb + j * rb));
            const __m256i n = _mm256_and_si256(h ? _mm256_srli_epi16(raw, 4) : raw, m0f);
            for (int s = 0; s < 2; s++) {
              const __m256i c = _mm256_shuffle_epi8(s ? lut1 : lut0, n);
              for (int i = 0; i < MR; i++) {
                const __m256i xv =
                    _mm256_loadu_si256((const __m256i *)(xb + i * ldq + 64 * h + 32 * s));
                a[i][j] = TILE256_STEP(a[i][j], c, xv);
                BL_PIN(a[i][j]);
              }
            }
          }
      } else {
        for (int s = 0; s < 4; s++)
          for (int j = 0; j < NR; j++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(wb + j * rb));
            const __m256i c =
                _mm256_min_epu8(_mm256_and_si256(_mm256_srli_epi16(raw, 2 * s), m03), two);
            for (int i = 0; i < MR; i++) {
              const __m256i xv = _mm256_loadu_si256((const __m256i *)(xb + i * ldq + 32 * s));
              a[i][j] = TILE256_STEP(a[i][j], c, xv);
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
