/* fuzz.c - fuzz harness of the C API: every entry point on every path (paths.h) against the plain
 * C reference, bit for bit, status codes included.
 *
 * One input drives one execution: its first bytes choose the shapes (M incl. 0 and 1, N, K around
 * the block and vector widths and large-ish), strides (ld > row), dtypes (f32/f16/bf16 in and
 * out, half-precision weights), per-token/per-tensor, per-channel/per-tensor, bias, eps, the
 * thread count (1..4, now and then 0, negative or huge), the value families (rounding ties,
 * NaN/Inf/denormal/extreme, raw bits), the packed weights (quantized, random codes, random bytes:
 * all 256 values, extremes) and now and then one bad argument; the rest of the input, then a
 * generator seeded with its hash, gives the values. Then (the whole pipeline, or one or two of
 * these entry points, the others' outputs coming from the reference alone):
 *   bl_quantize_weights, bl_quantize_acts, bl_gemm_acc, bl_linear_q, bl_linear: the reference
 *     against every path: the same status; where BL_OK the same output buffers (gaps between rows
 *     included: they must stay untouched), NaN compared as NaN-ness;
 *   bl_unpack_weights(_f): against an independent decode (code 3 as the reference GEMM reads it);
 *   bl_linear on the reference == bl_quantize_acts + bl_linear_q on the reference;
 *   the decode layout (LUT), with the gemm_acc and linear ops: bl_lut_pack against the layout
 *     written from its spec (lut_spec.h); bl_lut_gemm_acc (the layout in place of the packed
 *     weights, the same arguments, bad ones included) on ref and every path against
 *     bl_gemm_acc_ref; bl_linear_lut against bl_linear on the reference under a drawn option
 *     setting (FORCE, FORCE without a layout, AUTO with a drawn max M, OFF), a garbage layout
 *     wherever bl_lut_used says it is not read. Their parameter bytes are drawn after all the
 *     others, so the decoding of everything above is unchanged;
 *   bl_q4_linear (the int4 head) on the same x, eps, bias, dtypes, strides and threads, with its
 *     own group size, weight bytes, scales and bad argument (drawn last): the reference against
 *     every path, statuses and outputs.
 * Buffers have their exact sizes (ASan sees one element too far). Any mismatch prints the inputs
 * and aborts (libFuzzer keeps the input as a crash file: rerun `fuzz <file>` to reproduce).
 *
 * Builds (tests/c/Makefile): `make fuzz` (clang libFuzzer + ASan + UBSan; falls back to the gcc
 * sanitizers and the seeded driver below without clang), BL_EMU: the SIMDe-emulated VNNI tables.
 * With -DBL_FUZZ_MAIN it has its own main: `fuzz [-seed=S] [-runs=N] [-max_total_time=T]`
 * draws random inputs. Either way it prints the execution count at exit. */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "paths.h"
#include "lut_spec.h"

#include <float.h>
#include <stdarg.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- input and randomness */
static const uint8_t *in_d;
static size_t in_n, in_i;
static uint64_t rng;
static unsigned long long n_exec, n_cmp;

static uint64_t rnd(void) { /* xorshift64* */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 2685821657736338717ULL;
}
/* Parameter bytes come from the input, then from the generator. */
static unsigned u8(void) { return in_i < in_n ? in_d[in_i++] : (unsigned)(rnd() >> 56); }
static unsigned pick(unsigned n) { return u8() % n; }
static unsigned pick16(unsigned n) { return ((u8() << 8) | u8()) % n; }
/* Value bits: the input's remaining bytes first, then the generator. */
static uint32_t vbits(void) {
  uint32_t v = 0;
  if (in_i + 4 <= in_n) {
    memcpy(&v, in_d + in_i, 4);
    in_i += 4;
    return v;
  }
  return (uint32_t)(rnd() >> 32);
}
static int irand(int n) { return (int)(vbits() % (uint32_t)n); }
static float frand(void) { return (float)(vbits() >> 8) / 8388608.0f * 2.0f - 1.0f; } /* [-1, 1) */
static float fbits(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static uint32_t bitsf(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

/* ---------------------------------------------------------------- allocations */
#define MAX_ALLOC 128
static void *allocs[MAX_ALLOC];
static int n_alloc;
/* Exactly n bytes (64-byte aligned), filled with `fill`; freed at the end of the execution. */
static void *xalloc(size_t n, int fill) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n ? n : 1) || !p || n_alloc == MAX_ALLOC) {
    fprintf(stderr, "fuzz: out of memory (%zu bytes)\n", n);
    abort();
  }
  memset(p, fill, n ? n : 1);
  allocs[n_alloc++] = p;
  return p;
}
static void *xdup(const void *src, size_t n) {
  void *p = xalloc(n, 0);
  memcpy(p, src, n);
  return p;
}
static void free_all(void) {
  while (n_alloc) free(allocs[--n_alloc]);
}
/* bytes of rows x cols with row stride ld: the last row ends at its last element */
static size_t span(int64_t rows, int64_t cols, int64_t ld, size_t es) {
  return rows > 0 ? (size_t)((rows - 1) * ld + cols) * es : 0;
}

/* ---------------------------------------------------------------- reports */
static char desc[512];
#ifdef BL_FUZZ_MAIN
/* The seeded driver keeps the failing input itself (libFuzzer writes crash-<hash> files). */
static void save_input(void) {
  FILE *f = fopen("fuzz-crash.bin", "wb");
  if (f) {
    fwrite(in_d, 1, in_n, f);
    fclose(f);
    fprintf(stderr, "fuzz: input saved to fuzz-crash.bin (rerun: fuzz fuzz-crash.bin)\n");
  }
}
#else
static void save_input(void) {}
#endif
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...) {
  va_list ap;
  save_input();
  va_start(ap, fmt);
  fprintf(stderr, "\nFUZZ MISMATCH: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n  inputs: %s\n", desc);
  va_end(ap);
  fflush(stderr);
  abort();
}

static size_t esz(bl_dtype d) { return d == BL_F32 ? 4 : 2; }
static int dt_ok(bl_dtype d) { return d == BL_F32 || d == BL_F16 || d == BL_BF16; }
static const char *dtname(bl_dtype d) {
  return d == BL_F32 ? "f32" : d == BL_F16 ? "f16" : d == BL_BF16 ? "bf16" : d == BL_I8 ? "i8" : "bad";
}
static float load_v(const void *p, bl_dtype dt, int64_t i) {
  if (dt == BL_F32) return ((const float *)p)[i];
  uint16_t h = ((const uint16_t *)p)[i];
  return dt == BL_F16 ? bl_f16_to_f32(h) : bl_bf16_to_f32(h);
}
static void store_v(void *p, bl_dtype dt, int64_t i, float v) {
  if (dt == BL_F32) ((float *)p)[i] = v;
  else ((uint16_t *)p)[i] = dt == BL_F16 ? bl_f32_to_f16(v) : bl_f32_to_bf16(v);
}

/* Two floats agree: the same bits, or both NaN (NaN payloads and signs may differ by path). */
static int same_f(float a, float b) { return (a != a && b != b) || bitsf(a) == bitsf(b); }
/* Compares n elements of dtype dt; returns the first differing index or -1. */
static int64_t diff_vals(const void *a, const void *b, bl_dtype dt, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    if (dt == BL_F32) {
      if (!same_f(((const float *)a)[i], ((const float *)b)[i])) return i;
    } else {
      uint16_t x = ((const uint16_t *)a)[i], y = ((const uint16_t *)b)[i];
      if (x != y && !(load_v(a, dt, i) != load_v(a, dt, i) && load_v(b, dt, i) != load_v(b, dt, i)))
        return i;
    }
  }
  return -1;
}
static int64_t diff_bytes(const void *a, const void *b, size_t n) {
  const uint8_t *x = a, *y = b;
  for (size_t i = 0; i < n; i++)
    if (x[i] != y[i]) return (int64_t)i;
  return -1;
}

/* ---------------------------------------------------------------- value families */
static float special(void) {
  static const uint32_t sp[] = {
      0x7fc00000u, 0xffc00000u, 0x7f800001u /* sNaN */, 0xffa00000u, 0x7fc0dead, 0x7f800000u,
      0xff800000u, 0x00000000u, 0x80000000u, 0x7f7fffffu /* FLT_MAX */, 0xff7fffffu,
      0x00800000u /* FLT_MIN */, 0x80800000u, 0x00000001u /* smallest denormal */, 0x80000001u,
      0x007fffffu, 0x477fe000u /* 65504 */, 0x477ff000u /* 65520 */, 0xc77ff000u,
      0x477fefffu, 0x33800000u /* 2^-24 */, 0x33000000u /* 2^-25 */, 0x3f000000u /* 0.5 */,
      0xbf000000u, 0x3fc00000u /* 1.5 */, 0x42ff0000u /* 127.5 */, 0xc3008000u /* -128.5 */,
      0x42fe0000u /* 127 */, 0x7f000000u, 0x3f808000u /* bf16 midpoint */, 0x3f818000u};
  return fbits(sp[irand((int)(sizeof(sp) / sizeof(sp[0])))]);
}

/* One row of `cols` values of family `mode` (scale 2^e), then a poison gap up to ld: any path
 * that reads a gap sees NaN (or 0x5a bytes) and differs from the reference. */
static void fill_rows(void *buf, bl_dtype dt, int64_t rows, int64_t cols, int64_t ld, int mode,
                      int e, int weights) {
  const float s = ldexpf(1.0f, e);
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t c = 0; c < cols; c++) {
      float v;
      int raw = 0;
      switch (mode) {
        default:
        case 0: v = frand() * s; break;
        case 1: /* rounding ties: activations (n + 0.5) s with amax 127 s (scale s); weights
                 * |w| in {1, 3} s per pair (mean 2 s: w / s_w = +-0.5, +-1.5), near-ties too */
          if (weights) {
            const int64_t pair = c ^ 1;
            if (pair >= cols) v = 2.0f; /* odd count: the last one is the mean */
            else {
              static const float lo[] = {1.0f, 1.0f, 1.0f, 0.0f, 1.0f + 0x1p-22f, 1.0f - 0x1p-22f};
              int t = (int)((r * 7 + (c >> 1)) % 6);
              v = (c & 1) ? 4.0f - lo[t] : lo[t];
            }
            v *= s;
            if (irand(2)) v = -v;
          } else {
            v = ((float)(irand(253) - 126) + 0.5f) * s;
            if (irand(8) == 0) v = nextafterf(v, irand(2) ? INFINITY : -INFINITY);
          }
          break;
        case 2: v = (float)(irand(255) - 127) * s; break; /* integers: exact x_q, exact y */
        case 3: v = irand(4) ? frand() * s : special(); break;
        case 4: raw = 1; v = 0; break;
        case 5: v = irand(3) ? fbits(vbits() & 0x807fffffu) : frand() * 1e-30f; break;
        case 6: v = ldexpf(1.0f + frand() * 0.5f, 100 + irand(28)); if (irand(2)) v = -v; break;
        case 7: v = irand(2) ? 0.0f : -0.0f; break;
      }
      const int64_t i = r * ld + c;
      if (raw) {
        if (dt == BL_F32) ((uint32_t *)buf)[i] = vbits();
        else ((uint16_t *)buf)[i] = (uint16_t)vbits();
      } else {
        store_v(buf, dt, i, v);
      }
    }
    if (!weights && (mode == 1 || mode == 2) && cols > 0) /* amax = 127 s: scale exactly s */
      store_v(buf, dt, r * ld + irand((int)cols), (irand(2) ? 127.0f : -127.0f) * s);
    if (r + 1 < rows)
      for (int64_t c = cols; c < ld; c++) {
        if (dt == BL_F32) ((uint32_t *)buf)[r * ld + c] = 0x7fc05a5au;
        else ((uint16_t *)buf)[r * ld + c] = 0x7e5a;
      }
  }
}

static const int64_t M_TAB[] = {0, 1, 1, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 64, 65};
static const int64_t N_TAB[] = {1, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 15, 16, 17, 24, 31,
                                32, 33, 64, 100, 255, 256, 257, 300};
static const int64_t K_TAB[] = {1, 2, 3, 7, 8, 9, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200,
                                255, 256, 257, 383, 384, 385};
static const int64_t K_BIG[] = {1000, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 8191,
                                8193, 16385};
static const int64_t LD_EXTRA[] = {0, 0, 0, 0, 1, 2, 3, 7, 16, 64, 129};
#define TAB(t) (t[pick(sizeof(t) / sizeof(t[0]))])

/* ---------------------------------------------------------------- one execution */
static int code3_w; /* what the reference GEMM makes of code 3 */
static int64_t lut_mode0, lut_max_m0; /* the CPU options at start: put back after each use */

/* The decode layout of P ([N, K]) by bl_lut_pack, checked word for word against the spec. */
static uint8_t *lut_of(const uint8_t *P, int64_t N, int64_t K, int nt) {
  const size_t lb = bl_lut_bytes(N, K);
  uint8_t *L = xalloc(lb, 0xa5);
  uint16_t *want = xalloc(lb, 0);
  const bl_status st = bl_lut_pack(P, N, K, L, nt);
  n_cmp++;
  if (st != BL_OK) fail("lut_pack status %d", st);
  lut_spec_layout(P, N, K, want);
  for (size_t i = 0; i < lb / 2; i++)
    if (((const uint16_t *)L)[i] != want[i])
      fail("lut_pack word %zu: 0x%04x, spec 0x%04x", i, ((const uint16_t *)L)[i], want[i]);
  return L;
}

static void run_one(void) {
  /* shapes and flags */
  int64_t M = TAB(M_TAB), N = TAB(N_TAB), K = pick(4) ? TAB(K_TAB) : TAB(K_BIG);
  if (pick(16) == 0) N = 1 + pick16(3000);
  if (pick(16) == 0) K = 1 + pick16(9000);
  if (pick(32) == 0) M = 1 + pick(200);
  /* keep one execution cheap: M N Kp and N Kp bounded */
  const unsigned csel = pick(64); /* mostly small: the reference GEMM runs 3 times */
  const double cap = csel == 0 ? 524288.0 : csel < 4 ? 65536.0 : csel < 16 ? 8192.0 : 2048.0;
  while (N > 1 && (double)N * (double)bl_padded_k(K) > cap) N = (N + 1) / 2;
  while (M > 1 && (double)M * (double)N * (double)bl_padded_k(K) > cap) M = (M + 1) / 2;
  const int64_t Kp = bl_padded_k(K), rb = bl_packed_row_bytes(K);
  const int64_t ldw = K + TAB(LD_EXTRA), ldx = K + TAB(LD_EXTRA), ldq = Kp + TAB(LD_EXTRA);
  const int64_t ldacc = N + TAB(LD_EXTRA), ldy = N + TAB(LD_EXTRA), ldo = K + TAB(LD_EXTRA);
  const bl_dtype wdt = (bl_dtype)pick(3), xdt = (bl_dtype)pick(3), ydt = (bl_dtype)pick(3);
  const bl_dtype udt = (bl_dtype)pick(4); /* unpack: f32, f16, bf16 or i8 */
  const unsigned fl = u8();
  const int pc = fl & 1, pt = (fl >> 1) & 1, with_rowsum = (fl >> 2) & 1, lin_rowsum = (fl >> 3) & 1;
  static const float eps_tab[] = {1e-5f, 1e-6f, 1e-3f, 1.0f, BL_MIN_EPS, 1e-37f, 0.0f, -1e-5f,
                                  NAN, INFINITY, FLT_MAX, 1e30f, 0x1p-126f, 1e-45f};
  const float eps = pick(4) ? 1e-5f : TAB(eps_tab);
  const int eps_ok = eps >= BL_MIN_EPS && eps <= FLT_MAX; /* bitlinear.h: else BL_ERR_ARG */
  /* mostly 1: a parallel region costs more than most of these small calls */
  static const int nt_tab[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4, 0, -3, 100000, 2, 3, 4};
  const int nt = TAB(nt_tab);
  const int wmode = (int)pick(8), xmode = (int)pick(8), we = (int)pick(41) - 20, xe = (int)pick(41) - 20;
  const int pmode = (int)pick(6);  /* packed: 0,1 quantized; 2 codes 0..2; 3 bytes; 4,5 extremes */
  const int qmode = (int)pick(6);  /* x_q: 0,1,2 quantized; 3 random; 4 -128; 5 127 */
  const int smode = (int)pick(6);  /* scales of linear_q: 0,1,2 quantized; 3 2^k; 4 specials; 5 random */
  const int bmode = (int)pick(6);  /* bias: 0,1 none; 2 random; 3 ties (n + 0.5) 2^k; 4 specials; 5 near 65520 */
  const int bad = pick(12) == 0 ? 1 + (int)pick(10) : 0; /* one bad argument */
  /* which entry points this execution compares (the inputs of the others come from the reference
   * alone): the whole pipeline, one of them, or a pair */
  static const uint8_t sel_tab[] = {0x3f, 0x3f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x21, 0x1c};
  const unsigned sel = sel_tab[pick(sizeof(sel_tab))];
  const int np_w = sel & 1 ? tp_count : 0, np_a = sel & 4 ? tp_count : 0;
  const int bad_op = (int)pick(6);
  snprintf(desc, sizeof(desc),
           "M=%lld N=%lld K=%lld ldw=%lld ldx=%lld ldq=%lld ldacc=%lld ldy=%lld ldo=%lld w=%s x=%s "
           "y=%s unpack=%s per_channel=%d per_token=%d rowsum=%d/%d eps=%a nthreads=%d wmode=%d/%d "
           "xmode=%d/%d pmode=%d qmode=%d smode=%d bmode=%d bad=%d@%d ops=0x%02x code3=%d",
           (long long)M, (long long)N, (long long)K, (long long)ldw, (long long)ldx, (long long)ldq,
           (long long)ldacc, (long long)ldy, (long long)ldo, dtname(wdt), dtname(xdt), dtname(ydt),
           dtname(udt), pc, pt, with_rowsum, lin_rowsum, (double)eps, nt, wmode, we, xmode, xe, pmode,
           qmode, smode, bmode, bad, bad_op, sel, code3_w);

  /* A bad argument (the same for the reference and every path): statuses must agree. Sizes of
   * the buffers stay those of the good call. */
#define BAD(op, k) (bad == (k) && bad_op == (op))
  /* ------------------------------------------------------------ bl_quantize_weights (op 0) */
  const size_t wbytes = span(N, K, ldw, esz(wdt)), nsc = pc ? (size_t)N : 1;
  void *w = xalloc(wbytes, 0);
  fill_rows(w, wdt, N, K, ldw, wmode, we, 1);
  float *sw_ref = xalloc(nsc * 4, 0x11);
  uint8_t *pw_ref = xalloc((size_t)(N * rb), 0xee);
  {
    const void *a_w = BAD(0, 1) ? NULL : w;
    int64_t a_N = BAD(0, 2) ? -N : BAD(0, 3) ? 0 : N, a_K = BAD(0, 4) ? 0 : BAD(0, 5) ? -K : K;
    int64_t a_ldw = BAD(0, 6) ? K - 1 : ldw;
    bl_dtype a_dt = BAD(0, 7) ? BL_I8 : BAD(0, 8) ? (bl_dtype)7 : wdt;
    float *a_s = BAD(0, 9) ? NULL : sw_ref;
    uint8_t *a_p = BAD(0, 10) ? NULL : pw_ref;
    bl_status st = bl_quantize_weights_ref(a_w, a_dt, a_N, a_K, a_ldw, eps, pc, a_s, a_p, nt);
    for (int i = 0; i < np_w; i++) {
      const tpath *p = &tp_list[i];
      if (p->kt && st != BL_OK) continue;
      float *s = xalloc(nsc * 4, 0x11);
      uint8_t *pk = xalloc((size_t)(N * rb), 0xee);
      bl_status st2 = tp_quantize_weights(p, a_w, a_dt, a_N, a_K, a_ldw, eps, pc,
                                          a_s ? s : NULL, a_p ? pk : NULL, nt);
      n_cmp++;
      if (st2 != st) fail("%s quantize_weights status %d, ref %d", p->name, st2, st);
      if (st != BL_OK) continue;
      int64_t d = diff_vals(s, sw_ref, BL_F32, (int64_t)nsc);
      if (d >= 0) fail("%s quantize_weights scale[%lld] %a, ref %a", p->name, (long long)d, (double)s[d], (double)sw_ref[d]);
      d = diff_bytes(pk, pw_ref, (size_t)(N * rb));
      if (d >= 0) fail("%s quantize_weights packed byte %lld (row %lld) 0x%02x, ref 0x%02x", p->name,
                       (long long)d, (long long)(d / rb), pk[d], pw_ref[d]);
    }
    if (st != BL_OK && bad == 0 && eps_ok) fail("ref quantize_weights refused a good call: %d", st);
    if (st != BL_OK) { /* the later steps need weights: plain ones */
      for (size_t i = 0; i < nsc; i++) sw_ref[i] = 0.01f;
      memset(pw_ref, 0x55, (size_t)(N * rb));
    }
  }

  /* the packed weights of the GEMM */
  uint8_t *P = xalloc((size_t)(N * rb), 0x55);
  if (pmode <= 1) {
    memcpy(P, pw_ref, (size_t)(N * rb));
  } else if (pmode == 3) {
    for (int64_t i = 0; i < N * rb; i++) P[i] = (uint8_t)vbits();
  } else {
    const int ext = pmode == 4 ? 0 : pmode == 5 ? 2 : -1;
    memset(P, 0, (size_t)(N * rb));
    for (int64_t n = 0; n < N; n++)
      for (int64_t k = 0; k < Kp; k++) {
        int c = k >= K ? 1 : ext >= 0 ? ext : irand(3);
        P[n * rb + (k / 128) * 32 + (k % 32)] |= (uint8_t)(c << (2 * ((k % 128) / 32)));
      }
  }

  /* ------------------------------------------------------------ bl_unpack_weights(_f) (op 1) */
  if (sel & 2) {
    const size_t ub = span(N, K, ldo, udt == BL_I8 ? 1 : esz(udt));
    void *u = xalloc(ub, 0x5a);
    void *u0 = xdup(u, ub);
    bl_status st;
    int bad_u = bad_op == 1 && bad >= 1 && bad <= 5;
    if (udt == BL_I8 && pick(2))
      st = bl_unpack_weights(BAD(1, 1) ? NULL : P, BAD(1, 2) ? 0 : N, BAD(1, 3) ? -1 : K,
                             BAD(1, 4) ? NULL : (int8_t *)u, BAD(1, 5) ? K - 1 : ldo);
    else
      st = bl_unpack_weights_f(BAD(1, 1) ? NULL : P, BAD(1, 2) ? 0 : N, BAD(1, 3) ? -1 : K,
                               BAD(1, 4) ? NULL : u, udt, BAD(1, 5) ? K - 1 : ldo, nt);
    n_cmp++;
    if (bad_u) {
      if (st == BL_OK) fail("unpack_weights accepted a bad argument (bad=%d)", bad);
      if (diff_bytes(u, u0, ub) >= 0) fail("unpack_weights wrote after refusing a call");
    } else {
      if (st != BL_OK) fail("unpack_weights status %d", st);
      for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < ldo && (n + 1 < N || k < K); k++) {
          const int64_t i = n * ldo + k;
          if (k >= K) { /* gap: untouched */
            if (diff_bytes((const char *)u + i * (int64_t)(udt == BL_I8 ? 1 : esz(udt)),
                           (const char *)u0 + i * (int64_t)(udt == BL_I8 ? 1 : esz(udt)),
                           udt == BL_I8 ? 1 : esz(udt)) >= 0)
              fail("unpack_weights wrote the gap at row %lld col %lld", (long long)n, (long long)k);
            continue;
          }
          const int c = (P[n * rb + (k / 128) * 32 + (k % 32)] >> (2 * ((k % 128) / 32))) & 3;
          const int want = c == 3 ? code3_w : c - 1;
          int got_ok;
          if (udt == BL_I8) got_ok = ((int8_t *)u)[i] == want;
          else got_ok = bitsf(load_v(u, udt, i)) == bitsf((float)want);
          if (!got_ok)
            fail("unpack_weights(%s) row %lld col %lld code %d: got %g, want %d", dtname(udt),
                 (long long)n, (long long)k, c,
                 udt == BL_I8 ? (double)((int8_t *)u)[i] : (double)load_v(u, udt, i), want);
        }
    }
  }

  /* ------------------------------------------------------------ bl_quantize_acts (op 2) */
  const size_t xbytes = span(M, K, ldx, esz(xdt)), qbytes = span(M, Kp, ldq, 1);
  void *x = xalloc(xbytes, 0);
  fill_rows(x, xdt, M, K, ldx, xmode, xe, 0);
  int8_t *q_ref = xalloc(qbytes, 0x77);
  float *xs_ref = xalloc((size_t)M * 4, 0x22);
  int32_t *rs_ref = xalloc((size_t)M * 4, 0x33);
  bl_status st_acts;
  {
    const void *a_x = BAD(2, 1) ? NULL : x;
    int64_t a_M = BAD(2, 2) ? -1 - M : M, a_K = BAD(2, 3) ? 0 : BAD(2, 4) ? BL_MAX_K + 1 : K;
    int64_t a_ldx = BAD(2, 5) ? K - 1 : ldx, a_ldq = BAD(2, 6) ? Kp - 1 : ldq;
    bl_dtype a_dt = BAD(2, 7) ? BL_I8 : xdt;
    int8_t *a_q = BAD(2, 8) ? NULL : q_ref;
    float *a_s = BAD(2, 9) ? NULL : xs_ref;
    if (BAD(2, 4)) a_M = 0, a_ldx = a_K, a_ldq = bl_padded_k(a_K); /* nothing to touch */
    if (BAD(2, 10)) a_M = (int64_t)1 << 41;
    st_acts = bl_quantize_acts_ref(a_x, a_dt, a_M, a_K, a_ldx, eps, pt, a_q, a_ldq, a_s,
                                   with_rowsum ? rs_ref : NULL, nt);
    for (int i = 0; i < np_a; i++) {
      const tpath *p = &tp_list[i];
      if (p->kt && (st_acts != BL_OK || a_M == 0)) continue;
      int8_t *q = xalloc(qbytes, 0x77);
      float *s = xalloc((size_t)M * 4, 0x22);
      int32_t *rs = xalloc((size_t)M * 4, 0x33);
      bl_status st2 = tp_quantize_acts(p, a_x, a_dt, a_M, a_K, a_ldx, eps, pt, a_q ? q : NULL,
                                       a_ldq, a_s ? s : NULL, with_rowsum ? rs : NULL, nt);
      n_cmp++;
      if (st2 != st_acts) fail("%s quantize_acts status %d, ref %d", p->name, st2, st_acts);
      int64_t d = diff_bytes(q, q_ref, qbytes);
      if (d >= 0) fail("%s quantize_acts x_q byte %lld (row %lld col %lld) %d, ref %d", p->name,
                       (long long)d, (long long)(d / ldq), (long long)(d % ldq), q[d], q_ref[d]);
      d = diff_vals(s, xs_ref, BL_F32, M);
      if (d >= 0) fail("%s quantize_acts scale[%lld] %a, ref %a", p->name, (long long)d, (double)s[d], (double)xs_ref[d]);
      d = diff_bytes(rs, rs_ref, (size_t)M * 4);
      if (d >= 0) fail("%s quantize_acts rowsum[%lld] %d, ref %d", p->name, (long long)(d / 4),
                       rs[d / 4], rs_ref[d / 4]);
    }
    if (st_acts != BL_OK && bad == 0 && eps_ok)
      fail("ref quantize_acts refused a good call: %d", st_acts);
  }
  const int acts_ok = st_acts == BL_OK && bad_op != 2;

  /* x_q, its row sums and scales for the GEMM and linear_q */
  int8_t *Q = xalloc(qbytes, 0);
  float *XS = xalloc((size_t)M * 4, 0);
  int32_t *RS = xalloc((size_t)M * 4, 0);
  const int q_from_acts = qmode <= 2 && acts_ok;
  for (int64_t m = 0; m < M; m++) {
    for (int64_t k = 0; k < ldq && (m + 1 < M || k < Kp); k++) {
      int8_t v = k >= Kp ? 0x5a : k >= K ? 0
                 : q_from_acts ? q_ref[m * ldq + k]
                 : (int8_t)(qmode == 4 ? -128 : qmode == 5 ? 127 : (int)(vbits() & 0xff) - 128);
      Q[m * ldq + k] = v;
    }
    RS[m] = 0;
    for (int64_t k = 0; k < Kp; k++) RS[m] += Q[m * ldq + k];
  }
  const int sx_from_acts = smode <= 2 && acts_ok && q_from_acts;
  for (int64_t m = 0; m < M; m++)
    XS[m] = sx_from_acts ? xs_ref[m]
            : smode == 3 || smode <= 2 ? ldexpf(1.0f, irand(50) - 35)
            : smode == 4 ? special() : frand() * 4.0f;
  float *WS = xalloc(nsc * 4, 0);
  for (size_t i = 0; i < nsc; i++)
    WS[i] = smode <= 2 ? sw_ref[i]
            : smode == 3 ? ldexpf(1.0f, irand(40) - 30)
            : smode == 4 ? special() : frand();
  float *B = bmode <= 1 ? NULL : xalloc((size_t)N * 4, 0);
  for (int64_t n = 0; B && n < N; n++)
    B[n] = bmode == 2 ? frand() * 8.0f
           : bmode == 3 ? ldexpf((float)(irand(4096) - 2048) + 0.5f, irand(12) - 6)
           : bmode == 4 ? (irand(3) ? frand() : special())
           : (irand(2) ? 1.0f : -1.0f) * (65504.0f + (float)irand(33) * 0.5f);

  /* ------------------------------------------------------------ bl_gemm_acc (op 3) */
  if (sel & 8) {
    const size_t ab = span(M, N, ldacc, 4);
    int32_t *acc_ref = xalloc(ab, 0x44);
    const int8_t *a_q = BAD(3, 1) ? NULL : Q;
    const uint8_t *a_p = BAD(3, 2) ? NULL : P;
    int64_t a_M = BAD(3, 3) ? -M - 1 : M, a_N = BAD(3, 4) ? 0 : N;
    int64_t a_K = BAD(3, 5) ? BL_MAX_K + 1 : BAD(3, 6) ? 0 : K;
    int64_t a_ldq = BAD(3, 7) ? Kp - 1 : ldq, a_ldacc = BAD(3, 8) ? N - 1 : ldacc;
    if (BAD(3, 5)) a_M = 0, a_ldq = bl_padded_k(a_K);
    if (BAD(3, 9)) a_N = (int64_t)1 << 41, a_M = 0, a_ldacc = a_N;
    int32_t *a_acc = BAD(3, 10) ? NULL : acc_ref;
    bl_status st = bl_gemm_acc_ref(a_q, a_ldq, a_p, a_M, a_N, a_K, a_acc, a_ldacc, nt);
    for (int i = 0; i < tp_count; i++) {
      const tpath *p = &tp_list[i];
      if (p->kt && (st != BL_OK || a_M == 0)) continue;
      int32_t *acc = xalloc(ab, 0x44);
      bl_status st2 = tp_gemm_acc(p, a_q, a_ldq, with_rowsum ? RS : NULL, a_p, a_M, a_N, a_K,
                                  a_acc ? acc : NULL, a_ldacc, nt);
      n_cmp++;
      if (st2 != st) fail("%s gemm_acc status %d, ref %d", p->name, st2, st);
      int64_t d = diff_bytes(acc, acc_ref, ab);
      if (d >= 0) fail("%s gemm_acc acc[%lld][%lld] %d, ref %d", p->name, (long long)(d / 4 / ldacc),
                       (long long)(d / 4 % ldacc), acc[d / 4], acc_ref[d / 4]);
    }
    if (st != BL_OK && bad == 0) fail("ref gemm_acc refused a good call: %d", st);
    /* bl_lut_gemm_acc: the same call on the decode layout of P (NULL where P was), on ref and every
     * path: the reference GEMM's status and acc */
    const uint8_t *L = lut_of(P, N, K, nt), *a_l = BAD(3, 2) ? NULL : L;
    for (int i = -1; i < tp_count; i++) {
      const tpath *p = i < 0 ? &tp_ref : &tp_list[i];
      if (p->kt && (st != BL_OK || a_M == 0)) continue;
      int32_t *acc = xalloc(ab, 0x44);
      bl_status st2 = tp_lut_gemm_acc(p, a_q, a_ldq, a_l, a_M, a_N, a_K, a_acc ? acc : NULL,
                                      a_ldacc, nt);
      n_cmp++;
      if (st2 != st) fail("%s lut_gemm_acc status %d, ref gemm_acc %d", p->name, st2, st);
      int64_t d = diff_bytes(acc, acc_ref, ab);
      if (d >= 0) fail("%s lut_gemm_acc acc[%lld][%lld] %d, ref %d", p->name,
                       (long long)(d / 4 / ldacc), (long long)(d / 4 % ldacc), acc[d / 4],
                       acc_ref[d / 4]);
    }
  }

  /* ------------------------------------------------------------ bl_linear_q (op 4) */
  const size_t yb = span(M, N, ldy, esz(ydt));
  void *yq_ref = xalloc(yb, 0x66);
  bl_status st_lq = BL_ERR_ARG;
  if (sel & 16) {
    const int8_t *a_q = BAD(4, 1) ? NULL : Q;
    const float *a_xs = BAD(4, 2) ? NULL : XS, *a_ws = BAD(4, 3) ? NULL : WS;
    int64_t a_M = BAD(4, 4) ? -2 : M, a_N = BAD(4, 5) ? 0 : N;
    int64_t a_K = BAD(4, 6) ? BL_MAX_K + 1 : K, a_ldq = BAD(4, 7) ? Kp - 1 : ldq;
    int64_t a_ldy = BAD(4, 8) ? N - 1 : ldy;
    bl_dtype a_dt = BAD(4, 9) ? BL_I8 : ydt;
    void *a_y = BAD(4, 10) ? NULL : yq_ref;
    if (BAD(4, 6)) a_M = 0, a_ldq = bl_padded_k(a_K);
    bl_isa_set(BL_ISA_REF);
    st_lq = bl_linear_q(a_q, a_ldq, a_xs, lin_rowsum ? RS : NULL, a_M, P, a_N, a_K, a_ws, pc, B,
                        a_y, a_dt, a_ldy, nt);
    for (int i = 0; i < tp_count; i++) {
      const tpath *p = &tp_list[i];
      if (p->kt && (st_lq != BL_OK || a_M == 0)) continue;
      void *y = xalloc(yb, 0x66);
      bl_status st2 = tp_linear_q(p, a_q, a_ldq, a_xs, lin_rowsum ? RS : NULL, a_M, P, a_N, a_K,
                                  a_ws, pc, B, a_y ? y : NULL, a_dt, a_ldy, nt);
      n_cmp++;
      if (st2 != st_lq) fail("%s linear_q status %d, ref %d", p->name, st2, st_lq);
      int64_t d = dt_ok(ydt) ? diff_vals(y, yq_ref, ydt, (int64_t)(yb / esz(ydt))) : -1;
      if (d >= 0) fail("%s linear_q y[%lld][%lld] %a, ref %a", p->name, (long long)(d / ldy),
                       (long long)(d % ldy), (double)load_v(y, ydt, d), (double)load_v(yq_ref, ydt, d));
    }
    if (st_lq != BL_OK && bad == 0) fail("ref linear_q refused a good call: %d", st_lq);
  }

  /* ------------------------------------------------------------ bl_linear (op 5) */
  if (sel & 32) {
    const size_t wsb = bl_linear_workspace_bytes(M, K);
    void *ws_ref = xalloc(wsb, 0);
    void *y_ref = xalloc(yb, 0x66);
    const void *a_x = BAD(5, 1) ? NULL : x;
    const float *a_ws = BAD(5, 2) ? NULL : WS;
    int64_t a_M = BAD(5, 3) ? -1 : M, a_N = BAD(5, 4) ? 0 : N, a_K = BAD(5, 5) ? BL_MAX_K + 1 : K;
    int64_t a_ldx = BAD(5, 6) ? K - 1 : ldx, a_ldy = BAD(5, 7) ? N - 1 : ldy;
    bl_dtype a_xdt = BAD(5, 8) ? (bl_dtype)-1 : xdt, a_ydt = BAD(5, 9) ? BL_I8 : ydt;
    void *a_wsp = BAD(5, 10) ? NULL : ws_ref;
    if (BAD(5, 5)) a_M = 0, a_ldx = a_K;
    bl_isa_set(BL_ISA_REF);
    bl_status st = bl_linear(a_x, a_xdt, a_M, a_K, a_ldx, P, a_N, a_ws, pc, B, eps, pt, y_ref,
                             a_ydt, a_ldy, a_wsp, nt);
    for (int i = 0; i < tp_count; i++) {
      const tpath *p = &tp_list[i];
      if (p->kt && (st != BL_OK || a_M == 0)) continue;
      void *wsp = xalloc(wsb, 0);
      void *y = xalloc(yb, 0x66);
      bl_status st2 = tp_linear(p, a_x, a_xdt, a_M, a_K, a_ldx, P, a_N, a_ws, pc, B, eps, pt, y,
                                a_ydt, a_ldy, a_wsp ? wsp : NULL, nt);
      n_cmp++;
      if (st2 != st) fail("%s linear status %d, ref %d", p->name, st2, st);
      int64_t d = dt_ok(ydt) ? diff_vals(y, y_ref, ydt, (int64_t)(yb / esz(ydt))) : -1;
      if (d >= 0) fail("%s linear y[%lld][%lld] %a, ref %a", p->name, (long long)(d / ldy),
                       (long long)(d % ldy), (double)load_v(y, ydt, d), (double)load_v(y_ref, ydt, d));
    }
    if (st == BL_OK && st_acts == BL_OK && st_lq == BL_OK && bad == 0 && sx_from_acts &&
        dt_ok(ydt)) { /* the fused forward == quantize_acts + linear_q */
      int64_t d = diff_vals(y_ref, yq_ref, ydt, (int64_t)(yb / esz(ydt)));
      if (d >= 0) fail("ref linear y[%lld] %a != quantize_acts + linear_q %a", (long long)d,
                       (double)load_v(y_ref, ydt, d), (double)load_v(yq_ref, ydt, d));
    }
    if (st != BL_OK && bad == 0 && eps_ok)
      fail("ref linear refused a good call: %d", st);
    /* bl_linear_lut: the same call with the decode layout of P, on ref and every path: bl_linear's
     * status and y. Natively under a drawn option setting; where bl_lut_used says the layout is
     * not read, a garbage one (random words) is passed and must make no difference. */
    static const char *const lmode_name[] = {"FORCE", "FORCE, no layout", "AUTO", "OFF"};
    const unsigned lmode = pick(4);
    const int64_t lmax = (int64_t)pick(65);
    const size_t lb = bl_lut_bytes(N, K), wsl = bl_linear_lut_workspace_bytes(M, K);
    const uint8_t *L = lut_of(P, N, K, nt);
    uint16_t *G = xalloc(lb, 0);
    for (size_t i = 0; i < lb / 2; i++) G[i] = (uint16_t)(rnd() >> 48);
    for (int i = -1; i < tp_count; i++) {
      const tpath *p = i < 0 ? &tp_ref : &tp_list[i];
      if (p->kt && (st != BL_OK || a_M == 0)) continue;
      int used = 1;
      if (!p->kt) {
        bl_isa_set(p->isa);
        bl_cpu_set_option(BL_CPU_OPT_LUT, lmode == 2 ? BL_CPU_LUT_AUTO
                                          : lmode == 3 ? BL_CPU_LUT_OFF : BL_CPU_LUT_FORCE);
        bl_cpu_set_option(BL_CPU_OPT_LUT_MAX_M, lmax);
        used = bl_lut_used(a_M);
      }
      const uint8_t *l = p->kt ? L : lmode == 1 ? NULL : used ? L : (const uint8_t *)G;
      void *wsp = xalloc(wsl, 0xcd);
      void *y = xalloc(yb, 0x66);
      bl_status st2 = tp_linear_lut(p, a_x, a_xdt, a_M, a_K, a_ldx, P, l, a_N, a_ws, pc, B, eps,
                                    pt, y, a_ydt, a_ldy, a_wsp ? wsp : NULL, nt);
      bl_cpu_set_option(BL_CPU_OPT_LUT, lut_mode0);
      bl_cpu_set_option(BL_CPU_OPT_LUT_MAX_M, lut_max_m0);
      n_cmp++;
      if (st2 != st) fail("%s linear_lut (%s, max M %lld, layout read %d) status %d, ref linear %d",
                          p->name, lmode_name[lmode], (long long)lmax, used, st2, st);
      int64_t d = dt_ok(ydt) ? diff_vals(y, y_ref, ydt, (int64_t)(yb / esz(ydt))) : -1;
      if (d >= 0) fail("%s linear_lut (%s, max M %lld, layout read %d) y[%lld][%lld] %a, ref linear %a",
                       p->name, lmode_name[lmode], (long long)lmax, used, (long long)(d / ldy),
                       (long long)(d % ldy), (double)load_v(y, ydt, d), (double)load_v(y_ref, ydt, d));
    }
  }

  /* ------------------------------------------------------------ bl_q4_linear (the int4 head)
   * Its parameter bytes come last (the decoding of everything above is unchanged): the group size
   * (now and then an invalid one), its own bad argument, random weight bytes (every nibble),
   * scales (now and then specials: NaN / Inf propagate, compared as NaN-ness), on x, eps, bias,
   * dtypes, strides and threads of this execution. */
  {
    static const int64_t g_tab[] = {64, 64, 64, 128, 192, 256, 1024, 0, 32, 96, 1088, -64};
    const int64_t G = TAB(g_tab);
    const int qbad = pick(12) == 0 ? 1 + (int)pick(9) : 0, qsmode = (int)pick(4);
    const int64_t Kg = bl_q4_groups(K, G), rb4 = bl_q4_row_bytes(K, G);
    const int64_t NQ = Kg ? N : 1, KgQ = Kg ? Kg : 1; /* buffers for an invalid G: any size */
    uint8_t *W4 = xalloc((size_t)(NQ * (rb4 ? rb4 : 32)), 0);
    for (int64_t i = 0; i < NQ * (rb4 ? rb4 : 32); i++) W4[i] = (uint8_t)vbits();
    float *S4 = xalloc((size_t)(NQ * KgQ) * 4, 0);
    for (int64_t i = 0; i < NQ * KgQ; i++)
      S4[i] = qsmode == 0 ? ldexpf(1.0f, irand(30) - 20) * (irand(2) ? 1.0f : -1.0f)
              : qsmode == 3 && irand(4) == 0 ? special() : frand() * 0.1f;
    const size_t wsb = bl_q4_linear_workspace_bytes(M, K, G);
    const void *a_x = qbad == 1 ? NULL : x;
    const uint8_t *a_w = qbad == 2 ? NULL : W4;
    const float *a_s = qbad == 3 ? NULL : S4;
    int64_t a_M = qbad == 4 ? -1 - M : M, a_N = qbad == 5 ? 0 : N, a_ldx = qbad == 6 ? K - 1 : ldx;
    int64_t a_ldy = qbad == 7 ? N - 1 : ldy;
    bl_dtype a_xdt = qbad == 8 ? BL_I8 : xdt;
    const int no_ws = qbad == 9;
    void *ws_ref = xalloc(wsb, 0xcd), *y_ref = xalloc(yb, 0x66);
    snprintf(desc + strlen(desc), sizeof(desc) - strlen(desc), " q4: G=%lld bad=%d scales=%d",
             (long long)G, qbad, qsmode);
    const bl_status st = bl_q4_linear_ref(a_x, a_xdt, a_M, K, a_ldx, a_w, a_s, a_N, G, B, eps,
                                          y_ref, ydt, a_ldy, no_ws ? NULL : ws_ref, nt);
    for (int i = 0; i < tp_count; i++) {
      const tpath *p = &tp_list[i];
      if (p->kt && (st != BL_OK || a_M == 0)) continue;
      void *wsp = xalloc(wsb, 0x3c), *y = xalloc(yb, 0x66);
      const bl_status st2 = tp_q4_linear(p, a_x, a_xdt, a_M, K, a_ldx, a_w, a_s, a_N, G, B, eps, y,
                                         ydt, a_ldy, no_ws ? NULL : wsp, nt);
      n_cmp++;
      if (st2 != st) fail("%s q4_linear status %d, ref %d", p->name, st2, st);
      const int64_t d = dt_ok(ydt) ? diff_vals(y, y_ref, ydt, (int64_t)(yb / esz(ydt))) : -1;
      if (d >= 0) fail("%s q4_linear y[%lld][%lld] %a, ref %a", p->name, (long long)(d / ldy),
                       (long long)(d % ldy), (double)load_v(y, ydt, d), (double)load_v(y_ref, ydt, d));
    }
    if (st != BL_OK && qbad == 0 && eps_ok && Kg && dt_ok(ydt))
      fail("ref q4_linear refused a good call: %d", st);
    if (st == BL_OK && (!Kg || (qbad && !(M == 0 && (qbad <= 3 || qbad == 9)))))
      fail("ref q4_linear accepted a bad call"); /* NULL pointers are fine where M is 0 */
  }
#undef BAD
}

/* ---------------------------------------------------------------- entry points */
static void report(void) {
  fprintf(stderr, "fuzz: %llu executions, %llu path comparisons (paths:", n_exec, n_cmp);
  for (int i = 0; i < tp_count; i++) fprintf(stderr, " %s", tp_list[i].name);
  fprintf(stderr, ")\n");
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  tp_init();
  code3_w = tp_code3_weight();
  lut_mode0 = bl_cpu_get_option(BL_CPU_OPT_LUT);
  lut_max_m0 = bl_cpu_get_option(BL_CPU_OPT_LUT_MAX_M);
  atexit(report);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a of the input seeds the generator */
  for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 1099511628211ULL;
  rng = h | 1;
  in_d = data;
  in_n = size;
  in_i = 0;
  n_exec++;
  run_one();
  free_all();
  return 0;
}

#ifdef BL_FUZZ_MAIN
/* Seeded driver (no libFuzzer): random inputs of 0..256 bytes. Arguments as libFuzzer's:
 * -seed=S -runs=N -max_total_time=T, or files to run once each. */
#include <sys/time.h>
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));
static double now(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec + 1e-6 * (double)tv.tv_usec;
}
int main(int argc, char **argv) {
  unsigned long long seed = (unsigned long long)time(NULL), runs = ~0ULL;
  double max_t = 0;
  int files = 0;
  LLVMFuzzerInitialize(&argc, &argv);
  if (__sanitizer_set_death_callback) /* a sanitizer report: keep the input too */
    __sanitizer_set_death_callback(save_input);
  for (int i = 1; i < argc; i++) {
    if (!strncmp(argv[i], "-seed=", 6)) seed = strtoull(argv[i] + 6, NULL, 10);
    else if (!strncmp(argv[i], "-runs=", 6)) runs = strtoull(argv[i] + 6, NULL, 10);
    else if (!strncmp(argv[i], "-max_total_time=", 16)) max_t = atof(argv[i] + 16);
    else if (argv[i][0] == '-') continue; /* other libFuzzer flags: ignored */
    else {
      FILE *f = fopen(argv[i], "rb");
      if (!f) { perror(argv[i]); return 2; }
      static uint8_t buf[1 << 20];
      size_t n = fread(buf, 1, sizeof(buf), f);
      fclose(f);
      printf("running %s (%zu bytes)\n", argv[i], n);
      LLVMFuzzerTestOneInput(buf, n);
      files++;
    }
  }
  if (files) return 0;
  if (runs == ~0ULL && max_t <= 0) runs = 10000;
  fprintf(stderr, "fuzz (seeded driver): seed %llu (repeat with -seed=%llu)\n", seed, seed);
  uint64_t g = seed * 0x9E3779B97F4A7C15ULL + 1;
  const double t0 = now();
  uint8_t buf[256];
  for (unsigned long long r = 0; r < runs; r++) {
    if (max_t > 0 && (r & 63) == 0 && now() - t0 > max_t) break;
    g ^= g >> 12; g ^= g << 25; g ^= g >> 27;
    uint64_t v = g * 2685821657736338717ULL;
    size_t n = (size_t)(v % 257);
    for (size_t i = 0; i < n; i++) {
      g ^= g >> 12; g ^= g << 25; g ^= g >> 27;
      buf[i] = (uint8_t)((g * 2685821657736338717ULL) >> 56);
    }
    LLVMFuzzerTestOneInput(buf, n);
  }
  return 0;
}
#endif
