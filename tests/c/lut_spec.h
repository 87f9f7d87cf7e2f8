/* lut_spec.h - the CPU decode layout (bitlinear.h, "CPU decode layout (LUT)") written from its
 * specification alone, independent of csrc/cpu/lut.c: what bl_lut_pack must write, word for word.
 * Used by test_core.c and fuzz.c. Header-only; the constants are spelled out (9 weights per word,
 * 32-row tiles, 16 tiles per super-tile) so a change of the header's macros shows up as a mismatch.
 *
 *   word of row n, column c = sum_{j<3} (sum_{t<3} code(n, 9c + 3j + t) * 3^t) << 5j
 *   code: the packed 2-bit field, 3 read as 2; k >= K (and rows n >= N): code 1 (weight 0)
 *   tile t = n / 32, lane = n % 32, super-tile s = t / 16, r = t % 16,
 *   nts = tiles in super-tile s = min(16, T - 16 s)   (T = ceil(N / 32), C = ceil(K / 9))
 *   word offset = (s * 16 * C + c * nts + r) * 32 + lane */
#ifndef BL_TEST_LUT_SPEC_H
#define BL_TEST_LUT_SPEC_H

#include "../../csrc/bitlinear.h"

#include <stdint.h>

#define LUT_SPEC_ZERO_WORD (13u * (1u + 32u + 1024u)) /* three indices 1 + 3 + 9 = 13: all code 1 */

static inline int64_t lut_spec_cols(int64_t K) { return (K + 8) / 9; }
static inline int64_t lut_spec_tiles(int64_t N) { return (N + 31) / 32; }

/* code of (n, k) of packed ([N, K], row stride bl_packed_row_bytes(K)), by the format's rule */
static inline int lut_spec_code(const uint8_t *p, int64_t N, int64_t K, int64_t n, int64_t k) {
  if (n >= N || k >= K) return 1;
  const int64_t rb = bl_packed_row_bytes(K);
  const int c = (p[n * rb + (k / 128) * 32 + (k % 32)] >> (2 * ((k % 128) / 32))) & 3;
  return c == 3 ? 2 : c;
}

/* word offset of row n (n < 32 T), column c */
static inline int64_t lut_spec_offset(int64_t N, int64_t K, int64_t n, int64_t c) {
  const int64_t C = lut_spec_cols(K), T = lut_spec_tiles(N);
  const int64_t t = n / 32, lane = n % 32, s = t / 16, r = t % 16;
  const int64_t nts = T - 16 * s < 16 ? T - 16 * s : 16;
  return (s * 16 * C + c * nts + r) * 32 + lane;
}

static inline uint16_t lut_spec_word(const uint8_t *p, int64_t N, int64_t K, int64_t n, int64_t c) {
  unsigned w = 0;
  for (int j = 0; j < 3; j++) {
    const int64_t k = 9 * c + 3 * j;
    const unsigned idx = (unsigned)(lut_spec_code(p, N, K, n, k) + 3 * lut_spec_code(p, N, K, n, k + 1) +
                                    9 * lut_spec_code(p, N, K, n, k + 2));
    w |= idx << (5 * j);
  }
  return (uint16_t)w;
}

/* The whole layout: 32 T * C words (64 T C bytes). */
static __attribute__((unused)) void lut_spec_layout(const uint8_t *p, int64_t N, int64_t K, uint16_t *out) {
  const int64_t C = lut_spec_cols(K), T = lut_spec_tiles(N);
  for (int64_t n = 0; n < 32 * T; n++)
    for (int64_t c = 0; c < C; c++) out[lut_spec_offset(N, K, n, c)] = lut_spec_word(p, N, K, n, c);
}

#endif
