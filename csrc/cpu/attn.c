/* attn.c - decode attention on the CPU (bitlinear.h, "CPU decode attention"): one query token
 * per sequence over a float32 key/value cache, GQA, optional additive or bool mask.
 *
 * Work unit: (batch b, kv head, group of up to ATTN_GROUP query heads of that kv head). Positions
 * go in chunks of ATTN_CHUNK: the chunk's live positions (mask not -inf / false for some query
 * head of the kv head) are listed; four live k rows at a time are dotted with every query head of
 * the group (they stay in L1 meanwhile); then per head the chunk maximum, a rescale of the running
 * sum and of the output row (the accumulator) when the maximum grew, p = exp(s - max), and four
 * live v rows at a time, weighted, added into the output row. The live list depends on the kv
 * head only, and every head's arithmetic only on its own inputs and that list, so the grouping
 * (chosen from the thread count) never changes a bit. Plain C: the inner loops are
 * written in 16 explicit lanes (the build has no fast-math and no FP contraction, so the compiler
 * keeps exactly this order and vectorizes the lanes). */
#include "internal.h"

#include <math.h>
#include <string.h>

#define ATTN_GROUP 8   /* query heads computed together on one kv head */
#define ATTN_CHUNK 128 /* positions whose scores are held at once */
#define ATTN_MAX_EXTENT ((int64_t)1 << 40)

/* x86-64: the task is compiled for AVX-512, AVX2 and the baseline, picked once at load time (an
 * ifunc). The same C in each, no FP contraction: every clone gives the same bits. */
/* ifuncs need ELF (not Mach-O / PE); "arch=x86-64-v4" needs gcc >= 12 or clang >= 14: any other
 * build compiles the baseline only (same bits, slower). */
#if defined(__x86_64__) && defined(__ELF__) && !defined(BL_ATTN_NO_CLONES) && \
    ((defined(__clang__) && __clang_major__ >= 14) || (!defined(__clang__) && __GNUC__ >= 12))
#define ATTN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ATTN_CLONES
#endif

/* The 16-lane sum of a dot product, reduced pairwise (lane j + 8, + 4, + 2, + 1). */
static inline float attn_reduce16(const float *p) {
  float a[8], b[4];
  for (int j = 0; j < 8; j++) a[j] = p[j] + p[j + 8];
  for (int j = 0; j < 4; j++) b[j] = a[j] + a[j + 4];
  return (b[0] + b[2]) + (b[1] + b[3]);
}

/* dot(a, b) over D floats: 16 lanes (lane j adds the products at d = j (mod 16), in order), then
 * attn_reduce16. attn_dot4 gives the same four values as four attn_dot calls (four independent
 * chains, one q load for four k rows). */
static inline float attn_dot(const float *a, const float *b, int64_t D) {
  float p[16] = {0};
  int64_t d = 0;
  for (; d + 16 <= D; d += 16)
    for (int j = 0; j < 16; j++) p[j] += a[d + j] * b[d + j];
  for (int j = 0; d + j < D; j++) p[j] += a[d + j] * b[d + j];
  return attn_reduce16(p);
}

static inline void attn_dot4(const float *a, const float *b0, const float *b1, const float *b2,
                             const float *b3, int64_t D, float *out) {
  float p0[16] = {0}, p1[16] = {0}, p2[16] = {0}, p3[16] = {0};
  int64_t d = 0;
  for (; d + 16 <= D; d += 16)
    for (int j = 0; j < 16; j++) {
      const float x = a[d + j];
      p0[j] += x * b0[d + j];
      p1[j] += x * b1[d + j];
      p2[j] += x * b2[d + j];
      p3[j] += x * b3[d + j];
    }
  for (int j = 0; d + j < D; j++) {
    const float x = a[d + j];
    p0[j] += x * b0[d + j];
    p1[j] += x * b1[d + j];
    p2[j] += x * b2[d + j];
    p3[j] += x * b3[d + j];
  }
  out[0] = attn_reduce16(p0);
  out[1] = attn_reduce16(p1);
  out[2] = attn_reduce16(p2);
  out[3] = attn_reduce16(p3);
}

/* exp(x) for x <= 0 (the softmax's s - max), within about 2 ulp (Cody-Waite reduction by ln 2,
 * degree-7 polynomial, 2^n built from bits): 0 below -87.3 (and for -inf), NaN for NaN. Branch
 * free, so a loop over it vectorizes. */
static inline float attn_exp_neg(float x) {
  const float xc = x < -87.0f ? -87.0f : x;
  const float t = xc * 1.44269504088896341f;
  const float fn = (t + 12582912.0f) - 12582912.0f; /* round to nearest */
  float r = xc - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  poly = poly * (r * r) + r + 1.0f;
  const int32_t bits = ((int32_t)fn + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  const float y = poly * scale;
  return x < -87.0f ? 0.0f : (x != x ? x : y);
}

/* y = y * f (D floats). */
static inline void attn_scale_row(float *restrict y, float f, int64_t D) {
  for (int64_t d = 0; d < D; d++) y[d] *= f;
}

/* y += ((p0 x0 + p1 x1) + (p2 x2 + p3 x3)) (D floats; x rows never alias y). */
static inline void attn_axpy4(float *restrict y, const float *p, const float *restrict x0,
                              const float *restrict x1, const float *restrict x2,
                              const float *restrict x3, int64_t D) {
  const float a = p[0], b = p[1], c = p[2], e = p[3];
  for (int64_t d = 0; d < D; d++) y[d] += (a * x0[d] + b * x1[d]) + (c * x2[d] + e * x3[d]);
}

typedef struct {
  int64_t Hq, Hkv, L, D, G, gsz, ngroups;
  const float *q, *k, *v;
  int64_t q_sb, q_sh, k_sb, k_sh, k_sl, v_sb, v_sh, v_sl;
  const void *mask;
  int mask_type;
  int64_t m_sb, m_sh, m_sl;
  float scale;
  float *out;
  int64_t o_sb, o_sh;
} attn_args;

/* The mask entry of (b, head h, position l): its additive value (0 for bool / none) and whether the
 * position is live. */
static inline int attn_mask_at(const attn_args *a, int64_t b, int64_t h, int64_t l, float *add) {
  *add = 0.0f;
  if (a->mask_type == BL_ATTN_MASK_NONE) return 1;
  const int64_t off = b * a->m_sb + h * a->m_sh + l * a->m_sl;
  if (a->mask_type == BL_ATTN_MASK_BOOL) return ((const uint8_t *)a->mask)[off] != 0;
  *add = ((const float *)a->mask)[off];
  return *add != -INFINITY;
}

/* One task: batch b, kv head kh, query heads h0 .. h0 + g - 1 (all of kv head kh). */
ATTN_CLONES
static void attn_task(const attn_args *a, int64_t b, int64_t kh, int64_t h0, int g) {
  const int64_t D = a->D;
  const float *qh[ATTN_GROUP];
  float *oh[ATTN_GROUP];
  float run_max[ATTN_GROUP], run_sum[ATTN_GROUP];
  for (int i = 0; i < g; i++) {
    qh[i] = a->q + b * a->q_sb + (h0 + i) * a->q_sh;
    oh[i] = a->out + b * a->o_sb + (h0 + i) * a->o_sh;
    memset(oh[i], 0, (size_t)D * sizeof(float));
    run_max[i] = -INFINITY;
    run_sum[i] = 0.0f;
  }
  const int64_t hk = kh * a->G; /* the kv head's first query head */
  const float *kb = a->k + b * a->k_sb + kh * a->k_sh;
  const float *vb = a->v + b * a->v_sb + kh * a->v_sh;
  /* one mask row serves every head when the head stride is 0 */
  const int per_head = a->mask_type != BL_ATTN_MASK_NONE && a->m_sh != 0;
  const float *kr[ATTN_CHUNK + 3], *vr[ATTN_CHUNK + 3];
  float add[ATTN_GROUP][ATTN_CHUNK + 3]; /* the mask's term, -inf where a head masks it */
  float s[ATTN_GROUP][ATTN_CHUNK + 3];   /* scores, then p */
  for (int64_t l0 = 0; l0 < a->L; l0 += ATTN_CHUNK) {
    const int n = (int)(a->L - l0 < ATTN_CHUNK ? a->L - l0 : ATTN_CHUNK);
    int nl = 0; /* the chunk's live positions: their k / v rows and mask terms */
    for (int j = 0; j < n; j++) {
      const int64_t l = l0 + j;
      float m;
      int any = 0;
      if (!per_head) {
        any = attn_mask_at(a, b, h0, l, &m);
        for (int i = 0; i < g; i++) add[i][nl] = m;
      } else {
        /* live: for some head of the kv head (not only of this group), so that the live list,
         * and with it the order of the sums, does not depend on the grouping */
        for (int64_t h = hk; h < hk + a->G; h++) any |= attn_mask_at(a, b, h, l, &m);
        for (int i = 0; i < g; i++) add[i][nl] = attn_mask_at(a, b, h0 + i, l, &m) ? m : -INFINITY;
      }
      if (any) {
        kr[nl] = kb + l * a->k_sl;
        vr[nl] = vb + l * a->v_sl;
        nl++;
      }
    }
    if (nl == 0) continue;
    /* pad to a multiple of 4 with the last live row, weight 0 (never counted) */
    const int n4 = (nl + 3) & ~3;
    for (int t = nl; t < n4; t++) {
      kr[t] = kr[nl - 1];
      vr[t] = vr[nl - 1];
    }
    /* scores: four k rows at a time against each head (the rows stay in L1 across heads) */
    for (int t = 0; t < n4; t += 4)
      for (int i = 0; i < g; i++) attn_dot4(qh[i], kr[t], kr[t + 1], kr[t + 2], kr[t + 3], D,
                                            &s[i][t]);
    for (int i = 0; i < g; i++) {
      float *si = s[i];
      float m = -INFINITY;
      for (int t = 0; t < nl; t++) {
        si[t] = add[i][t] == -INFINITY ? -INFINITY : si[t] * a->scale + add[i][t];
        m = si[t] > m ? si[t] : m;
      }
      if (m > run_max[i]) {
        if (run_max[i] != -INFINITY) {
          const float f = attn_exp_neg(run_max[i] - m);
          run_sum[i] *= f;
          attn_scale_row(oh[i], f, D);
        }
        run_max[i] = m;
      }
      const float mx = run_max[i];
      if (mx == -INFINITY) { /* every live position of this head masked so far: p = 0 */
        for (int t = 0; t < n4; t++) si[t] = 0.0f;
        continue;
      }
      for (int t = 0; t < nl; t++) si[t] = attn_exp_neg(si[t] - mx);
      for (int t = nl; t < n4; t++) si[t] = 0.0f;
      float sum = run_sum[i];
      for (int t = 0; t < nl; t++) sum += si[t];
      run_sum[i] = sum;
    }
    /* p v: four v rows at a time into each head's output row */
    for (int t = 0; t < n4; t += 4)
      for (int i = 0; i < g; i++)
        attn_axpy4(oh[i], &s[i][t], vr[t], vr[t + 1], vr[t + 2], vr[t + 3], D);
  }
  for (int i = 0; i < g; i++)
    if (run_sum[i] > 0.0f) attn_scale_row(oh[i], 1.0f / run_sum[i], D);
}

static void attn_run(const attn_args *a, int64_t t) {
  const int64_t per_b = a->Hkv * a->ngroups;
  const int64_t b = t / per_b, r = t % per_b, kh = r / a->ngroups, gi = r % a->ngroups;
  const int64_t first = gi * a->gsz;
  const int64_t g = a->G - first < a->gsz ? a->G - first : a->gsz;
  attn_task(a, b, kh, kh * a->G + first, (int)g);
}

/* 1 when [0, n) * stride + [0, span) stays below 2^62 (no int64 overflow in any offset). */
static int attn_extent_ok(int64_t *acc, int64_t n, int64_t stride) {
  if (n <= 1) return 1;
  int64_t e;
  if (__builtin_mul_overflow(n - 1, stride, &e) || __builtin_add_overflow(*acc, e, acc)) return 0;
  return *acc < ((int64_t)1 << 62);
}

/* out rows [B, Hq] of D floats with strides (o_sb, o_sh) do not overlap each other: the axes of
 * more than one row, by stride, each step past the whole of the axes inside it. */
static int attn_out_disjoint(int64_t B, int64_t Hq, int64_t D, int64_t o_sb, int64_t o_sh) {
  int64_t n[2], st[2];
  int k = 0;
  if (Hq > 1) n[k] = Hq, st[k++] = o_sh;
  if (B > 1) n[k] = B, st[k++] = o_sb;
  if (k == 2 && st[1] < st[0]) {
    int64_t t = n[0]; n[0] = n[1]; n[1] = t;
    t = st[0]; st[0] = st[1]; st[1] = t;
  }
  int64_t span = D; /* no overflow: extents were checked */
  for (int i = 0; i < k; i++) {
    if (st[i] < span) return 0;
    span = st[i] * n[i];
  }
  return 1;
}

bl_status bl_attn_decode(int64_t B, int64_t Hq, int64_t Hkv, int64_t L, int64_t D,
                         const float *q, int64_t q_sb, int64_t q_sh,
                         const float *k, int64_t k_sb, int64_t k_sh, int64_t k_sl,
                         const float *v, int64_t v_sb, int64_t v_sh, int64_t v_sl,
                         const void *mask, int mask_type, int64_t m_sb, int64_t m_sh,
                         int64_t m_sl, float scale, float *out, int64_t o_sb, int64_t o_sh,
                         int nthreads) {
  if (B > 0 && (!q || !k || !v || !out || (mask_type != BL_ATTN_MASK_NONE && !mask)))
    return BL_ERR_NULL;
  if (B < 0 || L < 0 || Hq < 1 || Hkv < 1 || D < 1 || Hq % Hkv != 0) return BL_ERR_SIZE;
  if (B > ATTN_MAX_EXTENT || L > ATTN_MAX_EXTENT || Hq > ATTN_MAX_EXTENT || D > ATTN_MAX_EXTENT)
    return BL_ERR_SIZE;
  if (mask_type != BL_ATTN_MASK_NONE && mask_type != BL_ATTN_MASK_ADD &&
      mask_type != BL_ATTN_MASK_BOOL)
    return BL_ERR_ARG;
  if (!isfinite(scale)) return BL_ERR_ARG;
  const int has_mask = mask_type != BL_ATTN_MASK_NONE;
  if (q_sb < 0 || q_sh < 0 || k_sb < 0 || k_sh < 0 || k_sl < 0 || v_sb < 0 || v_sh < 0 ||
      v_sl < 0 || o_sb < 0 || o_sh < 0 || (has_mask && (m_sb < 0 || m_sh < 0 || m_sl < 0)))
    return BL_ERR_STRIDE;
  /* every offset an element is read or written at fits int64 */
  int64_t eq = D, ek = D, ev = D, eo = D, em = 1;
  if (!attn_extent_ok(&eq, B, q_sb) || !attn_extent_ok(&eq, Hq, q_sh) ||
      !attn_extent_ok(&ek, B, k_sb) || !attn_extent_ok(&ek, Hkv, k_sh) ||
      !attn_extent_ok(&ek, L, k_sl) || !attn_extent_ok(&ev, B, v_sb) ||
      !attn_extent_ok(&ev, Hkv, v_sh) || !attn_extent_ok(&ev, L, v_sl) ||
      !attn_extent_ok(&eo, B, o_sb) || !attn_extent_ok(&eo, Hq, o_sh) ||
      (has_mask && (!attn_extent_ok(&em, B, m_sb) || !attn_extent_ok(&em, Hq, m_sh) ||
                    !attn_extent_ok(&em, L, m_sl))))
    return BL_ERR_SIZE;
  if (!attn_out_disjoint(B, Hq, D, o_sb, o_sh)) return BL_ERR_STRIDE;
  if (B == 0) return BL_OK;

  attn_args a = {Hq, Hkv, L, D, Hq / Hkv, 0, 0, q, k, v, q_sb, q_sh, k_sb, k_sh, k_sl,
                 v_sb, v_sh, v_sl, mask, mask_type, m_sb, m_sh, m_sl, scale, out, o_sb, o_sh};
  /* Group size: whole kv heads (up to ATTN_GROUP query heads) unless the tasks would leave a
   * thread idle for a large share of the call; then smaller groups (each reads k / v again, from
   * cache). Cost model of a thread: tasks x (heads per task + 1 for reading k / v). */
  int nt = bl_nthreads(nthreads);
  const int64_t G = a.G, gmax = G < ATTN_GROUP ? G : ATTN_GROUP;
  int64_t best = gmax;
  double best_cost = -1.0;
  for (int64_t gs = gmax; gs >= 1; gs--) {
    const int64_t tasks = B * Hkv * ((G + gs - 1) / gs);
    const int64_t per = (tasks + nt - 1) / nt;
    const double cost = (double)per * (double)(gs + 1);
    if (best_cost < 0.0 || cost < best_cost) best_cost = cost, best = gs;
  }
  a.gsz = best;
  a.ngroups = (G + best - 1) / best;
  const int64_t tasks = B * Hkv * a.ngroups;
  if (nt > tasks) nt = (int)tasks;

  bl_region r;
  if (bl_region_begin(&r, nt) > 1) {
#pragma omp parallel num_threads(r.nt)
    {
      bl_region_thread th;
      bl_region_enter(&r, &th);
      const int id = omp_get_thread_num(), n = omp_get_num_threads();
      for (int64_t t = id; t < tasks; t += n) attn_run(&a, t);
      bl_region_leave(&r, &th);
    }
    bl_region_end(&r);
  } else {
    for (int64_t t = 0; t < tasks; t++) attn_run(&a, t);
  }
  return BL_OK;
}
