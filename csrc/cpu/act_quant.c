/* act_quant.c - activation quantization (bl_quantize_acts_k): per token, or per tensor with one
 * deterministic reduction of the row maxima, threaded over rows. The row loops come from a
 * bl_cpu_kernels table (kernels.h), else ref.c's; everything here is plain C. */
#include "kernels.h"
#include "internal.h"

typedef struct {
  const char *x;
  bl_dtype dt;
  size_t es;
  int64_t K, Kp, ldx, ldq;
  float eps;
  int8_t *xq;
  float *scale;
  int32_t *rowsum;
  bl_amax_fn amax;
  bl_quant_row_fn quant;
} act_job;

static inline const void *act_row(const act_job *j, int64_t i) {
  return j->x + (size_t)(i * j->ldx) * j->es;
}

/* per token: absmax, then quantize + row sum while the row is in cache */
static inline void act_token_row(const act_job *j, int64_t i) {
  const void *row = act_row(j, i);
  j->scale[i] = bl_act_scale(j->amax(row, j->dt, j->K), j->eps);
  int32_t s = j->quant(row, j->dt, j->K, j->scale[i], j->xq + i * j->ldq, j->Kp);
  if (j->rowsum) j->rowsum[i] = s;
}

static inline void act_amax_row(const act_job *j, int64_t i) {
  j->scale[i] = j->amax(act_row(j, i), j->dt, j->K);
}

static inline void act_tensor_row(const act_job *j, int64_t i, float s_all) {
  j->scale[i] = s_all;
  int32_t s = j->quant(act_row(j, i), j->dt, j->K, s_all, j->xq + i * j->ldq, j->Kp);
  if (j->rowsum) j->rowsum[i] = s;
}

/* The largest of M row maxima; NaN if any is NaN (one order on every path). */
static float max_of_row_maxima(const float *r, int64_t M) {
  float m = 0.0f;
  for (int64_t i = 0; i < M; i++) {
    if (r[i] != r[i] || r[i] > m) m = r[i];
    if (m != m) break;
  }
  return m;
}

void bl_quantize_acts_k(const bl_cpu_kernels *kt, const void *x, bl_dtype dt, int64_t M,
                        int64_t K, int64_t ldx, float eps, int per_token, int8_t *xq,
                        int64_t ldq, float *scale, int32_t *rowsum, int nthreads) {
  const act_job j = {(const char *)x, dt, bl_dtype_bytes(dt), K, bl_padded_k(K), ldx, ldq, eps, xq,
                     scale, rowsum, kt->amax ? kt->amax : bl_row_amax_ref,
                     kt->quant_row ? kt->quant_row : bl_quantize_row_ref};
  /* A fork/join costs more than quantizing a few short rows; one thread runs no parallel region
   * at all (entering one with a single thread still costs libgomp's team setup, about a
   * microsecond: the whole of a small layer's decode call). */
  const int want = M > 1 && (double)M * (double)K >= 65536.0 ? bl_nthreads(nthreads) : 1;
  bl_region r;
  if (per_token) {
    if (bl_region_begin(&r, want) > 1) {
#pragma omp parallel num_threads(r.nt)
      {
        bl_region_thread th;
        bl_region_enter(&r, &th);
#pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < M; i++) act_token_row(&j, i);
        bl_region_leave(&r, &th);
      }
      bl_region_end(&r);
    } else {
      for (int64_t i = 0; i < M; i++) act_token_row(&j, i);
    }
    return;
  }
  /* per tensor: row maxima in parallel (scale[] is the scratch), one deterministic reduction on
   * the caller's thread, then the rows: one region, one governor decision */
  if (bl_region_begin(&r, want) > 1) {
    float s_all = 0.0f;
#pragma omp parallel num_threads(r.nt)
    {
      bl_region_thread th;
      bl_region_enter(&r, &th);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < M; i++) act_amax_row(&j, i);
#pragma omp master
      s_all = bl_act_scale(max_of_row_maxima(scale, M), eps);
#pragma omp barrier
#pragma omp for schedule(static) nowait
      for (int64_t i = 0; i < M; i++) act_tensor_row(&j, i, s_all);
      bl_region_leave(&r, &th);
    }
    bl_region_end(&r);
  } else {
    for (int64_t i = 0; i < M; i++) act_amax_row(&j, i);
    const float s_all = bl_act_scale(max_of_row_maxima(scale, M), eps);
    for (int64_t i = 0; i < M; i++) act_tensor_row(&j, i, s_all);
  }
}
