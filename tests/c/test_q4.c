/* test_q4.c - the int4 head (bitlinear.h, "CPU int4 head (q4)").
 *
 * The plain C reference bl_q4_linear_ref against
 *   - the numerics re-derived here from bitlinear.h's definition, indexed by k rather than by chunk
 *     (the nibble and the lane of each k, the activation quantization written out): bit for bit;
 *   - a float64 sum of the dequantized weights times the quantized activations, the weights packed
 *     here from known int4 values and scales (so a misread format cannot cancel out): within the
 *     float32 rounding of the sum.
 * Then every path (paths.h: each ISA this CPU supports, or with -DBL_EMU the SIMDe-emulated VNNI
 * tables) and the portable C kernel (a table without a q4 kernel, through the internal driver)
 * against the reference, bit for bit, outputs and the gaps between rows (untouched): odd shapes,
 * every group size, random weight bytes (every nibble), scales of both signs and zero, with and
 * without bias, float32 / float16 / bfloat16 in and out, ldx > K and ldy > N, 1 and 2 threads, a
 * NaN or Inf in a token (that row all NaN, the others as without it). Then every error status, on
 * the reference and each ISA. A fresh seed per run (printed; BL_TEST_SEED repeats it). --small:
 * smaller shapes (qemu, sanitizers). Ends with "N passed, N failed". */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "paths.h"

#include "harness.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int small;
static bl_cpu_kernels portable; /* every entry NULL: bl_q4_rows_c and ref.c's row functions */

static void *xmalloc(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n ? n : 1)) { printf("out of memory\n"); exit(2); }
  return p;
}
static size_t esz(bl_dtype d) { return d == BL_F32 ? 4 : 2; }
static const char *dtn(bl_dtype d) { return d == BL_F32 ? "f32" : d == BL_F16 ? "f16" : "bf16"; }
static float get_v(const void *p, bl_dtype dt, int64_t i) {
  return dt == BL_F32 ? ((const float *)p)[i]
         : dt == BL_F16 ? bl_f16_to_f32(((const uint16_t *)p)[i])
                        : bl_bf16_to_f32(((const uint16_t *)p)[i]);
}
static void set_v(void *p, bl_dtype dt, int64_t i, float v) {
  if (dt == BL_F32) ((float *)p)[i] = v;
  else if (dt == BL_F16) ((uint16_t *)p)[i] = bl_f32_to_f16(v);
  else ((uint16_t *)p)[i] = bl_f32_to_bf16(v);
}
/* bytes of rows x cols with leading dimension ld: the exact span (ASan sees one element too far) */
static size_t span(int64_t rows, int64_t cols, int64_t ld, size_t es) {
  return rows ? (size_t)((rows - 1) * ld + cols) * es : 0;
}

/* ---------------------------------------------------------------- the format, by k */
/* q of row n at k: chunk k / 64, byte 32 (k / 64) + k % 32, low nibble for k % 64 < 32 */
static int get_q(const uint8_t *w, int64_t rb, int64_t n, int64_t k) {
  const uint8_t b = w[n * rb + 32 * (k / 64) + k % 32];
  return (k % 64 < 32 ? b & 15 : b >> 4) - 8;
}
static void put_q(uint8_t *w, int64_t rb, int64_t n, int64_t k, int q) {
  uint8_t *b = &w[n * rb + 32 * (k / 64) + k % 32];
  if (k % 64 < 32) *b = (uint8_t)((*b & 0xf0) | (q + 8));
  else *b = (uint8_t)((*b & 0x0f) | ((q + 8) << 4));
}

/* Token m's x_q (Kp4 values, zeros past K) and s_x from the definition: s = max(amax|x|, eps) / 127
 * (NaN / Inf in x: not finite), x_q = clamp(rint(x / s), -128, 127). */
static float spec_acts(const void *x, bl_dtype dt, int64_t ldx, int64_t m, int64_t K, int64_t Kp4,
                       float eps, int8_t *q) {
  float amax = 0.0f;
  int finite = 1;
  for (int64_t k = 0; k < K; k++) {
    const float v = get_v(x, dt, m * ldx + k);
    if (!isfinite(v)) finite = 0;
    else if (fabsf(v) > amax) amax = fabsf(v);
  }
  const float s = finite ? (amax > eps ? amax : eps) / 127.0f : NAN;
  for (int64_t k = 0; k < Kp4; k++) {
    float v = k < K && finite ? rintf(get_v(x, dt, m * ldx + k) / s) : 0.0f;
    v = v > 127.0f ? 127.0f : v < -128.0f ? -128.0f : v;
    q[k] = (int8_t)v;
  }
  return s;
}

/* y from bitlinear.h's numerics, by k: lane (k % 32) / 4 of group k / G. */
static void spec_q4(const void *x, bl_dtype xdt, int64_t M, int64_t K, int64_t ldx,
                    const uint8_t *w, const float *ws, int64_t N, int64_t G, const float *bias,
                    float eps, void *y, bl_dtype ydt, int64_t ldy) {
  const int64_t Kg = (K + G - 1) / G, Kp4 = Kg * G, rb = Kp4 / 2;
  int8_t *q = xmalloc((size_t)Kp4);
  for (int64_t m = 0; m < M; m++) {
    const float sx = spec_acts(x, xdt, ldx, m, K, Kp4, eps, q);
    for (int64_t n = 0; n < N; n++) {
      float f[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t g = 0; g < Kg; g++) {
        int32_t p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t k = g * G; k < (g + 1) * G; k++) p[(k % 32) / 4] += get_q(w, rb, n, k) * q[k];
        for (int l = 0; l < 8; l++) f[l] = fmaf((float)p[l], ws[n * Kg + g], f[l]);
      }
      float v = ((f[0] + f[4]) + (f[2] + f[6])) + ((f[1] + f[5]) + (f[3] + f[7]));
      v = v * sx;
      if (bias) v = v + bias[n];
      set_v(y, ydt, m * ldy + n, isfinite(sx) ? v : NAN);
    }
  }
  free(q);
}

/* ---------------------------------------------------------------- one case on every path */
typedef struct {
  int64_t M, N, K, G, ldx, ldy;
  bl_dtype xdt, ydt;
  int bias;  /* 0: none */
  int wmode; /* weight bytes: 0 random; 1 all 0x00 (q = -8); 2 all 0xff (q = 7); 3 0x08 / 0x80 */
  int xmode; /* activations: 0 uniform; 1 tiny (1e-3); 2 large (3e4); 3 a few large, most tiny;
              * 4 all +-1.5 (every |x_q| 127) */
  int bad;   /* 1: NaN in one token, 2: +Inf, 3: -Inf */
  int smode; /* scales: 0 random of both signs with zeros; 1 powers of two */
} q4case;

static void fill_case(const q4case *c, void *x, uint8_t *w, float *ws, float *bias) {
  const int64_t Kg = bl_q4_groups(c->K, c->G), rb = bl_q4_row_bytes(c->K, c->G);
  for (int64_t i = 0; i < c->M * c->ldx; i++) {
    float v = frand() * 4.0f;
    if (c->xmode == 1) v *= 2.5e-4f;
    if (c->xmode == 2) v *= 7.5e3f;
    if (c->xmode == 3 && irand(50)) v *= 1e-3f;
    if (c->xmode == 4) v = irand(2) ? 1.5f : -1.5f;
    if (i % c->ldx >= c->K) v = NAN; /* gaps between rows: never read */
    if (i < (c->M - 1) * c->ldx + c->K) set_v(x, c->xdt, i, v);
  }
  for (int64_t i = 0; i < c->N * rb; i++)
    w[i] = c->wmode == 0 ? (uint8_t)rnd() : c->wmode == 1 ? 0x00 : c->wmode == 2 ? 0xff
           : (irand(2) ? 0x08 : 0x80);
  for (int64_t i = 0; i < c->N * Kg; i++) {
    float s = c->smode ? ldexpf(1.0f, irand(12) - 10) : frand() * 0.05f;
    if (!c->smode && irand(16) == 0) s = 0.0f;
    ws[i] = irand(2) ? s : -s;
  }
  for (int64_t n = 0; bias && n < c->N; n++) bias[n] = frand() * 2.0f;
}

static void run_case(q4case c) {
  const int64_t M = c.M, N = c.N, K = c.K, G = c.G, Kg = bl_q4_groups(K, G);
  const int64_t rb = bl_q4_row_bytes(K, G);
  const size_t xb = span(M, K, c.ldx, esz(c.xdt)), yb = span(M, N, c.ldy, esz(c.ydt));
  const size_t wsb = bl_q4_linear_workspace_bytes(M, K, G);
  void *x = xmalloc((size_t)(M * c.ldx) * esz(c.xdt));
  uint8_t *w = xmalloc((size_t)(N * rb));
  float *ws = xmalloc((size_t)(N * Kg) * 4), *bias = c.bias ? xmalloc((size_t)N * 4) : NULL;
  fill_case(&c, x, w, ws, bias);
  const int64_t bad_m = irand((int)M);
  void *x_clean = NULL;
  if (c.bad) { /* the clean copy first: the other rows must not change */
    x_clean = xmalloc(xb);
    memcpy(x_clean, x, xb);
    set_v(x, c.xdt, bad_m * c.ldx + irand((int)K), c.bad == 1 ? NAN : c.bad == 2 ? INFINITY : -INFINITY);
  }
  void *y_ref = xmalloc(yb), *y = xmalloc(yb), *y_spec = xmalloc(yb), *wsp = xmalloc(wsb);
  memset(y_ref, 0x5a, yb);
  memset(y_spec, 0x5a, yb);
  memset(wsp, 0xcd, wsb);
  char what[256];
  snprintf(what, sizeof(what),
           "M=%lld N=%lld K=%lld G=%lld ldx=%lld ldy=%lld %s->%s bias=%d w=%d x=%d bad=%d s=%d",
           (long long)M, (long long)N, (long long)K, (long long)G, (long long)c.ldx, (long long)c.ldy,
           dtn(c.xdt), dtn(c.ydt), c.bias, c.wmode, c.xmode, c.bad, c.smode);
  bl_status st = bl_q4_linear_ref(x, c.xdt, M, K, c.ldx, w, ws, N, G, bias, 1e-5f, y_ref, c.ydt,
                                  c.ldy, wsp, 1);
  check(st == BL_OK, "ref q4_linear status %d, %s", st, what);
  spec_q4(x, c.xdt, M, K, c.ldx, w, ws, N, G, bias, 1e-5f, y_spec, c.ydt, c.ldy);
  check(!memcmp(y_ref, y_spec, yb), "ref q4_linear == the numerics by k, bit for bit, %s", what);
  memset(y, 0x5a, yb);
  memset(wsp, 0x3c, wsb);
  st = bl_q4_linear_ref(x, c.xdt, M, K, c.ldx, w, ws, N, G, bias, 1e-5f, y, c.ydt, c.ldy, wsp, 2);
  check(st == BL_OK && !memcmp(y, y_ref, yb), "ref q4_linear 2 threads == 1 thread, %s", what);
  if (c.bad) {
    int ok = 1;
    for (int64_t n = 0; n < N; n++) ok &= isnan(get_v(y_ref, c.ydt, bad_m * c.ldy + n));
    void *y_clean = xmalloc(yb);
    memset(y_clean, 0x5a, yb);
    st = bl_q4_linear_ref(x_clean, c.xdt, M, K, c.ldx, w, ws, N, G, bias, 1e-5f, y_clean, c.ydt,
                          c.ldy, wsp, 1);
    for (int64_t m = 0; m < M; m++)
      if (m != bad_m)
        ok &= !memcmp((char *)y_clean + (size_t)(m * c.ldy) * esz(c.ydt),
                      (char *)y_ref + (size_t)(m * c.ldy) * esz(c.ydt), (size_t)N * esz(c.ydt));
    check(st == BL_OK && ok,
          "ref q4_linear: the non-finite token's row all NaN, the others as without it, %s", what);
    free(y_clean);
  }
  /* every path, and the portable kernel, at 1 and 2 threads */
  for (int i = -1; i < tp_count; i++) {
    const tpath pp = {"portable kernel", BL_ISA_REF, &portable};
    const tpath *p = i < 0 ? &pp : &tp_list[i];
    for (int nt = 1; nt <= 2; nt++) {
      memset(y, 0x5a, yb);
      memset(wsp, nt == 1 ? 0xcd : 0x00, wsb);
      st = tp_q4_linear(p, x, c.xdt, M, K, c.ldx, w, ws, N, G, bias, 1e-5f, y, c.ydt, c.ldy, wsp, nt);
      int64_t first = -1;
      for (size_t b = 0; b < yb && first < 0; b++)
        if (((char *)y)[b] != ((char *)y_ref)[b]) first = (int64_t)(b / esz(c.ydt));
      check(st == BL_OK && first < 0, "%s q4_linear %d thread(s) == ref, %s%s", p->name, nt, what,
            first < 0 ? "" : " (first difference below)");
      if (first >= 0)
        printf("  y[%lld][%lld] = %a, ref %a\n", (long long)(first / c.ldy), (long long)(first % c.ldy),
               (double)get_v(y, c.ydt, first), (double)get_v(y_ref, c.ydt, first));
    }
  }
  free(x); free(x_clean); free(w); free(ws); free(bias); free(y_ref); free(y); free(y_spec); free(wsp);
}

/* ---------------------------------------------------------------- against float64 */
/* Weights packed here from known q and scales; y (float32) against sum_k q d x_q s_x in float64
 * (+ bias): the float32 path rounds once per group and lane (fmaf), 7 adds, the multiply and the
 * bias add, so |y - exact| <= (Kg + 10) 2^-24 sum_k |q d x_q| s_x (+ 2^-24 |bias|). */
static void test_float64(int64_t M, int64_t N, int64_t K, int64_t G, int with_bias, int wmode) {
  const int64_t Kg = bl_q4_groups(K, G), Kp4 = Kg * G, rb = bl_q4_row_bytes(K, G);
  float *x = xmalloc((size_t)(M * K) * 4), *ws = xmalloc((size_t)(N * Kg) * 4);
  float *bias = with_bias ? xmalloc((size_t)N * 4) : NULL, *y = xmalloc((size_t)(M * N) * 4);
  int8_t *q = xmalloc((size_t)(N * Kp4)), *xq = xmalloc((size_t)Kp4);
  uint8_t *w = xmalloc((size_t)(N * rb));
  void *wsp = xmalloc(bl_q4_linear_workspace_bytes(M, K, G));
  for (int64_t i = 0; i < M * K; i++) x[i] = frand() * 3.0f;
  memset(w, 0x77, (size_t)(N * rb)); /* every nibble is written below */
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < Kp4; k++) {
      int v = k >= K ? 0 : wmode == 1 ? (irand(2) ? -8 : 7) : irand(16) - 8;
      q[n * Kp4 + k] = (int8_t)v;
      put_q(w, rb, n, k, v);
    }
  for (int64_t i = 0; i < N * Kg; i++) ws[i] = frand() * 0.02f;
  for (int64_t n = 0; bias && n < N; n++) bias[n] = frand();
  bl_status st = bl_q4_linear_ref(x, BL_F32, M, K, K, w, ws, N, G, bias, 1e-5f, y, BL_F32, N, wsp, 1);
  double worst = 0.0;
  for (int64_t m = 0; m < M; m++) {
    const float sx = spec_acts(x, BL_F32, K, m, K, Kp4, 1e-5f, xq);
    for (int64_t n = 0; n < N; n++) {
      double sum = 0.0, mag = 0.0;
      for (int64_t k = 0; k < K; k++) {
        const double t = (double)q[n * Kp4 + k] * (double)ws[n * Kg + k / G] * (double)xq[k];
        sum += t;
        mag += fabs(t);
      }
      const double want = sum * sx + (bias ? bias[n] : 0.0);
      const double tol = (double)(Kg + 10) * 0x1p-24 * mag * sx +
                         0x1p-24 * (bias ? fabs(bias[n]) : 0.0) + 1e-30;
      const double err = fabs((double)y[m * N + n] - want) / tol;
      if (!(err <= worst)) worst = err; /* NaN: worst becomes NaN */
    }
  }
  check(st == BL_OK && worst <= 1.0,
        "ref q4_linear vs float64 M=%lld N=%lld K=%lld G=%lld bias=%d w=%d (worst error %.3g of the bound)",
        (long long)M, (long long)N, (long long)K, (long long)G, with_bias, wmode, worst);
  free(x); free(ws); free(bias); free(y); free(q); free(xq); free(w); free(wsp);
}

/* ---------------------------------------------------------------- sizes and statuses */
static void test_sizes(void) {
  int ok = bl_q4_groups(1, 64) == 1 && bl_q4_groups(64, 64) == 1 && bl_q4_groups(65, 64) == 2 &&
           bl_q4_groups(2560, 64) == 40 && bl_q4_groups(2560, 1024) == 3 &&
           bl_q4_groups(0, 64) == 0 && bl_q4_groups(-5, 64) == 0 && bl_q4_groups(10, 0) == 0 &&
           bl_q4_groups(10, 32) == 0 && bl_q4_groups(10, 96) == 0 && bl_q4_groups(10, 1088) == 0 &&
           bl_q4_groups(10, -64) == 0 && bl_q4_groups(INT64_MAX, 64) == INT64_MAX / 64 + 1;
  check(ok, "bl_q4_groups");
  ok = bl_q4_row_bytes(2560, 64) == 1280 && bl_q4_row_bytes(65, 64) == 64 &&
       bl_q4_row_bytes(1, 1024) == 512 && bl_q4_row_bytes(0, 64) == 0 && bl_q4_row_bytes(10, 100) == 0;
  check(ok, "bl_q4_row_bytes");
  ok = bl_q4_linear_workspace_bytes(1, 2560, 64) == 2560 + 64 + 40 * 32 &&
       bl_q4_linear_workspace_bytes(3, 65, 64) == 384 + 64 + 192 &&
       bl_q4_linear_workspace_bytes(0, 100, 64) == 0 && bl_q4_linear_workspace_bytes(-1, 100, 64) == 0 &&
       bl_q4_linear_workspace_bytes(1, 0, 64) == 0 &&
       bl_q4_linear_workspace_bytes(1, BL_MAX_K + 1, 64) == 0 &&
       bl_q4_linear_workspace_bytes(1, 100, 65) == 0;
  check(ok, "bl_q4_linear_workspace_bytes");
}

typedef bl_status (*q4_entry)(const void *, bl_dtype, int64_t, int64_t, int64_t, const uint8_t *,
                              const float *, int64_t, int64_t, const float *, float, void *,
                              bl_dtype, int64_t, void *, int);

/* Each bad argument alone on a good call (M = 2, N = 5, K = 100, G = 64): its status, y untouched;
 * isa < 0: bl_q4_linear_ref, else bl_q4_linear on that ISA. */
static void test_statuses(int isa) {
  const char *name = isa < 0 ? "ref" : bl_isa_name(isa);
  q4_entry fn = isa < 0 ? bl_q4_linear_ref : bl_q4_linear;
  if (isa >= 0) bl_isa_set(isa);
  enum { M = 2, N = 5, K = 100, G = 64, Kg = 2 };
  float x[M * K], ws[N * Kg], bias[N], y[M * N], y0[M * N];
  uint8_t w[N * 64];
  for (int i = 0; i < M * K; i++) x[i] = frand();
  for (int i = 0; i < N * 64; i++) w[i] = (uint8_t)rnd();
  for (int i = 0; i < N * Kg; i++) ws[i] = frand();
  for (int i = 0; i < N; i++) bias[i] = frand();
  void *wsp = xmalloc(bl_q4_linear_workspace_bytes(M, K, G) + 4096); /* room for K + 64 below */
  memset(y0, 0x5a, sizeof(y0));
  struct {
    const char *what;
    bl_status want;
    int k; /* which argument */
    int64_t v;
  } cases[] = {
      {"x NULL", BL_ERR_NULL, 0, 0},       {"w4 NULL", BL_ERR_NULL, 1, 0},
      {"wscale NULL", BL_ERR_NULL, 2, 0},  {"y NULL", BL_ERR_NULL, 3, 0},
      {"workspace NULL", BL_ERR_NULL, 4, 0}, {"M < 0", BL_ERR_SIZE, 5, -1},
      {"N = 0", BL_ERR_SIZE, 6, 0},        {"N < 0", BL_ERR_SIZE, 6, -3},
      {"N > 2^40", BL_ERR_SIZE, 6, ((int64_t)1 << 40) + 1},
      {"K = 0", BL_ERR_SIZE, 7, 0},        {"K < 0", BL_ERR_SIZE, 7, -100},
      {"K > BL_MAX_K", BL_ERR_SIZE, 7, BL_MAX_K + 1},
      {"G = 0", BL_ERR_SIZE, 8, 0},        {"G = 32", BL_ERR_SIZE, 8, 32},
      {"G = 96", BL_ERR_SIZE, 8, 96},      {"G = -64", BL_ERR_SIZE, 8, -64},
      {"G = 1088", BL_ERR_SIZE, 8, 1088},  {"G = 2048", BL_ERR_SIZE, 8, 2048},
      {"ldx < K", BL_ERR_STRIDE, 9, K - 1}, {"ldy < N", BL_ERR_STRIDE, 10, N - 1},
      {"xdt = I8", BL_ERR_ARG, 11, BL_I8}, {"xdt = 7", BL_ERR_ARG, 11, 7},
      {"ydt = I8", BL_ERR_ARG, 12, BL_I8}, {"ydt = -1", BL_ERR_ARG, 12, -1},
      {"eps = 0", BL_ERR_ARG, 13, 0},      {"eps = NaN", BL_ERR_ARG, 13, 1},
      {"eps = Inf", BL_ERR_ARG, 13, 2},    {"eps < BL_MIN_EPS", BL_ERR_ARG, 13, 3},
      {"M = 0 and NULL pointers", BL_OK, 14, 0},
      {"bias NULL", BL_OK, 15, 0},         {"good call", BL_OK, 99, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const int k = cases[i].k;
    const int64_t v = cases[i].v;
    static const float eps_v[] = {0.0f, NAN, INFINITY, 1e-40f};
    memcpy(y, y0, sizeof(y));
    const bl_status st =
        fn(k == 0 || k == 14 ? NULL : x, k == 11 ? (bl_dtype)v : BL_F32, k == 5 ? v : k == 14 ? 0 : M,
           k == 7 ? v : K, k == 9 ? v : K, k == 1 || k == 14 ? NULL : w, k == 2 || k == 14 ? NULL : ws,
           k == 6 ? v : N, k == 8 ? v : G, k == 15 ? NULL : bias, k == 13 ? eps_v[v] : 1e-5f,
           k == 3 || k == 14 ? NULL : y, k == 12 ? (bl_dtype)v : BL_F32, k == 10 ? v : N,
           k == 4 || k == 14 ? NULL : wsp, 2);
    const int untouched = !memcmp(y, y0, sizeof(y));
    check(st == cases[i].want && (st == BL_OK ? k == 14 ? untouched : !untouched : untouched),
          "%s q4_linear %s -> status %d (want %d), y %s", name, cases[i].what, st, cases[i].want,
          untouched ? "untouched" : "written");
  }
  free(wsp);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--small")) small = 1;
  const char *seed_env = getenv("BL_TEST_SEED");
  const uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10)
                                 : (uint64_t)time(NULL) * 1000003u + (uint64_t)getpid();
  rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
  printf("seed %llu (set BL_TEST_SEED to repeat)%s\n", (unsigned long long)seed, small ? ", small" : "");
  tp_init();
  printf("paths:");
  for (int i = 0; i < tp_count; i++) printf(" %s", tp_list[i].name);
  printf(" + the portable kernel\n");

  test_sizes();
  test_statuses(-1);
  for (int isa = 0; isa < BL_ISA_COUNT; isa++)
    if (bl_isa_supported(isa)) test_statuses(isa);

  static const int64_t Ks[] = {1, 3, 7, 63, 64, 65, 129, 1000, 2560};
  static const int64_t Ns[] = {1, 3, 7, 129, 1000};
  static const int64_t Ms[] = {1, 2, 3, 5, 17};
  static const int64_t Gs[] = {64, 128, 256, 1024};
  const double cap = small ? 1.5e6 : 5e7; /* M N Kp4 of one case */
#define NE(a) ((int)(sizeof(a) / sizeof(a[0])))
  /* every (K, N) pair with a drawn M, G and the rest; then every M and every G on drawn shapes */
  for (int a = 0; a < NE(Ks); a++)
    for (int b = 0; b < NE(Ns); b++) {
      q4case c = {Ms[irand(NE(Ms))], Ns[b], Ks[a], Gs[irand(NE(Gs))], 0, 0, (bl_dtype)irand(3),
                  (bl_dtype)irand(3), irand(2), irand(8) ? 0 : 1 + irand(3), irand(8) ? 0 : 1 + irand(3),
                  0, irand(6) == 0};
      while (c.M > 1 && (double)c.M * (double)c.N * (double)(c.K + c.G) > cap) c.M = c.M / 2;
      c.ldx = c.K + (irand(2) ? irand(9) : 0);
      c.ldy = c.N + (irand(2) ? irand(9) : 0);
      run_case(c);
    }
  for (int a = 0; a < NE(Ms); a++)
    for (int g = 0; g < NE(Gs); g++) {
      q4case c = {Ms[a], Ns[irand(NE(Ns))], Ks[irand(NE(Ks))], Gs[g], 0, 0, (bl_dtype)irand(3),
                  (bl_dtype)irand(3), irand(2), 0, irand(4), 0, 0};
      while (c.N > 1 && (double)c.M * (double)c.N * (double)(c.K + c.G) > cap) c.N = c.N / 2;
      c.ldx = c.K + 1 + irand(40);
      c.ldy = c.N + 1 + irand(40);
      run_case(c);
    }
  /* every dtype pair, with and without bias, a NaN / Inf token */
  for (int xd = 0; xd < 3; xd++)
    for (int yd = 0; yd < 3; yd++)
      for (int bi = 0; bi < 2; bi++) {
        q4case c = {1 + irand(6), 1 + irand(300), 1 + irand(small ? 700 : 3000), Gs[irand(NE(Gs))], 0,
                    0, (bl_dtype)xd, (bl_dtype)yd, bi, 0, 0, 1 + (xd + yd + bi) % 3, 0};
        c.ldx = c.K + irand(3);
        c.ldy = c.N + irand(3);
        run_case(c);
      }
  /* the head's shapes: 2 threads split the rows (N / 2 at a multiple of 16), K = 2560 */
  {
    q4case c = {1, small ? 1003 : 4099, 2560, 64, 2560, small ? 1003 : 4099, BL_F32, BL_F32, 1, 0, 0, 0, 0};
    run_case(c);
    c.M = small ? 3 : 8, c.xdt = c.ydt = BL_BF16, c.bias = 0;
    run_case(c);
    c.M = 5, c.G = 128, c.xdt = c.ydt = BL_F16, c.wmode = 3, c.smode = 1;
    run_case(c);
  }
  /* several token blocks (256 KiB of int8 rows each): K large, M above a block */
  {
    q4case c = {small ? 5 : 17, 7, small ? 140000 : 70000, 64, 0, 0, BL_F32, BL_F16, 1, 0, 0, 0, 0};
    c.ldx = c.K + 3, c.ldy = c.N + 2;
    run_case(c);
  }
  /* extreme sums: every weight q = -8 or 7, every |x_q| 127 (constant x), all G */
  for (int g = 0; g < NE(Gs); g++)
    for (int wm = 1; wm <= 2; wm++) {
      q4case c = {3, 5, 2 * Gs[g] + 64, Gs[g], 0, 0, BL_F32, BL_F32, 1, wm, 4, 0, 1};
      c.ldx = c.K, c.ldy = c.N;
      run_case(c);
    }
  /* the reference against float64 */
  for (int i = 0; i < (small ? 6 : 16); i++)
    test_float64(1 + irand(4), 1 + irand(small ? 40 : 200), Ks[irand(NE(Ks))] + irand(5), Gs[irand(NE(Gs))],
                 irand(2), irand(3) == 0);
  test_float64(2, small ? 20 : 100, 2560, 64, 1, 1);
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
