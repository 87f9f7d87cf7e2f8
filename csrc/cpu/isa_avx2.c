/* isa_avx2.c - AVX2 + F16C inner loops: packed ternary tiles (vpmaddubsw), row absmax, row
 * quantization, the epilogue and weight packing. Built with -mavx2
 * -mfma -mf16c -mbmi2 (isa_flags.txt). */
#if defined(__x86_64__)
#include "internal.h"
#include "simd_x86.h"

#include <math.h>
#include <string.h>

/* vpmaddubsw pairs (codes 0..2 times int8: the decode reads the invalid code 3 as 2) lie in
 * [-512, 508]: 16 blocks x 4 subgroups of them stay inside int16 (64 x -512 = -32768), then
 * vpmaddwd by 1 widens them to int32. The lookup decode costs no more than an unchecked one. */
#define TILE256_CHUNK_BLOCKS 16
#define TILE256_STEP(a, c, x) _mm256_add_epi16(a, _mm256_maddubs_epi16(c, x))
#define TILE256_FLUSH(acc, a) _mm256_add_epi32(acc, _mm256_madd_epi16(a, _mm256_set1_epi16(1)))
#define TILE256_PREFETCH BL_PF_DIST
#define TILE256_LUT_DECODE 1
#include "tile256_x86.h"

/* One row of x (GEMV): the lookup decode of tile256_x86.h (code 3 reads as 2), the four
 * subgroups into two int16 sums (lo: 0 and 2, hi: 1 and 3) of pairs in [-512, 508]; 16 blocks
 * give 32 pairs each, inside int16 on any byte pattern. */
#define FLUSH_BLOCKS_X1 16
BL_INLINE void tile1_body(const int8_t *x, const uint8_t *w, int64_t rb, int64_t nblk,
                          int32_t *out, const int NR) {
  const __m256i m0f = _mm256_set1_epi8(0x0f), lut0 = TILE256_LUT0, lut1 = TILE256_LUT1;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[BL_MAX_NR];
  for (int j = 0; j < NR; j++) acc[j] = _mm256_setzero_si256();
  for (int64_t b0 = 0; b0 < nblk; b0 += FLUSH_BLOCKS_X1) {
    const int64_t b1 = b0 + FLUSH_BLOCKS_X1 < nblk ? b0 + FLUSH_BLOCKS_X1 : nblk;
    __m256i lo[BL_MAX_NR], hi[BL_MAX_NR];
    for (int j = 0; j < NR; j++) lo[j] = hi[j] = _mm256_setzero_si256();
    for (int64_t b = b0; b < b1; b++) {
      const int8_t *xb = x + b * BL_QK;
      const __m256i x0 = _mm256_loadu_si256((const __m256i *)xb);
      const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xb + 32));
      const __m256i x2 = _mm256_loadu_si256((const __m256i *)(xb + 64));
      const __m256i x3 = _mm256_loadu_si256((const __m256i *)(xb + 96));
      BL_PREFETCH_AHEAD(w, BL_PF_DIST, b, NR);
      for (int j = 0; j < NR; j++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(w + j * rb + b * BL_BLOCK_BYTES));
        const __m256i nl = _mm256_and_si256(raw, m0f);
        const __m256i nh = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m0f);
        lo[j] = _mm256_add_epi16(lo[j], _mm256_maddubs_epi16(_mm256_shuffle_epi8(lut0, nl), x0));
        hi[j] = _mm256_add_epi16(hi[j], _mm256_maddubs_epi16(_mm256_shuffle_epi8(lut1, nl), x1));
        lo[j] = _mm256_add_epi16(lo[j], _mm256_maddubs_epi16(_mm256_shuffle_epi8(lut0, nh), x2));
        hi[j] = _mm256_add_epi16(hi[j], _mm256_maddubs_epi16(_mm256_shuffle_epi8(lut1, nh), x3));
        BL_PIN(lo[j]);
        BL_PIN(hi[j]);
      }
    }
    for (int j = 0; j < NR; j++)
      acc[j] = _mm256_add_epi32(acc[j], _mm256_add_epi32(_mm256_madd_epi16(lo[j], ones),
                                                         _mm256_madd_epi16(hi[j], ones)));
  }
  for (int j = 0; j < NR; j++) out[j] = bl_hsum8(acc[j]);
}

/* Int4 head (q4_x86.h): vpmaddubsw products of nibbles (0..15) and int8 lie in [-3840, 3810] per
 * pair, the low and high nibbles' pairs add in int16 (|sum| <= 7680), then vpmaddwd by 1 widens
 * them into the int32 lanes. */
#define Q4_DOT2(p, ul, xl, uh, xh)                                                          \
  _mm256_add_epi32(p, _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(ul, xl),       \
                                                         _mm256_maddubs_epi16(uh, xh)),      \
                                        _mm256_set1_epi16(1)))
#define Q4_MT 1 /* 2 * 4 accumulators + 5 operands: the 16 ymm registers hold one token */
#include "q4_x86.h"

/* Tiles of one row (GEMV) take tile1_body, the others the shared 256-bit tile. */
BL_INLINE void tile_body(const int8_t *x, int64_t ldq, const uint8_t *w, int64_t rb, int64_t nblk,
                         int32_t *out, int64_t ldo, const int MR, const int NR) {
  if (MR == 1)
    tile1_body(x, w, rb, nblk, out, NR);
  else
    tile256_body(x, ldq, w, rb, nblk, out, ldo, MR, NR);
}
BL_DEF_TILES(tile_body, 4)

/* ---------------------------------------------------------------- activations */
BL_INLINE __m256 load8(const void *x, bl_dtype dt, int64_t k) {
  if (dt == BL_F32) return _mm256_loadu_ps((const float *)x + k);
  __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)x + k));
  if (dt == BL_F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static float amax_avx2(const void *x, bl_dtype dt, int64_t K) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 v = _mm256_and_ps(load8(x, dt, k), absmask);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    m = _mm256_max_ps(m, v);
  }
  if (_mm256_movemask_ps(nan)) return NAN;
  float r[8];
  _mm256_storeu_ps(r, m);
  float mx = 0.0f;
  for (int i = 0; i < 8; i++) mx = r[i] > mx ? r[i] : mx;
  for (; k < K; k++) {
    float v = fabsf(bl_load_f(x, dt, k));
    if (v != v) return v;
    if (v > mx) mx = v;
  }
  return mx;
}

BL_INLINE __m256i quant8(__m256 v, __m256 s, __m256 lo, __m256 hi) {
  __m256 q = _mm256_round_ps(_mm256_div_ps(v, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(q, lo), hi));
}

static int32_t quant_row_avx2(const void *x, bl_dtype dt, int64_t K, float s, int8_t *q,
                              int64_t Kp) {
  if (!isfinite(s)) {
    memset(q, 0, (size_t)Kp);
    return 0;
  }
  const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i sum = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m256i a = quant8(load8(x, dt, k), vs, lo, hi), b = quant8(load8(x, dt, k + 8), vs, lo, hi);
    __m256i c = quant8(load8(x, dt, k + 16), vs, lo, hi), d = quant8(load8(x, dt, k + 24), vs, lo, hi);
    sum = _mm256_add_epi32(sum, _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, d)));
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    _mm256_storeu_si256((__m256i *)(q + k), _mm256_permutevar8x32_epi32(p, order));
  }
  int32_t total = bl_hsum8(sum);
  if (k < K) total += bl_quantize_row_ref((const char *)x + (size_t)k * (dt == BL_F32 ? 4 : 2),
                                          dt, K - k, s, q + k, Kp - k);
  else memset(q + K, 0, (size_t)(Kp - K));
  return total;
}

/* ---------------------------------------------------------------- epilogue */
static void epi_row_avx2(const int32_t *acc, int64_t N, int32_t rowsum, float sx,
                         const float *ws, int per_channel, const float *bias, void *y,
                         bl_dtype ydt) {
  if (!isfinite(sx)) {
    for (int64_t n = 0; n < N; n++) bl_store_f(y, ydt, n, NAN);
    return;
  }
  const __m256i rs = _mm256_set1_epi32(rowsum);
  const __m256 vsx = _mm256_set1_ps(sx), ws0 = _mm256_set1_ps(ws[0]);
  const __m256i r7fff = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
  int64_t n = 0;
  for (; n + 8 <= N; n += 8) {
    __m256i a = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(acc + n)), rs);
    __m256 s = _mm256_mul_ps(vsx, per_channel ? _mm256_loadu_ps(ws + n) : ws0);
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(a), s);
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + n));
    if (ydt == BL_F32) {
      _mm256_storeu_ps((float *)y + n, v);
      continue;
    }
    if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) { /* NaN bits as the ref */
      float t[8];
      _mm256_storeu_ps(t, v);
      for (int i = 0; i < 8; i++) bl_store_f(y, ydt, n + i, t[i]);
      continue;
    }
    __m128i h;
    if (ydt == BL_F16) {
      h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
    } else { /* bf16: round to nearest even on the bits */
      __m256i bits = _mm256_castps_si256(v);
      __m256i r = _mm256_add_epi32(bits, _mm256_add_epi32(r7fff, _mm256_and_si256(_mm256_srli_epi32(bits, 16), one)));
      r = _mm256_srli_epi32(r, 16);
      r = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
      h = _mm256_castsi256_si128(r);
    }
    _mm_storeu_si128((__m128i *)((uint16_t *)y + n), h);
  }
  for (; n < N; n++) {
    float s = sx * ws[per_channel ? n : 0];
    float v = (float)(int32_t)((uint32_t)acc[n] - (uint32_t)rowsum) * s;
    if (bias) v = v + bias[n];
    bl_store_f(y, ydt, n, v);
  }
}

/* ---------------------------------------------------------------- weight packing */
/* codes of 32 consecutive weights as 32 bytes in order */
BL_INLINE __m256i codes32(const float *w, __m256 s) {
  const __m256 lo = _mm256_set1_ps(-1.0f), hi = _mm256_set1_ps(1.0f);
  const __m256i one = _mm256_set1_epi32(1), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i c[4];
  for (int i = 0; i < 4; i++) {
    __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(w + 8 * i), s),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    c[i] = _mm256_add_epi32(_mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(q, lo), hi)), one);
  }
  __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
  return _mm256_permutevar8x32_epi32(p, order);
}

static void pack_row_avx2(const float *w, int64_t K, float s, uint8_t *out) {
  const __m256 vs = _mm256_set1_ps(s);
  const int64_t nb = bl_padded_k(K) / BL_QK;
  float tail[BL_QK];
  for (int64_t b = 0; b < nb; b++) {
    const float *src = w + b * BL_QK;
    if ((b + 1) * BL_QK > K) { /* last partial block: zeros pack as code 1 */
      memset(tail, 0, sizeof(tail));
      memcpy(tail, src, (size_t)(K - b * BL_QK) * sizeof(float));
      src = tail;
    }
    __m256i v = codes32(src, vs);
    v = _mm256_or_si256(v, _mm256_slli_epi16(codes32(src + 32, vs), 2));
    v = _mm256_or_si256(v, _mm256_slli_epi16(codes32(src + 64, vs), 4));
    v = _mm256_or_si256(v, _mm256_slli_epi16(codes32(src + 96, vs), 6));
    _mm256_storeu_si256((__m256i *)(out + b * BL_BLOCK_BYTES), v);
  }
}

void bl_kernels_avx2(bl_cpu_kernels *k) {
  memset(k, 0, sizeof(*k));
  k->mr = 4;
  k->nr = 2; /* 4 x 2 measured faster than 4 x 3 with the lookup decode (one code vector live) */
  k->nr1 = 4;
  BL_SET_TILES(k, 4);
  k->amax = amax_avx2;
  k->quant_row = quant_row_avx2;
  k->epi_row = epi_row_avx2;
  k->pack_row = pack_row_avx2;
  k->q4 = q4_kernel;
  k->q4_mt = Q4_MT;
}
#endif
