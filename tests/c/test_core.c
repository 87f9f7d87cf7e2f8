/* test_core.c - checks every CPU path this machine supports against the plain C reference.
 * Integer and output bits must be identical. Seed: BL_TEST_SEED (default: 1, fixed). --small keeps
 * the shapes small (valgrind, qemu). Ends with the line "N passed, N failed". */
#include "bitlinear.h"

#include "harness.h"
#include "lut_spec.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int small;

static void *xmalloc(size_t n) {
  void *p = aligned_alloc(64, (n + 63) / 64 * 64 + 64);
  if (!p) { printf("out of memory\n"); exit(2); }
  return p;
}

/* ---------------------------------------------------------------- conversions */
/* Independent f16 decode from the IEEE definition. */
static float half_value(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 31) v = m ? NAN : INFINITY;
  else if (e == 0) v = ldexp((double)m, -24);
  else v = ldexp(1024.0 + m, e - 25);
  return (float)(s ? -v : v);
}

static void test_conversions(void) {
  int bad_dec = 0, bad_round = 0, bad_mid = 0, bad_bf = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float ref = half_value((uint16_t)h), got = bl_f16_to_f32((uint16_t)h);
    if (isnan(ref)) {
      if (!isnan(got)) bad_dec++;
      uint16_t back = bl_f32_to_f16(got);
      if ((back & 0x7c00) != 0x7c00 || !(back & 0x3ff) || (back & 0x8000) != (h & 0x8000)) bad_round++;
    } else {
      if (memcmp(&ref, &got, 4) != 0) bad_dec++;
      if (bl_f32_to_f16(got) != h) bad_round++;
    }
  }
  check(!bad_dec, "f16->f32 exhaustive vs IEEE definition (%d bad)", bad_dec);
  check(!bad_round, "f32->f16 round trip of all 65536 halves (%d bad)", bad_round);
  /* Midpoints between neighbouring finite halves (exact in f32) and their float neighbours:
   * below goes down, above goes up, the midpoint goes to the even one. */
  for (uint32_t h = 0; h < 0x7bff; h++) {
    float a = half_value((uint16_t)h), b = half_value((uint16_t)(h + 1));
    float mid = (float)(((double)a + (double)b) / 2);
    uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
    if (bl_f32_to_f16(mid) != even || bl_f32_to_f16(nextafterf(mid, 0)) != h ||
        bl_f32_to_f16(nextafterf(mid, INFINITY)) != h + 1 || bl_f32_to_f16(-mid) != (even | 0x8000))
      bad_mid++;
  }
  /* 65504 + half an ulp (65520) and above overflow to Inf */
  if (bl_f32_to_f16(65520.0f) != 0x7c00 || bl_f32_to_f16(nextafterf(65520.0f, 0)) != 0x7bff) bad_mid++;
  check(!bad_mid, "f32->f16 round-to-nearest-even at every midpoint (%d bad)", bad_mid);
  for (uint32_t h = 0; h < 65536; h++) {
    uint32_t bits = h << 16;
    float v;
    memcpy(&v, &bits, 4);
    float got = bl_bf16_to_f32((uint16_t)h);
    if (memcmp(&v, &got, 4) != 0) bad_bf++;
    if (!isnan(v) && bl_f32_to_bf16(v) != h) bad_bf++;
    if (!isnan(v) && (h & 0x7fff) < 0x7f7f) { /* midpoint to the next bf16 */
      uint32_t mb = bits + 0x8000u;
      float mid;
      memcpy(&mid, &mb, 4);
      uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
      if (bl_f32_to_bf16(mid) != even || bl_f32_to_bf16(nextafterf(mid, 0)) != h ||
          bl_f32_to_bf16(nextafterf(mid, (h & 0x8000) ? -INFINITY : INFINITY)) != h + 1)
        bad_bf++;
    }
  }
  check(!bad_bf, "bf16 exhaustive decode, round trip and midpoints (%d bad)", bad_bf);
}

/* ---------------------------------------------------------------- helpers */
static void fill_x(void *x, bl_dtype dt, int64_t n, int mode) {
  for (int64_t i = 0; i < n; i++) {
    float v = frand() * (mode == 1 ? 1e-3f : mode == 2 ? 3e4f : 4.0f);
    if (dt == BL_F32) ((float *)x)[i] = v;
    else if (dt == BL_F16) ((uint16_t *)x)[i] = bl_f32_to_f16(v);
    else ((uint16_t *)x)[i] = bl_f32_to_bf16(v);
  }
}

static void set_x(void *x, bl_dtype dt, int64_t i, float v) {
  if (dt == BL_F32) ((float *)x)[i] = v;
  else if (dt == BL_F16) ((uint16_t *)x)[i] = bl_f32_to_f16(v);
  else ((uint16_t *)x)[i] = bl_f32_to_bf16(v);
}

static const char *dtn[] = {"f32", "f16", "bf16"};
static size_t esz(bl_dtype d) { return d == BL_F32 ? 4 : 2; }

/* Random packed weights with codes 0..2 and padding code 1. */
static void fill_packed(uint8_t *p, int64_t N, int64_t K, int extreme) {
  const int64_t rb = bl_packed_row_bytes(K), Kp = bl_padded_k(K);
  memset(p, 0, (size_t)(N * rb));
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < Kp; k++) {
      int c = k >= K ? 1 : extreme ? 2 : irand(3);
      p[n * rb + (k / 128) * 32 + (k % 32)] |= (uint8_t)(c << (2 * ((k % 128) / 32)));
    }
}

static void fill_xq(int8_t *q, int64_t M, int64_t K, int64_t ldq, int extreme) {
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < ldq; k++)
      q[m * ldq + k] = k >= K ? (k < bl_padded_k(K) ? 0 : 0x5a)
                      : (int8_t)(extreme == 1 ? -128 : extreme == 2 ? 127 : irand(256) - 128);
}

/* ---------------------------------------------------------------- per-ISA checks */
static void test_weights(int isa, int64_t N, int64_t K) {
  const int64_t ldw = K + irand(3), rb = bl_packed_row_bytes(K);
  float *w = xmalloc((size_t)(N * ldw) * 4);
  for (int64_t i = 0; i < N * ldw; i++) w[i] = frand() * 0.05f;
  /* exact multiples of the scale hit the rounding ties */
  if (N * K > 4) w[1] = 0.0f, w[2] = -w[3];
  uint8_t *pa = xmalloc((size_t)(N * rb)), *pb = xmalloc((size_t)(N * rb));
  float *sa = xmalloc((size_t)N * 4), *sb = xmalloc((size_t)N * 4);
  for (int pc = 0; pc < 2; pc++) {
    memset(pa, 0xee, (size_t)(N * rb));
    memset(pb, 0x11, (size_t)(N * rb));
    bl_status ra = bl_quantize_weights_ref(w, BL_F32, N, K, ldw, 1e-5f, pc, sa, pa, 1);
    bl_isa_set(isa);
    bl_status rb_ = bl_quantize_weights(w, BL_F32, N, K, ldw, 1e-5f, pc, sb, pb, 2);
    int ok = ra == BL_OK && rb_ == BL_OK && !memcmp(pa, pb, (size_t)(N * rb)) &&
             !memcmp(sa, sb, (size_t)(pc ? N : 1) * 4);
    check(ok, "%s quantize_weights N=%lld K=%lld per_channel=%d", bl_isa_name(isa),
          (long long)N, (long long)K, pc);
  }
  /* float16 / bfloat16 weights, read as they are: the same scales and bytes as float32 weights
   * holding the same values, on ref and on `isa` */
  uint16_t *h = xmalloc((size_t)(N * ldw) * 2);
  float *hf = xmalloc((size_t)(N * ldw) * 4);
  for (int dt = BL_F16; dt <= BL_BF16; dt++) {
    for (int64_t i = 0; i < N * ldw; i++) {
      h[i] = dt == BL_F16 ? bl_f32_to_f16(w[i]) : bl_f32_to_bf16(w[i]);
      hf[i] = dt == BL_F16 ? bl_f16_to_f32(h[i]) : bl_bf16_to_f32(h[i]);
    }
    for (int pc = 0; pc < 2; pc++) {
      uint8_t *pc_ = xmalloc((size_t)(N * rb));
      float *sc = xmalloc((size_t)N * 4);
      bl_status r0 = bl_quantize_weights_ref(hf, BL_F32, N, K, ldw, 1e-5f, pc, sa, pa, 1);
      bl_status r1 = bl_quantize_weights_ref(h, (bl_dtype)dt, N, K, ldw, 1e-5f, pc, sc, pc_, 1);
      bl_isa_set(isa);
      bl_status r2 = bl_quantize_weights(h, (bl_dtype)dt, N, K, ldw, 1e-5f, pc, sb, pb, 2);
      const size_t ns = (size_t)(pc ? N : 1) * 4;
      check(r0 == BL_OK && r1 == BL_OK && r2 == BL_OK && !memcmp(pa, pb, (size_t)(N * rb)) &&
                !memcmp(pa, pc_, (size_t)(N * rb)) && !memcmp(sa, sb, ns) && !memcmp(sa, sc, ns),
            "%s quantize_weights %s weights N=%lld K=%lld per_channel=%d", bl_isa_name(isa),
            dtn[dt], (long long)N, (long long)K, pc);
      free(pc_); free(sc);
    }
  }
  free(h); free(hf);
  free(w); free(pa); free(pb); free(sa); free(sb);
}

/* bl_quantize_weights on `isa` vs bl_quantize_weights_ref on special weights: identical scale and
 * packed bits. mode 1: |w| in {1, 3} (2 at an odd end), so every scale is 2 and w / s hits the
 * rounding ties 0.5 and 1.5 (round half to even: 0 and 2 -> clamp 1); 2: NaN, Inf and -Inf
 * weights: the scale they enter is NaN and its rows pack to zero weights (per channel: only the
 * bad rows), the others as usual. */
static void test_weights_special(int isa, int64_t N, int64_t K, int mode) {
  const int64_t ldw = K + irand(3), rb = bl_packed_row_bytes(K);
  float *w = xmalloc((size_t)(N * ldw) * 4);
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < ldw; k++) {
      float v = frand() * 0.05f;
      if (mode == 1) v = (k == K - 1 && K % 2) ? 2.0f : (k % 2 ? 3.0f : 1.0f), v = irand(2) ? v : -v;
      w[n * ldw + k] = v;
    }
  int bad[3] = {(int)irand((int)N), (int)irand((int)N), (int)N - 1};
  if (mode == 2) {
    w[bad[0] * ldw + irand((int)K)] = NAN;
    w[bad[1] * ldw + irand((int)K)] = -INFINITY;
    w[bad[2] * ldw + K - 1] = INFINITY;
  }
  uint8_t *pa = xmalloc((size_t)(N * rb)), *pb = xmalloc((size_t)(N * rb));
  float *sa = xmalloc((size_t)N * 4), *sb = xmalloc((size_t)N * 4);
  int8_t *wq = xmalloc((size_t)(N * K));
  for (int pc = 0; pc < 2; pc++) {
    memset(pa, 0xee, (size_t)(N * rb));
    memset(pb, 0x11, (size_t)(N * rb));
    bl_status st_a = bl_quantize_weights_ref(w, BL_F32, N, K, ldw, 1e-5f, pc, sa, pa, 1);
    bl_isa_set(isa);
    bl_status st_b = bl_quantize_weights(w, BL_F32, N, K, ldw, 1e-5f, pc, sb, pb, 2);
    int ok = st_a == BL_OK && st_b == BL_OK && !memcmp(pa, pb, (size_t)(N * rb)) &&
             !memcmp(sa, sb, (size_t)(pc ? N : 1) * 4);
    ok &= bl_unpack_weights(pa, N, K, wq, K) == BL_OK;
    for (int64_t n = 0; ok && n < N; n++) {
      const float s = sa[pc ? n : 0];
      int row_bad = 0;
      for (int64_t k = 0; k < K; k++) row_bad |= !isfinite(w[n * ldw + k]);
      if (mode == 1) ok &= s == 2.0f;
      if (mode == 2) ok &= (row_bad || !pc) ? isnan(s) : isfinite(s);
      for (int64_t k = 0; k < K; k++) {
        const float v = w[n * ldw + k];
        /* ties: 0.5 -> 0, 1.5 -> 2 -> 1; 1.0 -> 1 */
        const int want = !isfinite(s) ? 0 : v / s > 0.5f ? 1 : v / s < -0.5f ? -1 : 0;
        ok &= wq[n * K + k] == want;
      }
    }
    check(ok, "%s quantize_weights special N=%lld K=%lld per_channel=%d mode=%d",
          bl_isa_name(isa), (long long)N, (long long)K, pc, mode);
  }
  free(w); free(pa); free(pb); free(sa); free(sb); free(wq);
}

static void test_acts(int isa, int64_t M, int64_t K, bl_dtype dt, int per_token, int mode) {
  const int64_t ldx = K + irand(5), Kp = bl_padded_k(K), ldq = Kp + irand(2) * 7;
  void *x = xmalloc((size_t)(M * ldx) * esz(dt));
  fill_x(x, dt, M * ldx, mode);
  if (mode == 3 && K >= 2) { /* exact ties: amax 127 gives s = 1 and x = n + 0.5 */
    for (int64_t m = 0; m < M; m++) {
      for (int64_t k = 0; k < K; k++) set_x(x, dt, m * ldx + k, (float)(irand(254) - 127) + 0.5f);
      set_x(x, dt, m * ldx + irand((int)K), (m & 1) ? -127.0f : 127.0f);
    }
  }
  if (mode == 4) { /* NaN and Inf rows */
    set_x(x, dt, irand((int)K), NAN);
    if (M > 2) set_x(x, dt, 2 * ldx + irand((int)K), -INFINITY);
  }
  int8_t *qa = xmalloc((size_t)(M * ldq)), *qb = xmalloc((size_t)(M * ldq));
  float *sa = xmalloc((size_t)M * 4), *sb = xmalloc((size_t)M * 4);
  int32_t *ra = xmalloc((size_t)M * 4), *rb = xmalloc((size_t)M * 4);
  memset(qa, 0x77, (size_t)(M * ldq));
  memset(qb, 0x77, (size_t)(M * ldq));
  bl_status st_a = bl_quantize_acts_ref(x, dt, M, K, ldx, 1e-5f, per_token, qa, ldq, sa, ra, 1);
  bl_isa_set(isa);
  bl_status st_b = bl_quantize_acts(x, dt, M, K, ldx, 1e-5f, per_token, qb, ldq, sb, rb, 2);
  int ok = st_a == BL_OK && st_b == BL_OK && !memcmp(qa, qb, (size_t)(M * ldq)) &&
           !memcmp(sa, sb, (size_t)M * 4) && !memcmp(ra, rb, (size_t)M * 4);
  check(ok, "%s quantize_acts M=%lld K=%lld %s per_token=%d mode=%d", bl_isa_name(isa),
        (long long)M, (long long)K, dtn[dt], per_token, mode);
  free(x); free(qa); free(qb); free(sa); free(sb); free(ra); free(rb);
}

static void test_gemm(int isa, int64_t M, int64_t N, int64_t K, int extreme) {
  const int64_t Kp = bl_padded_k(K), ldq = Kp + irand(2) * 64 + irand(2) * 3;
  const int64_t ldacc = N + irand(3), rb = bl_packed_row_bytes(K);
  int8_t *xq = xmalloc((size_t)(M * ldq));
  uint8_t *p = xmalloc((size_t)(N * rb));
  fill_xq(xq, M, K, ldq, extreme);
  fill_packed(p, N, K, extreme != 0);
  int32_t *rs = xmalloc((size_t)M * 4);
  for (int64_t m = 0; m < M; m++) {
    rs[m] = 0;
    for (int64_t k = 0; k < Kp; k++) rs[m] += xq[m * ldq + k];
  }
  size_t bytes = (size_t)(M * ldacc) * 4;
  int32_t *a = xmalloc(bytes), *b = xmalloc(bytes), *c = xmalloc(bytes);
  memset(a, 0x33, bytes); memset(b, 0x33, bytes); memset(c, 0x33, bytes);
  bl_status s0 = bl_gemm_acc_ref(xq, ldq, p, M, N, K, a, ldacc, 1);
  bl_isa_set(isa);
  bl_status s1 = bl_gemm_acc(xq, ldq, rs, p, M, N, K, b, ldacc, 1);
  bl_status s2 = bl_gemm_acc(xq, ldq, NULL, p, M, N, K, c, ldacc, 2);
  check(s0 == BL_OK && s1 == BL_OK && !memcmp(a, b, bytes),
        "%s gemm_acc M=%lld N=%lld K=%lld extreme=%d 1 thread", bl_isa_name(isa), (long long)M,
        (long long)N, (long long)K, extreme);
  check(s2 == BL_OK && !memcmp(a, c, bytes),
        "%s gemm_acc M=%lld N=%lld K=%lld extreme=%d 2 threads, rowsum NULL", bl_isa_name(isa),
        (long long)M, (long long)N, (long long)K, extreme);
  free(xq); free(p); free(rs); free(a); free(b); free(c);
}

/* bl_linear on `isa` vs the same call on the ref path: identical output bits. */
static void test_linear(int isa, int64_t M, int64_t N, int64_t K, bl_dtype xdt, bl_dtype ydt,
                        int mode) {
  const int64_t ldx = K + irand(3), ldy = N + irand(3), rb = bl_packed_row_bytes(K);
  const int pc = irand(2), pt = irand(2), has_bias = irand(3) != 0;
  void *x = xmalloc((size_t)(M * ldx) * esz(xdt));
  fill_x(x, xdt, M * ldx, mode == 2 ? 2 : 0);
  if (mode == 1) set_x(x, xdt, (M - 1) * ldx + irand((int)K), NAN); /* last row NaN */
  if (mode == 3) /* integers with amax 127: s_x = 1, so y = acc * ws exactly, many rounding ties */
    for (int64_t m = 0; m < M; m++) {
      for (int64_t k = 0; k < K; k++) set_x(x, xdt, m * ldx + k, (float)(irand(255) - 127));
      set_x(x, xdt, m * ldx + irand((int)K), 127.0f);
    }
  float *wt = xmalloc((size_t)(N * K) * 4), *ws = xmalloc((size_t)N * 4), *bias = xmalloc((size_t)N * 4);
  for (int64_t i = 0; i < N * K; i++) wt[i] = frand();
  uint8_t *p = xmalloc((size_t)(N * rb));
  bl_quantize_weights_ref(wt, BL_F32, N, K, K, 1e-5f, pc, ws, p, 1);
  for (int64_t n = 0; n < N; n++) {
    bias[n] = frand() * 3.0f;
    /* mode 2: scales spanning half's subnormals to overflow */
    if (mode == 2) ws[pc ? n : 0] = ldexpf(1.0f + frand() * 0.5f, irand(50) - 40);
    if (mode == 3) ws[pc ? n : 0] = ldexpf(1.0f, irand(9) - 4);
  }
  size_t wsb = bl_linear_workspace_bytes(M, K), ybytes = (size_t)(M * ldy) * esz(ydt);
  void *w1 = xmalloc(wsb), *w2 = xmalloc(wsb);
  void *ya = xmalloc(ybytes), *yb = xmalloc(ybytes), *yc = xmalloc(ybytes);
  memset(ya, 0x44, ybytes); memset(yb, 0x44, ybytes); memset(yc, 0x44, ybytes);
  const float *bp = has_bias ? bias : NULL;
  bl_isa_set(BL_ISA_REF);
  bl_status s0 = bl_linear(x, xdt, M, K, ldx, p, N, ws, pc, bp, 1e-5f, pt, ya, ydt, ldy, w1, 1);
  bl_isa_set(isa);
  bl_status s1 = bl_linear(x, xdt, M, K, ldx, p, N, ws, pc, bp, 1e-5f, pt, yb, ydt, ldy, w2, 1);
  bl_status s2 = bl_linear(x, xdt, M, K, ldx, p, N, ws, pc, bp, 1e-5f, pt, yc, ydt, ldy, w2, 2);
  check(s0 == BL_OK && s1 == BL_OK && s2 == BL_OK && !memcmp(ya, yb, ybytes) && !memcmp(ya, yc, ybytes),
        "%s linear M=%lld N=%lld K=%lld %s->%s per_channel=%d per_token=%d bias=%d mode=%d, 1 and 2 threads",
        bl_isa_name(isa), (long long)M, (long long)N, (long long)K, dtn[xdt], dtn[ydt], pc, pt,
        has_bias, mode);
  /* the same through bl_quantize_acts + bl_linear_q (the training forward), with and without
   * the row sums */
  const int64_t Kp = bl_padded_k(K);
  int8_t *xq = xmalloc((size_t)(M * Kp));
  float *xs = xmalloc((size_t)M * 4);
  int32_t *rs = xmalloc((size_t)M * 4);
  const int with_rowsum = irand(2);
  memset(yc, 0x44, ybytes);
  bl_status s3 = bl_quantize_acts(x, xdt, M, K, ldx, 1e-5f, pt, xq, Kp, xs, rs, 2);
  if (s3 == BL_OK)
    s3 = bl_linear_q(xq, Kp, xs, with_rowsum ? rs : NULL, M, p, N, K, ws, pc, bp, yc, ydt, ldy, 2);
  check(s3 == BL_OK && !memcmp(ya, yc, ybytes),
        "%s quantize_acts + linear_q M=%lld N=%lld K=%lld %s->%s rowsum=%d mode=%d == linear",
        bl_isa_name(isa), (long long)M, (long long)N, (long long)K, dtn[xdt], dtn[ydt],
        with_rowsum, mode);
  free(x); free(wt); free(ws); free(bias); free(p); free(w1); free(w2); free(ya); free(yb); free(yc);
  free(xq); free(xs); free(rs);
}

static void test_bad_args(int isa) {
  bl_isa_set(isa);
  float w[256 * 2] = {0}, s[4], xs[4];
  uint8_t p[64 * 2];
  int8_t q[256 * 2];
  int32_t acc[8], rs[2];
  char ws[4096] __attribute__((aligned(64)));
  float y[8];
  const char *n = bl_isa_name(isa);
  int ok = 1;
  ok &= bl_quantize_weights(NULL, BL_F32, 2, 100, 100, 1e-5f, 0, s, p, 1) == BL_ERR_NULL;
  ok &= bl_quantize_weights(w, BL_F32, -1, 100, 100, 1e-5f, 0, s, p, 1) == BL_ERR_SIZE;
  ok &= bl_quantize_weights(w, BL_F32, 2, 0, 100, 1e-5f, 0, s, p, 1) == BL_ERR_SIZE;
  ok &= bl_quantize_weights(w, BL_F32, 2, 100, 99, 1e-5f, 0, s, p, 1) == BL_ERR_STRIDE;
  ok &= bl_quantize_weights(w, BL_I8, 2, 100, 100, 1e-5f, 0, s, p, 1) == BL_ERR_ARG;
  check(ok, "%s quantize_weights bad arguments -> status codes", n);
  ok = 1;
  ok &= bl_quantize_acts(NULL, BL_F32, 2, 100, 100, 1e-5f, 1, q, 128, xs, rs, 1) == BL_ERR_NULL;
  ok &= bl_quantize_acts(w, BL_F32, -2, 100, 100, 1e-5f, 1, q, 128, xs, rs, 1) == BL_ERR_SIZE;
  ok &= bl_quantize_acts(w, BL_F32, 2, 100, 99, 1e-5f, 1, q, 128, xs, rs, 1) == BL_ERR_STRIDE;
  ok &= bl_quantize_acts(w, BL_F32, 2, 100, 100, 1e-5f, 1, q, 127, xs, rs, 1) == BL_ERR_STRIDE;
  ok &= bl_quantize_acts(w, (bl_dtype)7, 2, 100, 100, 1e-5f, 1, q, 128, xs, rs, 1) == BL_ERR_ARG;
  ok &= bl_quantize_acts(w, BL_F32, 0, 100, 100, 1e-5f, 1, q, 128, xs, rs, 1) == BL_OK;
  check(ok, "%s quantize_acts bad arguments -> status codes", n);
  ok = 1;
  ok &= bl_gemm_acc(NULL, 128, NULL, p, 2, 4, 100, acc, 4, 1) == BL_ERR_NULL;
  ok &= bl_gemm_acc(q, 128, NULL, NULL, 2, 4, 100, acc, 4, 1) == BL_ERR_NULL;
  ok &= bl_gemm_acc(q, 128, NULL, p, 2, 0, 100, acc, 4, 1) == BL_ERR_SIZE;
  ok &= bl_gemm_acc(q, 128, NULL, p, 2, 4, -5, acc, 4, 1) == BL_ERR_SIZE;
  ok &= bl_gemm_acc(q, 100, NULL, p, 2, 4, 100, acc, 4, 1) == BL_ERR_STRIDE;
  ok &= bl_gemm_acc(q, 128, NULL, p, 2, 4, 100, acc, 3, 1) == BL_ERR_STRIDE;
  ok &= bl_gemm_acc(q, 128, NULL, p, 0, 4, 100, acc, 4, 1) == BL_OK;
  check(ok, "%s gemm_acc bad arguments -> status codes", n);
  ok = 1;
  ok &= bl_linear(NULL, BL_F32, 2, 100, 100, p, 2, s, 0, NULL, 1e-5f, 1, y, BL_F32, 2, ws, 1) == BL_ERR_NULL;
  ok &= bl_linear(w, BL_F32, 2, 100, 100, p, 2, s, 0, NULL, 1e-5f, 1, y, BL_F32, 2, NULL, 1) == BL_ERR_NULL;
  ok &= bl_linear(w, BL_F32, 2, 100, 100, p, 0, s, 0, NULL, 1e-5f, 1, y, BL_F32, 2, ws, 1) == BL_ERR_SIZE;
  ok &= bl_linear(w, BL_F32, -1, 100, 100, p, 2, s, 0, NULL, 1e-5f, 1, y, BL_F32, 2, ws, 1) == BL_ERR_SIZE;
  ok &= bl_linear(w, BL_F32, 2, 100, 50, p, 2, s, 0, NULL, 1e-5f, 1, y, BL_F32, 2, ws, 1) == BL_ERR_STRIDE;
  ok &= bl_linear(w, BL_F32, 2, 100, 100, p, 2, s, 0, NULL, 1e-5f, 1, y, BL_F32, 1, ws, 1) == BL_ERR_STRIDE;
  ok &= bl_linear(w, BL_F32, 2, 100, 100, p, 2, s, 0, NULL, 1e-5f, 1, y, (bl_dtype)-1, 2, ws, 1) == BL_ERR_ARG;
  check(ok, "%s linear bad arguments -> status codes", n);
  ok = 1;
  ok &= bl_linear_q(q, 128, NULL, rs, 2, p, 2, 100, s, 0, NULL, y, BL_F32, 2, 1) == BL_ERR_NULL;
  ok &= bl_linear_q(q, 128, xs, rs, 2, NULL, 2, 100, s, 0, NULL, y, BL_F32, 2, 1) == BL_ERR_NULL;
  ok &= bl_linear_q(q, 128, xs, rs, 2, p, 0, 100, s, 0, NULL, y, BL_F32, 2, 1) == BL_ERR_SIZE;
  ok &= bl_linear_q(q, 127, xs, rs, 2, p, 2, 100, s, 0, NULL, y, BL_F32, 2, 1) == BL_ERR_STRIDE;
  ok &= bl_linear_q(q, 128, xs, rs, 2, p, 2, 100, s, 0, NULL, y, BL_F32, 1, 1) == BL_ERR_STRIDE;
  ok &= bl_linear_q(q, 128, xs, rs, 2, p, 2, 100, s, 0, NULL, y, (bl_dtype)3, 2, 1) == BL_ERR_ARG;
  ok &= bl_linear_q(q, 128, xs, rs, 0, p, 2, 100, s, 0, NULL, y, BL_F32, 2, 1) == BL_OK;
  check(ok, "%s linear_q bad arguments -> status codes", n);
  /* eps that would make a scale zero, denormal, NaN or Inf; K past the int32 accumulator bound */
  const float bad_eps[] = {0.0f, -1e-6f, 1e-45f, 1e-37f, NAN, INFINITY};
  ok = 1;
  for (size_t i = 0; i < sizeof(bad_eps) / sizeof(bad_eps[0]); i++) {
    const float e = bad_eps[i];
    ok &= bl_quantize_weights(w, BL_F32, 2, 100, 100, e, 0, s, p, 1) == BL_ERR_ARG;
    ok &= bl_quantize_acts(w, BL_F32, 2, 100, 100, e, 1, q, 128, xs, rs, 1) == BL_ERR_ARG;
    ok &= bl_linear(w, BL_F32, 2, 100, 100, p, 2, s, 0, NULL, e, 1, y, BL_F32, 2, ws, 1) == BL_ERR_ARG;
  }
  ok &= bl_quantize_weights(w, BL_F32, 2, 100, 100, BL_MIN_EPS, 0, s, p, 1) == BL_OK;
  check(ok, "%s eps below 127 * FLT_MIN, NaN or Inf -> BL_ERR_ARG", n);
  ok = 1;
  const int64_t big = (int64_t)BL_MAX_K + 1, bigp = bl_padded_k(big);
  ok &= bl_gemm_acc(q, bigp, NULL, p, 1, 2, big, acc, 2, 1) == BL_ERR_SIZE;
  ok &= bl_linear_q(q, bigp, xs, rs, 1, p, 2, big, s, 0, NULL, y, BL_F32, 2, 1) == BL_ERR_SIZE;
  ok &= bl_quantize_acts(w, BL_F32, 1, big, big, 1e-5f, 1, q, bigp, xs, rs, 1) == BL_ERR_SIZE;
  ok &= bl_linear(w, BL_F32, 1, big, big, p, 2, s, 0, NULL, 1e-5f, 1, y, BL_F32, 2, ws, 1) == BL_ERR_SIZE;
  check(ok, "%s K > BL_MAX_K (int32 accumulators could overflow) -> BL_ERR_SIZE", n);
  /* absurd thread counts are clamped, not passed to OpenMP */
  float s1[1], s2[1];
  uint8_t p1[64 * 2], p2[64 * 2];
  for (int i = 0; i < 200; i++) w[i] = (float)(i % 7) - 3.0f;
  ok = bl_quantize_weights(w, BL_F32, 2, 100, 100, 1e-5f, 0, s1, p1, 1) == BL_OK &&
       bl_quantize_weights(w, BL_F32, 2, 100, 100, 1e-5f, 0, s2, p2, 100000) == BL_OK &&
       !memcmp(s1, s2, 4) && !memcmp(p1, p2, 64);
  check(ok, "%s nthreads = 100000 is clamped (same result as 1 thread)", n);
}

/* ---------------------------------------------------------------- invalid packed codes */
/* Code 3 is not part of the format; every path reads it as code 2 (weight +1) and must give the
 * same bits as the reference on any byte pattern, without int16 overflow (docs/packed_format.md).
 * Weight patterns: 0 = 0xFF everywhere, 1 = uniform random bytes, 2 = every byte value in turn,
 * 3 = random valid codes with some fields set to 3. Activations: 0 = random, 1 = all -128,
 * 2 = all +127 (columns < K; padding columns are 0 as bl_quantize_acts writes them). */
static void fill_bytes_invalid(uint8_t *p, int64_t n, int pattern) {
  for (int64_t i = 0; i < n; i++) {
    int b = pattern == 0 ? 0xFF : pattern == 1 ? irand(256) : (int)((i * 37 + i / 256) & 255);
    if (pattern == 3) {
      b = 0;
      for (int f = 0; f < 4; f++) b |= (irand(4) == 0 ? 3 : irand(3)) << (2 * f);
    }
    p[i] = (uint8_t)b;
  }
}

/* The weight of k in row n by the documented rule w = min(code, 2) - 1, independent of the core. */
static int invalid_code_weight(const uint8_t *p, int64_t rb, int64_t n, int64_t k) {
  int c = (p[n * rb + (k / 128) * 32 + (k % 32)] >> (2 * ((k % 128) / 32))) & 3;
  return (c < 2 ? c : 2) - 1;
}

static void test_invalid_codes_gemm(int isa, int64_t M, int64_t N, int64_t K, int wpat, int xmode) {
  const int64_t Kp = bl_padded_k(K), rb = bl_packed_row_bytes(K), ldq = Kp + irand(2) * 5;
  const int64_t ldacc = N + irand(2);
  int8_t *xq = xmalloc((size_t)(M * ldq));
  uint8_t *p = xmalloc((size_t)(N * rb));
  fill_bytes_invalid(p, N * rb, wpat);
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < ldq; k++)
      xq[m * ldq + k] = k >= K ? (k < Kp ? 0 : 0x5a)
                      : (int8_t)(xmode == 1 ? -128 : xmode == 2 ? 127 : irand(256) - 128);
  int32_t *rs = xmalloc((size_t)M * 4);
  for (int64_t m = 0; m < M; m++) {
    rs[m] = 0;
    for (int64_t k = 0; k < Kp; k++) rs[m] += xq[m * ldq + k];
  }
  const size_t bytes = (size_t)(M * ldacc) * 4;
  int32_t *a = xmalloc(bytes), *b = xmalloc(bytes), *c = xmalloc(bytes);
  memset(a, 0x33, bytes); memset(b, 0x33, bytes); memset(c, 0x33, bytes);
  /* the reference against the rule itself (the spot check keeps it cheap for large shapes) */
  bl_status s0 = bl_gemm_acc_ref(xq, ldq, p, M, N, K, a, ldacc, 1);
  int ref_ok = s0 == BL_OK;
  for (int t = 0; t < 8 && ref_ok; t++) {
    const int64_t m = irand((int)M), n = irand((int)N);
    int64_t e = 0;
    for (int64_t k = 0; k < K; k++) e += (int64_t)xq[m * ldq + k] * invalid_code_weight(p, rb, n, k);
    ref_ok = a[m * ldacc + n] == (int32_t)e;
  }
  bl_isa_set(isa);
  bl_status s1 = bl_gemm_acc(xq, ldq, rs, p, M, N, K, b, ldacc, 1);
  bl_status s2 = bl_gemm_acc(xq, ldq, NULL, p, M, N, K, c, ldacc, 2);
  check(ref_ok && s1 == BL_OK && s2 == BL_OK && !memcmp(a, b, bytes) && !memcmp(a, c, bytes),
        "%s gemm_acc invalid codes M=%lld N=%lld K=%lld weights=%d x=%d, 1 and 2 threads",
        bl_isa_name(isa), (long long)M, (long long)N, (long long)K, wpat, xmode);
  free(xq); free(p); free(rs); free(a); free(b); free(c);
}

/* bl_linear and bl_linear_q on `isa` vs the ref path on invalid codes: identical output bits. */
static void test_invalid_codes_linear(int isa, int64_t M, int64_t N, int64_t K, int wpat,
                                      int xmode, bl_dtype ydt) {
  const int64_t ldx = K + irand(2), ldy = N + irand(2), rb = bl_packed_row_bytes(K);
  const int64_t Kp = bl_padded_k(K);
  const int pc = irand(2), pt = irand(2);
  float *x = xmalloc((size_t)(M * ldx) * 4), *ws = xmalloc((size_t)N * 4), *bias = xmalloc((size_t)N * 4);
  for (int64_t i = 0; i < M * ldx; i++) x[i] = xmode == 1 ? -1.0f : xmode == 2 ? 1.0f : frand() * 4.0f;
  for (int64_t n = 0; n < N; n++) ws[n] = 0.01f + 0.5f * fabsf(frand()), bias[n] = frand();
  uint8_t *p = xmalloc((size_t)(N * rb));
  fill_bytes_invalid(p, N * rb, wpat);
  const size_t wsb = bl_linear_workspace_bytes(M, K), ybytes = (size_t)(M * ldy) * esz(ydt);
  void *w1 = xmalloc(wsb), *ya = xmalloc(ybytes), *yb = xmalloc(ybytes), *yc = xmalloc(ybytes);
  memset(ya, 0x44, ybytes); memset(yb, 0x44, ybytes); memset(yc, 0x44, ybytes);
  bl_isa_set(BL_ISA_REF);
  bl_status s0 = bl_linear(x, BL_F32, M, K, ldx, p, N, ws, pc, bias, 1e-5f, pt, ya, ydt, ldy, w1, 1);
  bl_isa_set(isa);
  bl_status s1 = bl_linear(x, BL_F32, M, K, ldx, p, N, ws, pc, bias, 1e-5f, pt, yb, ydt, ldy, w1, 1);
  bl_status s2 = bl_linear(x, BL_F32, M, K, ldx, p, N, ws, pc, bias, 1e-5f, pt, yc, ydt, ldy, w1, 2);
  check(s0 == BL_OK && s1 == BL_OK && s2 == BL_OK && !memcmp(ya, yb, ybytes) && !memcmp(ya, yc, ybytes),
        "%s linear invalid codes M=%lld N=%lld K=%lld weights=%d x=%d ->%s, 1 and 2 threads",
        bl_isa_name(isa), (long long)M, (long long)N, (long long)K, wpat, xmode, dtn[ydt]);
  /* bl_linear_q with x_q = -128 everywhere (bl_quantize_acts never gives -128) */
  int8_t *xq = xmalloc((size_t)(M * Kp));
  float *xs = xmalloc((size_t)M * 4);
  for (int64_t m = 0; m < M; m++) {
    for (int64_t k = 0; k < Kp; k++) xq[m * Kp + k] = (int8_t)(k < K ? -128 : 0);
    xs[m] = 1.0f / 127.0f;
  }
  memset(ya, 0x44, ybytes); memset(yb, 0x44, ybytes);
  bl_isa_set(BL_ISA_REF);
  s0 = bl_linear_q(xq, Kp, xs, NULL, M, p, N, K, ws, pc, bias, ya, ydt, ldy, 1);
  bl_isa_set(isa);
  s1 = bl_linear_q(xq, Kp, xs, NULL, M, p, N, K, ws, pc, bias, yb, ydt, ldy, 2);
  check(s0 == BL_OK && s1 == BL_OK && !memcmp(ya, yb, ybytes),
        "%s linear_q invalid codes x_q=-128 M=%lld N=%lld K=%lld weights=%d ->%s",
        bl_isa_name(isa), (long long)M, (long long)N, (long long)K, wpat, dtn[ydt]);
  free(x); free(ws); free(bias); free(p); free(w1); free(ya); free(yb); free(yc); free(xq); free(xs);
}

/* bl_unpack_weights(_f) on invalid codes: w = min(code, 2) - 1, on every path. */
static void test_invalid_codes_unpack(int isa, int64_t N, int64_t K, int wpat) {
  const int64_t rb = bl_packed_row_bytes(K), ldo = K + irand(2);
  uint8_t *p = xmalloc((size_t)(N * rb));
  fill_bytes_invalid(p, N * rb, wpat);
  int8_t *q = xmalloc((size_t)(N * ldo));
  float *f = xmalloc((size_t)(N * ldo) * 4);
  uint16_t *h = xmalloc((size_t)(N * ldo) * 2), *bf = xmalloc((size_t)(N * ldo) * 2);
  bl_isa_set(isa);
  int ok = bl_unpack_weights(p, N, K, q, ldo) == BL_OK &&
           bl_unpack_weights_f(p, N, K, f, BL_F32, ldo, 2) == BL_OK &&
           bl_unpack_weights_f(p, N, K, h, BL_F16, ldo, 2) == BL_OK &&
           bl_unpack_weights_f(p, N, K, bf, BL_BF16, ldo, 1) == BL_OK;
  for (int64_t n = 0; n < N && ok; n++)
    for (int64_t k = 0; k < K && ok; k++) {
      const int w = invalid_code_weight(p, rb, n, k), i = (int)(n * ldo + k);
      ok = q[i] == w && f[i] == (float)w && half_value(h[i]) == (float)w &&
           bl_bf16_to_f32(bf[i]) == (float)w;
    }
  check(ok, "%s unpack_weights invalid codes N=%lld K=%lld weights=%d (i8, f32, f16, bf16)",
        bl_isa_name(isa), (long long)N, (long long)K, wpat);
  free(p); free(q); free(f); free(h); free(bf);
}

/* Every supported path on invalid codes: the GEMV (M = 1) and tiled bodies, M = 1..5 and more,
 * odd N and K, K past the int16 flush intervals of AVX2 (8 and 16 blocks). */
static void test_invalid_codes(void) {
  static const int64_t Ms[] = {1, 2, 3, 4, 5, 9, 70};
  static const int64_t Ns[] = {1, 3, 7, 13};
  static const int64_t Ks[] = {1, 129, 301, 2101, 4229};
  const int nm = small ? 6 : 7, nk = small ? 4 : 5;
  for (int isa = 0; isa < BL_ISA_COUNT; isa++) {
    if (!bl_isa_supported(isa)) continue;
    for (int wp = 0; wp < 4; wp++) test_invalid_codes_unpack(isa, 7, wp == 0 ? 300 : 1 + irand(2000), wp);
    if (isa == BL_ISA_REF) continue; /* the rest compares a path with ref */
    for (int a = 0; a < nm; a++)
      for (int c = 0; c < nk; c++)
        for (int xm = 0; xm < 3; xm++) {
          test_invalid_codes_gemm(isa, Ms[a], Ns[irand(4)], Ks[c], 0, xm); /* 0xFF */
          test_invalid_codes_gemm(isa, Ms[a], Ns[irand(4)], Ks[c], 1 + irand(3), xm);
        }
    test_invalid_codes_gemm(isa, small ? 3 : 17, 4 + irand(4), small ? 4229 : 8321, 0, 1);
    if (!small) test_invalid_codes_gemm(isa, 1, 4096, 4096, 0, 1); /* the GEMV's thread split */
    /* small M (decode): one contiguous range of panels per thread (gemm.c, M <= 4) and the
     * prefetched weight stream, with several panels per thread (N past 2 x 256 rows), odd N and
     * K, random bytes (code 3 included); 1 and 2 threads against ref */
    for (int64_t m = 1; m <= 5; m++) {
      const int64_t n = small ? 530 + irand(40) : 1000 + irand(700), k = 1 + irand(small ? 700 : 1400);
      test_invalid_codes_gemm(isa, m, n, k, 1 + irand(3), 0);
      test_invalid_codes_linear(isa, m, n, k, 1 + irand(3), 0, (bl_dtype)irand(3));
    }
    for (int a = 0; a < nm; a++)
      for (int xm = 0; xm < 3; xm++) {
        const bl_dtype ydt = (bl_dtype)irand(3);
        test_invalid_codes_linear(isa, Ms[a], Ns[irand(4)], Ks[1 + irand(nk - 1)], 0, xm, ydt);
        test_invalid_codes_linear(isa, Ms[a], Ns[irand(4)], Ks[1 + irand(nk - 1)], 1 + irand(3), xm,
                                  ydt);
      }
  }
}

/* ---------------------------------------------------------------- decode layout (LUT) */
/* The CPU options as the process started (AUTO and the measured max M): every test that changes
 * them puts these back. */
static int64_t lut_mode0, lut_max_m0;
static void lut_defaults(void) {
  bl_cpu_set_option(BL_CPU_OPT_LUT, lut_mode0);
  bl_cpu_set_option(BL_CPU_OPT_LUT_MAX_M, lut_max_m0);
}

static int all_bytes(const void *p, int v, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != (uint8_t)v) return 0;
  return 1;
}

/* bl_lut_pack into a fresh buffer (the layout's size + 64 guard bytes of 0xa5). */
static uint8_t *lut_packed(const uint8_t *p, int64_t N, int64_t K, int nthreads, bl_status *st) {
  const size_t lb = bl_lut_bytes(N, K);
  uint8_t *lut = xmalloc(lb + 64);
  memset(lut, 0xa5, lb + 64);
  *st = bl_lut_pack(p, N, K, lut, nthreads);
  return lut;
}

/* Random 16-bit words: a "layout" that gives wrong sums wherever it is read (any word is safe to
 * read: each 5-bit index is < 32 entries). */
static uint8_t *lut_garbage(int64_t N, int64_t K) {
  const size_t lb = bl_lut_bytes(N, K);
  uint8_t *g = xmalloc(lb);
  for (size_t i = 0; i < lb / 2; i++) ((uint16_t *)g)[i] = (uint16_t)rnd();
  return g;
}

/* Sets the code of (n, k) in a packed buffer. */
static void set_code(uint8_t *p, int64_t K, int64_t n, int64_t k, int c) {
  uint8_t *b = p + n * bl_packed_row_bytes(K) + (k / 128) * 32 + (k % 32);
  const int sh = (int)(2 * ((k % 128) / 32));
  *b = (uint8_t)((*b & ~(3 << sh)) | (c << sh));
}

/* Options: defaults at start, bounds, rejected values change nothing, unknown options read -1. */
static void test_lut_options(void) {
  check(lut_mode0 == BL_CPU_LUT_OFF && lut_max_m0 >= 0 && lut_max_m0 <= 64,
        "cpu options at start: LUT = %lld (OFF), LUT_MAX_M = %lld in 0..64", (long long)lut_mode0,
        (long long)lut_max_m0);
  check(bl_cpu_get_option(-1) == -1 && bl_cpu_get_option(BL_CPU_OPT_COUNT) == -1 &&
            bl_cpu_get_option(1000) == -1,
        "cpu_get_option of an unknown option -> -1");
  int ok = bl_cpu_set_option(BL_CPU_OPT_LUT, BL_CPU_LUT_FORCE) == BL_OK &&
           bl_cpu_set_option(BL_CPU_OPT_LUT_MAX_M, 7) == BL_OK;
  static const int64_t bad[][2] = {
      {-1, 0}, {BL_CPU_OPT_COUNT, 0}, {99, 1}, {BL_CPU_OPT_LUT, -1}, {BL_CPU_OPT_LUT, 3},
      {BL_CPU_OPT_LUT, INT64_MIN}, {BL_CPU_OPT_LUT, ((int64_t)1 << 32) + 1},
      {BL_CPU_OPT_LUT_MAX_M, -1}, {BL_CPU_OPT_LUT_MAX_M, 65}, {BL_CPU_OPT_LUT_MAX_M, INT64_MAX},
      {BL_CPU_OPT_LUT_MAX_M, (int64_t)1 << 32}};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    ok &= bl_cpu_set_option((int)bad[i][0], bad[i][1]) == BL_ERR_ARG &&
          bl_cpu_get_option(BL_CPU_OPT_LUT) == BL_CPU_LUT_FORCE &&
          bl_cpu_get_option(BL_CPU_OPT_LUT_MAX_M) == 7;
  check(ok, "cpu_set_option: unknown options and values out of range -> BL_ERR_ARG, nothing changes");
  ok = 1;
  for (int64_t v = 0; v <= 64; v += 64) /* the bounds */
    ok &= bl_cpu_set_option(BL_CPU_OPT_LUT_MAX_M, v) == BL_OK && bl_cpu_get_option(BL_CPU_OPT_LUT_MAX_M) == v;
  for (int64_t v = BL_CPU_LUT_OFF; v <= BL_CPU_LUT_FORCE; v++)
    ok &= bl_cpu_set_option(BL_CPU_OPT_LUT, v) == BL_OK && bl_cpu_get_option(BL_CPU_OPT_LUT) == v;
  lut_defaults();
  ok &= bl_cpu_get_option(BL_CPU_OPT_LUT) == lut_mode0 &&
        bl_cpu_get_option(BL_CPU_OPT_LUT_MAX_M) == lut_max_m0;
  check(ok, "cpu_set_option: LUT_MAX_M 0 and 64, LUT OFF/AUTO/FORCE accepted and read back");
}

/* Sizes: bl_lut_bytes, bl_linear_lut_workspace_bytes; bl_lut_pack's statuses. */
static void test_lut_sizes(void) {
  int ok = BL_LUT_COL_K == 9 && BL_LUT_TILE_ROWS == 32 && BL_LUT_SUPER_TILES == 16;
  static const int64_t bad[][2] = {{0, 1}, {-1, 1}, {INT64_MIN, 5}, {1, 0}, {1, -1}, {7, INT64_MIN},
                                   {1, BL_MAX_K + 1}, {(int64_t)1 << 50, 10},
                                   {((int64_t)1 << 40) + 1, 1}, {0, 0}};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) ok &= bl_lut_bytes(bad[i][0], bad[i][1]) == 0;
  static const int64_t Ns[] = {1, 2, 31, 32, 33, 511, 512, 513, 1000, (int64_t)1 << 40};
  static const int64_t Ks[] = {1, 2, 8, 9, 10, 27, 28, 128, 1153, BL_MAX_K};
  for (int a = 0; a < 10; a++)
    for (int b = 0; b < 10; b++)
      ok &= bl_lut_bytes(Ns[a], Ks[b]) == (size_t)(64 * ((Ns[a] + 31) / 32) * ((Ks[b] + 8) / 9));
  check(ok, "lut_bytes: 0 for N < 1, K < 1, K > BL_MAX_K, N > 2^40; else 64 ceil(N/32) ceil(K/9)");
  ok = 1;
  static const int64_t Ms[] = {0, 1, 3, 64};
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 9; b++)
      ok &= bl_linear_lut_workspace_bytes(Ms[a], Ks[b]) >=
            bl_linear_workspace_bytes(Ms[a], Ks[b]) + (size_t)(Ms[a] * 96 * ((Ks[b] + 8) / 9)) * 2;
  ok &= bl_linear_lut_workspace_bytes(-1, 10) == 0 && bl_linear_lut_workspace_bytes(1, 0) == 0 &&
        bl_linear_lut_workspace_bytes(1, BL_MAX_K + 1) == 0;
  check(ok, "linear_lut_workspace_bytes >= linear's + M tables of 96 ceil(K/9) int16; 0 for bad sizes");
  /* bl_lut_pack: statuses, nothing written on a refusal */
  const int64_t N = 2, K = 100;
  uint8_t *p = xmalloc((size_t)(N * bl_packed_row_bytes(K)));
  memset(p, 0x55, (size_t)(N * bl_packed_row_bytes(K)));
  const size_t lb = bl_lut_bytes(N, K);
  uint8_t *lut = xmalloc(lb);
  memset(lut, 0xa5, lb);
  ok = bl_lut_pack(NULL, N, K, lut, 1) == BL_ERR_NULL && bl_lut_pack(p, N, K, NULL, 1) == BL_ERR_NULL &&
       bl_lut_pack(NULL, 0, 0, NULL, 1) == BL_ERR_NULL && bl_lut_pack(p, 0, K, lut, 1) == BL_ERR_SIZE &&
       bl_lut_pack(p, -2, K, lut, 1) == BL_ERR_SIZE && bl_lut_pack(p, N, 0, lut, 1) == BL_ERR_SIZE &&
       bl_lut_pack(p, N, -7, lut, 1) == BL_ERR_SIZE &&
       bl_lut_pack(p, N, BL_MAX_K + 1, lut, 1) == BL_ERR_SIZE &&
       bl_lut_pack(p, ((int64_t)1 << 40) + 1, K, lut, 1) == BL_ERR_SIZE && all_bytes(lut, 0xa5, lb);
  ok &= bl_lut_pack(p, N, K, lut, 100000) == BL_OK; /* absurd thread count: clamped */
  check(ok, "lut_pack: NULL -> BL_ERR_NULL, bad sizes -> BL_ERR_SIZE, nothing written");
  free(p); free(lut);
}

/* bl_lut_pack against the layout written from its spec (lut_spec.h): every word, padding rows
 * (n >= N) and padding columns (k >= K) as zero weights, code 3 as 2, nothing past the end. */
static void test_lut_layout(int64_t N, int64_t K, int wpat, int nthreads) {
  const int64_t rb = bl_packed_row_bytes(K), C = (K + 8) / 9;
  uint8_t *p = xmalloc((size_t)(N * rb));
  fill_bytes_invalid(p, N * rb, wpat);
  const size_t lb = bl_lut_bytes(N, K);
  uint16_t *want = xmalloc(lb);
  lut_spec_layout(p, N, K, want);
  bl_status st;
  uint8_t *lut = lut_packed(p, N, K, nthreads, &st);
  const uint16_t *got = (const uint16_t *)lut;
  int ok = st == BL_OK && lb == (size_t)(64 * ((N + 31) / 32) * C) && !memcmp(got, want, lb) &&
           all_bytes(lut + lb, 0xa5, 64);
  /* a padded row's words: three indices of code 1 */
  if (N % 32) ok &= got[lut_spec_offset(N, K, N, 0)] == LUT_SPEC_ZERO_WORD &&
                    got[lut_spec_offset(N, K, 32 * ((N + 31) / 32) - 1, C - 1)] == LUT_SPEC_ZERO_WORD;
  /* 0xFF everywhere (code 3 = weight +1): the last column reads 2 below K, 1 from K on */
  if (wpat == 0) {
    unsigned w = 0;
    for (int j = 0; j < 3; j++) {
      unsigned idx = 0, pw = 1;
      for (int t = 0; t < 3; t++, pw *= 3) idx += (9 * (C - 1) + 3 * j + t < K ? 2u : 1u) * pw;
      w |= idx << (5 * j);
    }
    for (int64_t n = 0; n < N; n++) ok &= got[lut_spec_offset(N, K, n, C - 1)] == w;
  }
  check(ok, "lut_pack N=%lld K=%lld weights=%d threads=%d: layout == spec (code 3 as 2, padding rows "
        "and columns zero weights, nothing past %zu bytes)", (long long)N, (long long)K, wpat,
        nthreads, lb);
  free(p); free(want); free(lut);
}

/* bl_lut_gemm_acc on every supported ISA (1, 2 and 3 threads) vs bl_gemm_acc_ref: identical acc
 * (gaps between rows untouched). x: 0 = random with a quarter -128 and a quarter 127, 1 = all
 * -128, 2 = all 127. weights: 0 = random bytes (code 3 included), row 0 with the signs of x row 0
 * (so acc is never all zero); 1 = rows of code 0 / 2 / 3 (0x00, 0xAA, 0xFF) in turn: with x all
 * -128 or 127 every lane of the int16 partial sums takes its largest value (the worst case of the
 * flush interval), and acc has a closed form. */
static void test_lut_gemm(int64_t M, int64_t N, int64_t K, int xmode, int wmode) {
  const int64_t Kp = bl_padded_k(K), rb = bl_packed_row_bytes(K), ldq = Kp + irand(2) * 5;
  const int64_t ldacc = N + irand(3);
  int8_t *xq = xmalloc((size_t)(M * ldq));
  for (int64_t m = 0; m < M; m++)
    for (int64_t k = 0; k < ldq; k++) {
      const int r = irand(4);
      xq[m * ldq + k] = k >= K ? (k < Kp ? 0 : 0x5a)
                      : (int8_t)(xmode == 1 ? -128 : xmode == 2 ? 127
                                 : r == 0 ? -128 : r == 1 ? 127 : irand(256) - 128);
    }
  uint8_t *p = xmalloc((size_t)(N * rb));
  if (wmode == 0) {
    fill_bytes_invalid(p, N * rb, 1);
    for (int64_t k = 0; k < K; k++) {
      const int v = xq[k];
      set_code(p, K, 0, k, v > 0 ? 2 + irand(2) : v < 0 ? 0 : irand(4));
    }
  } else {
    for (int64_t n = 0; n < N; n++) memset(p + n * rb, n % 3 == 0 ? 0x00 : n % 3 == 1 ? 0xAA : 0xFF, (size_t)rb);
  }
  bl_status st;
  uint8_t *lut = lut_packed(p, N, K, 2, &st);
  const size_t bytes = (size_t)((M - 1) * ldacc + N) * 4;
  int32_t *a = xmalloc(bytes), *b = xmalloc(bytes);
  memset(a, 0x33, bytes);
  int ok = st == BL_OK && bl_gemm_acc_ref(xq, ldq, p, M, N, K, a, ldacc, 1) == BL_OK;
  int nonzero = 0;
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      nonzero |= a[m * ldacc + n] != 0;
      if (wmode == 1 && xmode) /* closed form: weight -1 (row n % 3 == 0) or +1, x constant */
        ok &= a[m * ldacc + n] == (n % 3 == 0 ? -1 : 1) * (xmode == 1 ? -128 : 127) * (int32_t)K;
    }
  for (int isa = 0; isa < BL_ISA_COUNT; isa++) {
    if (!bl_isa_supported(isa)) continue;
    bl_isa_set(isa);
    int ok2 = ok && nonzero;
    for (int nt = 1; nt <= 3; nt++) {
      memset(b, 0x33, bytes);
      ok2 &= bl_lut_gemm_acc(xq, ldq, lut, M, N, K, b, ldacc, nt) == BL_OK && !memcmp(a, b, bytes);
    }
    check(ok2, "%s lut_gemm_acc M=%lld N=%lld K=%lld x=%d weights=%d (kernel %d), 1/2/3 threads == gemm_acc_ref",
          bl_isa_name(isa), (long long)M, (long long)N, (long long)K, xmode, wmode, bl_lut_kernel());
  }
  free(xq); free(p); free(lut); free(a); free(b);
}

/* bl_linear_lut (FORCE, 1 and 2 threads; lut NULL; OFF with a garbage layout) on every supported
 * ISA vs bl_linear on ref: identical output bytes. wsrc 0: weights quantized from floats, 1: random
 * bytes (code 3) with random scales. mode 1: the last row of x NaN (a NaN row). */
static void test_lut_linear(int64_t M, int64_t N, int64_t K, bl_dtype xdt, bl_dtype ydt, int pc,
                            int pt, int has_bias, int wsrc, int mode) {
  const int64_t ldx = K + irand(3), ldy = N + irand(3), rb = bl_packed_row_bytes(K);
  void *x = xmalloc((size_t)(M * ldx) * esz(xdt));
  fill_x(x, xdt, M * ldx, irand(3) == 0 ? 2 : 0);
  if (mode == 1) set_x(x, xdt, (M - 1) * ldx + irand((int)K), NAN);
  float *ws = xmalloc((size_t)N * 4), *bias = xmalloc((size_t)N * 4);
  uint8_t *p = xmalloc((size_t)(N * rb));
  if (wsrc == 0) {
    float *wt = xmalloc((size_t)(N * K) * 4);
    for (int64_t i = 0; i < N * K; i++) wt[i] = frand();
    bl_quantize_weights_ref(wt, BL_F32, N, K, K, 1e-5f, pc, ws, p, 1);
    free(wt);
  } else {
    fill_bytes_invalid(p, N * rb, 1);
    for (int64_t n = 0; n < N; n++) ws[n] = ldexpf(1.0f + frand() * 0.5f, irand(20) - 14);
  }
  for (int64_t n = 0; n < N; n++) bias[n] = frand() * 3.0f;
  const float *bp = has_bias ? bias : NULL;
  bl_status st;
  uint8_t *lut = lut_packed(p, N, K, 1, &st), *garbage = lut_garbage(N, K);
  const size_t wsb = bl_linear_lut_workspace_bytes(M, K), ybytes = (size_t)(M * ldy) * esz(ydt);
  void *wk = xmalloc(wsb), *ya = xmalloc(ybytes), *yb = xmalloc(ybytes);
  memset(ya, 0x44, ybytes);
  memset(wk, 0xcd, wsb);
  bl_isa_set(BL_ISA_REF);
  int ok0 = st == BL_OK &&
            bl_linear(x, xdt, M, K, ldx, p, N, ws, pc, bp, 1e-5f, pt, ya, ydt, ldy, wk, 1) == BL_OK;
  for (int isa = 0; isa < BL_ISA_COUNT; isa++) {
    if (!bl_isa_supported(isa)) continue;
    bl_isa_set(isa);
    int ok = ok0;
    bl_cpu_set_option(BL_CPU_OPT_LUT, BL_CPU_LUT_FORCE);
    ok &= bl_lut_used(M);
    for (int v = 0; v < 4; v++) { /* 1 thread, 2 threads, lut NULL, OFF with garbage */
      if (v == 3) bl_cpu_set_option(BL_CPU_OPT_LUT, BL_CPU_LUT_OFF);
      memset(yb, 0x44, ybytes);
      memset(wk, 0xcd, wsb);
      const uint8_t *l = v == 2 ? NULL : v == 3 ? garbage : lut;
      ok &= bl_linear_lut(x, xdt, M, K, ldx, p, l, N, ws, pc, bp, 1e-5f, pt, yb, ydt, ldy, wk,
                          v == 1 ? 2 : 1) == BL_OK &&
            !memcmp(ya, yb, ybytes);
    }
    lut_defaults();
    check(ok, "%s linear_lut M=%lld N=%lld K=%lld %s->%s per_channel=%d per_token=%d bias=%d "
          "weights=%d mode=%d == linear (FORCE 1/2 threads, lut NULL, OFF ignores a garbage layout)",
          bl_isa_name(isa), (long long)M, (long long)N, (long long)K, dtn[xdt], dtn[ydt], pc, pt,
          has_bias, wsrc, mode);
  }
  free(x); free(ws); free(bias); free(p); free(lut); free(garbage); free(wk); free(ya); free(yb);
}

/* AUTO on `isa`: bl_lut_used(M) == (M >= 0 and M <= LUT_MAX_M and the ISA's kernel is one AUTO
 * uses: AVX-512 VNNI; not ref, AVX2 or AVX-VNNI; NEON: whatever its table says, but only with a
 * kernel); FORCE: every M >= 0; OFF: none. Then bl_linear_lut with a garbage layout: equal to
 * bl_linear exactly where the layout is not read (bl_lut_used false), and with the real one
 * always equal. */
static void test_lut_auto(int isa) {
  bl_isa_set(isa);
  const char *nm = bl_isa_name(isa);
  const int kern = bl_lut_kernel();
  bl_cpu_set_option(BL_CPU_OPT_LUT, BL_CPU_LUT_AUTO);
  bl_cpu_set_option(BL_CPU_OPT_LUT_MAX_M, 64);
  const int auto_k = bl_lut_used(0); /* M = 0 <= any max M: 1 iff the kernel is an AUTO one */
  int ok = isa == BL_ISA_AVX512VNNI ? kern && auto_k
           : isa == BL_ISA_NEON_DOT ? (!auto_k || kern)
           : !kern && !auto_k;
  check(ok, "%s lut_kernel() = %d, AUTO kernel = %d (avx512vnni: 1 and 1; ref/avx2/avxvnni: 0 and 0)",
        nm, kern, auto_k);
  static const int64_t mms[] = {0, 1, 2, 5, 64};
  static const int64_t Ms[] = {-5, -1, 0, 1, 2, 3, 5, 6, 63, 64, 65, 1000, (int64_t)1 << 40};
  ok = 1;
  for (int a = 0; a < 5; a++) {
    bl_cpu_set_option(BL_CPU_OPT_LUT_MAX_M, mms[a]);
    for (int b = 0; b < 13; b++) {
      bl_cpu_set_option(BL_CPU_OPT_LUT, BL_CPU_LUT_AUTO);
      ok &= bl_lut_used(Ms[b]) == (Ms[b] >= 0 && auto_k && Ms[b] <= mms[a]);
      bl_cpu_set_option(BL_CPU_OPT_LUT, BL_CPU_LUT_FORCE);
      ok &= bl_lut_used(Ms[b]) == (Ms[b] >= 0);
      bl_cpu_set_option(BL_CPU_OPT_LUT, BL_CPU_LUT_OFF);
      ok &= bl_lut_used(Ms[b]) == 0;
    }
  }
  lut_defaults();
  bl_cpu_set_option(BL_CPU_OPT_LUT, BL_CPU_LUT_AUTO);
  for (int64_t m = 0; m <= 66; m++) ok &= bl_lut_used(m) == (auto_k && m <= lut_max_m0);
  check(ok, "%s lut_used: AUTO M <= max_m with an AUTO kernel only, FORCE all M >= 0, OFF none", nm);
  /* what bl_linear_lut reads */
  const int64_t N = 70, K = 100, rb = bl_packed_row_bytes(K);
  float *x = xmalloc(4 * K * 4), *wt = xmalloc((size_t)(N * K) * 4), ws[1];
  for (int64_t i = 0; i < 4 * K; i++) x[i] = frand() * 4.0f;
  for (int64_t i = 0; i < N * K; i++) wt[i] = frand();
  uint8_t *p = xmalloc((size_t)(N * rb));
  bl_quantize_weights_ref(wt, BL_F32, N, K, K, 1e-5f, 0, ws, p, 1);
  bl_status st;
  uint8_t *lut = lut_packed(p, N, K, 1, &st), *garbage = lut_garbage(N, K);
  const size_t wsb = bl_linear_lut_workspace_bytes(4, K);
  void *wk = xmalloc(wsb);
  float *y0 = xmalloc(4 * N * 4), *y1 = xmalloc(4 * N * 4), *y2 = xmalloc(4 * N * 4);
  ok = st == BL_OK;
  static const int64_t modes[][2] = {{BL_CPU_LUT_AUTO, -1}, {BL_CPU_LUT_AUTO, 2}, {BL_CPU_LUT_AUTO, 0},
                                     {BL_CPU_LUT_FORCE, 0}, {BL_CPU_LUT_OFF, 64}};
  int n_used = 0, n_not = 0;
  for (int a = 0; a < 5; a++)
    for (int64_t M = 1; M <= 4; M++) {
      lut_defaults();
      bl_cpu_set_option(BL_CPU_OPT_LUT, modes[a][0]);
      if (modes[a][1] >= 0) bl_cpu_set_option(BL_CPU_OPT_LUT_MAX_M, modes[a][1]);
      const int used = bl_lut_used(M);
      n_used += used, n_not += !used;
      ok &= bl_linear(x, BL_F32, M, K, K, p, N, ws, 0, NULL, 1e-5f, 1, y0, BL_F32, N, wk, 1) == BL_OK;
      ok &= bl_linear_lut(x, BL_F32, M, K, K, p, lut, N, ws, 0, NULL, 1e-5f, 1, y1, BL_F32, N, wk, 1) == BL_OK;
      ok &= bl_linear_lut(x, BL_F32, M, K, K, p, garbage, N, ws, 0, NULL, 1e-5f, 1, y2, BL_F32, N, wk, 1) == BL_OK;
      const size_t yb = (size_t)(M * N) * 4;
      ok &= !memcmp(y0, y1, yb) && (memcmp(y0, y2, yb) == 0) == !used;
    }
  lut_defaults();
  check(ok && n_used && n_not, "%s linear_lut reads the layout exactly where lut_used says so "
        "(%d calls read it, %d did not)", nm, n_used, n_not);
  free(x); free(wt); free(p); free(lut); free(garbage); free(wk); free(y0); free(y1); free(y2);
}

/* bl_lut_gemm_acc and bl_linear_lut refuse what bl_gemm_acc and bl_linear refuse, with the same
 * status, and write nothing then; M = 0 is BL_OK and writes nothing. */
static void test_lut_bad_args(int isa) {
  bl_isa_set(isa);
  const char *nm = bl_isa_name(isa);
  const int64_t N = 4, K = 100, big = (int64_t)BL_MAX_K + 1, bigp = bl_padded_k(big);
  int8_t *q = xmalloc(2 * 128);
  memset(q, 1, 2 * 128);
  uint8_t *p = xmalloc((size_t)(N * 32));
  memset(p, 0x55, (size_t)(N * 32));
  bl_status st;
  uint8_t *lut = lut_packed(p, N, K, 1, &st);
  int32_t acc[16], acc2[16];
  struct { int nq, nl, na; int64_t ldq, M, N, K, ldacc; bl_status want; } g[] = {
      {1, 0, 0, 128, 2, N, K, N, BL_ERR_NULL},  {0, 1, 0, 128, 2, N, K, N, BL_ERR_NULL},
      {0, 0, 1, 128, 2, N, K, N, BL_ERR_NULL},  {0, 0, 0, 128, 2, 0, K, N, BL_ERR_SIZE},
      {0, 0, 0, 128, 2, -1, K, N, BL_ERR_SIZE}, {0, 0, 0, 128, 2, N, 0, N, BL_ERR_SIZE},
      {0, 0, 0, 128, 2, N, -5, N, BL_ERR_SIZE}, {0, 0, 0, bigp, 1, N, big, N, BL_ERR_SIZE},
      {0, 0, 0, 100, 2, N, K, N, BL_ERR_STRIDE}, {0, 0, 0, 127, 1, N, K, N, BL_ERR_STRIDE},
      {0, 0, 0, 128, 2, N, K, 3, BL_ERR_STRIDE}, {0, 0, 0, 128, -1, N, K, N, BL_ERR_SIZE},
      {0, 0, 0, 128, (int64_t)1 << 41, N, K, N, BL_ERR_SIZE},
      {0, 0, 0, 128, 0, N, K, N, BL_OK}, {1, 1, 1, 128, 0, N, K, N, BL_OK}};
  int ok = st == BL_OK;
  for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
    memset(acc, 0x33, sizeof(acc));
    memset(acc2, 0x33, sizeof(acc2));
    const bl_status s1 = bl_lut_gemm_acc(g[i].nq ? NULL : q, g[i].ldq, g[i].nl ? NULL : lut, g[i].M,
                                         g[i].N, g[i].K, g[i].na ? NULL : acc, g[i].ldacc, 1);
    const bl_status s2 = bl_gemm_acc(g[i].nq ? NULL : q, g[i].ldq, NULL, g[i].nl ? NULL : p, g[i].M,
                                     g[i].N, g[i].K, g[i].na ? NULL : acc2, g[i].ldacc, 1);
    ok &= s1 == g[i].want && s2 == g[i].want && all_bytes(acc, 0x33, sizeof(acc));
  }
  check(ok, "%s lut_gemm_acc bad arguments -> gemm_acc's status codes, nothing written; M = 0 -> BL_OK", nm);
  /* bl_linear_lut: N = 2 outputs of K = 100, M = 2 */
  float w[2 * 100], s[2] = {0.5f, 0.25f}, y[8];
  for (int i = 0; i < 200; i++) w[i] = (float)(i % 7) - 3.0f;
  char *wk = xmalloc(bl_linear_lut_workspace_bytes(2, 100));
  uint8_t *p2 = xmalloc(2 * 32);
  memset(p2, 0x99, 64);
  uint8_t *lut2 = lut_packed(p2, 2, 100, 1, &st);
  ok = st == BL_OK;
  const float bad_eps[] = {0.0f, -1e-6f, 1e-45f, 1e-37f, NAN, INFINITY};
  struct { int nx, np, ns, ny, nw; int64_t M, K, ldx, N, ldy; int xdt, ydt; float eps; } c[] = {
      {1, 0, 0, 0, 0, 2, 100, 100, 2, 2, 0, 0, 1e-5f}, {0, 1, 0, 0, 0, 2, 100, 100, 2, 2, 0, 0, 1e-5f},
      {0, 0, 1, 0, 0, 2, 100, 100, 2, 2, 0, 0, 1e-5f}, {0, 0, 0, 1, 0, 2, 100, 100, 2, 2, 0, 0, 1e-5f},
      {0, 0, 0, 0, 1, 2, 100, 100, 2, 2, 0, 0, 1e-5f}, {0, 0, 0, 0, 0, 2, 100, 100, 0, 2, 0, 0, 1e-5f},
      {0, 0, 0, 0, 0, -1, 100, 100, 2, 2, 0, 0, 1e-5f}, {0, 0, 0, 0, 0, 2, 0, 100, 2, 2, 0, 0, 1e-5f},
      {0, 0, 0, 0, 0, 1, big, big, 2, 2, 0, 0, 1e-5f}, {0, 0, 0, 0, 0, 2, 100, 50, 2, 2, 0, 0, 1e-5f},
      {0, 0, 0, 0, 0, 2, 100, 100, 2, 1, 0, 0, 1e-5f}, {0, 0, 0, 0, 0, 2, 100, 100, 2, 2, 7, 0, 1e-5f},
      {0, 0, 0, 0, 0, 2, 100, 100, 2, 2, 0, 3, 1e-5f}, {0, 0, 0, 0, 0, 2, 100, 100, 2, 2, 0, -1, 1e-5f},
      {0, 0, 0, 0, 0, (int64_t)1 << 41, 100, 100, 2, 2, 0, 0, 1e-5f},
      {0, 0, 0, 0, 0, 0, 100, 100, 2, 2, 0, 0, 1e-5f}, {1, 1, 1, 1, 1, 0, 100, 100, 2, 2, 0, 0, 1e-5f},
      {0, 0, 0, 0, 0, 0, 100, 100, 2, 1, 0, 0, 1e-5f}};
  const int nc = (int)(sizeof(c) / sizeof(c[0])), ne = (int)(sizeof(bad_eps) / sizeof(bad_eps[0]));
  int n_err = 0;
  for (int mode = BL_CPU_LUT_OFF; mode <= BL_CPU_LUT_FORCE; mode++) {
    bl_cpu_set_option(BL_CPU_OPT_LUT, mode);
    bl_cpu_set_option(BL_CPU_OPT_LUT_MAX_M, 64);
    for (int i = 0; i < nc + ne; i++) {
      const int e = i >= nc;
      const int j = e ? 0 : i; /* the eps cases: the good call with a bad eps */
      const float eps = e ? bad_eps[i - nc] : c[j].eps;
      memset(y, 0x44, sizeof(y));
      bl_status s1 = bl_linear_lut(c[j].nx ? NULL : w, (bl_dtype)c[j].xdt, c[j].M, c[j].K, c[j].ldx,
                                   c[j].np ? NULL : p2, lut2, c[j].N, c[j].ns ? NULL : s, 0, NULL,
                                   eps, 1, c[j].ny ? NULL : y, (bl_dtype)c[j].ydt, c[j].ldy,
                                   c[j].nw ? NULL : wk, 1);
      const int untouched = all_bytes(y, 0x44, sizeof(y));
      bl_status s2 = bl_linear(c[j].nx ? NULL : w, (bl_dtype)c[j].xdt, c[j].M, c[j].K, c[j].ldx,
                               c[j].np ? NULL : p2, c[j].N, c[j].ns ? NULL : s, 0, NULL, eps, 1,
                               c[j].ny ? NULL : y, (bl_dtype)c[j].ydt, c[j].ldy, c[j].nw ? NULL : wk, 1);
      const int want_ok = !e && c[j].M == 0 && c[j].ldy >= c[j].N;
      ok &= s1 == s2 && (s1 == BL_OK) == want_ok && untouched;
      n_err += s1 != BL_OK;
    }
  }
  lut_defaults();
  check(ok && n_err == 3 * (nc + ne - 2), "%s linear_lut bad arguments (OFF, AUTO, FORCE) -> linear's "
        "status codes, nothing written; M = 0 -> BL_OK", nm);
  free(q); free(p); free(lut); free(wk); free(p2); free(lut2);
}

static void test_lut(void) {
  test_lut_options();
  test_lut_sizes();
  /* layout: odd N and K, one and several super-tiles, the threaded pack (N K >= 2^20) */
  static const int64_t lN[] = {1, 31, 32, 33, 511, 512, 513, 1000};
  static const int64_t lK[] = {1, 8, 9, 10, 26, 27, 28, 129, 1153};
  const int nln = small ? 6 : 8, nlk = small ? 8 : 9;
  for (int a = 0; a < nln; a++)
    for (int b = 0; b < nlk; b++) test_lut_layout(lN[a], lK[b], (a + b) % 4, 1 + (a + b) % 2);
  if (!small) test_lut_layout(1000, 1153, 1, 2), test_lut_layout(2049, 1000, 3, 3);
  for (int isa = 0; isa < BL_ISA_COUNT; isa++) {
    if (!bl_isa_supported(isa)) continue;
    test_lut_auto(isa);
    test_lut_bad_args(isa);
  }
  /* GEMM: every N x K of the lists, M cycling through 1..5 (each on every ISA, 1/2/3 threads) */
  static const int64_t gK[] = {1, 2, 3, 7, 8, 9, 10, 17, 26, 27, 28, 127, 128, 129, 251, 252, 253,
                               1000, 1153};
  static const int64_t gN[] = {1, 3, 7, 31, 32, 33, 129, 480, 511, 512, 513, 1000};
  const int ngk = 19, ngn = 12;
  for (int a = 0; a < ngn; a++)
    for (int b = 0; b < ngk; b++) {
      const int64_t N = gN[a], K = gK[b];
      if (small && (double)N * (double)K > 200000.0) continue;
      test_lut_gemm(1 + (a * 7 + b) % 5, N, K, 0, 0);
    }
  /* every M 1..5 where 2 and 3 threads really split (M N K >= 2^20 per thread pair) */
  for (int64_t m = 1; m <= 5; m++) {
    test_lut_gemm(m, 33, 28, 0, 0);
    if (!small) test_lut_gemm(m, 1000, 1153, 0, 0), test_lut_gemm(m, 513, 1000, 0, 0);
  }
  /* the kernels' flush intervals crossed several times at their worst case: AVX-512's int16
   * partial sums (28 columns = 252 k), NEON's (256 columns = 2304 k) */
  static const int64_t eK[] = {252, 253, 1267, 4100, 7000};
  for (int b = 0; b < 5; b++)
    for (int xm = 1; xm <= 2; xm++) {
      for (int64_t m = 1; m <= 3; m++) test_lut_gemm(m, 33, eK[b], xm, 1); /* 1, a pair, pair + 1 */
      if (!small || b < 2) test_lut_gemm(3, 513, eK[b], xm, 1);
    }
  test_lut_gemm(2, 32, 4100, 0, 1); /* rows of one sign, random x */
  /* linear: every dtype pair x per-channel / per-token / bias, odd shapes; NaN rows; weights
   * quantized or random bytes */
  static const int64_t Ms[] = {1, 2, 3, 5, 7}, Ns[] = {1, 3, 31, 33, 100, 513}, Ks[] = {1, 2, 10, 27, 28, 129, 700};
  for (int dx = 0; dx < 3; dx++)
    for (int dy = 0; dy < 3; dy++)
      for (int f = 0; f < 8; f++)
        test_lut_linear(Ms[irand(5)], Ns[irand(small ? 5 : 6)], Ks[irand(7)], (bl_dtype)dx,
                        (bl_dtype)dy, f & 1, (f >> 1) & 1, (f >> 2) & 1, irand(2), irand(6) == 0);
  if (!small) test_lut_linear(2, 1000, 1153, BL_BF16, BL_F16, 1, 1, 1, 1, 0); /* 2 threads split */
  test_lut_linear(3, 65, 300, BL_F32, BL_F32, 0, 0, 1, 0, 1);
}

/* bl_linear_segments: nseg segments' rows stacked, each with its own scale mode, bias and output
 * (row strides larger than n), bit for bit bl_linear on each segment alone with the reference
 * path, at 1 and 2 threads; and the argument checks. */
static void test_segments(int isa, int64_t M, int64_t K, int nseg, bl_dtype xdt) {
  const int64_t rb = bl_packed_row_bytes(K), ldx = K + irand(3);
  int64_t n[BL_MAX_SEGMENTS], N = 0;
  for (int s = 0; s < nseg; s++) N += (n[s] = 1 + irand(s == 0 ? 130 : 70));
  void *x = xmalloc((size_t)(M * ldx) * esz(xdt));
  fill_x(x, xdt, M * ldx, 0);
  uint8_t *p = xmalloc((size_t)(N * rb));
  bl_segment segs[BL_MAX_SEGMENTS];
  float *ws[BL_MAX_SEGMENTS], *bias[BL_MAX_SEGMENTS];
  void *ya[BL_MAX_SEGMENTS], *yb[BL_MAX_SEGMENTS];
  size_t yn[BL_MAX_SEGMENTS];
  int64_t off = 0;
  const int pt = irand(2);
  for (int s = 0; s < nseg; s++) {
    const int pc = irand(2), ldy = (int)(n[s] + irand(3));
    float *wt = xmalloc((size_t)(n[s] * K) * 4);
    for (int64_t i = 0; i < n[s] * K; i++) wt[i] = frand();
    ws[s] = xmalloc((size_t)n[s] * 4);
    bl_quantize_weights_ref(wt, BL_F32, n[s], K, K, 1e-5f, pc, ws[s], p + off * rb, 1);
    free(wt);
    bias[s] = irand(2) ? xmalloc((size_t)n[s] * 4) : NULL;
    for (int64_t i = 0; bias[s] && i < n[s]; i++) bias[s][i] = frand();
    yn[s] = (size_t)(M * ldy) * esz(xdt);
    ya[s] = xmalloc(yn[s]);
    yb[s] = xmalloc(yn[s]);
    memset(ya[s], 0x44, yn[s]);
    memset(yb[s], 0x44, yn[s]);
    segs[s] = (bl_segment){n[s], ws[s], pc, bias[s], yb[s], ldy};
    bl_isa_set(BL_ISA_REF);
    void *w = xmalloc(bl_linear_workspace_bytes(M, K));
    check(bl_linear(x, xdt, M, K, ldx, p + off * rb, n[s], ws[s], pc, bias[s], 1e-5f, pt, ya[s],
                    xdt, ldy, w, 1) == BL_OK, "segments: reference bl_linear of segment %d", s);
    free(w);
    off += n[s];
  }
  void *w = xmalloc(bl_linear_workspace_bytes(M, K));
  for (int nt = 1; nt <= 2; nt++) {
    bl_isa_set(isa);
    bl_status st = bl_linear_segments(x, xdt, M, K, ldx, p, segs, nseg, 1e-5f, pt, xdt, w, nt);
    int same = st == BL_OK;
    for (int s = 0; s < nseg; s++) same = same && !memcmp(ya[s], yb[s], yn[s]);
    check(same, "%s linear_segments M=%lld K=%lld nseg=%d N=%lld %s per_token=%d threads=%d == "
          "bl_linear per segment", bl_isa_name(isa), (long long)M, (long long)K, nseg,
          (long long)N, dtn[xdt], pt, nt);
  }
  bl_segment bad = segs[0];
  bad.n = 0;
  check(bl_linear_segments(x, xdt, M, K, ldx, p, &bad, 1, 1e-5f, pt, xdt, w, 1) == BL_ERR_SIZE &&
            bl_linear_segments(x, xdt, M, K, ldx, p, segs, 0, 1e-5f, pt, xdt, w, 1) ==
                BL_ERR_SIZE &&
            bl_linear_segments(x, xdt, M, K, ldx, p, NULL, 1, 1e-5f, pt, xdt, w, 1) ==
                BL_ERR_NULL &&
            bl_linear_segments(x, xdt, M, K, ldx, p, segs, BL_MAX_SEGMENTS + 1, 1e-5f, pt, xdt,
                               w, 1) == BL_ERR_SIZE,
        "linear_segments refuses an empty segment, no segments, NULL and too many");
  bad = segs[0];
  bad.ldy = bad.n - 1;
  check(M < 2 || bl_linear_segments(x, xdt, M, K, ldx, p, &bad, 1, 1e-5f, pt, xdt, w, 1) ==
                     BL_ERR_STRIDE,
        "linear_segments refuses a row stride below n");
  free(w);
  for (int s = 0; s < nseg; s++) free(ws[s]), free(bias[s]), free(ya[s]), free(yb[s]);
  free(x);
  free(p);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--small")) small = 1;
  const char *seed_env = getenv("BL_TEST_SEED");
  uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : 1; /* fixed: reproducible coverage */
  rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
  printf("seed %llu (set BL_TEST_SEED to repeat)%s\n", (unsigned long long)seed, small ? ", small" : "");

  lut_mode0 = bl_cpu_get_option(BL_CPU_OPT_LUT); /* before anything changes them */
  lut_max_m0 = bl_cpu_get_option(BL_CPU_OPT_LUT_MAX_M);
  test_conversions();
  for (int i = 0; i < BL_ISA_COUNT; i++)
    printf("isa %-10s compiled=%d supported=%d\n", bl_isa_name(i), bl_isa_compiled(i), bl_isa_supported(i));
  printf("best isa: %s\n", bl_isa_name(bl_isa_best()));
  check(bl_isa_set(BL_ISA_COUNT) == BL_ERR_ISA && bl_isa_set(-1) == BL_ERR_ISA, "bl_isa_set rejects unknown ISAs");
  for (int i = 0; i < BL_ISA_COUNT; i++)
    if (bl_isa_compiled(i) && !bl_isa_supported(i)) check(bl_isa_set(i) == BL_ERR_ISA, "bl_isa_set(%s) unsupported -> BL_ERR_ISA", bl_isa_name(i));

  static const int64_t sizes[] = {1, 3, 7, 129, 1000};
  const int ns = small ? 4 : 5;
  for (int isa = 0; isa < BL_ISA_COUNT; isa++) {
    if (!bl_isa_supported(isa)) continue;
    test_bad_args(isa);
    if (isa == BL_ISA_REF) continue; /* the rest compares a path with ref */
    for (int a = 0; a < ns; a++)
      for (int b = 0; b < ns; b++) test_weights(isa, sizes[a], sizes[b]);
    test_weights(isa, small ? 33 : 300, small ? 2100 : 4096);
    for (int a = 0; a < ns; a++)
      for (int b = 0; b < ns; b++)
        for (int mode = 1; mode < 3; mode++) test_weights_special(isa, sizes[a], sizes[b], mode);
    test_weights_special(isa, small ? 33 : 300, small ? 2100 : 4096, 1 + irand(2));
    for (int dt = 0; dt < 3; dt++)
      for (int pt = 0; pt < 2; pt++)
        for (int mode = 0; mode < 5; mode++) {
          int64_t M = sizes[irand(ns)], K = sizes[irand(ns)];
          if (mode == 4 && M < 3) M = 3;
          test_acts(isa, M, K, (bl_dtype)dt, pt, mode);
        }
    test_acts(isa, 5, small ? 300 : 6912, BL_BF16, 1, 0);
    for (int pt = 0; pt < 2; pt++) /* enough rows for the threaded path */
      test_acts(isa, small ? 70 : 129, 1000, (bl_dtype)irand(3), pt, pt ? 4 : 3);
    for (int a = 0; a < ns; a++)
      for (int b = 0; b < ns; b++)
        for (int c = 0; c < ns; c++) {
          if (small && sizes[a] * sizes[b] * sizes[c] > 300000) continue;
          test_gemm(isa, sizes[a], sizes[b], sizes[c], 0);
        }
    /* more than 16 blocks (int16 flush), saturation edges of vpmaddubsw, odd tiles */
    for (int e = 0; e < 3; e++) test_gemm(isa, 5, 7, small ? 2100 : 4100, e);
    test_gemm(isa, 9, 13, 2049, 1);
    if (!small) test_gemm(isa, 70, 300, 777, 0), test_gemm(isa, 1, 4096, 512, 0);
    for (int dx = 0; dx < 3; dx++)
      for (int dy = 0; dy < 3; dy++)
        for (int mode = 0; mode < 4; mode++) {
          int64_t M = sizes[irand(ns)], N = sizes[irand(ns)], K = sizes[irand(ns)];
          if (mode == 3) K = small ? 700 : 1000 + irand(9000), M = 1 + irand(5);
          test_linear(isa, M, N, K, (bl_dtype)dx, (bl_dtype)dy, mode);
        }
    if (!small) test_linear(isa, 2, 2560, 6912, BL_F32, BL_BF16, 0);
    for (int dy = 1; dy < 3; dy++) test_linear(isa, 3, 200, small ? 700 : 5000, BL_F32, (bl_dtype)dy, 3);
  }
  for (int isa = 0; isa < BL_ISA_COUNT; isa++) {
    if (!bl_isa_supported(isa)) continue;
    static const int64_t ms[] = {1, 2, 5, 17};
    for (int a = 0; a < 4; a++)
      for (int nseg = 1; nseg <= 3; nseg++)
        test_segments(isa, ms[a], sizes[irand(ns)] + irand(40), nseg, (bl_dtype)irand(3));
  }
  test_invalid_codes();
  test_lut();
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
