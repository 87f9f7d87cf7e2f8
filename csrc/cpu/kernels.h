/* kernels.h - the internal table of per-ISA microkernels, and what the ISA files share.
 *
 * Each isa_*.c file holds only innermost loops; blocking, threading and the overall pipeline live
 * once in the portable drivers (act_quant.c, gemm.c, weights.c, lut.c, q4.c), argument checks in
 * dispatch.c (q4.c for the int4 head), the choice of table in cpu_features.c. A NULL entry means
 * "use the portable C version" (the plain loops of ref.c / weights.c / lut.c / q4.c). */
#ifndef BITLINEAR_CPU_KERNELS_H
#define BITLINEAR_CPU_KERNELS_H

#include "../bitlinear.h"

#define BL_MAX_MR 4 /* rows of x per tile */
#define BL_MAX_NR 4 /* packed weight rows per tile */

/* out[i * ldo + j] = sum_k code(w_j, k) * x_i[k] for i < mr, j < nr, over nblk blocks of 128,
 * with code = w + 1 in {0,1,2} (the caller subtracts rowsum). x_i = x + i * ldq (int8, padded
 * with zeros to whole blocks), w_j = w + j * rb (packed rows). Kernels may read whole blocks. */
typedef void (*bl_tile_fn)(const int8_t *x, int64_t ldq, const uint8_t *w, int64_t rb,
                           int64_t nblk, int32_t *out, int64_t ldo);

/* Largest |x| of a row of K values (NaN if any is NaN; the NaN's bits do not matter). */
typedef float (*bl_amax_fn)(const void *x, bl_dtype dt, int64_t K);

/* q[k] = clamp(rint(x[k] / s), -128, 127) for k < K (float32 division), zeros up to Kp;
 * a non-finite s gives all zeros. Returns the sum of q. Same bits as bl_quantize_row_ref. */
typedef int32_t (*bl_quant_row_fn)(const void *x, bl_dtype dt, int64_t K, float s, int8_t *q,
                                   int64_t Kp);

/* y[n] = (float)(acc[n] - rowsum) * (sx * ws[n]) + bias[n] for n < N, rounded to ydt
 * (ws[0] for every n if !per_channel; bias may be NULL). Same bits as bl_epilogue_row. */
typedef void (*bl_epi_row_fn)(const int32_t *acc, int64_t N, int32_t rowsum, float sx,
                              const float *ws, int per_channel, const float *bias, void *y,
                              bl_dtype ydt);

/* Packs one weight row: codes clamp(rint(w[k] / s), -1, 1) + 1 (float32 division), padding
 * code 1, in the v1 layout. Same bytes as bl_pack_row. w is finite. */
typedef void (*bl_pack_row_fn)(const float *w, int64_t K, float s, uint8_t *out);

/* Decode layout (bitlinear.h, "CPU decode layout"). The tables of one token: 3 * C groups
 * (C = bl_lut_cols(K)) of 32 int16, T[32 g + i] = sum_t (digit_t(i) - 1) * x[3 g + t] for i < 27
 * (digit_t: base-3 digit t), 0 for i >= 27, with x[k] = 0 for k >= K. */
typedef void (*bl_lut_tables_fn)(const int8_t *x, int64_t K, int64_t C, int16_t *T);
/* For m < mr (1 or 2) tokens with tables T + m * tl: out[m * ldo + 32 i + l] (i < nt <=
 * BL_LUT_SUPER_TILES, l < 32) = sum over the C columns c of the three entries
 * T[m * tl + 96 c + 32 j + i_j] of the word w[c * cstride + 32 i + l] (cstride: words from one
 * column of the tiles to the next). Exact in int32. */
typedef void (*bl_lut_gemv_fn)(const uint16_t *w, int64_t C, int64_t cstride, int nt, int mr,
                               const int16_t *T, int64_t tl, int32_t *out, int64_t ldo);
static inline int64_t bl_lut_cols(int64_t K) { return (K + BL_LUT_COL_K - 1) / BL_LUT_COL_K; }
static inline int64_t bl_lut_tiles(int64_t N) { return (N + BL_LUT_TILE_ROWS - 1) / BL_LUT_TILE_ROWS; }
/* Word offset in the decode layout of tile t's column 0 (of T tiles, C columns); its column c is
 * at + c * *cstride (the words of one column of its super-tile: 32 per tile there). */
static inline int64_t bl_lut_tile_base(int64_t t, int64_t C, int64_t T, int64_t *cstride) {
  const int64_t s = t / BL_LUT_SUPER_TILES, r = t % BL_LUT_SUPER_TILES;
  const int64_t left = T - s * BL_LUT_SUPER_TILES;
  *cstride = (left < BL_LUT_SUPER_TILES ? left : BL_LUT_SUPER_TILES) * BL_LUT_TILE_ROWS;
  return (s * BL_LUT_SUPER_TILES * C + r) * BL_LUT_TILE_ROWS;
}
/* int16 of one token's tables */
static inline int64_t bl_lut_table_len(int64_t K) { return 96 * bl_lut_cols(K); }
void bl_lut_tables_c(const int8_t *x, int64_t K, int64_t C, int16_t *T); /* lut.c: portable */
void bl_lut_gemv_c(const uint16_t *w, int64_t C, int64_t cstride, int nt, int mr,
                   const int16_t *T, int64_t tl, int32_t *out, int64_t ldo);

/* Int4 head (q4, bitlinear.h): for r < nr (1..BL_Q4_NR) weight rows w + r * rb (rb = Kg * G / 2
 * bytes) with their Kg scales ws + r * Kg, and t < mt (1..the table's q4_mt) tokens x + t * ldq
 * (int8, Kg * G values, zeros past K) with their lane corrections corr + t * ldc (Kg x 8 int32:
 * corr[8 g + l] = -8 * the sum of token t's x over the 8 k of lane l in each chunk of group g, the
 * offset of the unsigned nibbles u = q + 8; kernels that multiply signed q ignore it):
 * out[t * BL_Q4_NR + r] = r of bitlinear.h's q4 numerics (the eight lanes' fmaf over the groups,
 * then their fixed sum tree; before the multiply by s_x). Kernels may read whole chunks. */
#define BL_Q4_NR 4 /* weight rows per call: an activation load serves them all */
#define BL_Q4_MT 2 /* most tokens per call */
typedef void (*bl_q4_fn)(const uint8_t *w, int64_t rb, const float *ws, int64_t Kg, int64_t G,
                         const int8_t *x, int64_t ldq, const int32_t *corr, int64_t ldc, int nr,
                         int mt, float *out);
/* The portable C kernel (q4.c): any nr, mt <= BL_Q4_MT; the fallback of a table without one. */
void bl_q4_rows_c(const uint8_t *w, int64_t rb, const float *ws, int64_t Kg, int64_t G,
                  const int8_t *x, int64_t ldq, const int32_t *corr, int64_t ldc, int nr, int mt,
                  float *out);

typedef struct {
  int mr, nr;                              /* tile size used for full tiles */
  int nr1;                                 /* nr when M = 1 (GEMV); 0 means nr */
  bl_tile_fn tile[BL_MAX_MR][BL_MAX_NR];   /* tile[mr-1][nr-1], every mr <= .mr, nr <= .nr */
  bl_amax_fn amax;                         /* optional */
  bl_quant_row_fn quant_row;               /* optional */
  bl_epi_row_fn epi_row;                   /* optional */
  bl_pack_row_fn pack_row;                 /* optional */
  bl_lut_tables_fn lut_tables;             /* optional */
  bl_lut_gemv_fn lut_gemv;                 /* optional: NULL = no LUT kernel (portable C) */
  int lut_auto; /* 1: measured faster than the packed GEMV at M = 1, AUTO may use lut_gemv */
  bl_q4_fn q4;  /* optional: NULL = bl_q4_rows_c */
  int q4_mt;    /* tokens per q4 call, 1..BL_Q4_MT (0 means 1) */
} bl_cpu_kernels;

/* Forces inlining of the kernels' building blocks (the tile sizes must be constants in them). */
#define BL_INLINE static inline __attribute__((always_inline))

/* Fixed-size tiles for the table: an ISA file defines a tile body
 *   BL_INLINE void BODY(x, ldq, w, rb, nblk, out, ldo, const int MR, const int NR)
 * then instantiates tile_MRxNR for MR = 1..4 and NR = 1..NR_MAX (3 or 4) with
 * BL_DEF_TILES(BODY, NR_MAX) and stores them in its table with BL_SET_TILES(k, NR_MAX). */
#define BL_DEF_TILE(BODY, MR, NR)                                                            \
  static void tile_##MR##x##NR(const int8_t *x, int64_t ldq, const uint8_t *w, int64_t rb, \
                               int64_t nblk, int32_t *out, int64_t ldo) {                 \
    BODY(x, ldq, w, rb, nblk, out, ldo, MR, NR);                                            \
  }
#define BL_DEF_TILE_ROW3(BODY, MR) \
  BL_DEF_TILE(BODY, MR, 1) BL_DEF_TILE(BODY, MR, 2) BL_DEF_TILE(BODY, MR, 3)
#define BL_DEF_TILE_ROW4(BODY, MR) BL_DEF_TILE_ROW3(BODY, MR) BL_DEF_TILE(BODY, MR, 4)
#define BL_DEF_TILES(BODY, NR_MAX)                                                 \
  BL_DEF_TILE_ROW##NR_MAX(BODY, 1) BL_DEF_TILE_ROW##NR_MAX(BODY, 2)              \
  BL_DEF_TILE_ROW##NR_MAX(BODY, 3) BL_DEF_TILE_ROW##NR_MAX(BODY, 4)

#define BL_SET_TILE(k, MR, NR) ((k)->tile[(MR) - 1][(NR) - 1] = tile_##MR##x##NR)
#define BL_SET_TILE_ROW3(k, MR) \
  (BL_SET_TILE(k, MR, 1), BL_SET_TILE(k, MR, 2), BL_SET_TILE(k, MR, 3))
#define BL_SET_TILE_ROW4(k, MR) (BL_SET_TILE_ROW3(k, MR), BL_SET_TILE(k, MR, 4))
#define BL_SET_TILES(k, NR_MAX)                                                    \
  (BL_SET_TILE_ROW##NR_MAX(k, 1), BL_SET_TILE_ROW##NR_MAX(k, 2),                 \
   BL_SET_TILE_ROW##NR_MAX(k, 3), BL_SET_TILE_ROW##NR_MAX(k, 4))

/* Tables filled by each ISA file (only on the architecture that compiles it). */
#if defined(__x86_64__)
void bl_kernels_avx2(bl_cpu_kernels *k);
void bl_kernels_avxvnni(bl_cpu_kernels *k);     /* sets tiles and q4 only */
void bl_kernels_avx512vnni(bl_cpu_kernels *k);  /* sets tiles, LUT and q4 kernels only */
#endif
#if defined(__aarch64__)
void bl_kernels_neon_dot(bl_cpu_kernels *k);
#endif

/* The kernel table of a path (bl_isa), filled on first use and cached (cpu_features.c); every
 * entry NULL for BL_ISA_REF, and for an index out of range, the table of BL_ISA_REF. Hidden: a
 * direct call, as from within one file. */
__attribute__((visibility("hidden"))) const bl_cpu_kernels *bl_kernels_of(int isa);

/* The rule of the decode layout's options (lut_options.c): whether bl_linear_lut reads the layout
 * for M rows, given whether the path has a LUT kernel AUTO may use (one measured faster than the
 * packed GEMV). Inline: bl_linear_lut asks on every call. */
static inline int bl_lut_auto_kernel(const bl_cpu_kernels *kt) { return kt->lut_gemv && kt->lut_auto; }
static inline int bl_lut_chosen(int64_t M, int has_auto_kernel) {
  const int64_t mode = bl_cpu_get_option(BL_CPU_OPT_LUT);
  if (mode == BL_CPU_LUT_FORCE) return 1;
  return mode == BL_CPU_LUT_AUTO && has_auto_kernel && M <= bl_cpu_get_option(BL_CPU_OPT_LUT_MAX_M);
}

/* Portable drivers, running the given table. Arguments are already checked. act_quant.c: */
void bl_quantize_acts_k(const bl_cpu_kernels *kt, const void *x, bl_dtype dt, int64_t M,
                        int64_t K, int64_t ldx, float eps, int per_token, int8_t *xq,
                        int64_t ldq, float *scale, int32_t *rowsum, int nthreads);
/* gemm.c: */
void bl_gemm_acc_k(const bl_cpu_kernels *kt, const int8_t *xq, int64_t ldq,
                   const int32_t *rowsum, const uint8_t *packed, int64_t M, int64_t N,
                   int64_t K, int32_t *acc, int64_t ldacc, int nthreads);
/* GEMM + epilogue straight into y (no int32 matrix in between). */
/* bl_gemm_epi_k over N = the segments' rows, each segment's columns into its own output. */
void bl_gemm_segments_k(const bl_cpu_kernels *kt, const int8_t *xq, int64_t ldq,
                        const int32_t *rowsum, const float *xscale, const uint8_t *packed,
                        int64_t M, int64_t N, int64_t K, const bl_segment *segs, int nseg,
                        bl_dtype ydt, int nthreads);
void bl_gemm_epi_k(const bl_cpu_kernels *kt, const int8_t *xq, int64_t ldq,
                   const int32_t *rowsum, const float *xscale, const uint8_t *packed,
                   int64_t M, int64_t N, int64_t K, const float *wscale, int w_per_channel,
                   const float *bias, void *y, bl_dtype ydt, int64_t ldy, int nthreads);
/* Decode layout drivers: the tables of M rows of x_q (row stride ldq) into tabs (M tables of
 * bl_lut_table_len(K); lut.c), then the GEMV over them into acc (exact sums) or through the
 * epilogue into y (gemm.c). */
void bl_lut_tables_k(const bl_cpu_kernels *kt, const int8_t *xq, int64_t ldq, int64_t M,
                     int64_t K, int16_t *tabs);
void bl_lut_gemm_acc_k(const bl_cpu_kernels *kt, const int16_t *tabs, const uint8_t *lut,
                       int64_t M, int64_t N, int64_t K, int32_t *acc, int64_t ldacc, int nthreads);
void bl_lut_gemm_epi_k(const bl_cpu_kernels *kt, const int16_t *tabs, const uint8_t *lut,
                       int64_t M, int64_t N, int64_t K, const float *xscale, const float *wscale,
                       int w_per_channel, const float *bias, void *y, bl_dtype ydt, int64_t ldy,
                       int nthreads);
/* q4.c: bl_q4_linear on the table kt (arguments checked, M > 0; workspace as
 * bl_q4_linear_workspace_bytes). */
void bl_q4_linear_k(const bl_cpu_kernels *kt, const void *x, bl_dtype xdt, int64_t M, int64_t K,
                    int64_t ldx, const uint8_t *w4, const float *wscale, int64_t N, int64_t G,
                    const float *bias, float eps, void *y, bl_dtype ydt, int64_t ldy,
                    void *workspace, int nthreads);
/* weights.c: */
bl_status bl_quantize_weights_k(const bl_cpu_kernels *kt, const void *w, bl_dtype wdt, int64_t N,
                                int64_t K, int64_t ldw, float eps, int per_channel, float *scale,
                                uint8_t *packed, int nthreads);

#endif
