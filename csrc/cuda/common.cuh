/* common.cuh - device helpers shared by the CUDA kernels of the core (not part of the API).
 * Numerics follow csrc/bitlinear.h exactly: IEEE division (__fdiv_rn), round-half-even
 * (rintf), no FMA contraction in the epilogue (__fmul_rn / __fadd_rn). The packed-format sizes
 * (bl_padded_k, bl_packed_row_bytes, host and device) come from bitlinear.h and the argument
 * checks (bl_check_*) from bl_checks.h, the same definitions the CPU core uses. */
#ifndef BITLINEAR_CUDA_COMMON_CUH
#define BITLINEAR_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../bitlinear.h"
#include "../bl_checks.h"

namespace blc {

constexpr int kOutAcc = 3; /* "output dtype" of the kernels that write the raw int32 accumulator */

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ inline size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

inline bl_status launch_status() {
  return cudaGetLastError() == cudaSuccess ? BL_OK : BL_ERR_CUDA;
}

template <int DT>
__device__ __forceinline__ float load_f(const void *p, int64_t i) {
  if constexpr (DT == BL_F16) {
    return __half2float(reinterpret_cast<const __half *>(p)[i]);
  } else if constexpr (DT == BL_BF16) {
    return __bfloat162float(reinterpret_cast<const __nv_bfloat16 *>(p)[i]);
  } else {
    return reinterpret_cast<const float *>(p)[i];
  }
}

template <int DT>
__device__ __forceinline__ void store_f(void *p, int64_t i, float v) {
  if constexpr (DT == BL_F16) {
    reinterpret_cast<__half *>(p)[i] = __float2half_rn(v);
  } else if constexpr (DT == BL_BF16) {
    reinterpret_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(v);
  } else {
    reinterpret_cast<float *>(p)[i] = v;
  }
}

/* The epilogue of every GEMM path: y = (float)acc * (sx * sw) + bias, or the raw acc. */
template <int OUT>
__device__ __forceinline__ void store_out(void *y, int64_t idx, int32_t acc, float sx,
                                          const float *wscale, int w_per_channel,
                                          const float *bias, int64_t n) {
  if constexpr (OUT == kOutAcc) {
    reinterpret_cast<int32_t *>(y)[idx] = acc;
  } else {
    float v;
    if (!isfinite(sx)) {
      v = __int_as_float(0x7fc00000);
    } else {
      float s = __fmul_rn(sx, wscale[w_per_channel ? n : 0]);
      v = __fmul_rn(__int2float_rn(acc), s);
      if (bias) v = __fadd_rn(v, bias[n]);
    }
    store_f<OUT>(y, idx, v);
  }
}

/* Everything a GEMM kernel needs to finish a row: scales, bias, output. */
struct Epilogue {
  void *y;             /* int32 acc (OUT == kOutAcc) or the float output */
  int64_t ldy;
  const float *xscale; /* M floats (unused for kOutAcc) */
  const float *wscale;
  int w_per_channel;
  const float *bias;
};

__device__ __forceinline__ float epilogue_value(int32_t acc, float sx, const Epilogue &ep,
                                                int64_t n) {
  if (!isfinite(sx)) return __int_as_float(0x7fc00000);
  const float s = __fmul_rn(sx, ep.wscale[ep.w_per_channel ? n : 0]);
  const float v = __fmul_rn(__int2float_rn(acc), s);
  return ep.bias ? __fadd_rn(v, ep.bias[n]) : v;
}

/* Outputs (m, n) and (m, n + 1) (the second only if n + 1 < N): one vector store when aligned. */
template <int OUT>
__device__ __forceinline__ void store_out2(const Epilogue &ep, int64_t m, int64_t n, int64_t N,
                                           int32_t a0, int32_t a1, float sx) {
  const int64_t idx = m * ep.ldy + n;
  const bool two = n + 1 < N;
  if constexpr (OUT == kOutAcc) {
    int32_t *p = reinterpret_cast<int32_t *>(ep.y) + idx;
    if (two && ((uintptr_t)p & 7u) == 0) {
      *reinterpret_cast<int2 *>(p) = make_int2(a0, a1);
    } else {
      p[0] = a0;
      if (two) p[1] = a1;
    }
  } else {
    const float v0 = epilogue_value(a0, sx, ep, n);
    const float v1 = two ? epilogue_value(a1, sx, ep, n + 1) : 0.0f;
    if constexpr (OUT == BL_F32) {
      float *p = reinterpret_cast<float *>(ep.y) + idx;
      if (two && ((uintptr_t)p & 7u) == 0) {
        *reinterpret_cast<float2 *>(p) = make_float2(v0, v1);
      } else {
        p[0] = v0;
        if (two) p[1] = v1;
      }
    } else if constexpr (OUT == BL_F16) {
      __half *p = reinterpret_cast<__half *>(ep.y) + idx;
      if (two && ((uintptr_t)p & 3u) == 0) {
        *reinterpret_cast<__half2 *>(p) = __halves2half2(__float2half_rn(v0), __float2half_rn(v1));
      } else {
        p[0] = __float2half_rn(v0);
        if (two) p[1] = __float2half_rn(v1);
      }
    } else {
      __nv_bfloat16 *p = reinterpret_cast<__nv_bfloat16 *>(ep.y) + idx;
      if (two && ((uintptr_t)p & 3u) == 0) {
        *reinterpret_cast<__nv_bfloat162 *>(p) =
            __halves2bfloat162(__float2bfloat16_rn(v0), __float2bfloat16_rn(v1));
      } else {
        p[0] = __float2bfloat16_rn(v0);
        if (two) p[1] = __float2bfloat16_rn(v1);
      }
    }
  }
}

/* Every 2-bit code of a packed word with code 3 turned into 2: the high bit of a field clears its
 * low bit (3 -> 2; 0, 1, 2 unchanged; docs/packed_format.md). 2 instructions per word. */
__device__ __forceinline__ uint32_t clamp_codes(uint32_t w) {
  return w & ~((w >> 1) & 0x55555555u);
}

/* 32-bit word i of a 16-byte load. */
__device__ __forceinline__ uint32_t word(const uint4 &v, int i) {
  return i == 0 ? v.x : (i == 1 ? v.y : (i == 2 ? v.z : v.w));
}

/* The u8 codes of a 16-byte chunk of each of R weight rows (gemv.cu, fused.cu): for word i
 * (bytes 4i..4i+3 of the chunk) and shift s, codes[r][s][i] holds the clamped codes of
 * k = 32 s + 4 i .. 4 i + 3 within the chunk's half block, ready for __dp4a. */
template <int R>
__device__ __forceinline__ void chunk_codes(const uint4 (&w)[R], uint32_t (&codes)[R][4][4]) {
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const uint32_t wc = clamp_codes(word(w[r], i));
#pragma unroll
      for (int s = 0; s < 4; s++) codes[r][s][i] = (wc >> (2 * s)) & 0x03030303u;
    }
}

__device__ __forceinline__ uint32_t warp_max_u32(uint32_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ int32_t warp_sum_i32(int32_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* Activation scale: max(amax, eps) / 127 with NaN propagated (fmaxf alone would drop it). */
__device__ __forceinline__ float act_scale(float amax, float eps) {
  return isnan(amax) ? amax : __fdiv_rn(fmaxf(amax, eps), 127.0f);
}

/* One activation code: clamp(rint(v / s), -128, 127) with IEEE division, 0 for NaN (0/0 with
 * eps = 0 and a zero row). Every path that quantizes activations (acts.cu, fused.cu) calls this,
 * so the codes are the same bit for bit. The caller passes 0 for non-finite s and padding. */
__device__ __forceinline__ int quant_code(float v, float s) {
  float f = rintf(__fdiv_rn(v, s));
  if (f > 127.0f) f = 127.0f; /* the C reference's clamp */
  if (f < -128.0f) f = -128.0f;
  return f == f ? (int)f : 0;
}

/* |x| as bits: for non-negative floats (NaN included) integer order == float order, NaN on top. */
__device__ __forceinline__ uint32_t abs_bits(float v) { return __float_as_uint(v) & 0x7fffffffu; }

/* Index maps of the fused and multi-row kernels, host and device: the kernels use them, and
 * tests/cuda/cuda_host_check.cu emulates the kernels' data movement with them on the CPU. */

/* fused.cu: byte of the shared-memory code buffer holding activation k of row m: the codes that
 * weight chunk c (bytes 16c..16c+15 of a row) multiplies at shift s are the 16 bytes at
 * fused_chunk_offset(m, s, c, Kp). */
__host__ __device__ inline int64_t fused_code_offset(int64_t m, int64_t k, int64_t Kp) {
  const int64_t b = k / BL_QK, s = (k % BL_QK) / 32, j = k % 32;
  return m * Kp + s * (Kp / 4) + (2 * b + j / 16) * 16 + j % 16;
}
__host__ __device__ inline int64_t fused_chunk_offset(int64_t m, int s, int64_t c, int64_t Kp) {
  return m * Kp + s * (Kp / 4) + c * 16;
}

/* multirow.cu: thread t (= lane % 4) of a span (two 128-k blocks, 64 bytes of a packed row) loads
 * the 16 packed bytes at mr_weight_byte and, for shift s, the 16 activations from k = mr_act_k;
 * its bytes exist iff mr_present (an odd last span has one block). */
__host__ __device__ inline int64_t mr_weight_byte(int64_t span, int t) { return 64 * span + 16 * t; }
__host__ __device__ inline int64_t mr_act_k(int64_t span, int t, int s) {
  return 256 * span + 128 * (t / 2) + 32 * s + 16 * (t % 2);
}
__host__ __device__ inline bool mr_present(int64_t span, int t, int64_t nblk) {
  return 2 * span + t / 2 < nblk;
}

}  // namespace blc

/* Internal launchers shared between the .cu files (C++ linkage, never exported). */
namespace blc {
bl_status launch_gemv(const int8_t *xq, int64_t ldq, const int32_t *rowsum, const uint8_t *packed,
                      int64_t M, int64_t N, int64_t K, int splits, int32_t *partials, int out,
                      const Epilogue &ep, cudaStream_t stream);
int gemv_splits(int64_t M, int64_t N, int64_t K);
int mma_splits(int64_t M, int64_t N, int64_t K, int bn);
bl_status launch_mma(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M, int64_t N,
                     int64_t K, int splits, int32_t *partials, int out, const Epilogue &ep,
                     int bn, cudaStream_t stream);
/* multirow.cu: skinny mma.sync with the weights as the 16-row operand, decoded in registers. */
constexpr int kMultirowMaxM = 64;
int multirow_splits(int64_t M, int64_t N, int64_t K);
bl_status launch_multirow(const int8_t *xq, int64_t ldq, const int32_t *rowsum,
                          const uint8_t *packed, int64_t M, int64_t N, int64_t K, int splits,
                          int32_t *partials, int out, const Epilogue &ep, cudaStream_t stream);
/* wgmma.cu: the sm_90a GEMM (wgmma, TMA, warp-specialized); only where wgmma_available(). */
bool wgmma_available();
bl_status launch_wgmma(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M, int64_t N,
                       int64_t K, int out, const Epilogue &ep, cudaStream_t stream);
/* fused.cu: activation quantization + dp4a GEMV in one kernel (bl_cuda_linear, M <= 16). */
constexpr int kFusedMaxM = 16;
bool fused_fits(int64_t M, int64_t K);
bl_status launch_fused(const void *x, int xdt, int64_t M, int64_t K, int64_t ldx, float eps,
                       int per_token, const uint8_t *packed, int64_t N, int out,
                       const Epilogue &ep, cudaStream_t stream);
bl_status launch_reduce(const int32_t *partials, int splits, const int32_t *rowsum, int64_t M,
                        int64_t N, int out, const Epilogue &ep, cudaStream_t stream);
bl_status launch_simple_gemm(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M,
                             int64_t N, int64_t K, int out, const Epilogue &ep,
                             cudaStream_t stream);
bl_status launch_rowsum(const int8_t *xq, int64_t ldq, int64_t M, int64_t K, int32_t *rowsum,
                        cudaStream_t stream);
bl_status quantize_acts(const void *x, int dt, int64_t M, int64_t K, int64_t ldx, float eps,
                        int per_token, int8_t *xq, int64_t ldq, float *scale, int32_t *rowsum,
                        uint32_t *amax_bits, cudaStream_t stream);
/* api.cu: the bl_cuda_path a call with the current options runs (host only, no CUDA call;
 * aligned operands). linear: bl_cuda_linear (may fuse), else bl_cuda_gemm_acc / linear_q.
 * tests/cuda/cuda_host_check.cu checks it against tests/cuda/cuda_auto_paths.txt. */
int chosen_path(bool linear, int64_t M, int64_t K);
}  // namespace blc

#endif
