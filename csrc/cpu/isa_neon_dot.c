/* isa_neon_dot.c - aarch64 NEON dot-product (sdot) packed ternary tiles. The codes 0..2 are
 * valid signed bytes, so sdot gives sum(code * x) like the x86 paths. Absmax, quantization
 * and the epilogue use the portable C loops. */
#if defined(__aarch64__)
#include "kernels.h"

#include <arm_neon.h>
#include <string.h>

BL_INLINE void tile_body(const int8_t *x, int64_t ldq, const uint8_t *w, int64_t rb, int64_t nblk,
                         int32_t *out, int64_t ldo, const int MR, const int NR) {
  const uint8x16_t mask = vdupq_n_u8(3);
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
#define SUBGROUP(S)                                                                   \
  do {                                                                                \
    int8x16_t c0[BL_MAX_NR], c1[BL_MAX_NR];                                           \
    for (int j = 0; j < NR; j++) {                                                    \
      c0[j] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(raw[j][0], 2 * (S)), mask));    \
      c1[j] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(raw[j][1], 2 * (S)), mask));    \
    }                                                                                 \
    for (int i = 0; i < MR; i++) {                                                    \
      const int8x16_t x0 = vld1q_s8(xb + i * ldq + 32 * (S));                         \
      const int8x16_t x1 = vld1q_s8(xb + i * ldq + 32 * (S) + 16);                    \
      for (int j = 0; j < NR; j++)                                                    \
        acc[i][j] = vdotq_s32(vdotq_s32(acc[i][j], c0[j], x0), c1[j], x1);            \
    }                                                                                 \
  } while (0)
    /* vshrq_n_u8 takes shifts 1..8, so subgroup 0 is masked only */
    {
      int8x16_t c0[BL_MAX_NR], c1[BL_MAX_NR];
      for (int j = 0; j < NR; j++) {
        c0[j] = vreinterpretq_s8_u8(vandq_u8(raw[j][0], mask));
        c1[j] = vreinterpretq_s8_u8(vandq_u8(raw[j][1], mask));
      }
      for (int i = 0; i < MR; i++) {
        const int8x16_t x0 = vld1q_s8(xb + i * ldq);
        const int8x16_t x1 = vld1q_s8(xb + i * ldq + 16);
        for (int j = 0; j < NR; j++)
          acc[i][j] = vdotq_s32(vdotq_s32(acc[i][j], c0[j], x0), c1[j], x1);
      }
    }
    SUBGROUP(1);
    SUBGROUP(2);
    SUBGROUP(3);
#undef SUBGROUP
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
