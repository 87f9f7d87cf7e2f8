/* test_directed.c - directed cases that reach the rounding ties and the conversion edges, on every
 * path (paths.h: each ISA this CPU supports, or with -DBL_EMU the SIMDe-emulated VNNI tables),
 * vector bodies and scalar tails alike (K and N around the vector and tile widths, 1 and 2
 * threads). Each path must equal the plain C reference bit for bit AND an independent expectation
 * computed here from the definition in bitlinear.h:
 *   weights   w = +-0.5 s_w and +-1.5 s_w exactly (round half to even: 0 and +-2 -> clamp +-1),
 *             and one float32 ulp either side;
 *   acts      x = (n + 0.5) s_x exactly (s_x a power of two), and one ulp of x's dtype either side;
 *   GEMM      the largest int16 / int32 partial sums (x_q -128 or 127, weights all +-1 or the
 *             invalid code 3) across many flush intervals, GEMV and tiles;
 *   outputs   y exactly halfway between two float16 / bfloat16 values (normal and subnormal), and
 *             the edges of the conversions: f32 -> f16 overflow to Inf at 65520, FLT_MAX -> bf16,
 *             Inf, signalling and quiet NaN biases (outputs must be quiet NaNs), NaN rows / scales.
 * Random choices use a fixed seed (BL_TEST_SEED overrides it; printed). Ends with
 * "N passed, N failed". Built by `make -C tests/c test` (and `emulated` for the BL_EMU build). */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "paths.h"

#include <float.h>
#include "harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xmalloc(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n ? n : 1)) { printf("out of memory\n"); exit(2); }
  return p;
}

static float fbits(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static uint32_t bitsf(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }
static const char *dtn(bl_dtype d) { return d == BL_F32 ? "f32" : d == BL_F16 ? "f16" : "bf16"; }

/* The next representable value of dt away from (dir > 0) or toward zero, from the bits. */
static float step_ulp(float v, bl_dtype dt, int dir) {
  if (dt == BL_F32) {
    uint32_t b = bitsf(v);
    b = dir > 0 ? b + 1 : b - 1;
    return fbits(b);
  }
  uint16_t h = dt == BL_F16 ? bl_f32_to_f16(v) : bl_f32_to_bf16(v);
  h = (uint16_t)(dir > 0 ? h + 1 : h - 1);
  return dt == BL_F16 ? bl_f16_to_f32(h) : bl_bf16_to_f32(h);
}

/* Round half to even of a double that holds q exactly (|q| < 2^52), from floor: independent of
 * rint and of the FP rounding mode. */
static double rne(double q) {
  double f = floor(q), frac = q - f;
  if (frac > 0.5) return f + 1;
  if (frac < 0.5) return f;
  return fmod(f, 2.0) == 0.0 ? f : f + 1;
}

/* Independent float32 -> float16 / bfloat16 rounding (to nearest even) of a finite or infinite
 * float: the quantum of v's binade, rne(v / quantum), then the (exact) encoding. NaN -> -1. */
static int32_t expect_half(float v, bl_dtype dt) {
  if (v != v) return -1;
  const int f16 = dt == BL_F16;
  const double maxv = f16 ? 65504.0 : (double)fbits(0x7f7f0000u);
  const double a = fabs((double)v);
  const uint16_t sign = v < 0 || (v == 0 && signbit(v)) ? 0x8000 : 0;
  const uint16_t inf = (uint16_t)(sign | (f16 ? 0x7c00 : 0x7f80));
  if (isinf(v)) return inf;
  if (a == 0) return sign;
  int e;
  frexp(a, &e); /* a in [2^(e-1), 2^e) */
  const int mant = f16 ? 11 : 8, emin = f16 ? -14 : -126;
  int qexp = (e - 1 < emin ? emin : e - 1) - (mant - 1);
  double r = rne(a / ldexp(1.0, qexp)) * ldexp(1.0, qexp);
  if (r > maxv) return inf; /* rounded past the largest finite value */
  float rf = (float)r;      /* exact */
  if (f16) return (uint16_t)(sign | bl_f32_to_f16(rf));
  return (uint16_t)(sign | (bitsf(rf) >> 16));
}

static int is_quiet_nan(const void *y, bl_dtype dt, int64_t i) {
  if (dt == BL_F32) {
    uint32_t b = ((const uint32_t *)y)[i];
    return (b & 0x7f800000u) == 0x7f800000u && (b & 0x00400000u);
  }
  uint16_t h = ((const uint16_t *)y)[i];
  if (dt == BL_F16) return (h & 0x7c00) == 0x7c00 && (h & 0x0200);
  return (h & 0x7f80) == 0x7f80 && (h & 0x0040);
}

static const int64_t K_W[] = {1, 2, 3, 8, 31, 32, 33, 64, 127, 128, 129, 200, 256, 257, 1000};

/* ---------------------------------------------------------------- A. weight ties */
/* Pairs (a, 4 - a) 2^e with a in {1, 1, 0, 1 + 2^-22, 1 - 2^-22} and random signs (an odd K ends
 * with 2 * 2^e): every row's mean |w| is exactly 2^(e+1), so s_w = 2^(e+1) on every path and
 * w / s_w hits +-0.5, +-1.5, +-1, 0, 2, 0.5 +- 2^-23 and 1.5 -+ 2^-23. */
static void weight_ties(const tpath *p, bl_dtype wdt, int pc, int64_t N, int64_t K, int e, int nt) {
  static const float lo[] = {1.0f, 1.0f, 0.0f, 1.0f + 0x1p-22f, 1.0f - 0x1p-22f};
  const int nlo = wdt == BL_F32 ? 5 : 3; /* the near-ties are not half-precision values */
  const int64_t ldw = K + K % 3, rb = bl_packed_row_bytes(K);
  void *w = xmalloc((size_t)(N * ldw) * elem_bytes(wdt));
  int8_t *want = xmalloc((size_t)(N * K));
  int ties = 0;
  const float s = ldexpf(1.0f, e + 1);
  for (int64_t n = 0; n < N; n++) {
    for (int64_t k = 0; k < K; k++) {
      float v;
      if ((k ^ 1) >= K) v = 2.0f;
      else {
        float a = lo[(n + k / 2) % nlo];
        v = (k & 1) ? 4.0f - a : a;
      }
      v = ldexpf(v, e);
      if (irand(2)) v = -v;
      store_elem(w, wdt, n * ldw + k, v);
      const double q = (double)load_elem(w, wdt, n * ldw + k) / (double)s; /* exact */
      ties += fabs(q) == 0.5 || fabs(q) == 1.5;
      want[n * K + k] = (int8_t)(fabs(q) > 0.5 ? (q > 0 ? 1 : -1) : 0);
    }
    for (int64_t k = K; k < ldw; k++) store_elem(w, wdt, n * ldw + k, NAN); /* gap: poison */
  }
  const size_t ns = pc ? (size_t)N : 1;
  float *sa = xmalloc(ns * 4), *sb = xmalloc(ns * 4);
  uint8_t *pa = xmalloc((size_t)(N * rb)), *pb = xmalloc((size_t)(N * rb));
  int8_t *wq = xmalloc((size_t)(N * K));
  memset(pa, 0xee, (size_t)(N * rb));
  memset(pb, 0x11, (size_t)(N * rb));
  bl_status st_a = bl_quantize_weights_ref(w, wdt, N, K, ldw, 1e-5f, pc, sa, pa, nt);
  bl_status st_b = tp_quantize_weights(p, w, wdt, N, K, ldw, 1e-5f, pc, sb, pb, nt);
  int ok = st_a == BL_OK && st_b == BL_OK && !memcmp(pa, pb, (size_t)(N * rb)) &&
           !memcmp(sa, sb, ns * 4);
  for (size_t i = 0; i < ns; i++) ok &= sb[i] == s;
  ok &= bl_unpack_weights(pb, N, K, wq, K) == BL_OK && !memcmp(wq, want, (size_t)(N * K));
  ok &= K < 2 || ties > 0;
  check(ok, "%s weight ties %s N=%lld K=%lld per_channel=%d 2^%d %d threads (%d ties)", p->name,
        dtn(wdt), (long long)N, (long long)K, pc, e, nt, ties);
  free(w); free(want); free(sa); free(sb); free(pa); free(pb); free(wq);
}

/* ---------------------------------------------------------------- B. activation ties */
/* x = (n + 0.5) 2^e, n in [-127, 125] (and, if near, one ulp of x's dtype either side), one
 * element +-127 2^e per row: s_x = 2^e exactly (per token and per tensor), x / s_x exact. */
static void act_ties(const tpath *p, bl_dtype dt, int pt, int64_t M, int64_t K, int e, int near,
                     int nt) {
  const int64_t ldx = K + 3, Kp = bl_padded_k(K), ldq = Kp + 5;
  void *x = xmalloc((size_t)(M * ldx) * elem_bytes(dt));
  const float s = ldexpf(1.0f, e);
  for (int64_t m = 0; m < M; m++) {
    for (int64_t k = 0; k < K; k++) {
      float v = ldexpf((float)(irand(253) - 127) + 0.5f, e);
      if (near && irand(3)) v = step_ulp(v, dt, irand(2) ? 1 : -1);
      store_elem(x, dt, m * ldx + k, v);
    }
    store_elem(x, dt, m * ldx + (m * 37 + 5) % K, ldexpf(m & 1 ? -127.0f : 127.0f, e));
    for (int64_t k = K; k < ldx; k++) store_elem(x, dt, m * ldx + k, NAN);
  }
  int8_t *want = xmalloc((size_t)(M * Kp));
  int32_t *want_rs = xmalloc((size_t)M * 4);
  int ties = 0;
  for (int64_t m = 0; m < M; m++) {
    want_rs[m] = 0;
    for (int64_t k = 0; k < Kp; k++) {
      double q = k < K ? (double)load_elem(x, dt, m * ldx + k) / (double)s : 0.0;
      ties += q - floor(q) == 0.5;
      double r = rne(q);
      r = r > 127 ? 127 : r < -128 ? -128 : r;
      want[m * Kp + k] = (int8_t)r;
      want_rs[m] += (int8_t)r;
    }
  }
  const tpath *both[2] = {&tp_ref, p};
  int ok = ties > 0 || K < 8 || (near && K < 64);
  for (int j = 0; j < 2; j++) {
    int8_t *q = xmalloc((size_t)(M * ldq));
    float *sc = xmalloc((size_t)M * 4);
    int32_t *rs = xmalloc((size_t)M * 4);
    memset(q, 0x77, (size_t)(M * ldq));
    bl_status st = tp_quantize_acts(both[j], x, dt, M, K, ldx, 1e-5f, pt, q, ldq, sc, rs, nt);
    ok &= st == BL_OK;
    for (int64_t m = 0; m < M; m++) {
      ok &= sc[m] == s && rs[m] == want_rs[m] && !memcmp(q + m * ldq, want + m * Kp, (size_t)Kp);
      if (m + 1 < M)
        for (int64_t k = Kp; k < ldq; k++) ok &= q[m * ldq + k] == 0x77; /* gap untouched */
    }
    free(q); free(sc); free(rs);
  }
  check(ok, "%s activation ties %s M=%lld K=%lld per_token=%d 2^%d near=%d %d threads (%d ties)",
        p->name, dtn(dt), (long long)M, (long long)K, pt, e, near, nt, ties);
  free(x); free(want); free(want_rs);
}

/* ---------------------------------------------------------------- C/D. epilogue */
/* A target value T for y in binade 2^E: halfway between two neighbouring float16 (E < -14:
 * subnormal) or bfloat16 values, or a random float32 for float32 outputs. *res: the spacing of
 * such targets (a multiple of it plus a multiple of res / 8 is exact in float32 nearby). */
static float tie_target(bl_dtype ydt, int E, double *res) {
  const double m = (double)irand(ydt == BL_F16 ? 1024 : ydt == BL_BF16 ? 128 : 1 << 23);
  double T;
  if (ydt == BL_F16 && E < -14) *res = ldexp(1.0, -25), T = (m * 2 + 1) * *res;
  else if (ydt == BL_F16) *res = ldexp(1.0, E - 11), T = (2048 + 2 * m + 1) * *res;
  else if (ydt == BL_BF16) *res = ldexp(1.0, E - 8), T = (256 + 2 * m + 1) * *res;
  else *res = ldexp(1.0, E - 19), T = (524288 + (double)((int64_t)m >> 4)) * *res;
  return irand(2) ? -(float)T : (float)T;
}
/* The edges of the conversions (y = this value, whatever the accumulator). */
static float edge_target(void) {
  static const uint32_t e[] = {0x477ff000u /* 65520: f16 Inf */, 0x477fefffu /* -> 65504 */,
                               0xc77ff000u, 0x49742400u /* 1e6 */, 0x7f7fffffu /* FLT_MAX */,
                               0xff7f8000u /* bf16 midpoint at the top: -Inf */, 0x7f800000u,
                               0xff800000u, 0x7fc00000u, 0x7f800001u /* sNaN */, 0xffa00000u,
                               0x33000000u /* 2^-25: f16 tie to 0 */,
                               0x33c00000u /* 1.5 2^-24: f16 tie to 2^-23 */, 0x00000001u};
  return fbits(e[irand(sizeof(e) / sizeof(e[0]))]);
}

static void expect_check(const void *y, bl_dtype ydt, int64_t i, float exact, int *ok) {
  if (exact != exact) {
    *ok &= is_quiet_nan(y, ydt, i);
    return;
  }
  if (ydt == BL_F32) *ok &= ((const uint32_t *)y)[i] == bitsf(exact);
  else *ok &= ((const uint16_t *)y)[i] == (uint16_t)expect_half(exact, ydt);
}
/* v is halfway between two neighbours of dt: its float32 neighbours round apart */
static int is_tie(float v, bl_dtype dt) {
  if (v != v || isinf(v) || v == 0 || dt == BL_F32) return 0;
  return expect_half(nextafterf(v, 0), dt) != expect_half(nextafterf(v, copysignf(INFINITY, v)), dt);
}
/* Same bits, except that NaN payloads may differ; bytes outside the rows (gaps) must be equal. */
static int same_y(const void *a, const void *b, bl_dtype dt, int64_t M, int64_t N, int64_t ld) {
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < (m + 1 < M ? ld : N); n++) {
      const int64_t i = m * ld + n;
      if (n < N && load_elem(a, dt, i) != load_elem(a, dt, i) && load_elem(b, dt, i) != load_elem(b, dt, i))
        continue;
      if (memcmp((const char *)a + i * (int64_t)elem_bytes(dt), (const char *)b + i * (int64_t)elem_bytes(dt), elem_bytes(dt)))
        return 0;
    }
  return 1;
}

/* y = acc (s_x s_w) + bias with s_x = 1 (integer x, amax 127) and s_w a power of two at most
 * 1/8 of the target's spacing, so acc s_w and bias = T - acc s_w are exact and y = T, halfway
 * between two float16 / bfloat16 values; `edge` adds the conversion edges, NaN and Inf scales and
 * a NaN input row. Checked through bl_linear (x in xdt) and bl_linear_q. */
static void output_ties(const tpath *p, bl_dtype xdt, bl_dtype ydt, int64_t M, int64_t N,
                        int64_t K, int pc, int edge, int nt) {
  const int64_t ldx = K + 1, ldy = N + 2, Kp = bl_padded_k(K), rb = bl_packed_row_bytes(K);
  void *x = xmalloc((size_t)(M * ldx) * elem_bytes(xdt));
  /* identical rows (so every row's y hits the targets), one 127 each */
  for (int64_t k = 0; k < K; k++) {
    float v = (float)(irand(255) - 127);
    for (int64_t m = 0; m < M; m++) store_elem(x, xdt, m * ldx + k, v);
  }
  for (int64_t m = 0; m < M; m++) {
    store_elem(x, xdt, m * ldx + (K > 1 ? 1 : 0), 127.0f);
    if (m + 1 < M) store_elem(x, xdt, m * ldx + K, NAN);
  }
  const int nan_row = edge && M > 1; /* the last row NaN: all its outputs NaN */
  if (nan_row) store_elem(x, xdt, (M - 1) * ldx + K / 2, NAN);
  uint8_t *pk = xmalloc((size_t)(N * rb));
  memset(pk, 0, (size_t)(N * rb));
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < Kp; k++) {
      int c = k >= K ? 1 : irand(3);
      pk[n * rb + (k / 128) * 32 + (k % 32)] |= (uint8_t)(c << (2 * ((k % 128) / 32)));
    }
  /* targets, and the weight scales that make them exact */
  const int Elo = ydt == BL_F16 ? -24 : -40, Ehi = ydt == BL_F16 ? 15 : 40;
  const int E0 = Elo + irand(Ehi - Elo + 1);
  float *ws = xmalloc((size_t)N * 4), *bias = xmalloc((size_t)N * 4), *T = xmalloc((size_t)N * 4);
  char *is_edge = xmalloc((size_t)N);
  for (int64_t n = 0; n < N; n++) {
    double res;
    T[n] = tie_target(ydt, pc ? Elo + irand(Ehi - Elo + 1) : E0, &res);
    is_edge[n] = edge && irand(3) == 0;
    if (is_edge[n]) T[n] = edge_target();
    if (pc || n == 0) ws[n] = (float)(res / 8);
  }
  if (edge && pc && N > 3) ws[2] = NAN, ws[3] = INFINITY, is_edge[2] = is_edge[3] = 1;
  /* the exact accumulators of a row */
  int8_t *xq = xmalloc((size_t)(M * Kp));
  float *xs = xmalloc((size_t)M * 4);
  int32_t *rs = xmalloc((size_t)M * 4), *acc = xmalloc((size_t)N * 4);
  bl_status st = bl_quantize_acts_ref(x, xdt, M, K, ldx, 1e-5f, 1, xq, Kp, xs, rs, 1);
  st |= bl_gemm_acc_ref(xq, Kp, pk, 1, N, K, acc, N, 1);
  int realized = 0, ties = 0, targets = 0;
  float *exact = xmalloc((size_t)N * 4);
  for (int64_t n = 0; n < N; n++) {
    const float a = (float)acc[n] * (xs[0] * ws[pc ? n : 0]);
    bias[n] = T[n] != T[n] || isinf(T[n]) ? T[n] : T[n] - a; /* NaN / Inf: the bias itself */
    exact[n] = a + bias[n];
    if (!is_edge[n]) targets++, realized += bitsf(exact[n]) == bitsf(T[n]);
    ties += is_tie(exact[n], ydt);
  }
  const size_t yb = (size_t)((M - 1) * ldy + N) * elem_bytes(ydt);
  void *ya = xmalloc(yb), *yb_ = xmalloc(yb), *yc = xmalloc(yb), *yd = xmalloc(yb);
  void *w1 = xmalloc(bl_linear_workspace_bytes(M, K)), *w2 = xmalloc(bl_linear_workspace_bytes(M, K));
  memset(ya, 0x5a, yb); memset(yb_, 0x5a, yb); memset(yc, 0x5a, yb); memset(yd, 0x5a, yb);
  st |= tp_linear(&tp_ref, x, xdt, M, K, ldx, pk, N, ws, pc, bias, 1e-5f, 1, ya, ydt, ldy, w1, nt);
  st |= tp_linear(p, x, xdt, M, K, ldx, pk, N, ws, pc, bias, 1e-5f, 1, yb_, ydt, ldy, w2, nt);
  st |= bl_quantize_acts_ref(x, xdt, M, K, ldx, 1e-5f, 1, xq, Kp, xs, rs, 1);
  st |= tp_linear_q(&tp_ref, xq, Kp, xs, rs, M, pk, N, K, ws, pc, bias, yc, ydt, ldy, nt);
  st |= tp_linear_q(p, xq, Kp, xs, NULL, M, pk, N, K, ws, pc, bias, yd, ydt, ldy, nt);
  int ok = st == BL_OK;
  void *ys[4] = {ya, yb_, yc, yd};
  for (int j = 0; j < 4; j++) {
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++)
        expect_check(ys[j], ydt, m * ldy + n, nan_row && m == M - 1 ? NAN : exact[n], &ok);
    ok &= same_y(ys[j], ya, ydt, M, N, ldy); /* as the reference, gaps untouched */
  }
  ok &= realized == targets;
  ok &= ydt == BL_F32 || ties >= targets;
  check(ok, "%s output %s->%s M=%lld N=%lld K=%lld per_channel=%d edge=%d %d threads "
        "(%d/%d targets hit, %d ties), linear and linear_q", p->name, dtn(xdt), dtn(ydt),
        (long long)M, (long long)N, (long long)K, pc, edge, nt, realized, targets, ties);
  free(x); free(pk); free(ws); free(bias); free(T); free(is_edge); free(xq); free(xs); free(rs);
  free(acc); free(exact); free(ya); free(yb_); free(yc); free(yd); free(w1); free(w2);
}

/* Ties without a bias: x_q rows hold every value -128..127 once (at a random offset) where
 * the weights are 0, random values and weights elsewhere; then in each column one of those
 * weights becomes +1 so that acc moves onto the nearest float16 / bfloat16 tie (|acc| < 2^16:
 * ties at most 256 apart; the other weights mostly follow x's sign, so |acc| > 2^11). s_x, s_w powers of two, no bias: y = acc s_x s_w is the tie itself.
 * Through bl_linear_q, M = 1 (the GEMV tiles) and M > 1 (identical rows, s_x 2^(m-2)). */
static void natural_ties(const tpath *p, bl_dtype ydt, int64_t M, int64_t N, int64_t K, int nt) {
  const int64_t Kp = bl_padded_k(K), rb = bl_packed_row_bytes(K), ldq = Kp + 64;
  const int64_t off = irand((int)(K - 255));
  int8_t *xq = xmalloc((size_t)(M * ldq));
  for (int64_t k = 0; k < ldq; k++) {
    int v = k >= K ? 0 : k >= off && k < off + 256 ? (int)(k - off) - 128 : irand(256) - 128;
    for (int64_t m = 0; m < M; m++) xq[m * ldq + k] = (int8_t)v;
  }
  uint8_t *pk = xmalloc((size_t)(N * rb));
  memset(pk, 0, (size_t)(N * rb));
#define SET_CODE(n, k, c) \
  (pk[(n) * rb + ((k) / 128) * 32 + ((k) % 32)] = (uint8_t)((pk[(n) * rb + ((k) / 128) * 32 + ((k) % 32)] & ~(3 << (2 * (((k) % 128) / 32)))) | ((c) << (2 * (((k) % 128) / 32)))))
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < Kp; k++) /* mostly the sign of x: |acc| of 12..16 bits */
      SET_CODE(n, k, k >= K || (k >= off && k < off + 256) ? 1
                     : irand(4) ? (xq[k] > 0) == (n % 2 == 0) ? 2 : 0 : irand(3));
  int32_t *acc = xmalloc((size_t)(M * N) * 4);
  bl_status st = bl_gemm_acc_ref(xq, ldq, pk, 1, N, K, acc, N, 1);
  const int bits = ydt == BL_F16 ? 11 : 8;
  for (int64_t n = 0; n < N; n++) {
    /* the tie nearest acc: |t| = (2j + 1) 2^(b - bits - 1) in the binade [2^(b-1), 2^b) */
    int32_t a = acc[n], best = 0, bestd = 1 << 30;
    for (int b = bits + 1; b <= 17; b++)
      for (int sgn = -1; sgn <= 1; sgn += 2) {
        const int32_t step = 1 << (b - bits), lo = 1 << (b - 1);
        for (int32_t t = lo + step / 2; t < (1 << b); t += step) {
          const int32_t d = sgn * t - a;
          if (d >= -128 && d <= 127 && (d < 0 ? -d : d) < bestd) best = d, bestd = d < 0 ? -d : d;
        }
      }
    SET_CODE(n, off + best + 128, 2);
  }
#undef SET_CODE
  float xs[8], ws[1] = {0x1p-6f};
  for (int64_t m = 0; m < M; m++) xs[m] = ldexpf(1.0f, (int)m - 2);
  st |= bl_gemm_acc_ref(xq, ldq, pk, M, N, K, acc, N, 1);
  const size_t yb = (size_t)(M * N) * elem_bytes(ydt);
  void *ya = xmalloc(yb), *yb_ = xmalloc(yb);
  st |= tp_linear_q(&tp_ref, xq, ldq, xs, NULL, M, pk, N, K, ws, 0, NULL, ya, ydt, N, nt);
  st |= tp_linear_q(p, xq, ldq, xs, NULL, M, pk, N, K, ws, 0, NULL, yb_, ydt, N, nt);
  int ok = st == BL_OK && same_y(ya, yb_, ydt, M, N, N), ties = 0;
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      const float v = (float)acc[m * N + n] * (xs[m] * ws[0]);
      ties += is_tie(v, ydt);
      expect_check(yb_, ydt, m * N + n, v, &ok);
    }
  ok &= ties == M * N;
  check(ok, "%s bias-free output ties ->%s M=%lld N=%lld K=%lld %d threads (%d ties)", p->name,
        dtn(ydt), (long long)M, (long long)N, (long long)K, nt, ties);
  free(xq); free(pk); free(acc); free(ya); free(yb_);
}

/* ---------------------------------------------------------------- E. accumulator bounds */
/* The largest partial sums the int16 / int32 tile accumulators meet: x_q all -128 (or 127, or
 * alternating) times weights all +1 (or -1, or the invalid code 3, which reads as +1), K across
 * many flush intervals (the int16 chunks of the AVX2 tiles and the GEMV tile's 4 x codes sum),
 * M = 1 (GEMV tiles) and M > 1. acc must be the exact sum, as the reference's. */
static void acc_bounds(const tpath *p, int64_t M, int64_t N, int64_t K, int xmode, int code, int nt) {
  const int64_t Kp = bl_padded_k(K), rb = bl_packed_row_bytes(K), ldq = Kp;
  int8_t *xq = xmalloc((size_t)(M * ldq));
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < ldq; k++)
      xq[m * ldq + k] = k >= K ? 0 : (int8_t)(xmode == 0 ? -128 : xmode == 1 ? 127 : k % 2 ? 127 : -128);
  uint8_t *pk = xmalloc((size_t)(N * rb));
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < Kp; k++) {
      const int c = k >= K ? 1 : (n % 3 == 2 ? (k % 2 ? 0 : code) : code); /* column 2: mixed */
      uint8_t *b = &pk[n * rb + (k / 128) * 32 + (k % 32)];
      if (k % 128 < 32) *b = 0;
      *b |= (uint8_t)(c << (2 * ((k % 128) / 32)));
    }
  int32_t *a = xmalloc((size_t)(M * N) * 4), *b = xmalloc((size_t)(M * N) * 4);
  bl_status st = bl_gemm_acc_ref(xq, ldq, pk, M, N, K, a, N, 1);
  st |= tp_gemm_acc(p, xq, ldq, NULL, pk, M, N, K, b, N, nt);
  int ok = st == BL_OK && !memcmp(a, b, (size_t)(M * N) * 4);
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      int64_t e = 0;
      for (int64_t k = 0; k < K; k++) {
        const int c = n % 3 == 2 ? (k % 2 ? 0 : code) : code;
        e += (int64_t)xq[m * ldq + k] * ((c < 2 ? c : 2) - 1);
      }
      ok &= b[m * N + n] == e;
    }
  check(ok, "%s accumulator bounds M=%lld N=%lld K=%lld x=%s code=%d %d threads", p->name,
        (long long)M, (long long)N, (long long)K,
        xmode == 0 ? "-128" : xmode == 1 ? "127" : "+-", code, nt);
  free(xq); free(pk); free(a); free(b);
}

int main(void) {
  const char *seed_env = getenv("BL_TEST_SEED");
  const uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : 1;
  rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
  printf("seed %llu (set BL_TEST_SEED to change)\n", (unsigned long long)seed);
  tp_init();
  printf("paths:");
  for (int i = 0; i < tp_count; i++) printf(" %s", tp_list[i].name);
  printf(" (each against ref)\n");
  /* the reference itself against the independent expectations too */
  static tpath all[TP_MAX + 1];
  all[0] = tp_ref;
  for (int i = 0; i < tp_count; i++) all[i + 1] = tp_list[i];
  for (int i = 0; i <= tp_count; i++) {
    const tpath *p = &all[i];
    for (int nt = 1; nt <= 2; nt++) {
      for (int dt = 0; dt < 3; dt++)
        for (size_t a = 0; a < sizeof(K_W) / sizeof(K_W[0]); a++)
          for (int pc = 0; pc < 2; pc++)
            weight_ties(p, (bl_dtype)dt, pc, 1 + (int64_t)((a + dt + nt) % 5), K_W[a],
                        (int)(a % 3) * 5 - 8, nt);
      weight_ties(p, BL_F32, 1, 300, 1000, -3, nt); /* enough work for the threaded packing */
      weight_ties(p, BL_BF16, 0, 257, 300, 0, nt);
      static const int64_t K_A[] = {1, 2, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 128, 129, 300};
      for (int dt = 0; dt < 3; dt++)
        for (size_t a = 0; a < sizeof(K_A) / sizeof(K_A[0]); a++)
          for (int pt = 0; pt < 2; pt++)
            for (int near = 0; near < 2; near++)
              act_ties(p, (bl_dtype)dt, pt, 1 + (int64_t)(a % 4), K_A[a], (int)(a % 4) * 3 - 5,
                       near, nt);
      act_ties(p, BL_F32, 1, 130, 1000, 0, 1, nt); /* threaded rows */
      static const int64_t MS[] = {1, 2, 5}, NS[] = {8, 13, 21, 67}, KS[] = {32, 100, 129, 300};
      for (int ydt = 0; ydt < 3; ydt++)
        for (int a = 0; a < 3; a++)
          for (int b = 0; b < 4; b++)
            for (int edge = 0; edge < 2; edge++)
              output_ties(p, (bl_dtype)((a + b + ydt) % 3), (bl_dtype)ydt, MS[a], NS[b],
                          KS[(a + b) % 4], (a + b + edge) % 2, edge, nt);
      for (int ydt = 1; ydt < 3; ydt++)
        for (int a = 0; a < 3; a++)
          for (int b = 0; b < 4; b++) natural_ties(p, (bl_dtype)ydt, MS[a], NS[b], 400 + 100 * b, nt);
      static const int64_t KB[] = {1025, 2049, 4100, 8300};
      for (int m = 1; m <= 5; m += 2)
        for (int kb = 0; kb < 4; kb++)
          for (int xm = 0; xm < 3; xm++)
            for (int code = 0; code < 4; code += 1 + (kb % 2)) /* 0, 2 and the invalid 3 */
              if (code != 1) acc_bounds(p, m, 4 + (kb + xm) % 4, KB[kb], xm, code, nt);
    }
  }
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
