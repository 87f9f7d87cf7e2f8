/* test_attn.c - decode attention on the CPU (bitlinear.h, "CPU decode attention"; csrc/cpu/attn.c).
 *
 * bl_attn_decode against a float64 softmax(q k^T * scale + mask) v written out here, on random
 * shapes (L = 0, 1 and past one chunk of 128, D from 1 to 130, GQA groups 1..10), strided views of larger
 * buffers for q, k, v and out, masks none / additive / bool with every broadcast (stride 0) and
 * holes, heads with every position masked (zeros), within float32 rounding of the exact value.
 * Then, bit for bit: the same result at 1, 2 and 3 threads; positions masked for every query
 * head of a kv head are not read (NaN there changes nothing); the gaps between out rows are not
 * written. Then every error status, and B = 0 writing nothing. A fresh seed per run (printed;
 * BL_TEST_SEED repeats it). --small: fewer cases (qemu, sanitizers). Ends with "N passed, N
 * failed". The kernel is picked by the compiler's target_clones at load time: this tests the
 * variant this CPU runs (the emulated and cross builds test others). */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include "bitlinear.h"

#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int small;
/* float32 error allowed, relative to reference()'s mag */
#ifndef TOL
#define TOL 1e-6
#endif

static void *xmalloc(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n ? n : 1)) { printf("out of memory\n"); exit(2); }
  return p;
}

typedef struct {
  int64_t B, Hq, Hkv, L, D;
  int64_t q_sb, q_sh, k_sb, k_sh, k_sl, v_sb, v_sh, v_sl, o_sb, o_sh, m_sb, m_sh, m_sl;
  int mask_type;
  float scale;
  float *q, *k, *v, *madd;
  uint8_t *mbool;
  size_t nq, nk, nv, no, nm; /* elements allocated */
} attn_case;

static const void *mask_ptr(const attn_case *c) {
  return c->mask_type == BL_ATTN_MASK_ADD ? (const void *)c->madd
         : c->mask_type == BL_ATTN_MASK_BOOL ? (const void *)c->mbool : NULL;
}

static bl_status run(const attn_case *c, float *out, int nt) {
  return bl_attn_decode(c->B, c->Hq, c->Hkv, c->L, c->D, c->q, c->q_sb, c->q_sh, c->k, c->k_sb,
                        c->k_sh, c->k_sl, c->v, c->v_sb, c->v_sh, c->v_sl, mask_ptr(c),
                        c->mask_type, c->m_sb, c->m_sh, c->m_sl, c->scale, out, c->o_sb, c->o_sh,
                        nt);
}

/* 1 when query head h of batch b attends position l; *add gets the additive term */
static int attends(const attn_case *c, int64_t b, int64_t h, int64_t l, double *add) {
  *add = 0.0;
  const int64_t i = b * c->m_sb + h * c->m_sh + l * c->m_sl;
  if (c->mask_type == BL_ATTN_MASK_BOOL) return c->mbool[i] != 0;
  if (c->mask_type == BL_ATTN_MASK_ADD) {
    if (isinf(c->madd[i]) && c->madd[i] < 0) return 0;
    *add = c->madd[i];
  }
  return 1;
}

/* float64 reference of out[b, h, :] into ref[(b * Hq + h) * D + d], and the scale of float32's
 * error there into mag: sum_l p[l] |v[l, d]| times (1 + the largest scale * sum_d |q_d k_d| of
 * the head: a score's rounding error moves its weight by that much relative) */
static void reference(const attn_case *c, double *ref, double *mag) {
  const int64_t G = c->Hq / c->Hkv;
  double *s = xmalloc(sizeof(double) * (size_t)(c->L ? c->L : 1));
  for (int64_t b = 0; b < c->B; b++)
    for (int64_t h = 0; h < c->Hq; h++) {
      const int64_t kh = h / G;
      const float *qh = c->q + b * c->q_sb + h * c->q_sh;
      double mx = -INFINITY, sum = 0.0, add, sabs = 0.0;
      for (int64_t l = 0; l < c->L; l++) {
        if (!attends(c, b, h, l, &add)) { s[l] = -INFINITY; continue; }
        const float *kr = c->k + b * c->k_sb + kh * c->k_sh + l * c->k_sl;
        double dot = 0.0, dabs = 0.0;
        for (int64_t d = 0; d < c->D; d++) {
          dot += (double)qh[d] * kr[d];
          dabs += fabs((double)qh[d] * kr[d]);
        }
        if (dabs * c->scale > sabs) sabs = dabs * c->scale;
        s[l] = dot * c->scale + add;
        if (s[l] > mx) mx = s[l];
      }
      for (int64_t l = 0; l < c->L; l++) sum += s[l] == -INFINITY ? 0.0 : exp(s[l] - mx);
      for (int64_t d = 0; d < c->D; d++) {
        double acc = 0.0, m = 0.0;
        for (int64_t l = 0; l < c->L; l++) {
          if (s[l] == -INFINITY) continue;
          const double p = exp(s[l] - mx) / sum;
          const double vv = c->v[b * c->v_sb + kh * c->v_sh + l * c->v_sl + d];
          acc += p * vv;
          m += p * fabs(vv);
        }
        ref[(b * c->Hq + h) * c->D + d] = acc;
        mag[(b * c->Hq + h) * c->D + d] = m * (1.0 + sabs + (isfinite(mx) ? fabs(mx) : 0.0));
      }
    }
  free(s);
}

static float *alloc_fill(size_t n) {
  float *p = xmalloc(sizeof(float) * n);
  for (size_t i = 0; i < n; i++) p[i] = frand() * 2.0f;
  return p;
}

/* a random case: strides with padding (a view of a larger buffer) or dense */
static void make_case(attn_case *c, int mask_type) {
  memset(c, 0, sizeof *c);
  static const int64_t Ds[] = {1, 3, 8, 16, 17, 33, 64, 128, 130};
  c->B = 1 + irand(3);
  c->Hkv = 1 + irand(4);
  c->Hq = c->Hkv * (1 + irand(10)); /* groups of more than ATTN_GROUP (8) query heads too */
  /* L past ATTN_CHUNK (128): the running maximum and sum carried across chunks */
  c->L = irand(8) == 0 ? irand(2) : 1 + irand(small ? 40 : irand(3) == 0 ? 300 : 90);
  c->D = Ds[irand(small ? 6 : 9)];
  c->scale = (0.05f + (float)irand(100) / 100.0f) / sqrtf((float)c->D);
  const int pad = irand(2);
  const int64_t D = c->D;
  c->q_sh = D + pad * irand(5);
  c->q_sb = c->Hq * c->q_sh + pad * irand(7);
  c->k_sl = D + pad * irand(4);
  c->k_sh = (c->L ? c->L : 1) * c->k_sl + pad * irand(3) * c->k_sl; /* a longer cache */
  c->k_sb = c->Hkv * c->k_sh + pad * irand(9);
  c->v_sl = D + pad * irand(3);
  c->v_sh = (c->L ? c->L : 1) * c->v_sl + pad * irand(5);
  c->v_sb = c->Hkv * c->v_sh;
  c->o_sh = D + pad * irand(4);
  c->o_sb = c->Hq * c->o_sh + pad * irand(3);
  c->nq = (size_t)(c->B * c->q_sb);
  c->nk = (size_t)(c->B * c->k_sb);
  c->nv = (size_t)(c->B * c->v_sb);
  c->no = (size_t)(c->B * c->o_sb);
  c->q = alloc_fill(c->nq);
  c->k = alloc_fill(c->nk);
  c->v = alloc_fill(c->nv);
  c->mask_type = mask_type;
  if (mask_type != BL_ATTN_MASK_NONE) {
    /* each axis broadcast (stride 0) or not */
    const int per_b = irand(2), per_h = irand(2);
    c->m_sl = 1;
    c->m_sh = per_h ? (c->L ? c->L : 1) : 0;
    c->m_sb = per_b ? (per_h ? c->Hq : 1) * (c->L ? c->L : 1) : 0;
    c->nm = (size_t)((per_b ? c->B : 1) * (per_h ? c->Hq : 1) * (c->L ? c->L : 1));
    const int dense = irand(3); /* how many holes */
    if (mask_type == BL_ATTN_MASK_BOOL) {
      c->mbool = xmalloc(c->nm);
      for (size_t i = 0; i < c->nm; i++) c->mbool[i] = irand(4) >= dense;
    } else {
      c->madd = xmalloc(sizeof(float) * c->nm);
      for (size_t i = 0; i < c->nm; i++)
        c->madd[i] = irand(4) >= dense ? frand() * 3.0f : -INFINITY;
    }
    if (c->L && per_h && irand(3) == 0) { /* one query head with every position masked */
      const int64_t h = irand((int)c->Hq);
      for (int64_t l = 0; l < c->L; l++) {
        if (c->mbool) c->mbool[h * c->m_sh + l] = 0;
        else c->madd[h * c->m_sh + l] = -INFINITY;
      }
    }
  }
}

static void free_case(attn_case *c) {
  free(c->q); free(c->k); free(c->v); free(c->madd); free(c->mbool);
}

static const char *mname(int t) { return t == 0 ? "none" : t == 1 ? "add" : "bool"; }

static void one_case(int idx, int mask_type) {
  attn_case c;
  make_case(&c, mask_type);
  const size_t nres = (size_t)(c.B * c.Hq * c.D);
  double *ref = xmalloc(sizeof(double) * (nres ? nres : 1));
  double *mag = xmalloc(sizeof(double) * (nres ? nres : 1));
  reference(&c, ref, mag);
  float *out[3];
  for (int t = 0; t < 3; t++) {
    out[t] = xmalloc(sizeof(float) * c.no);
    memset(out[t], 0xA5, sizeof(float) * c.no); /* the gaps must keep this */
  }
  int ok_status = 1;
  for (int t = 0; t < 3; t++) ok_status &= run(&c, out[t], t + 1) == BL_OK;
  double worst = 0.0;
  int gaps_ok = 1, same = 1;
  for (int64_t b = 0; b < c.B; b++)
    for (int64_t h = 0; h < c.Hq; h++)
      for (int64_t d = 0; d < c.D; d++) {
        const size_t o = (size_t)(b * c.o_sb + h * c.o_sh + d);
        const size_t r = (size_t)((b * c.Hq + h) * c.D + d);
        const double err = fabs((double)out[0][o] - ref[r]) / (mag[r] * TOL + 1e-7);
        if (isnan(err)) worst = INFINITY;
        else if (err > worst) worst = err;
        for (int t = 1; t < 3; t++) same &= memcmp(&out[0][o], &out[t][o], sizeof(float)) == 0;
      }
  /* gaps: every element of out that is not a row element keeps the fill */
  for (size_t i = 0; i < c.no && gaps_ok; i++) {
    const int64_t b = (int64_t)i / c.o_sb, rem = (int64_t)i % c.o_sb;
    const int64_t h = rem / c.o_sh, d = rem % c.o_sh;
    if (b < c.B && h < c.Hq && d < c.D) continue;
    uint32_t u;
    memcpy(&u, &out[0][i], 4);
    gaps_ok &= u == 0xA5A5A5A5u;
  }
  check(ok_status && worst <= 1.0 && same && gaps_ok,
        "case %d: B=%lld Hq=%lld Hkv=%lld L=%lld D=%lld mask %s: status %d, error %.2f of the "
        "bound, threads 1/2/3 same bits %d, gaps untouched %d", idx, (long long)c.B,
        (long long)c.Hq, (long long)c.Hkv, (long long)c.L, (long long)c.D, mname(mask_type),
        ok_status, worst, same, gaps_ok);

  /* positions masked for every query head of a kv head: NaN in their k and v rows changes no
   * bit (they are skipped, not read) */
  if (mask_type != BL_ATTN_MASK_NONE && c.L) {
    const int64_t G = c.Hq / c.Hkv;
    int poisoned = 0;
    for (int64_t b = 0; b < c.B; b++)
      for (int64_t kh = 0; kh < c.Hkv; kh++)
        for (int64_t l = 0; l < c.L; l++) {
          int all = 1;
          double add;
          for (int64_t h = kh * G; h < (kh + 1) * G; h++) all &= !attends(&c, b, h, l, &add);
          if (!all) continue;
          for (int64_t d = 0; d < c.D; d++) {
            c.k[b * c.k_sb + kh * c.k_sh + l * c.k_sl + d] = NAN;
            c.v[b * c.v_sb + kh * c.v_sh + l * c.v_sl + d] = NAN;
          }
          poisoned++;
        }
    if (poisoned) {
      run(&c, out[1], 2);
      int eq = 1;
      for (int64_t b = 0; b < c.B; b++)
        for (int64_t h = 0; h < c.Hq; h++)
          eq &= memcmp(&out[0][b * c.o_sb + h * c.o_sh], &out[1][b * c.o_sb + h * c.o_sh],
                       sizeof(float) * (size_t)c.D) == 0;
      check(eq, "case %d: %d fully masked positions hold NaN: same bits", idx, poisoned);
    }
  }
  for (int t = 0; t < 3; t++) free(out[t]);
  free(ref); free(mag);
  free_case(&c);
}

static void statuses(void) {
  float q[64], k[256], v[256], out[64];
  uint8_t m[16] = {1, 1, 1, 1};
  for (int i = 0; i < 256; i++) { k[i] = frand(); v[i] = frand(); if (i < 64) q[i] = frand(); }
  /* B=1 Hq=2 Hkv=1 L=4 D=8, dense */
#define CALL(B, Hq, Hkv, L, D, qp, kp, vp, mp, mt, ksl, sc, op, osh) \
  bl_attn_decode(B, Hq, Hkv, L, D, qp, 16, 8, kp, 32, 32, ksl, vp, 32, 32, 8, mp, mt, 0, 0, 1, sc, \
                 op, 16, osh, 2)
  check(CALL(1, 2, 1, 4, 8, q, k, v, m, 2, 8, 0.3f, out, 8) == BL_OK, "status: good call OK");
  check(CALL(1, 2, 1, 4, 8, NULL, k, v, m, 2, 8, 0.3f, out, 8) == BL_ERR_NULL, "status: q NULL");
  check(CALL(1, 2, 1, 4, 8, q, NULL, v, m, 2, 8, 0.3f, out, 8) == BL_ERR_NULL, "status: k NULL");
  check(CALL(1, 2, 1, 4, 8, q, k, v, NULL, 2, 8, 0.3f, out, 8) == BL_ERR_NULL,
        "status: mask NULL with a mask type");
  check(CALL(1, 2, 1, 4, 8, q, k, v, NULL, 0, 8, 0.3f, out, 8) == BL_OK,
        "status: mask NULL without a mask type OK");
  check(CALL(1, 2, 1, 4, 8, q, k, v, m, 2, 8, 0.3f, NULL, 8) == BL_ERR_NULL, "status: out NULL");
  check(CALL(-1, 2, 1, 4, 8, q, k, v, m, 2, 8, 0.3f, out, 8) == BL_ERR_SIZE, "status: B < 0");
  check(CALL(1, 3, 2, 4, 8, q, k, v, m, 2, 8, 0.3f, out, 8) == BL_ERR_SIZE,
        "status: Hq not a multiple of Hkv");
  check(CALL(1, 2, 1, -1, 8, q, k, v, m, 2, 8, 0.3f, out, 8) == BL_ERR_SIZE, "status: L < 0");
  check(CALL(1, 2, 1, 4, 0, q, k, v, m, 2, 8, 0.3f, out, 8) == BL_ERR_SIZE, "status: D = 0");
  check(CALL(1, 2, 1, 4, 8, q, k, v, m, 3, 8, 0.3f, out, 8) == BL_ERR_ARG,
        "status: unknown mask type");
  check(CALL(1, 2, 1, 4, 8, q, k, v, m, 2, 8, NAN, out, 8) == BL_ERR_ARG, "status: scale NaN");
  check(CALL(1, 2, 1, 4, 8, q, k, v, m, 2, 8, INFINITY, out, 8) == BL_ERR_ARG, "status: scale inf");
  check(CALL(1, 2, 1, 4, 8, q, k, v, m, 2, -8, 0.3f, out, 8) == BL_ERR_STRIDE,
        "status: negative stride");
  check(CALL(1, 2, 1, 4, 8, q, k, v, m, 2, 8, 0.3f, out, 4) == BL_ERR_STRIDE,
        "status: out rows overlap");
  check(bl_attn_decode(1, 2, 1, (int64_t)1 << 50, 8, q, 16, 8, k, 32, 32, 8, v, 32, 32, 8, m, 2, 0,
                       0, 1, 0.3f, out, 16, 8, 2) == BL_ERR_SIZE, "status: L beyond 2^40");
  for (int i = 0; i < 64; i++) out[i] = 42.0f;
  int untouched = CALL(0, 2, 1, 4, 8, NULL, NULL, NULL, NULL, 2, 8, 0.3f, NULL, 8) == BL_OK;
  for (int i = 0; i < 64; i++) untouched &= out[i] == 42.0f;
  check(untouched, "status: B = 0 is OK with NULL pointers and writes nothing");
  /* L = 0: zeros */
  for (int i = 0; i < 64; i++) out[i] = 42.0f;
  int zeros = CALL(1, 2, 1, 0, 8, q, k, v, m, 2, 8, 0.3f, out, 8) == BL_OK;
  for (int i = 0; i < 16; i++) zeros &= out[i] == 0.0f;
  check(zeros, "L = 0: zeros");
#undef CALL
}

int main(int argc, char **argv) {
  small = argc > 1 && strcmp(argv[1], "--small") == 0;
  fresh_seed("test_attn");
  const int n = small ? 40 : 200;
  for (int i = 0; i < n; i++) one_case(i, i % 3);
  statuses();
  printf("%d passed, %d failed\n", n_pass, n_fail);
  return n_fail ? 1 : 0;
}
