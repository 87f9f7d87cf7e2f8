/* isa_neon_dot.c - aarch64 NEON dot-product (sdot) packed ternary tiles. The codes 0..2 are
 * valid signed bytes, so sdot gives sum(code * x) like the x86 paths. The invalid code 3 reads
 * as 2 (docs/packed_format.md): the nibble of a subgroup's field (byte & 0x0F for subgroups 0
 * and 1, byte >> 4 for 2 and 3) indexes a 16-byte table (tbl) holding min(field, 2) of its low
 * or its high field: 2 instructions per subgroup, 8 per 16 bytes of a weight row (the
 * shift-and-mask decode of unchecked codes took 7, a mask + min decode 11). The decode layout
 * (LUT) GEMV looks up 16 rows per tbl (below; forced only, never timed). Absmax, quantization
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

/* ---------------------------------------------------------------- int4 head (q4)
 * sdot on signed nibbles (kernels.h, bl_q4_fn; the lane corrections are not needed): byte ^ 0x88
 * holds in each nibble u ^ 8, the 4-bit two's complement of q = u - 8; an arithmetic shift right
 * by 4 gives the high nibble's q, a shift left by 4 first the low one's. A chunk's bytes 0..15
 * times x[64c .. 64c + 15] (low nibbles) and x[64c + 32 .. 64c + 47] (high) give lanes 0-3,
 * bytes 16..31 lanes 4-7: bitlinear.h's lanes. Per group one exact vcvtq_f32_s32 and one fused
 * vfmaq_n_f32 per lane, then the lanes' fixed sum tree. Each activation load serves the tile's
 * rows. The weights are prefetched as on x86 (a tile's rows are short streams: 4 x 1280 bytes at
 * K = 2560, too short for the hardware prefetchers there; not timed on an aarch64 CPU). */
#define Q4_PF_DIST 8192 /* bytes of the weight stream prefetched ahead (q4_x86.h; untimed here) */
BL_INLINE void q4_body(const uint8_t *w, int64_t rb, const float *ws, int64_t Kg, int64_t G,
                       const int8_t *x, float *out, const int NR, const int G64) {
  const uint8x16_t m88 = vdupq_n_u8(0x88);
  const int64_t cpg = G64 ? 1 : G / 64;
  float32x4_t f0[BL_Q4_NR], f1[BL_Q4_NR];
  for (int r = 0; r < NR; r++) f0[r] = f1[r] = vdupq_n_f32(0.0f);
  for (int64_t g = 0; g < Kg; g++) {
    { /* the sweep of q4_x86.h: the tile's contiguous rows and scales, Q4_PF_DIST ahead */
      const uintptr_t a = (uintptr_t)w + Q4_PF_DIST + (uintptr_t)(g * NR * (G / 2));
      for (int64_t i = 0; i < NR * (G / 2); i += 64) __builtin_prefetch((const void *)(a + i));
      __builtin_prefetch(
          (const void *)((uintptr_t)ws + Q4_PF_DIST / (G / 8) + (uintptr_t)(g * NR * 4)));
    }
    int32x4_t p0[BL_Q4_NR], p1[BL_Q4_NR];
    for (int r = 0; r < NR; r++) p0[r] = p1[r] = vdupq_n_s32(0);
    for (int64_t c = g * cpg; c < (g + 1) * cpg; c++) {
      const int8_t *xc = x + 64 * c;
      const int8x16_t x0 = vld1q_s8(xc), x1 = vld1q_s8(xc + 16), x2 = vld1q_s8(xc + 32),
                      x3 = vld1q_s8(xc + 48);
      for (int r = 0; r < NR; r++) {
        const uint8_t *wc = w + r * rb + 32 * c;
        const int8x16_t v0 = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(wc), m88));
        const int8x16_t v1 = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(wc + 16), m88));
        p0[r] = vdotq_s32(p0[r], vshrq_n_s8(vshlq_n_s8(v0, 4), 4), x0);
        p1[r] = vdotq_s32(p1[r], vshrq_n_s8(vshlq_n_s8(v1, 4), 4), x1);
        p0[r] = vdotq_s32(p0[r], vshrq_n_s8(v0, 4), x2);
        p1[r] = vdotq_s32(p1[r], vshrq_n_s8(v1, 4), x3);
      }
    }
    for (int r = 0; r < NR; r++) {
      const float s = ws[r * Kg + g];
      f0[r] = vfmaq_n_f32(f0[r], vcvtq_f32_s32(p0[r]), s);
      f1[r] = vfmaq_n_f32(f1[r], vcvtq_f32_s32(p1[r]), s);
    }
  }
  for (int r = 0; r < NR; r++) {
    const float32x4_t s = vaddq_f32(f0[r], f1[r]); /* f_l + f_l+4 */
    out[r] = (vgetq_lane_f32(s, 0) + vgetq_lane_f32(s, 2)) +
             (vgetq_lane_f32(s, 1) + vgetq_lane_f32(s, 3));
  }
}

#define Q4_DEF(NR)                                                                             \
  static void q4_##NR(const uint8_t *w, int64_t rb, const float *ws, int64_t Kg, int64_t G,    \
                      const int8_t *x, float *out) {                                           \
    if (G == 64)                                                                               \
      q4_body(w, rb, ws, Kg, G, x, out, NR, 1);                                                \
    else                                                                                       \
      q4_body(w, rb, ws, Kg, G, x, out, NR, 0);                                                \
  }
Q4_DEF(1)
Q4_DEF(2)
Q4_DEF(3)
Q4_DEF(4)

static void q4_neon(const uint8_t *w, int64_t rb, const float *ws, int64_t Kg, int64_t G,
                    const int8_t *x, int64_t ldq, const int32_t *corr, int64_t ldc, int nr, int mt,
                    float *out) {
  (void)ldq;
  (void)corr;
  (void)ldc;
  (void)mt; /* q4_mt = 1 */
  static void (*const tab[BL_Q4_NR])(const uint8_t *, int64_t, const float *, int64_t, int64_t,
                                     const int8_t *, float *) = {q4_1, q4_2, q4_3, q4_4};
  tab[nr - 1](w, rb, ws, Kg, G, x, out);
}

/* ---------------------------------------------------------------- decode layout (LUT)
 * tbl looks up bytes, the table entries are int16 (|e| <= 3 * 128). Each entry is split as
 * e = 32 h + l, l = e & 31 in 0..31, h = e >> 5 in -12..12, and one token's tables keep, per group
 * of 3 activations, the 32 bytes l[0..31] then the 32 bytes h[0..31] (the same 64 bytes, 96 C int16
 * per token, as kernels.h's arrangement, but not its contents: lut_tables_neon's tables are read
 * only by lut_gemv_neon; gemm.c passes them through without reading them). vqtbl2q_u8 with the
 * 5-bit indices of 16 rows looks up 16 l (or h) at once. The l and h of 2 columns (6 lookups
 * each) add in bytes without overflow (l: 6 * 31 = 186 <= 255, h: 6 * 12 = 72 <= 127), then
 * widen into uint16 / int16 sums; out = sum l + 32 * sum h in int32 every LUT_FLUSH_COLS columns.
 * Per 16 rows x 9 weights and one token: 1 word load (ldp), 8 instructions extracting the 3 byte
 * index vectors (uzp1/uzp2, shrn/shrn2, ushr, 3 and), 6 tbl, 7 byte adds / widening adds (averaged
 * over a column pair) and 6 two-register table loads (L1): 21 vector ALU instructions + 7 loads
 * (the packed sdot GEMV: about 27 ALU instructions per 144 weights of a row). A second token
 * (mr = 2) reuses the word load and the 8 index instructions: 13 ALU + 6 loads more. Not timed
 * on any aarch64 CPU (only run under emulation): lut_auto stays 0. */
#define LUT_CHUNK_COLS 16  /* columns per visit of a 16-row half (even); its sums wait in memory */
#define LUT_FLUSH_COLS 256 /* sum l <= 256 * 93 < 65536, |sum h| <= 256 * 36 < 32768 */
#define LUT_PF_BYTES 8192  /* software prefetch: at least this far ahead in the word stream */

static void lut_tables_neon(const int8_t *x, int64_t K, int64_t C, int16_t *T) {
  /* digit_t(i) - 1 for i < 27, 0 above (kernels.h) */
  static const int16_t d[3][32] = {
      {-1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1},
      {-1, -1, -1, 0, 0, 0, 1, 1, 1, -1, -1, -1, 0, 0, 0, 1, 1, 1, -1, -1, -1, 0, 0, 0, 1, 1, 1},
      {-1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1}};
  int16x8_t dv[3][4];
  for (int t = 0; t < 3; t++)
    for (int q = 0; q < 4; q++) dv[t][q] = vld1q_s16(d[t] + 8 * q);
  const int16x8_t m31 = vdupq_n_s16(31);
  uint8_t *out = (uint8_t *)T;
  for (int64_t g = 0; g < 3 * C; g++) {
    const int64_t k = 3 * g;
    const int16_t x0 = k < K ? x[k] : 0, x1 = k + 1 < K ? x[k + 1] : 0, x2 = k + 2 < K ? x[k + 2] : 0;
    int16x8_t e[4];
    for (int q = 0; q < 4; q++)
      e[q] = vmlaq_n_s16(vmlaq_n_s16(vmulq_n_s16(dv[0][q], x0), dv[1][q], x1), dv[2][q], x2);
    uint8_t *o = out + 64 * g;
    for (int q = 0; q < 4; q += 2) {
      const uint8x16_t l = vcombine_u8(vmovn_u16(vreinterpretq_u16_s16(vandq_s16(e[q], m31))),
                                       vmovn_u16(vreinterpretq_u16_s16(vandq_s16(e[q + 1], m31))));
      const int8x16_t h = vcombine_s8(vshrn_n_s16(e[q], 5), vshrn_n_s16(e[q + 1], 5));
      vst1q_u8(o + 8 * q, l);
      vst1q_s8((int8_t *)o + 32 + 8 * q, h);
    }
  }
}

/* The byte index vectors of the 16 words of 16 rows (bits 0-4, 5-9, 10-14; bit 15 ignored). */
BL_INLINE void lut_indices(uint16x8_t wa, uint16x8_t wb, uint8x16_t idx[3]) {
  const uint8x16_t m31 = vdupq_n_u8(31);
  const uint8x16_t lo = vuzp1q_u8(vreinterpretq_u8_u16(wa), vreinterpretq_u8_u16(wb));
  const uint8x16_t hi = vuzp2q_u8(vreinterpretq_u8_u16(wa), vreinterpretq_u8_u16(wb));
  idx[0] = vandq_u8(lo, m31);
  idx[1] = vandq_u8(vshrn_high_n_u16(vshrn_n_u16(wa, 5), wb, 5), m31);
  idx[2] = vandq_u8(vshrq_n_u8(hi, 2), m31);
}

/* The l and h sums of one column for 16 rows (byte indices idx) by the tables tc: *first: store,
 * else add. (Named table pairs: GCC 12 keeps arrays of uint8x16x2_t on the stack.) */
BL_INLINE void lut_lookup(const uint8_t *tc, const uint8x16_t idx[3], uint8x16_t *pl,
                          int8x16_t *ph, const int first) {
  const uint8x16x2_t l0 = vld1q_u8_x2(tc), l1 = vld1q_u8_x2(tc + 64), l2 = vld1q_u8_x2(tc + 128);
  const uint8x16_t sl = vaddq_u8(vaddq_u8(vqtbl2q_u8(l0, idx[0]), vqtbl2q_u8(l1, idx[1])),
                                 vqtbl2q_u8(l2, idx[2]));
  const int8x16x2_t h0 = vld1q_s8_x2((const int8_t *)tc + 32),
                    h1 = vld1q_s8_x2((const int8_t *)tc + 96),
                    h2 = vld1q_s8_x2((const int8_t *)tc + 160);
  const int8x16_t sh = vaddq_s8(vaddq_s8(vqtbl2q_s8(h0, idx[0]), vqtbl2q_s8(h1, idx[1])),
                                vqtbl2q_s8(h2, idx[2]));
  *pl = first ? sl : vaddq_u8(*pl, sl);
  *ph = first ? sh : vaddq_s8(*ph, sh);
}

/* Words w[c * cstride + 32 i + l], i < nt, l < 32; MR tokens' tables (from lut_tables_neon) at
 * T + m * tl, their outputs at out + m * ldo. The 16-row halves of the tiles are visited
 * LUT_CHUNK_COLS columns at a time (the chunk's tables stay in L1 for every half, and the chunk's
 * words are one contiguous stretch of the stream); each half's uint16 / int16 sums of l and h
 * wait in acc_l / acc_h between visits. 16 rows at a time: their sums (of MR tokens), one column's
 * tables and the indices fit the 32 vector registers. The indices of a word vector serve the MR
 * tokens. */
BL_INLINE void lut_gemv_body(const uint16_t *w, int64_t C, int64_t cstride, int nt,
                             const int16_t *T, int64_t tl, int32_t *out, int64_t ldo,
                             const int MR) {
  enum { HALVES = 2 * BL_LUT_SUPER_TILES };
  uint16x8_t acc_l[2][HALVES][2];
  int16x8_t acc_h[2][HALVES][2];
  const uint8_t *tab = (const uint8_t *)T;
  const int64_t tlb = 2 * tl; /* bytes from one token's tables to the next */
  const int nh = 2 * nt;
  /* prefetch distance in columns: at least a chunk, at least LUT_PF_BYTES of the stream */
  int64_t pfc = (LUT_PF_BYTES / 2 + cstride - 1) / cstride;
  if (pfc < LUT_CHUNK_COLS) pfc = LUT_CHUNK_COLS;
  const uintptr_t pfo = (uintptr_t)(pfc * cstride * 2);
  for (int m = 0; m < MR; m++)
    for (int i = 0; i < nt * BL_LUT_TILE_ROWS; i++) out[m * ldo + i] = 0;
  for (int64_t f0 = 0; f0 < C; f0 += LUT_FLUSH_COLS) {
    const int64_t f1 = f0 + LUT_FLUSH_COLS < C ? f0 + LUT_FLUSH_COLS : C;
    for (int m = 0; m < MR; m++)
      for (int i = 0; i < nh; i++)
        for (int q = 0; q < 2; q++) acc_l[m][i][q] = vdupq_n_u16(0), acc_h[m][i][q] = vdupq_n_s16(0);
    for (int64_t c0 = f0; c0 < f1; c0 += LUT_CHUNK_COLS) {
      const int64_t c1 = c0 + LUT_CHUNK_COLS < f1 ? c0 + LUT_CHUNK_COLS : f1;
      for (int i = 0; i < nh; i++) {
        uint16x8_t L0[2], L1[2];
        int16x8_t H0[2], H1[2];
        for (int m = 0; m < MR; m++)
          L0[m] = acc_l[m][i][0], L1[m] = acc_l[m][i][1], H0[m] = acc_h[m][i][0],
          H1[m] = acc_h[m][i][1];
        for (int64_t c = c0; c < c1; c += 2) {
          const uint16_t *wc = w + c * cstride + 16 * i;
          if (!(i & 1)) __builtin_prefetch((const void *)((uintptr_t)wc + pfo)); /* 64-byte line */
          uint8x16_t idx[3], pl[2];
          int8x16_t ph[2];
          lut_indices(vld1q_u16(wc), vld1q_u16(wc + 8), idx);
          for (int m = 0; m < MR; m++) lut_lookup(tab + m * tlb + 192 * c, idx, &pl[m], &ph[m], 1);
          if (c + 1 < c1) {
            const uint16_t *wd = wc + cstride;
            if (!(i & 1)) __builtin_prefetch((const void *)((uintptr_t)wd + pfo));
            lut_indices(vld1q_u16(wd), vld1q_u16(wd + 8), idx);
            for (int m = 0; m < MR; m++)
              lut_lookup(tab + m * tlb + 192 * (c + 1), idx, &pl[m], &ph[m], 0);
          }
          for (int m = 0; m < MR; m++) {
            L0[m] = vaddw_u8(L0[m], vget_low_u8(pl[m]));
            L1[m] = vaddw_high_u8(L1[m], pl[m]);
            H0[m] = vaddw_s8(H0[m], vget_low_s8(ph[m]));
            H1[m] = vaddw_high_s8(H1[m], ph[m]);
          }
        }
        for (int m = 0; m < MR; m++)
          acc_l[m][i][0] = L0[m], acc_l[m][i][1] = L1[m], acc_h[m][i][0] = H0[m],
          acc_h[m][i][1] = H1[m];
      }
    }
    for (int m = 0; m < MR; m++)
      for (int i = 0; i < nh; i++)
        for (int q = 0; q < 2; q++) {
          int32_t *o = out + m * ldo + 16 * i + 8 * q;
          const uint16x8_t l = acc_l[m][i][q];
          const int16x8_t h = acc_h[m][i][q];
          const int32x4_t lo = vaddq_s32(vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(l))),
                                         vshll_n_s16(vget_low_s16(h), 5));
          const int32x4_t hi = vaddq_s32(vreinterpretq_s32_u32(vmovl_high_u16(l)),
                                         vshll_high_n_s16(h, 5));
          vst1q_s32(o, vaddq_s32(vld1q_s32(o), lo));
          vst1q_s32(o + 4, vaddq_s32(vld1q_s32(o + 4), hi));
        }
  }
}

static void lut_gemv_neon(const uint16_t *w, int64_t C, int64_t cstride, int nt, int mr,
                          const int16_t *T, int64_t tl, int32_t *out, int64_t ldo) {
  if (mr == 2)
    lut_gemv_body(w, C, cstride, nt, T, tl, out, ldo, 2);
  else
    lut_gemv_body(w, C, cstride, nt, T, tl, out, ldo, 1);
}

void bl_kernels_neon_dot(bl_cpu_kernels *k) {
  memset(k, 0, sizeof(*k));
  k->mr = 4;
  k->nr = 4; /* 16 accumulators + 8 codes + 2 x of the 32 vector registers */
  BL_SET_TILES(k, 4);
  k->lut_tables = lut_tables_neon;
  k->lut_gemv = lut_gemv_neon;
  k->lut_auto = 0; /* not measured on any aarch64 CPU yet: used only when forced */
  k->q4 = q4_neon;
  k->q4_mt = 1; /* 2 * 2 * NR accumulators: one token fills the registers */
}
#endif
