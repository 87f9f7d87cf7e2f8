/* isa_neon_dot.c - aarch64 NEON dot-product (sdot) packed ternary tiles. The codes 0..2 are
 * valid signed bytes, so sdot gives sum(code * x) like the x86 paths. The invalid code 3 reads
 * as 2 (docs/packed_format.md): the nibble of a subgroup's field (byte & 0x0F for subgroups 0
 * and 1, byte >> 4 for 2 and 3) indexes a 16-byte table (tbl) holding min(field, 2) of its low
 * or its high field: 2 instructions per subgroup, 8 per 16 bytes of a weight row (the
 * shift-and-mask decode of unchecked codes took 7, a mask + min decode 11). Absmax, quantization
 * and the epilogue use the portable C loops. */
#if defined(__aarch64__)
#include "kernels.h"

#include <arm_neon.h>
#include <string.h>

BL_INLINE void tile_body(const int8_t *x, int64_t ldq, const uint8_t *w, int64_t rb, int64_t nblk,
                         int32_t *out, int64_t ldo, const int MR, const int NR) {
  static const uint8_t lut[2][16] = {{0, 1, 2, 2, 0, 1, 2, 2, 0, 1, 2, 2, 0, 1, 2, 2},
                                     {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2}};
  const uint8x16_t lut0 = vld1q_u8(lut[0]), lut1 = vld1q_u8(lut[1]), m0f = vdupq_n_u8(0x0f);
  int32x4_t acc[BL_MAX_MR][BL_MAX_NR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) acc[i][j] = vdupq_n_s32(0);
  for (int64_t b = 0; b < nblk; b++) {
    const uint8_t *wb = w + b * BL_BLOCK_BYTES;
    const int8_t *xb = x + b * BL_QK;
    uint8x16_t raw[BL_MAX_NR][2];
    for (int j = 0; j < NR; j++) {
      raw[j][0] = vld1q_u8(wb + j * rb);
      raw[j][1] = vld1q_u8(wb + j * rb + 16);
    }
    for (int s = 0; s < 4; s++) {
      int8x16_t c[BL_MAX_NR][2];
      for (int j = 0; j < NR; j++)
        for (int q = 0; q < 2; q++) {
          const uint8x16_t n = s < 2 ? vandq_u8(raw[j][q], m0f) : vshrq_n_u8(raw[j][q], 4);
          c[j][q] = vreinterpretq_s8_u8(vqtbl1q_u8(s & 1 ? lut1 : lut0, n));
        }
      for (int i = 0; i < MR; i++) {
        const int8x16_t x0 = vld1q_s8(xb + i * ldq + 32 * s);
        const int8x16_t x1 = vld1q_s8(xb + i * ldq + 32 * s + 16);
        for (int j = 0; j < NR; j++)
          acc[i][j] = vdotq_s32(vdotq_s32(acc[i][j], c[j][0], x0), c[j][1], x1);
      }
    }
  }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) out[i * ldo + j] = vaddvq_s32(acc[i][j]);
}

BL_DEF_TILES(tile_body, 4)

void bl_kernels_neon_dot(bl_cpu_kernels *k) {
  memset(k, 0, sizeof(*k));
  k->mr = 4;
  k->nr = 4; /* 16 accumulators + 8 codes + 2 x of the 32 vector registers */
  BL_SET_TILES(k, 4);
}
#endif
