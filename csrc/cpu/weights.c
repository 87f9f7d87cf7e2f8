/* weights.c - weight side of the CPU core: the packed format (bl_pack_row, bl_unpack_weights),
 * the float64 row sums behind the weight scales, and the portable driver of bl_quantize_weights
 * for the SIMD paths (a kernel table may supply the row packing loop). */
#include "kernels.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- packed format */
void bl_pack_row(const float *w, int64_t K, float s, uint8_t *out) {
  int64_t nb = bl_padded_k(K) / BL_QK;
  memset(out, 0, (size_t)nb * BL_BLOCK_BYTES);
  for (int64_t k = 0; k < nb * BL_QK; k++) {
    uint8_t c = k < K ? (uint8_t)((int)bl_ternary(w[k], s) + 1) : BL_CODE_ZERO;
    int64_t b = k / BL_QK, r = k % BL_QK;
    out[b * BL_BLOCK_BYTES + (r % 32)] |= (uint8_t)(c << (2 * (r / 32)));
  }
}

/* Codes of row `p` (rb bytes) minus 1 into v[0..Kp): one shift, mask and min per block quarter,
 * so the compiler vectorises it. The invalid code 3 reads as 2 (weight +1), as in every kernel. */
static void decode_row(const uint8_t *p, int64_t rb, int8_t *v) {
  for (int64_t b = 0; b < rb / BL_BLOCK_BYTES; b++)
    for (int s = 0; s < 4; s++)
      for (int j = 0; j < BL_BLOCK_BYTES; j++) {
        const uint8_t c = (uint8_t)((p[b * BL_BLOCK_BYTES + j] >> (2 * s)) & 3);
        v[b * BL_QK + 32 * s + j] = (int8_t)((c < 2 ? c : 2) - 1);
      }
}

bl_status bl_unpack_weights(const uint8_t *packed, int64_t N, int64_t K, int8_t *wq, int64_t ldq) {
  return bl_unpack_weights_f(packed, N, K, wq, BL_I8, ldq, 1);
}

/* Parallel over rows once there is enough work for a second thread. */
bl_status bl_unpack_weights_f(const uint8_t *packed, int64_t N, int64_t K, void *out, bl_dtype dt,
                              int64_t ldo, int nthreads) {
  bl_status st = bl_check_matrix(packed && out, N, K, ldo);
  if (st != BL_OK) return st;
  if (dt != BL_I8 && !bl_dtype_ok(dt)) return BL_ERR_ARG;
  const int64_t rb = bl_packed_row_bytes(K), Kp = bl_padded_k(K);
  bl_region r;
  bl_region_begin(&r, (double)N * (double)K >= 262144.0 ? bl_nthreads(nthreads) : 1);
  int alloc_failed = 0;
#pragma omp parallel num_threads(r.nt)
  {
    bl_region_thread th;
    bl_region_enter(&r, &th);
    int8_t *v = (int8_t *)malloc((size_t)Kp);
    if (!v) {
#pragma omp atomic write
      alloc_failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      if (!v) continue;
      decode_row(packed + n * rb, rb, v);
      switch (dt) {
        case BL_F32: {
          float *o = (float *)out + n * ldo;
          for (int64_t k = 0; k < K; k++) o[k] = (float)v[k];
        } break;
        case BL_F16: case BL_BF16: { /* +-1 in half: 0x3c00, bfloat16: 0x3f80; sign bit 15 */
          const uint16_t one = dt == BL_F16 ? 0x3c00u : 0x3f80u;
          uint16_t *o = (uint16_t *)out + n * ldo;
          for (int64_t k = 0; k < K; k++)
            o[k] = (uint16_t)(v[k] ? (one | (v[k] < 0 ? 0x8000u : 0u)) : 0u);
        } break;
        default: memcpy((int8_t *)out + n * ldo, v, (size_t)K); break;
      }
    }
    free(v);
    bl_region_leave(&r, &th);
  }
  bl_region_end(&r);
  return alloc_failed ? BL_ERR_ALLOC : BL_OK;
}

/* ---------------------------------------------------------------- scales */
double bl_sum_abs_f64(const float *w, int64_t K) {
  double lane[32] = {0};
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) /* independent lanes: vectorises without reordering any lane */
    for (int j = 0; j < 32; j++) lane[j] += fabs((double)w[k + j]);
  for (int j = 0; k + j < K; j++) lane[j] += fabs((double)w[k + j]);
  for (int h = 16; h > 0; h /= 2)
    for (int j = 0; j < h; j++) lane[j] += lane[j + h];
  return lane[0];
}

double bl_sum_rows_f64(const double *sums, int64_t N) {
  double part[256] = {0};
  for (int64_t i = 0; i < N; i++) part[i % 256] += sums[i];
  for (int h = 128; h > 0; h /= 2)
    for (int t = 0; t < h; t++) part[t] += part[t + h];
  return part[0];
}

/* ---------------------------------------------------------------- driver */
/* The same numbers as bl_quantize_weights_ref: the same float64 sums (bl_sum_abs_f64 per row, the
 * rows in parallel; bl_sum_rows_f64 for the per-tensor total). A non-finite weight makes
 * its row sum Inf or NaN (|w| >= 0, and finite floats cannot overflow a double sum), so its scale
 * is NaN and the rows it scales pack to zero weights. */
bl_status bl_quantize_weights_k(const bl_cpu_kernels *kt, const void *w, bl_dtype wdt, int64_t N,
                                int64_t K, int64_t ldw, float eps, int per_channel, float *scale,
                                uint8_t *packed, int nthreads) {
  /* a fork/join costs more than a small layer's weights */
  bl_region r;
  bl_region_begin(&r, (double)N * (double)K >= 65536.0 ? bl_nthreads(nthreads) : 1);
  const int64_t rb = bl_packed_row_bytes(K);
  bl_pack_row_fn pack = kt->pack_row ? kt->pack_row : bl_pack_row;
  double *sums = (double *)malloc((size_t)N * sizeof(double));
  if (!sums) return BL_ERR_ALLOC;
  int failed = 0;
#pragma omp parallel num_threads(r.nt)
  {
    bl_region_thread th;
    bl_region_enter(&r, &th); /* the caller's FP mode for the sums, the scales and the packing */
    float *row = wdt == BL_F32 ? NULL : (float *)malloc((size_t)K * sizeof(float));
    const int ok = wdt == BL_F32 || row;
    if (!ok) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++)
      if (ok) sums[n] = bl_sum_abs_f64(bl_row_f32(w, wdt, ldw, n, K, row), K);
#pragma omp single
    {
      if (per_channel)
        for (int64_t n = 0; n < N; n++) scale[n] = bl_weight_scale(sums[n] / (double)K, eps);
      else
        scale[0] = bl_weight_scale(bl_sum_rows_f64(sums, N) / ((double)N * (double)K), eps);
    } /* implicit barrier: every thread sees the scales */
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      const float s = scale[per_channel ? n : 0];
      if (!ok) continue;
      if (isfinite(s))
        pack(bl_row_f32(w, wdt, ldw, n, K, row), K, s, packed + n * rb);
      else
        memset(packed + n * rb, BL_ZERO_CODES_BYTE, (size_t)rb);
    }
    free(row);
    bl_region_leave(&r, &th);
  }
  bl_region_end(&r);
  free(sums);
  return failed ? BL_ERR_ALLOC : BL_OK;
}
