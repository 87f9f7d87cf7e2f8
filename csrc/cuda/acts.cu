/* acts.cu - activation quantization on the GPU: absmax (NaN-propagating, as torch.amax),
 * x_q = clamp(rint(x / s), -128, 127) with IEEE division, row sums, zero padding to Kp.
 * Per token: one kernel, one block per row. Per tensor: a global amax first (atomicMax on
 * the bit patterns of |x|, which order like the floats with NaN above Inf), then the same
 * quantize kernel. The max is order-independent, so both are deterministic. */
#include "common.cuh"

namespace {

using blc::abs_bits;

template <int DT, int kThreads>
__device__ uint32_t block_row_amax(const void *row, int64_t K, uint32_t *red) {
  uint32_t m = 0;
  for (int64_t k = threadIdx.x; k < K; k += kThreads) m = max(m, abs_bits(blc::load_f<DT>(row, k)));
  m = blc::warp_max_u32(m);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = m;
  __syncthreads();
  m = 0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; w++) m = max(m, red[w]); /* every thread gets the total */
  __syncthreads(); /* red is reused by the next row */
  return m;
}

template <int DT, int kThreads>
__global__ void __launch_bounds__(kThreads)
    amax_kernel(const void *x, int64_t M, int64_t K, int64_t ldx, uint32_t *amax_bits) {
  __shared__ uint32_t red[kThreads / 32];
  constexpr int es = DT == BL_F32 ? 4 : 2;
  for (int64_t r = blockIdx.x; r < M; r += gridDim.x) {
    const uint32_t m = block_row_amax<DT, kThreads>((const char *)x + r * ldx * es, K, red);
    if (threadIdx.x == 0) atomicMax(amax_bits, m);
  }
}

template <int DT, int kThreads>
__global__ void __launch_bounds__(kThreads)
    quantize_kernel(const void *x, int64_t M, int64_t K, int64_t ldx, float eps, int per_token,
                    int8_t *xq, int64_t ldq, float *scale, int32_t *rowsum,
                    const uint32_t *global_amax_bits) {
  __shared__ uint32_t red[kThreads / 32];
  __shared__ int32_t red_sum[kThreads / 32];
  constexpr int es = DT == BL_F32 ? 4 : 2;
  const int64_t Kp = bl_padded_k(K);
  for (int64_t r = blockIdx.x; r < M; r += gridDim.x) {
    const void *row = (const char *)x + r * ldx * es;
    const uint32_t amax = per_token ? block_row_amax<DT, kThreads>(row, K, red) : *global_amax_bits;
    const float s = blc::act_scale(__uint_as_float(amax), eps);
    const bool finite = isfinite(s);
    int8_t *q = xq + r * ldq;
    const bool aligned4 = ((uintptr_t)q & 3u) == 0;
    int32_t sum = 0;
    for (int64_t g = threadIdx.x; g < Kp / 4; g += kThreads) {
      uint32_t word = 0;
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int64_t k = 4 * g + i;
        int v = 0;
        if (finite && k < K) v = blc::quant_code(blc::load_f<DT>(row, k), s);
        sum += v;
        word |= (uint32_t)(v & 0xff) << (8 * i);
      }
      if (aligned4) {
        *reinterpret_cast<uint32_t *>(q + 4 * g) = word;
      } else {
#pragma unroll
        for (int i = 0; i < 4; i++) q[4 * g + i] = (int8_t)(word >> (8 * i));
      }
    }
    sum = blc::warp_sum_i32(sum);
    if (threadIdx.x % 32 == 0) red_sum[threadIdx.x / 32] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
      int32_t t = 0;
      for (int w = 0; w < kThreads / 32; w++) t += red_sum[w];
      if (rowsum) rowsum[r] = t;
      scale[r] = s;
    }
    __syncthreads();
  }
}

unsigned grid_for_rows(int64_t M) { return (unsigned)(M < (1 << 20) ? M : (1 << 20)); }

/* Few rows (decode): 1024 threads per row so each thread reads a few values; else 256. */
template <int DT, int kThreads>
bl_status launch(const void *x, int64_t M, int64_t K, int64_t ldx, float eps, int per_token,
                 int8_t *xq, int64_t ldq, float *scale, int32_t *rowsum, uint32_t *amax_bits,
                 cudaStream_t stream) {
  const unsigned grid = grid_for_rows(M);
  if (!per_token) {
    if (cudaMemsetAsync(amax_bits, 0, sizeof(uint32_t), stream) != cudaSuccess) return BL_ERR_CUDA;
    amax_kernel<DT, kThreads><<<grid, kThreads, 0, stream>>>(x, M, K, ldx, amax_bits);
  }
  quantize_kernel<DT, kThreads><<<grid, kThreads, 0, stream>>>(x, M, K, ldx, eps, per_token, xq,
                                                               ldq, scale, rowsum, amax_bits);
  return blc::launch_status();
}

template <int DT>
bl_status quantize_acts_dt(const void *x, int64_t M, int64_t K, int64_t ldx, float eps,
                           int per_token, int8_t *xq, int64_t ldq, float *scale, int32_t *rowsum,
                           uint32_t *amax_bits, cudaStream_t stream) {
  if (M <= 64 && K >= 2048)
    return launch<DT, 1024>(x, M, K, ldx, eps, per_token, xq, ldq, scale, rowsum, amax_bits,
                            stream);
  return launch<DT, 256>(x, M, K, ldx, eps, per_token, xq, ldq, scale, rowsum, amax_bits, stream);
}

}  // namespace

namespace blc {

/* Checked by the caller; amax_bits: one uint32 of scratch (per tensor only). */
bl_status quantize_acts(const void *x, int dt, int64_t M, int64_t K, int64_t ldx, float eps,
                        int per_token, int8_t *xq, int64_t ldq, float *scale, int32_t *rowsum,
                        uint32_t *amax_bits, cudaStream_t stream) {
  if (M == 0) return BL_OK;
  switch (dt) {
    case BL_F16:
      return quantize_acts_dt<BL_F16>(x, M, K, ldx, eps, per_token, xq, ldq, scale, rowsum,
                                      amax_bits, stream);
    case BL_BF16:
      return quantize_acts_dt<BL_BF16>(x, M, K, ldx, eps, per_token, xq, ldq, scale, rowsum,
                                       amax_bits, stream);
    default:
      return quantize_acts_dt<BL_F32>(x, M, K, ldx, eps, per_token, xq, ldq, scale, rowsum,
                                      amax_bits, stream);
  }
}

}  // namespace blc

extern "C" {

size_t bl_cuda_quantize_acts_workspace_bytes(int64_t M, int64_t K, int per_token) {
  (void)M;
  (void)K;
  return per_token ? 0 : 16;
}

bl_status bl_cuda_quantize_acts(const void *x, bl_dtype dt, int64_t M, int64_t K, int64_t ldx,
                                float eps, int per_token, int8_t *xq, int64_t ldq, float *scale,
                                int32_t *rowsum, void *workspace, struct CUstream_st *stream) {
  bl_status st = bl_check_acts(x, dt, M, K, ldx, xq, ldq, scale, eps);
  if (st != BL_OK || M == 0) return st;
  if (!per_token && !workspace) return BL_ERR_NULL;
  return blc::quantize_acts(x, dt, M, K, ldx, eps, per_token, xq, ldq, scale, rowsum,
                            (uint32_t *)workspace, stream);
}

}  // extern "C"
