/* q4.c - the int4 grouped output head (bitlinear.h, "CPU int4 head (q4)"): sizes, argument checks,
 * the public entry point, the threaded driver (bl_q4_linear_k) and the portable C kernel.
 *
 * Driver: the activations are quantized per token as bl_quantize_acts does (the table's row
 * functions), with each token's lane corrections (kernels.h, bl_q4_fn); then each thread takes
 * one contiguous range of rows (one weight stream) and walks it in tiles of BL_Q4_NR rows; for
 * each tile the tokens run inner, so a tile's weights (BL_Q4_NR * K / 2 bytes) are read from
 * memory once and stay in L1 for the other tokens. Tokens go in blocks whose int8 rows fit L2
 * (Q4_TOKEN_BLOCK_BYTES). The kernel gives each row's r; r * s_x (+ bias) and the rounding to
 * y's dtype are done here, in plain C, for every path. */
#include "kernels.h"
#include "internal.h"

#include <math.h>

int64_t bl_q4_groups(int64_t K, int64_t G) {
  if (K < 1 || G < 64 || G % 64 != 0 || G > BL_Q4_MAX_GROUP) return 0;
  return K / G + (K % G != 0);
}

int64_t bl_q4_row_bytes(int64_t K, int64_t G) { return bl_q4_groups(K, G) * G / 2; }

size_t bl_q4_linear_workspace_bytes(int64_t M, int64_t K, int64_t G) {
  const int64_t Kg = bl_q4_groups(K, G);
  if (M < 0 || K > BL_MAX_K || Kg == 0) return 0;
  const size_t m = (size_t)M;
  return bl_align64(m * (size_t)(Kg * G)) + bl_align64(m * 4) + bl_align64(m * (size_t)Kg * 32);
}

bl_status bl_q4_check(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                      const uint8_t *w4, const float *wscale, int64_t N, int64_t G, float eps,
                      const void *y, bl_dtype ydt, int64_t ldy, const void *workspace) {
  if (M > 0 && (!x || !w4 || !wscale || !y || !workspace)) return BL_ERR_NULL;
  if (M < 0 || N < 1 || K < 1 || K > BL_MAX_K || bl_q4_groups(K, G) == 0) return BL_ERR_SIZE;
  if (!bl_dtype_ok(xdt) || !bl_dtype_ok(ydt) || bl_check_eps(eps) != BL_OK) return BL_ERR_ARG;
  bl_status st = bl_check_dims(M, K, ldx);
  if (st == BL_OK) st = bl_check_dims(M, N, ldy);
  return st;
}

bl_status bl_q4_linear(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                       const uint8_t *w4, const float *wscale, int64_t N, int64_t G,
                       const float *bias, float eps, void *y, bl_dtype ydt, int64_t ldy,
                       void *workspace, int nthreads) {
  const int isa = bl_isa_get();
  if (isa == BL_ISA_REF)
    return bl_q4_linear_ref(x, xdt, M, K, ldx, w4, wscale, N, G, bias, eps, y, ydt, ldy,
                            workspace, nthreads);
  bl_status st = bl_q4_check(x, xdt, M, K, ldx, w4, wscale, N, G, eps, y, ydt, ldy, workspace);
  if (st != BL_OK || M == 0) return st;
  bl_q4_linear_k(bl_kernels_of(isa), x, xdt, M, K, ldx, w4, wscale, N, G, bias, eps, y, ydt, ldy,
                 workspace, nthreads);
  return BL_OK;
}

/* ---------------------------------------------------------------- portable kernel */
void bl_q4_rows_c(const uint8_t *w, int64_t rb, const float *ws, int64_t Kg, int64_t G,
                  const int8_t *x, int64_t ldq, const int32_t *corr, int64_t ldc, int nr, int mt,
                  float *out) {
  (void)corr;
  (void)ldc;
  const int64_t cpg = G / 64;
  for (int t = 0; t < mt; t++)
    for (int r = 0; r < nr; r++) {
      const uint8_t *wr = w + r * rb;
      const int8_t *xt = x + t * ldq;
      float f[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t g = 0; g < Kg; g++) {
        int32_t p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t c = g * cpg; c < (g + 1) * cpg; c++) {
          const uint8_t *wc = wr + 32 * c;
          const int8_t *xc = xt + 64 * c;
          for (int j = 0; j < 32; j++)
            p[j / 4] += ((wc[j] & 15) - 8) * xc[j] + ((wc[j] >> 4) - 8) * xc[32 + j];
        }
        const float s = ws[r * Kg + g];
        for (int l = 0; l < 8; l++) f[l] = fmaf((float)p[l], s, f[l]);
      }
      out[t * BL_Q4_NR + r] = ((f[0] + f[4]) + (f[2] + f[6])) + ((f[1] + f[5]) + (f[3] + f[7]));
    }
}

/* ---------------------------------------------------------------- driver */
#define Q4_TOKEN_BLOCK_BYTES (256 * 1024) /* int8 activations of a token block (L2) */
#define Q4_ROW_ALIGN 16                   /* thread ranges start at multiples of 16 rows */
#define Q4_MIN_MACS_PER_THREAD (1 << 19)  /* as gemm.c: fewer threads for tiny products */

typedef struct {
  const bl_cpu_kernels *kt;
  const char *x;
  bl_dtype xdt, ydt;
  size_t xes;
  int64_t M, K, ldx, N, G, Kg, Kp4, rb, ldy, mb;
  const uint8_t *w4;
  const float *wscale, *bias;
  float eps;
  char *y;
  int8_t *xq;
  float *sx;
  int32_t *corr;
} q4_job;

/* Token m: x_q and s_x as bl_quantize_acts (per token), then the lane corrections. */
static void q4_token(const q4_job *j, int64_t m) {
  const bl_amax_fn amax = j->kt->amax ? j->kt->amax : bl_row_amax_ref;
  const bl_quant_row_fn quant = j->kt->quant_row ? j->kt->quant_row : bl_quantize_row_ref;
  const void *row = j->x + (size_t)(m * j->ldx) * j->xes;
  int8_t *q = j->xq + m * j->Kp4;
  j->sx[m] = bl_act_scale(amax(row, j->xdt, j->K), j->eps);
  quant(row, j->xdt, j->K, j->sx[m], q, j->Kp4);
  int32_t *corr = j->corr + m * j->Kg * 8;
  const int64_t cpg = j->G / 64;
  for (int64_t g = 0; g < j->Kg; g++) {
    int32_t s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t c = g * cpg; c < (g + 1) * cpg; c++)
      for (int b = 0; b < 64; b++) s[(b & 31) >> 2] += q[64 * c + b];
    for (int l = 0; l < 8; l++) corr[8 * g + l] = -8 * s[l];
  }
}

/* y[m, n] from the kernel's r: r * s_x (+ bias), NaN for a non-finite s_x. */
static inline void q4_store(const q4_job *j, int64_t m, int64_t n, float r) {
  const float sx = j->sx[m];
  float v = NAN;
  if (isfinite(sx)) {
    v = r * sx;
    if (j->bias) v = v + j->bias[n];
  }
  if (j->ydt == BL_F32)
    ((float *)j->y)[m * j->ldy + n] = v;
  else
    bl_store_f(j->y, j->ydt, m * j->ldy + n, v);
}

/* Rows [n0, n1) for every token: tiles of rows outer, tokens inner (in blocks of mb). */
static void q4_rows(const q4_job *j, int64_t n0, int64_t n1) {
  const bl_q4_fn fn = j->kt->q4 ? j->kt->q4 : bl_q4_rows_c;
  const int mt = !j->kt->q4 ? BL_Q4_MT : j->kt->q4_mt > 1 ? j->kt->q4_mt : 1;
  const int64_t ldc = j->Kg * 8;
  float out[BL_Q4_MT * BL_Q4_NR];
  for (int64_t m0 = 0; m0 < j->M; m0 += j->mb) {
    const int64_t m1 = m0 + j->mb < j->M ? m0 + j->mb : j->M;
    for (int64_t n = n0; n < n1; n += BL_Q4_NR) {
      const int nr = (int)(n1 - n < BL_Q4_NR ? n1 - n : BL_Q4_NR);
      const uint8_t *w = j->w4 + n * j->rb;
      const float *ws = j->wscale + n * j->Kg;
      for (int64_t m = m0; m < m1; m += mt) {
        const int t_n = (int)(m1 - m < mt ? m1 - m : mt);
        fn(w, j->rb, ws, j->Kg, j->G, j->xq + m * j->Kp4, j->Kp4, j->corr + m * ldc, ldc, nr, t_n,
           out);
        for (int t = 0; t < t_n; t++)
          for (int r = 0; r < nr; r++) q4_store(j, m + t, n + r, out[t * BL_Q4_NR + r]);
      }
    }
  }
}

/* Thread t of nt: rows [t N / nt, (t + 1) N / nt), the inner boundaries rounded down to
 * Q4_ROW_ALIGN. */
static int64_t q4_bound(int64_t N, int t, int nt) {
  if (t >= nt) return N;
  return N * t / nt / Q4_ROW_ALIGN * Q4_ROW_ALIGN; /* N <= 2^40: no overflow */
}

void bl_q4_linear_k(const bl_cpu_kernels *kt, const void *x, bl_dtype xdt, int64_t M, int64_t K,
                    int64_t ldx, const uint8_t *w4, const float *wscale, int64_t N, int64_t G,
                    const float *bias, float eps, void *y, bl_dtype ydt, int64_t ldy,
                    void *workspace, int nthreads) {
  q4_job j;
  j.kt = kt;
  j.x = (const char *)x;
  j.xdt = xdt;
  j.ydt = ydt;
  j.xes = bl_dtype_bytes(xdt);
  j.M = M;
  j.K = K;
  j.ldx = ldx;
  j.N = N;
  j.G = G;
  j.Kg = bl_q4_groups(K, G);
  j.Kp4 = j.Kg * G;
  j.rb = j.Kp4 / 2;
  j.ldy = ldy;
  j.w4 = w4;
  j.wscale = wscale;
  j.bias = bias;
  j.eps = eps;
  j.y = (char *)y;
  bl_q4_carve(workspace, M, j.Kg, G, &j.xq, &j.sx, &j.corr);
  j.mb = Q4_TOKEN_BLOCK_BYTES / j.Kp4;
  if (j.mb < BL_Q4_MT) j.mb = BL_Q4_MT;
  /* threads: at most one per Q4_ROW_ALIGN rows, none for a tiny product */
  int nt = bl_nthreads(nthreads);
  const int64_t units = (N + Q4_ROW_ALIGN - 1) / Q4_ROW_ALIGN;
  if (nt > units) nt = (int)units;
  const double macs = (double)M * (double)N * (double)K;
  while (nt > 1 && macs < (double)nt * Q4_MIN_MACS_PER_THREAD) nt--;
  bl_region r;
  if (bl_region_begin(&r, nt) == 1) {
    for (int64_t m = 0; m < M; m++) q4_token(&j, m);
    q4_rows(&j, 0, N);
    return;
  }
#pragma omp parallel num_threads(r.nt)
  {
    bl_region_thread th;
    bl_region_enter(&r, &th);
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; m++) q4_token(&j, m);
    const int t = omp_get_thread_num(), n_t = omp_get_num_threads();
    q4_rows(&j, q4_bound(N, t, n_t), q4_bound(N, t + 1, n_t));
    bl_region_leave(&r, &th);
  }
  bl_region_end(&r);
}
