/* convert.c - float32 <-> float16 / bfloat16 (round to nearest even, NaN kept quiet) and the
 * element load / store of a row of any bl_dtype, used by every CPU path. */
#include "../bitlinear.h"
#include "internal.h"

#include <string.h>

static inline float f32_from_bits(uint32_t bits) {
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static inline uint32_t f32_bits(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  return x;
}

float bl_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: normalise */
      int e = -1;
      do { man <<= 1; e++; } while (!(man & 0x400u));
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0);
  } else {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  }
  return f32_from_bits(bits);
}

uint16_t bl_f32_to_f16(float f) {
  const uint32_t x = f32_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) /* Inf or NaN (quiet) */
    return sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0);
  if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow to Inf */
    return sign | 0x7c00u;
  if (ax < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
    if (ax < 0x33000000u) return sign; /* < 2^-25 rounds to 0 */
    uint32_t e = ax >> 23;
    uint32_t man = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t q = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return sign | (uint16_t)q;
  }
  uint32_t q = ((ax >> 13) - (112u << 10)); /* rebias exponent */
  uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1))) q++;
  return sign | (uint16_t)q;
}

float bl_bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t bl_f32_to_bf16(float f) { return bl_bf16_rne(f); }

float bl_load_f(const void *p, bl_dtype dt, int64_t i) {
  switch (dt) {
    case BL_F16: return bl_f16_to_f32(((const uint16_t *)p)[i]);
    case BL_BF16: return bl_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
  }
}

void bl_store_f(void *p, bl_dtype dt, int64_t i, float v) {
  switch (dt) {
    case BL_F16: ((uint16_t *)p)[i] = bl_f32_to_f16(v); break;
    case BL_BF16: ((uint16_t *)p)[i] = bl_f32_to_bf16(v); break;
    default: ((float *)p)[i] = v; break;
  }
}

const float *bl_row_f32(const void *w, bl_dtype dt, int64_t ldw, int64_t n, int64_t K, float *buf) {
  if (dt == BL_F32) return (const float *)w + n * ldw;
  const uint16_t *r = (const uint16_t *)w + n * ldw;
  if (dt == BL_BF16) {
    for (int64_t k = 0; k < K; k++) { /* a shift: vectorises */
      const uint32_t bits = (uint32_t)r[k] << 16;
      memcpy(buf + k, &bits, 4);
    }
  } else {
    for (int64_t k = 0; k < K; k++) buf[k] = bl_f16_to_f32(r[k]);
  }
  return buf;
}
