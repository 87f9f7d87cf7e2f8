/* lut.c - the decode layout (bitlinear.h, "CPU decode layout"): its size, the repack from the
 * packed format, and the portable table and GEMV loops (what an ISA without a LUT kernel runs, and
 * what the SIMD kernels are tested against). Plain C. */
#include "internal.h"
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

size_t bl_lut_bytes(int64_t N, int64_t K) {
  if (N < 1 || K < 1 || K > BL_MAX_K || N > ((int64_t)1 << 40)) return 0;
  return (size_t)bl_lut_tiles(N) * (size_t)bl_lut_cols(K) * (size_t)(2 * BL_LUT_TILE_ROWS);
}

/* Codes of one packed row as bytes 0..2 (code 3 reads as 2), then code 1 up to 9 * C. */
static void row_codes(const uint8_t *row, int64_t K, int64_t len, uint8_t *codes) {
  const int64_t nblk = bl_padded_k(K) / BL_QK;
  for (int64_t b = 0; b < nblk; b++) {
    const uint8_t *blk = row + b * BL_BLOCK_BYTES;
    uint8_t *c = codes + b * BL_QK;
    for (int s = 0; s < 4; s++)
      for (int j = 0; j < BL_BLOCK_BYTES; j++) {
        const uint8_t v = (uint8_t)((blk[j] >> (2 * s)) & 3);
        c[32 * s + j] = v > 2 ? 2 : v;
      }
  }
  for (int64_t k = K; k < len; k++) codes[k] = BL_CODE_ZERO; /* K..Kp: the padding codes, and on */
}

/* The word of column c of a row's codes. */
static inline uint16_t lut_word(const uint8_t *codes, int64_t c) {
  const uint8_t *q = codes + BL_LUT_COL_K * c;
  unsigned w = 0;
  for (int j = 0; j < 3; j++) w |= (unsigned)(q[3 * j] + 3 * q[3 * j + 1] + 9 * q[3 * j + 2]) << (5 * j);
  return (uint16_t)w;
}

bl_status bl_lut_pack(const uint8_t *packed, int64_t N, int64_t K, uint8_t *lut, int nthreads) {
  if (!packed || !lut) return BL_ERR_NULL;
  if (bl_lut_bytes(N, K) == 0) return BL_ERR_SIZE;
  const int64_t C = bl_lut_cols(K), T = bl_lut_tiles(N), rb = bl_packed_row_bytes(K);
  const int64_t len = BL_LUT_COL_K * C > bl_padded_k(K) ? BL_LUT_COL_K * C : bl_padded_k(K);
  uint16_t *out = (uint16_t *)lut;
  bl_region r;
  bl_region_begin(&r, (double)N * (double)K >= 1048576.0 ? bl_nthreads(nthreads) : 1);
  int failed = 0;
#pragma omp parallel num_threads(r.nt) reduction(| : failed)
  {
    bl_region_thread th;
    bl_region_enter(&r, &th);
    uint8_t *codes = (uint8_t *)malloc((size_t)len);
    if (!codes) {
      failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++) {
      if (!codes) continue;
      int64_t cs;
      uint16_t *base = out + bl_lut_tile_base(t, C, T, &cs);
      for (int l = 0; l < BL_LUT_TILE_ROWS; l++) {
        const int64_t n = t * BL_LUT_TILE_ROWS + l;
        if (n < N) {
          row_codes(packed + n * rb, K, len, codes);
          for (int64_t c = 0; c < C; c++) base[c * cs + l] = lut_word(codes, c);
        } else {
          for (int64_t c = 0; c < C; c++) base[c * cs + l] = 13 * (1 + 32 + 1024); /* zeros */
        }
      }
    }
    free(codes);
    bl_region_leave(&r, &th);
  }
  bl_region_end(&r);
  return failed ? BL_ERR_ALLOC : BL_OK;
}

void bl_lut_tables_c(const int8_t *x, int64_t K, int64_t C, int16_t *T) {
  for (int64_t g = 0; g < 3 * C; g++) {
    int v[3];
    for (int t = 0; t < 3; t++) v[t] = 3 * g + t < K ? x[3 * g + t] : 0;
    int16_t *tg = T + 32 * g;
    for (int i = 0; i < 32; i++)
      tg[i] = i < 27 ? (int16_t)((i % 3 - 1) * v[0] + (i / 3 % 3 - 1) * v[1] + (i / 9 - 1) * v[2])
                     : 0;
  }
}

void bl_lut_gemv_c(const uint16_t *w, int64_t C, int64_t cstride, int nt, int mr,
                   const int16_t *T, int64_t tl, int32_t *out, int64_t ldo) {
  for (int m = 0; m < mr; m++) {
    int32_t *o = out + m * ldo;
    const int16_t *Tm = T + m * tl;
    for (int i = 0; i < nt * BL_LUT_TILE_ROWS; i++) o[i] = 0;
    for (int64_t c = 0; c < C; c++) {
      const uint16_t *wc = w + c * cstride;
      const int16_t *tc = Tm + 96 * c;
      for (int i = 0; i < nt * BL_LUT_TILE_ROWS; i++) {
        const unsigned v = wc[i];
        o[i] += tc[v & 31] + tc[32 + ((v >> 5) & 31)] + tc[64 + ((v >> 10) & 31)];
      }
    }
  }
}

/* The tables of M tokens (rows of x_q, row stride ldq) with the table's kernel, else the loop
 * above. */
void bl_lut_tables_k(const bl_cpu_kernels *kt, const int8_t *xq, int64_t ldq, int64_t M,
                     int64_t K, int16_t *tabs) {
  const bl_lut_tables_fn f = kt->lut_tables ? kt->lut_tables : bl_lut_tables_c;
  for (int64_t m = 0; m < M; m++) f(xq + m * ldq, K, bl_lut_cols(K), tabs + m * bl_lut_table_len(K));
}
