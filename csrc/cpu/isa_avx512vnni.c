/* isa_avx512vnni.c - AVX-512 VNNI (vpdpbusd on zmm) packed ternary tiles.
 * One 32-byte block broadcast to both halves of a zmm gives two subgroups per vpdpbusd:
 * low half masked with 0x03 (subgroup 0, k = 128b + j), high half with 0x0C (subgroup 1, code
 * times 4), so the x operand is 64 contiguous bytes. The high lanes are divided by 4 (exact)
 * at the end. The invalid code 3 reads as 2 (docs/packed_format.md): an unsigned byte min clamps
 * the masked codes to 2 (low half) and 8 (high half). The rest of the path (absmax,
 * quantization, epilogue) is the AVX2 one. */
#if defined(__x86_64__)
#include "simd_x86.h"

#define CHUNK_BLOCKS 64
#define TILE12_MAX_MR 2 /* rows of x that take tile12_body (measured: M = 2 5-10% faster) */

/* The low half's lanes hold dot products, the high half's 4 * dot products. */
BL_INLINE int32_t hsum_zmm(__m512i v) {
  __m256i lo = _mm512_castsi512_si256(v);
  __m256i hi = _mm256_srai_epi32(_mm512_extracti64x4_epi64(v, 1), 2);
  return bl_hsum8(_mm256_add_epi32(lo, hi));
}

/* BL_PIN (simd_x86.h) with the register class "x" (zmm0-15): with "v" gcc copies some of the
 * eight GEMV accumulators through another register at every pin. Away in the SIMDe test build
 * (tests/c/emu/immintrin.h), as BL_PIN. */
#if defined(BL_EMU_IMMINTRIN_H)
#define PIN_X(v) ((void)0)
#else
#define PIN_X(v) __asm__("" : "+x"(v))
#endif

/* One or two rows of x (GEMV, small batches): no shifts. The broadcast block masked with
 * 0x03 | 0x0C (low | high half) holds the codes of subgroups 0 | 1 times 1 | 4, masked with
 * 0x30 | 0xC0 those of subgroups 2 | 3 times 16 | 64; an unsigned byte min against 2 times those
 * scales reads code 3 as 2: 4 instructions per block of a weight row, shared by the MR rows of x.
 * Two accumulators per output are scaled back (exact shifts) into int32 totals once per chunk: a
 * chunk of 64 blocks keeps every lane within 64 x 4 x 128 x 128 = 2^22. */
BL_INLINE void tile12_body(const int8_t *x, int64_t ldq, const uint8_t *w, int64_t rb,
                           int64_t nblk, int32_t *out, int64_t ldo, const int MR, const int NR) {
  const __m512i m01 = _mm512_inserti64x4(_mm512_set1_epi8(0x03), _mm256_set1_epi8(0x0c), 1);
  const __m512i m23 = _mm512_inserti64x4(_mm512_set1_epi8(0x30), _mm256_set1_epi8((char)0xc0), 1);
  const __m512i max01 = _mm512_inserti64x4(_mm512_set1_epi8(2), _mm256_set1_epi8(8), 1);
  const __m512i max23 = _mm512_inserti64x4(_mm512_set1_epi8(32), _mm256_set1_epi8((char)128), 1);
  __m256i acc[2][BL_MAX_NR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_si256();
  for (int64_t b0 = 0; b0 < nblk; b0 += CHUNK_BLOCKS) {
    const int64_t b1 = b0 + CHUNK_BLOCKS < nblk ? b0 + CHUNK_BLOCKS : nblk;
    __m512i a01[2][BL_MAX_NR], a23[2][BL_MAX_NR];
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) a01[i][j] = a23[i][j] = _mm512_setzero_si512();
    for (int64_t b = b0; b < b1; b++) {
      __m512i x01[2], x23[2];
      for (int i = 0; i < MR; i++) {
        x01[i] = _mm512_loadu_si512((const void *)(x + i * ldq + b * BL_QK));
        x23[i] = _mm512_loadu_si512((const void *)(x + i * ldq + b * BL_QK + 64));
      }
      BL_PREFETCH_AHEAD(w, BL_PF_DIST, b, NR);
      for (int j = 0; j < NR; j++) {
        const __m512i t = _mm512_broadcast_i64x4(
            _mm256_loadu_si256((const __m256i *)(w + j * rb + b * BL_BLOCK_BYTES)));
        const __m512i c01 = _mm512_min_epu8(_mm512_and_si512(t, m01), max01);
        const __m512i c23 = _mm512_min_epu8(_mm512_and_si512(t, m23), max23);
        for (int i = 0; i < MR; i++) {
          a01[i][j] = _mm512_dpbusd_epi32(a01[i][j], c01, x01[i]);
          a23[i][j] = _mm512_dpbusd_epi32(a23[i][j], c23, x23[i]);
          PIN_X(a01[i][j]);
          PIN_X(a23[i][j]);
        }
      }
    }
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) {
        __m256i s = _mm256_add_epi32(_mm512_castsi512_si256(a01[i][j]),
                                     _mm256_srai_epi32(_mm512_extracti64x4_epi64(a01[i][j], 1), 2));
        s = _mm256_add_epi32(s, _mm256_srai_epi32(_mm512_castsi512_si256(a23[i][j]), 4));
        s = _mm256_add_epi32(s, _mm256_srai_epi32(_mm512_extracti64x4_epi64(a23[i][j], 1), 6));
        acc[i][j] = _mm256_add_epi32(acc[i][j], s);
      }
  }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) out[i * ldo + j] = bl_hsum8(acc[i][j]);
}

BL_INLINE void tile_body(const int8_t *x, int64_t ldq, const uint8_t *w, int64_t rb, int64_t nblk,
                         int32_t *out, int64_t ldo, const int MR, const int NR) {
  const __m512i mask = _mm512_inserti64x4(_mm512_set1_epi8(0x03), _mm256_set1_epi8(0x0c), 1);
  const __m512i cmax = _mm512_inserti64x4(_mm512_set1_epi8(2), _mm256_set1_epi8(8), 1);
  __m512i acc[BL_MAX_MR][BL_MAX_NR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_si512();
  /* chunks of blocks with chunk-local accumulators: gcc keeps those in registers */
  for (int64_t b0 = 0; b0 < nblk; b0 += CHUNK_BLOCKS) {
    const int64_t b1 = b0 + CHUNK_BLOCKS < nblk ? b0 + CHUNK_BLOCKS : nblk;
    __m512i a[BL_MAX_MR][BL_MAX_NR];
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) a[i][j] = _mm512_setzero_si512();
    for (int64_t b = b0; b < b1; b++) {
      const uint8_t *wb = w + b * BL_BLOCK_BYTES;
      const int8_t *xb = x + b * BL_QK;
      BL_PREFETCH_AHEAD(w, BL_PF_DIST, b, NR);
      __m512i c01[BL_MAX_NR], c23[BL_MAX_NR];
      for (int j = 0; j < NR; j++) {
        __m512i t = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wb + j * rb)));
        c01[j] = _mm512_min_epu8(_mm512_and_si512(t, mask), cmax);
        c23[j] = _mm512_min_epu8(_mm512_and_si512(_mm512_srli_epi16(t, 4), mask), cmax);
      }
      for (int i = 0; i < MR; i++) {
        const __m512i x01 = _mm512_loadu_si512((const void *)(xb + i * ldq));
        const __m512i x23 = _mm512_loadu_si512((const void *)(xb + i * ldq + 64));
        for (int j = 0; j < NR; j++) {
          a[i][j] = _mm512_dpbusd_epi32(a[i][j], c01[j], x01);
          a[i][j] = _mm512_dpbusd_epi32(a[i][j], c23[j], x23);
          BL_PIN(a[i][j]);
        }
      }
    }
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) acc[i][j] = _mm512_add_epi32(acc[i][j], a[i][j]);
  }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) out[i * ldo + j] = hsum_zmm(acc[i][j]);
}

/* Tiles of one or two rows take tile12_body, the others tile_body. */
BL_INLINE void tile_any(const int8_t *x, int64_t ldq, const uint8_t *w, int64_t rb, int64_t nblk,
                        int32_t *out, int64_t ldo, const int MR, const int NR) {
  if (MR <= TILE12_MAX_MR)
    tile12_body(x, ldq, w, rb, nblk, out, ldo, MR, NR);
  else
    tile_body(x, ldq, w, rb, nblk, out, ldo, MR, NR);
}
BL_DEF_TILES(tile_any, 4)

/* ---------------------------------------------------------------- int4 head (q4)
 * The 256-bit kernel of q4_x86.h with EVEX vpdpbusd on ymm (Zen 4 splits zmm operations in two,
 * and the GEMV streams its weights from memory); the 32 vector registers hold the accumulators of
 * two tokens, so M >= 2 reads each loaded chunk of weights for two tokens. */
#define Q4_DOT2(p, ul, xl, uh, xh) _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(p, ul, xl), uh, xh)
#define Q4_MT 2
#include "q4_x86.h"

/* ---------------------------------------------------------------- decode layout (LUT)
 * vpermw looks up 32 int16 entries by the low 5 bits of each word: one table lookup gives the
 * sums of 3 weights x 3 activations for 32 rows, so a column of 9 weights costs 3 lookups, 2
 * shifts and 3 adds for 32 rows (the packed GEMV above: about 13 instructions). The tables of a
 * column are loaded once for NT tiles. |entry| <= 3 * 128, a column adds at most 1152 to an
 * int16 lane: 28 columns stay inside int16, then they widen into int32. */
#define LUT_FLUSH_COLS 28

static void lut_tables_avx512(const int8_t *x, int64_t K, int64_t C, int16_t *T) {
  /* digit_t(i) - 1 for i < 27, 0 above (kernels.h) */
  static const int16_t d[3][32] = {
      {-1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1},
      {-1, -1, -1, 0, 0, 0, 1, 1, 1, -1, -1, -1, 0, 0, 0, 1, 1, 1, -1, -1, -1, 0, 0, 0, 1, 1, 1},
      {-1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1}};
  const __m512i d0 = _mm512_loadu_si512(d[0]), d1 = _mm512_loadu_si512(d[1]),
                d2 = _mm512_loadu_si512(d[2]);
  const int64_t G = 3 * C;
  for (int64_t g = 0; g < G; g++) {
    const int64_t k = 3 * g;
    const short x0 = k < K ? x[k] : 0, x1 = k + 1 < K ? x[k + 1] : 0, x2 = k + 2 < K ? x[k + 2] : 0;
    __m512i t = _mm512_mullo_epi16(d0, _mm512_set1_epi16(x0));
    t = _mm512_add_epi16(t, _mm512_mullo_epi16(d1, _mm512_set1_epi16(x1)));
    t = _mm512_add_epi16(t, _mm512_mullo_epi16(d2, _mm512_set1_epi16(x2)));
    _mm512_storeu_si512((void *)(T + 32 * g), t);
  }
}

/* NT tiles x MR tokens (tables T + m * tl): each word vector is loaded and split once for the MR
 * tokens; outputs of token m at out + m * ldo, which also holds the int32 totals between flushes.
 * The int16 sums of G tiles x MR tokens live in registers (G = 16 for one token, 8 for two: with
 * the 3 MR tables, 19 / 22 of the 32 zmm), and the G-tile groups of a super-tile take turns
 * inside each flush chunk of columns, so the weights still stream in order (a chunk of 28
 * columns of 16 tiles is 28 KiB) rather than in one pass per group (M = 2 at 4096 x 4096, 1 thread: hot 79 -> 73 us,
 * cold 144 -> 132 us; prefetching every group's lines from the first pass was slower, 152 us). */
BL_INLINE void lut_gemv_body(const uint16_t *w, int64_t C, int64_t cstride, const int16_t *T,
                             int64_t tl, int32_t *out, int64_t ldo, const int NT, const int MR) {
  const int G = MR == 1 ? NT : (NT < 8 ? NT : 8);
  /* prefetch distance in columns: about BL_PF_DIST bytes of the stream ahead */
  const int64_t pfc = (BL_PF_DIST / 2 + cstride - 1) / cstride;
  for (int m = 0; m < MR; m++)
    for (int i = 0; i < NT; i++) {
      _mm512_storeu_si512((void *)(out + m * ldo + 32 * i), _mm512_setzero_si512());
      _mm512_storeu_si512((void *)(out + m * ldo + 32 * i + 16), _mm512_setzero_si512());
    }
  for (int64_t c0 = 0; c0 < C; c0 += LUT_FLUSH_COLS) {
    const int64_t c1 = c0 + LUT_FLUSH_COLS < C ? c0 + LUT_FLUSH_COLS : C;
    for (int g0 = 0; g0 < NT; g0 += G) {
      __m512i a[2][BL_LUT_SUPER_TILES];
      for (int m = 0; m < MR; m++)
        for (int i = 0; i < G; i++) a[m][i] = _mm512_setzero_si512();
      for (int64_t c = c0; c < c1; c++) {
        __m512i t0[2], t1[2], t2[2];
        for (int m = 0; m < MR; m++) {
          const int16_t *tc = T + m * tl + 96 * c;
          t0[m] = _mm512_loadu_si512((const void *)tc);
          t1[m] = _mm512_loadu_si512((const void *)(tc + 32));
          t2[m] = _mm512_loadu_si512((const void *)(tc + 64));
        }
        const uint16_t *wc = w + c * cstride + 32 * g0;
        for (int i = 0; i < G; i++) {
          BL_PREFETCH_NEXT_TILE(wc, (pfc * cstride + 32 * i) * 2);
          const __m512i v0 = _mm512_loadu_si512((const void *)(wc + 32 * i));
          const __m512i v1 = _mm512_srli_epi16(v0, 5), v2 = _mm512_srli_epi16(v0, 10);
          for (int m = 0; m < MR; m++) {
            const __m512i s0 = _mm512_permutexvar_epi16(v0, t0[m]);
            const __m512i s1 = _mm512_permutexvar_epi16(v1, t1[m]);
            const __m512i s2 = _mm512_permutexvar_epi16(v2, t2[m]);
            a[m][i] = _mm512_add_epi16(a[m][i], _mm512_add_epi16(s0, _mm512_add_epi16(s1, s2)));
          }
        }
      }
      for (int m = 0; m < MR; m++)
        for (int i = 0; i < G; i++) {
          int32_t *o = out + m * ldo + 32 * (g0 + i);
          const __m512i lo = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(a[m][i]));
          const __m512i hi = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(a[m][i], 1));
          _mm512_storeu_si512((void *)o, _mm512_add_epi32(_mm512_loadu_si512((const void *)o), lo));
          _mm512_storeu_si512((void *)(o + 16),
                              _mm512_add_epi32(_mm512_loadu_si512((const void *)(o + 16)), hi));
        }
    }
  }
}

#define LUT_DEF(NT, MR)                                                                        \
  static void lut_gemv_##NT##x##MR(const uint16_t *w, int64_t C, int64_t cs, const int16_t *T, \
                                   int64_t tl, int32_t *out, int64_t ldo) {                    \
    lut_gemv_body(w, C, cs, T, tl, out, ldo, NT, MR);                                          \
  }
LUT_DEF(16, 1)
LUT_DEF(8, 1)
LUT_DEF(4, 1)
LUT_DEF(2, 1)
LUT_DEF(1, 1)
LUT_DEF(16, 2)
LUT_DEF(8, 2)
LUT_DEF(4, 2)
LUT_DEF(2, 2)
LUT_DEF(1, 2)

/* nt tiles as pieces of 16, 8, 4, 2, 1 (each piece loads the column's tables once per group). */
static void lut_gemv_avx512(const uint16_t *w, int64_t C, int64_t cstride, int nt, int mr,
                            const int16_t *T, int64_t tl, int32_t *out, int64_t ldo) {
  int i = 0;
#define LUT_PIECE(NT)                                                                        \
  do {                                                                                       \
    if (mr == 2)                                                                             \
      lut_gemv_##NT##x2(w + 32 * i, C, cstride, T, tl, out + 32 * i, ldo);                   \
    else                                                                                     \
      lut_gemv_##NT##x1(w + 32 * i, C, cstride, T, tl, out + 32 * i, ldo);                   \
    i += NT;                                                                                 \
  } while (0)
  while (nt - i >= 16) LUT_PIECE(16);
  if (nt - i >= 8) LUT_PIECE(8);
  if (nt - i >= 4) LUT_PIECE(4);
  if (nt - i >= 2) LUT_PIECE(2);
  if (nt - i >= 1) LUT_PIECE(1);
#undef LUT_PIECE
}

void bl_kernels_avx512vnni(bl_cpu_kernels *k) {
  k->mr = 4;
  k->nr = 4; /* 16 accumulators + 8 codes + 2 x of the 32 zmm registers */
  k->nr1 = 0;
  BL_SET_TILES(k, 4);
  k->lut_tables = lut_tables_avx512;
  k->lut_gemv = lut_gemv_avx512;
  k->lut_auto = 1; /* Zen 5, M = 1: 1.1-1.7x faster hot, 1.1-1.2x cold (docs/benchmarks.md) */
  k->q4 = q4_kernel;
  k->q4_mt = Q4_MT;
}
#endif
