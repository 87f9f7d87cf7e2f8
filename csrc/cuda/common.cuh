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

}  // namespace blc

/* Internal launchers shared between the .cu files (C++ linkage, never exported). */
namespace blc {
bl_status launch_gemv(const int8_t *xq, int64_t ldq, const int32_t *rowsum, const uint8_t *packed,
                      int64_t M, int64_t N, int64_t K, int splits, int32_t *partials, int out,
                      const Epilogue &ep, cudaStream_t stream);
int gemv_splits(int64_t M, int64_t N, int64_t K);
int mma_splits(int64_t M, int64_t N, int64_t K);
bl_status launch_mma(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M, int64_t N,
                     int64_t K, int splits, int32_t *partials, int out, const Epilogue &ep,
                     cudaStream_t stream);
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
}  // namespace blc

#endif
