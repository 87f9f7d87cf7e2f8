/* gemm.c - the GEMM driver shared by every SIMD path: the blocked, threaded GEMM over the packed
 * weights (or, for decode, over their LUT layout, lut.c), each finished tile going to an int32
 * matrix or through the fused epilogue into y (one output, or the segments of
 * bl_linear_segments). The innermost loops come from a bl_cpu_kernels table (kernels.h);
 * everything here is plain C. */
#include "kernels.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NB_MAX 256               /* widest weight panel (columns of y) per task */
/* Up to this many rows of x, a thread takes one contiguous range of panels (schedule static: its
 * weights are one contiguous stream, which the tiles prefetch ahead of, simd_x86.h); above, panels
 * are dealt out one at a time (schedule dynamic). Threads share at most one output cache line
 * (where their ranges meet), written once. */
#define STREAM_MAX_M 4
#define MB_ROWS 64               /* rows of x per task */
#define PANEL_BYTES (192 * 1024) /* packed weight panel kept in L2 */

/* ---------------------------------------------------------------- GEMM */
static int32_t row_sum_i8(const int8_t *q, int64_t n) {
  int32_t s = 0;
  for (int64_t k = 0; k < n; k++) s += q[k];
  return s;
}

static inline int32_t sub_wrap(int32_t a, int32_t b) { return (int32_t)((uint32_t)a - (uint32_t)b); }

/* Where a finished tile goes: an int32 matrix, or the epilogue into y. */
typedef struct {
  const int32_t *rowsum;
  int32_t *acc;
  int64_t ldacc;
  const float *xscale, *wscale, *bias;
  int w_per_channel;
  void *y;
  bl_dtype ydt;
  int64_t ldy;
  /* segments (bl_linear_segments): columns [start_s, start_s + n_s) go to segment s's scale,
   * bias and output instead of the fields above; NULL: one output */
  const bl_segment *segs;
  int nseg;
} sink;

typedef struct {
  const bl_cpu_kernels *kt;
  const int8_t *xq;
  int64_t ldq;
  const uint8_t *packed;
  int64_t rb, nblk, M, N;
  int64_t nb, mb, tasks_n, tasks_m;
  int nr; /* columns per tile */
  /* decode layout (LUT): packed is then the layout, tasks_n ranges of its 32-row tiles */
  const int16_t *tabs; /* M tables of bl_lut_table_len(K) int16; NULL: the packed format */
  int64_t cols, tiles;
  int64_t K;
} plan;

static void plan_tasks(plan *p, int nthreads) {
  const int nr = p->M == 1 && p->kt->nr1 ? p->kt->nr1 : p->kt->nr, mr = p->kt->mr;
  p->nr = nr;
  int64_t nb = PANEL_BYTES / p->rb;
  if (nb > NB_MAX) nb = NB_MAX;
  /* at least one panel per thread, so both cores work even at M = 1 */
  int64_t per_thread = (p->N + nthreads - 1) / nthreads;
  if (nb > per_thread) nb = per_thread;
  nb = nb / nr * nr;
  if (nb < nr) nb = nr;
  p->nb = nb;
  p->mb = MB_ROWS / mr * mr;
  p->tasks_n = (p->N + nb - 1) / nb;
  p->tasks_m = (p->M + p->mb - 1) / p->mb;
  /* Small M (schedule static, one contiguous range of tasks per thread): a task count that the
   * threads share evenly, each task an equal share of the nr-column tiles (run_task). With whole
   * nb panels, a 2560 x 6912 layer split 12 / 11 panels and its call waited on the bigger half. */
  const int64_t tiles = (p->N + nr - 1) / nr;
  if (p->M <= STREAM_MAX_M && nthreads > 1) {
    const int64_t t = (p->tasks_n + nthreads - 1) / nthreads * nthreads;
    if (t <= tiles) p->tasks_n = t;
  }
}

/* Columns [*n0, *n1) of n-task tn: an even share of the nr-column tiles, at most nb columns
 * (tasks_n >= ceil(N / nb) and nb is a multiple of nr). */
static inline void task_cols(const plan *p, int64_t tn, int64_t *n0, int64_t *n1) {
  const int64_t tiles = (p->N + p->nr - 1) / p->nr;
  const int64_t a = tn * tiles / p->tasks_n * p->nr, b = (tn + 1) * tiles / p->tasks_n * p->nr;
  *n0 = a;
  *n1 = b < p->N ? b : p->N;
}

static void sink_row_one(const plan *p, const sink *o, int64_t row, int64_t n0, int64_t n1,
                         const int32_t *b, int32_t rs);

/* One finished row chunk of output row `row`, columns [n0, n1): b holds the sums (minus rs). */
static void sink_row(const plan *p, const sink *o, int64_t row, int64_t n0, int64_t n1,
                     const int32_t *b, int32_t rs) {
  if (!o->segs) {
    sink_row_one(p, o, row, n0, n1, b, rs);
    return;
  }
  /* the chunk's pieces in each segment, with that segment's scale, bias and output */
  int64_t start = 0;
  for (int s = 0; s < o->nseg && start < n1; s++) {
    const bl_segment *g = &o->segs[s];
    const int64_t end = start + g->n;
    const int64_t a = n0 > start ? n0 : start, e = n1 < end ? n1 : end;
    if (a < e) {
      sink one = *o;
      one.segs = NULL;
      one.wscale = g->wscale;
      one.w_per_channel = g->w_per_channel;
      one.bias = g->bias;
      one.y = g->y;
      one.ldy = g->ldy;
      sink_row_one(p, &one, row, a - start, e - start, b + (a - n0), rs);
    }
    start = end;
  }
}

static void sink_row_one(const plan *p, const sink *o, int64_t row, int64_t n0, int64_t n1,
                         const int32_t *b, int32_t rs) {
  const size_t es = bl_dtype_bytes(o->ydt);
  if (o->acc) {
    int32_t *a = o->acc + row * o->ldacc + n0;
    for (int64_t j = 0; j < n1 - n0; j++) a[j] = sub_wrap(b[j], rs);
    return;
  }
  const float *ws = o->w_per_channel ? o->wscale + n0 : o->wscale;
  const float *bias = o->bias ? o->bias + n0 : NULL;
  void *y = (char *)o->y + (size_t)(row * o->ldy + n0) * es;
  if (p->kt->epi_row) {
    p->kt->epi_row(b, n1 - n0, rs, o->xscale[row], ws, o->w_per_channel, bias, y, o->ydt);
  } else {
    int32_t tmp[NB_MAX];
    for (int64_t j = 0; j < n1 - n0; j++) tmp[j] = sub_wrap(b[j], rs);
    bl_epilogue_row(tmp, n1 - n0, o->xscale[row], ws, o->w_per_channel, bias, y, o->ydt, 0);
  }
}

/* Decode layout: task t is the t-th of tasks_n contiguous ranges of 32-row tiles, walked one
 * super-tile piece (<= 16 tiles, one kernel call per token) at a time. The tables give signed
 * sums directly (no row sum to subtract). */
static void run_task_lut(const plan *p, const sink *o, int64_t t) {
  const int64_t T = p->tiles, C = p->cols, tl = bl_lut_table_len(p->K);
  const int64_t t0 = t * T / p->tasks_n, t1 = (t + 1) * T / p->tasks_n;
  const bl_lut_gemv_fn gemv = p->kt->lut_gemv ? p->kt->lut_gemv : bl_lut_gemv_c;
  const uint16_t *lut = (const uint16_t *)p->packed;
  int32_t buf[2 * BL_LUT_SUPER_TILES * BL_LUT_TILE_ROWS];
  const int64_t ldb = BL_LUT_SUPER_TILES * BL_LUT_TILE_ROWS;
  for (int64_t a = t0; a < t1;) {
    /* the piece of [a, t1) inside a's super-tile */
    int64_t cs;
    const uint16_t *w = lut + bl_lut_tile_base(a, C, T, &cs);
    const int64_t end = (a / BL_LUT_SUPER_TILES + 1) * BL_LUT_SUPER_TILES;
    const int64_t b = t1 < end ? t1 : end;
    const int64_t n0 = a * BL_LUT_TILE_ROWS;
    const int64_t n1 = b * BL_LUT_TILE_ROWS < p->N ? b * BL_LUT_TILE_ROWS : p->N;
    for (int64_t m = 0; m < p->M; m += 2) { /* tokens in pairs: one weight read for both */
      const int mr = p->M - m >= 2 ? 2 : 1;
      gemv(w, C, cs, (int)(b - a), mr, p->tabs + m * tl, tl, buf, ldb);
      for (int i = 0; i < mr; i++)
        for (int64_t j0 = n0; j0 < n1; j0 += NB_MAX) /* the sink takes up to NB_MAX columns */
          sink_row(p, o, m + i, j0, j0 + NB_MAX < n1 ? j0 + NB_MAX : n1,
                   buf + i * ldb + (j0 - n0), 0);
    }
    a = b;
  }
}

static void run_task(const plan *p, const sink *o, int64_t t) {
  if (p->tabs) {
    run_task_lut(p, o, t);
    return;
  }
  /* n-panel outer: a thread keeps its weight panel in L2 across its row chunks */
  const int64_t tn = t / p->tasks_m, tm = t % p->tasks_m;
  int64_t n0, n1;
  task_cols(p, tn, &n0, &n1);
  const int64_t m0 = tm * p->mb, m1 = m0 + p->mb < p->M ? m0 + p->mb : p->M;
  const int mr = p->kt->mr, nr = p->nr;
  const int64_t Kp = p->nblk * BL_QK;
  int32_t buf[BL_MAX_MR * NB_MAX];
  for (int64_t m = m0; m < m1; m += mr) {
    const int mm = (int)(m1 - m < mr ? m1 - m : mr);
    for (int64_t n = n0; n < n1; n += nr) {
      const int nn = (int)(n1 - n < nr ? n1 - n : nr);
      p->kt->tile[mm - 1][nn - 1](p->xq + m * p->ldq, p->ldq, p->packed + n * p->rb, p->rb,
                                  p->nblk, buf + (n - n0), NB_MAX);
    }
    for (int i = 0; i < mm; i++) {
      const int64_t row = m + i;
      const int32_t rs = o->rowsum ? o->rowsum[row] : row_sum_i8(p->xq + row * p->ldq, Kp);
      sink_row(p, o, row, n0, n1, buf + i * NB_MAX, rs);
    }
  }
}

/* Fewer threads for tiny products: a fork/join costs about as much as this many MACs. */
#define MIN_MACS_PER_THREAD (1 << 19)

static void run_plan(const plan *p, const sink *o, int nthreads) {
  const int64_t tasks = p->tasks_n * p->tasks_m;
  const double macs = (double)p->M * (double)p->N * (double)p->K;
  int nt = tasks < nthreads ? (int)tasks : nthreads;
  while (nt > 1 && macs < (double)nt * MIN_MACS_PER_THREAD) nt--;
  bl_region r;
  if (bl_region_begin(&r, nt) == 1) {
    for (int64_t t = 0; t < tasks; t++) run_task(p, o, t);
    return;
  }
  /* dynamic: a thread the OS delays holds up only the task it is on; small M: static, one
   * contiguous weight stream per thread (a delayed thread is the oversubscription logic's job) */
#pragma omp parallel num_threads(r.nt)
  {
    bl_region_thread th;
    bl_region_enter(&r, &th);
    if (p->M <= STREAM_MAX_M || p->tabs) {
#pragma omp for schedule(static) nowait
      for (int64_t t = 0; t < tasks; t++) run_task(p, o, t);
    } else {
#pragma omp for schedule(dynamic, 1) nowait
      for (int64_t t = 0; t < tasks; t++) run_task(p, o, t);
    }
    bl_region_leave(&r, &th);
  }
  bl_region_end(&r);
}

static void make_plan(plan *p, const bl_cpu_kernels *kt, const int8_t *xq, int64_t ldq,
                      const uint8_t *packed, int64_t M, int64_t N, int64_t K, int nthreads) {
  p->kt = kt;
  p->xq = xq;
  p->ldq = ldq;
  p->packed = packed;
  p->rb = bl_packed_row_bytes(K);
  p->nblk = bl_padded_k(K) / BL_QK;
  p->K = K;
  p->M = M;
  p->N = N;
  p->tabs = NULL;
  plan_tasks(p, nthreads);
}

/* ---------------------------------------------------------------- decode layout (LUT) */
/* One contiguous range of tiles per thread (the weights stream as in the packed GEMV above). */
static void make_lut_plan(plan *p, const bl_cpu_kernels *kt, const int16_t *tabs,
                          const uint8_t *lut, int64_t M, int64_t N, int64_t K, int nthreads) {
  memset(p, 0, sizeof(*p));
  p->kt = kt;
  p->packed = lut;
  p->tabs = tabs;
  p->M = M;
  p->N = N;
  p->K = K;
  p->cols = bl_lut_cols(K);
  p->tiles = bl_lut_tiles(N);
  p->tasks_n = p->tiles < nthreads ? p->tiles : nthreads;
  p->tasks_m = 1;
}

void bl_lut_gemm_acc_k(const bl_cpu_kernels *kt, const int16_t *tabs, const uint8_t *lut,
                       int64_t M, int64_t N, int64_t K, int32_t *acc, int64_t ldacc, int nthreads) {
  plan p;
  nthreads = bl_nthreads(nthreads);
  make_lut_plan(&p, kt, tabs, lut, M, N, K, nthreads);
  sink o = {NULL, acc, ldacc, NULL, NULL, NULL, 0, NULL, BL_F32, 0, NULL, 0};
  run_plan(&p, &o, nthreads);
}

void bl_lut_gemm_epi_k(const bl_cpu_kernels *kt, const int16_t *tabs, const uint8_t *lut,
                       int64_t M, int64_t N, int64_t K, const float *xscale, const float *wscale,
                       int w_per_channel, const float *bias, void *y, bl_dtype ydt, int64_t ldy,
                       int nthreads) {
  plan p;
  nthreads = bl_nthreads(nthreads);
  make_lut_plan(&p, kt, tabs, lut, M, N, K, nthreads);
  sink o = {NULL, NULL, 0, xscale, wscale, bias, w_per_channel, y, ydt, ldy, NULL, 0};
  run_plan(&p, &o, nthreads);
}

void bl_gemm_segments_k(const bl_cpu_kernels *kt, const int8_t *xq, int64_t ldq,
                        const int32_t *rowsum, const float *xscale, const uint8_t *packed,
                        int64_t M, int64_t N, int64_t K, const bl_segment *segs, int nseg,
                        bl_dtype ydt, int nthreads) {
  plan p;
  nthreads = bl_nthreads(nthreads);
  make_plan(&p, kt, xq, ldq, packed, M, N, K, nthreads);
  sink o = {rowsum, NULL, 0, xscale, NULL, NULL, 0, NULL, ydt, 0, segs, nseg};
  run_plan(&p, &o, nthreads);
}

void bl_gemm_acc_k(const bl_cpu_kernels *kt, const int8_t *xq, int64_t ldq,
                   const int32_t *rowsum, const uint8_t *packed, int64_t M, int64_t N,
                   int64_t K, int32_t *acc, int64_t ldacc, int nthreads) {
  plan p;
  nthreads = bl_nthreads(nthreads);
  make_plan(&p, kt, xq, ldq, packed, M, N, K, nthreads);
  sink o = {rowsum, acc, ldacc, NULL, NULL, NULL, 0, NULL, BL_F32, 0, NULL, 0};
  run_plan(&p, &o, nthreads);
}

void bl_gemm_epi_k(const bl_cpu_kernels *kt, const int8_t *xq, int64_t ldq,
                   const int32_t *rowsum, const float *xscale, const uint8_t *packed,
                   int64_t M, int64_t N, int64_t K, const float *wscale, int w_per_channel,
                   const float *bias, void *y, bl_dtype ydt, int64_t ldy, int nthreads) {
  plan p;
  nthreads = bl_nthreads(nthreads);
  make_plan(&p, kt, xq, ldq, packed, M, N, K, nthreads);
  sink o = {rowsum, NULL, 0, xscale, wscale, bias, w_per_channel, y, ydt, ldy, NULL, 0};
  run_plan(&p, &o, nthreads);
}
