/* ref.c - the plain portable C ground truth of every CPU entry point (the *_ref functions of
 * bitlinear.h) and of the row functions a kernel table may replace (internal.h).
 * Written for clarity, not speed: every SIMD and CUDA path is tested against it. */
#include "../bitlinear.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- weights */
/* The weight scale(s) from the float64 sums of |w| (bl_sum_abs_f64 per row, bl_sum_rows_f64 over
 * rows for the per-tensor scale), at least eps; NaN where a sum is not finite. Then the rows,
 * packed; rows whose scale is NaN (non-finite weights) pack to zero weights. */
bl_status bl_quantize_weights_ref(const void *w, bl_dtype wdt, int64_t N, int64_t K, int64_t ldw,
                                  float eps, int per_channel, float *scale, uint8_t *packed,
                                  int nthreads) {
  (void)nthreads;
  bl_status st = bl_check_matrix(w && scale && packed, N, K, ldw);
  if (st != BL_OK) return st;
  if (!bl_dtype_ok(wdt) || bl_check_eps(eps) != BL_OK) return BL_ERR_ARG;
  double *sums = (double *)malloc((size_t)N * sizeof(double));
  float *row = (float *)malloc((size_t)K * sizeof(float));
  if (!sums || !row) {
    free(sums);
    free(row);
    return BL_ERR_ALLOC;
  }
  for (int64_t n = 0; n < N; n++) sums[n] = bl_sum_abs_f64(bl_row_f32(w, wdt, ldw, n, K, row), K);
  if (per_channel)
    for (int64_t n = 0; n < N; n++) scale[n] = bl_weight_scale(sums[n] / (double)K, eps);
  else
    scale[0] = bl_weight_scale(bl_sum_rows_f64(sums, N) / ((double)N * (double)K), eps);
  const int64_t rb = bl_packed_row_bytes(K);
  for (int64_t n = 0; n < N; n++) {
    const float s = scale[per_channel ? n : 0];
    if (isfinite(s))
      bl_pack_row(bl_row_f32(w, wdt, ldw, n, K, row), K, s, packed + n * rb);
    else
      memset(packed + n * rb, BL_ZERO_CODES_BYTE, (size_t)rb);
  }
  free(sums);
  free(row);
  return BL_OK;
}

/* ---------------------------------------------------------------- activations */
/* torch.clamp propagates NaN; fmaxf would not. */
float bl_act_scale(float amax, float eps) { return bl_clamp_min_nan(amax, eps) / 127.0f; }

/* Quantize one row with a given scale; a non-finite scale gives zeros (the epilogue
 * turns the row into NaN). Returns the sum of the codes. */
int32_t bl_quantize_row_ref(const void *x, bl_dtype dt, int64_t K, float s, int8_t *q, int64_t Kp) {
  int32_t sum = 0;
  int finite = isfinite(s);
  for (int64_t k = 0; k < K; k++) {
    float v = finite ? rintf(bl_load_f(x, dt, k) / s) : 0.0f;
    if (v > 127.0f) v = 127.0f;
    if (v < -128.0f) v = -128.0f;
    if (v != v) v = 0.0f; /* unreachable for a finite scale; keeps the cast defined */
    q[k] = (int8_t)v;
    sum += q[k];
  }
  for (int64_t k = K; k < Kp; k++) q[k] = 0;
  return sum;
}

/* amax with NaN propagation, as torch.amax */
float bl_row_amax_ref(const void *x, bl_dtype dt, int64_t K) {
  float m = 0.0f;
  for (int64_t k = 0; k < K; k++) {
    float v = fabsf(bl_load_f(x, dt, k));
    if (v != v) return v;
    if (v > m) m = v;
  }
  return m;
}

bl_status bl_quantize_acts_ref(const void *x, bl_dtype dt, int64_t M, int64_t K, int64_t ldx,
                               float eps, int per_token, int8_t *xq, int64_t ldq, float *scale,
                               int32_t *rowsum, int nthreads) {
  bl_status st = bl_check_acts(x, dt, M, K, ldx, xq, ldq, scale, eps);
  if (st != BL_OK || M == 0) return st;
  const size_t es = dt == BL_F32 ? 4 : 2;
  const int64_t Kp = bl_padded_k(K);
  if (!per_token) {
    float m = 0.0f;
    for (int64_t i = 0; i < M; i++) {
      float r = bl_row_amax_ref((const char *)x + (size_t)(i * ldx) * es, dt, K);
      if (r != r || r > m) m = r;
      if (m != m) break;
    }
    float s = bl_act_scale(m, eps);
    for (int64_t i = 0; i < M; i++) scale[i] = s;
  }
  bl_region r; /* the governor's thread count, the caller's FP mode (internal.h) */
  bl_region_begin(&r, bl_nthreads(nthreads));
#pragma omp parallel num_threads(r.nt)
  {
    bl_region_thread th;
    bl_region_enter(&r, &th);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < M; i++) {
      const void *row = (const char *)x + (size_t)(i * ldx) * es;
      if (per_token) scale[i] = bl_act_scale(bl_row_amax_ref(row, dt, K), eps);
      int32_t s = bl_quantize_row_ref(row, dt, K, scale[i], xq + i * ldq, Kp);
      if (rowsum) rowsum[i] = s;
    }
    bl_region_leave(&r, &th);
  }
  bl_region_end(&r);
  return BL_OK;
}

/* ---------------------------------------------------------------- GEMM */
bl_status bl_gemm_acc_ref(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M,
                          int64_t N, int64_t K, int32_t *acc, int64_t ldacc, int nthreads) {
  bl_status st = bl_check_gemm(xq, ldq, packed, M, N, K, acc, ldacc);
  if (st != BL_OK || M == 0) return st;
  const int64_t rb = bl_packed_row_bytes(K), nb = bl_padded_k(K) / BL_QK;
  bl_region r;
  bl_region_begin(&r, bl_nthreads(nthreads));
#pragma omp parallel num_threads(r.nt)
  {
    bl_region_thread th;
    bl_region_enter(&r, &th);
#pragma omp for collapse(2) schedule(static)
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        const int8_t *x = xq + m * ldq;
        const uint8_t *w = packed + n * rb;
        int32_t s = 0;
        for (int64_t b = 0; b < nb; b++)
          for (int j = 0; j < 32; j++) {
            uint8_t byte = w[b * BL_BLOCK_BYTES + j];
            for (int g = 0; g < 4; g++) {
              const int c = (byte >> (2 * g)) & 3; /* the invalid code 3 reads as 2 (weight +1) */
              s += (int32_t)x[b * BL_QK + 32 * g + j] * ((c < 2 ? c : 2) - 1);
            }
          }
        acc[m * ldacc + n] = s;
      }
    bl_region_leave(&r, &th);
  }
  bl_region_end(&r);
  return BL_OK;
}

/* ---------------------------------------------------------------- epilogue */
bl_status bl_epilogue_ref(const int32_t *acc, int64_t ldacc, int64_t M, int64_t N,
                          const float *xscale, const float *wscale, int w_per_channel,
                          const float *bias, void *y, bl_dtype ydt, int64_t ldy, int nthreads) {
  if (M > 0 && (!acc || !xscale || !wscale || !y)) return BL_ERR_NULL;
  if (!bl_dtype_ok(ydt)) return BL_ERR_ARG;
  if (bl_check_dims(M, N, ldacc) != BL_OK || bl_check_dims(M, N, ldy) != BL_OK)
    return BL_ERR_STRIDE;
  bl_region r;
  bl_region_begin(&r, bl_nthreads(nthreads));
#pragma omp parallel num_threads(r.nt)
  {
    bl_region_thread th;
    bl_region_enter(&r, &th);
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; m++) {
      bl_epilogue_row(acc + m * ldacc, N, xscale[m], wscale, w_per_channel, bias, y, ydt,
                      m * ldy);
    }
    bl_region_leave(&r, &th);
  }
  bl_region_end(&r);
  return BL_OK;
}

void bl_epilogue_row(const int32_t *acc, int64_t N, float sx, const float *wscale,
                     int w_per_channel, const float *bias, void *y, bl_dtype ydt, int64_t off) {
  const int finite = isfinite(sx);
  for (int64_t n = 0; n < N; n++) {
    float v;
    if (!finite) {
      v = NAN;
    } else {
      float s = sx * wscale[w_per_channel ? n : 0];
      v = (float)acc[n] * s;
      if (bias) v = v + bias[n];
    }
    bl_store_f(y, ydt, off + n, v);
  }
}

/* ---------------------------------------------------------------- int4 head (q4) */
/* bitlinear.h, "CPU int4 head (q4)", written out: the activations as bl_quantize_acts_ref
 * quantizes them per token (zeros up to Kp4), then per token and row the eight float32 lanes, one
 * fmaf per group, the fixed sum tree, the multiply by s_x and the bias add. Threads split the
 * rows; every output is computed by one thread in the same order. */
bl_status bl_q4_linear_ref(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                           const uint8_t *w4, const float *wscale, int64_t N, int64_t G,
                           const float *bias, float eps, void *y, bl_dtype ydt, int64_t ldy,
                           void *workspace, int nthreads) {
  bl_status st = bl_q4_check(x, xdt, M, K, ldx, w4, wscale, N, G, eps, y, ydt, ldy, workspace);
  if (st != BL_OK || M == 0) return st;
  const int64_t Kg = bl_q4_groups(K, G), Kp4 = Kg * G, rb = bl_q4_row_bytes(K, G);
  const size_t es = xdt == BL_F32 ? 4 : 2;
  int8_t *xq;
  float *sx;
  int32_t *corr;
  bl_q4_carve(workspace, M, Kg, G, &xq, &sx, &corr);
  bl_region r;
  bl_region_begin(&r, bl_nthreads(nthreads));
#pragma omp parallel num_threads(r.nt)
  {
    bl_region_thread th;
    bl_region_enter(&r, &th);
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; m++) {
      const void *row = (const char *)x + (size_t)(m * ldx) * es;
      sx[m] = bl_act_scale(bl_row_amax_ref(row, xdt, K), eps);
      bl_quantize_row_ref(row, xdt, K, sx[m], xq + m * Kp4, Kp4);
    }
#pragma omp for collapse(2) schedule(static)
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) {
        const int8_t *xm = xq + m * Kp4;
        const uint8_t *wn = w4 + n * rb;
        float f[8];
        for (int l = 0; l < 8; l++) f[l] = 0.0f;
        for (int64_t g = 0; g < Kg; g++) {
          int32_t p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
          for (int64_t c = g * (G / 64); c < (g + 1) * (G / 64); c++)
            for (int l = 0; l < 8; l++)
              for (int i = 0; i < 4; i++) {
                const int j = 4 * l + i;
                const uint8_t b = wn[32 * c + j];
                const int q_lo = (b & 15) - 8, q_hi = (b >> 4) - 8; /* k = 64c + j, 64c + 32 + j */
                p[l] += q_lo * xm[64 * c + j] + q_hi * xm[64 * c + 32 + j];
              }
          const float s = wscale[n * Kg + g];
          for (int l = 0; l < 8; l++) f[l] = fmaf((float)p[l], s, f[l]);
        }
        const float sum = ((f[0] + f[4]) + (f[2] + f[6])) + ((f[1] + f[5]) + (f[3] + f[7]));
        float v = NAN;
        if (isfinite(sx[m])) {
          v = sum * sx[m];
          if (bias) v = v + bias[n];
        }
        bl_store_f(y, ydt, m * ldy + n, v);
      }
    bl_region_leave(&r, &th);
  }
  bl_region_end(&r);
  return BL_OK;
}
