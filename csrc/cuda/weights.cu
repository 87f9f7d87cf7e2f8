/* weights.cu - ternary weight packing and unpacking on the GPU.
 *
 * Bytes and scales match the CPU path bit for bit: the absmean is a float64 sum of |w| in the one
 * order every path uses (csrc/cpu/internal.h: one warp per row, lane j adding k = j (mod 32), then
 * the warp's butterfly; per tensor, one block of 256 partials over the rows, then its tree), so
 * no atomics, and repeated runs give identical scales.
 *
 * Non-finite weights cannot be reported without a host sync. Instead the affected scale
 * (the per-channel row, or the whole tensor) is NaN, every code of it is 1 (weight 0), and the
 * int32 at the end of the workspace is set to 1 (0 otherwise) for a caller that wants to
 * check. A NaN scale makes every output of the layer NaN, so bad weights cannot pass silently.
 */
#include "common.cuh"

namespace {

constexpr int kRowsPerBlock = 8; /* one warp per row */

__device__ __forceinline__ uint32_t ternary_code(float w, float s) {
  float q = rintf(__fdiv_rn(w, s));
  return q > 0.5f ? 2u : (q < -0.5f ? 0u : 1u); /* clamp to [-1, 1]; NaN -> code 1 */
}

/* Packs row n with scale s: lane-strided bytes, consecutive lanes read consecutive k. */
template <int DT>
__device__ void pack_row(const void *w, int64_t K, float s, uint8_t *out, int64_t rb, int lane) {
  for (int64_t o = lane; o < rb; o += 32) {
    const int64_t k0 = (o / BL_BLOCK_BYTES) * BL_QK + (o % BL_BLOCK_BYTES);
    uint32_t byte = 0;
#pragma unroll
    for (int g = 0; g < 4; g++) {
      const int64_t k = k0 + 32 * g;
      const uint32_t c = k < K ? ternary_code(blc::load_f<DT>(w, k), s) : (uint32_t)BL_CODE_ZERO;
      byte |= c << (2 * g);
    }
    out[o] = (uint8_t)byte;
  }
}

/* float64 sum of |w| over one row (NaN if the row has a NaN or Inf). */
template <int DT>
__device__ double row_abs_sum(const void *w, int64_t K, int lane, int *nonfinite_flag) {
  double s = 0.0;
  bool bad = false;
  for (int64_t k = lane; k < K; k += 32) {
    const float v = blc::load_f<DT>(w, k);
    bad |= !isfinite(v);
    s += fabs((double)v);
  }
  s = blc::warp_sum_f64(s);
  if (__any_sync(0xffffffffu, bad)) {
    if (lane == 0) *nonfinite_flag = 1;
    s = __longlong_as_double(0x7ff8000000000000LL);
  }
  return s;
}

template <int DT>
__device__ __forceinline__ const void *row_ptr(const void *w, int64_t n, int64_t ldw) {
  return (const char *)w + n * ldw * (DT == BL_F32 ? 4 : 2);
}

template <int DT>
__global__ void rows_kernel(const void *w, int64_t N, int64_t K, int64_t ldw, float eps,
                            int per_channel, float *scale, uint8_t *packed, double *row_sums,
                            int *nonfinite_flag) {
  const int lane = threadIdx.x % 32;
  const int64_t n = (int64_t)blockIdx.x * kRowsPerBlock + threadIdx.x / 32;
  if (n >= N) return; /* whole warps exit together */
  const void *row = row_ptr<DT>(w, n, ldw);
  const double sum = row_abs_sum<DT>(row, K, lane, nonfinite_flag);
  if (!per_channel) {
    if (lane == 0) row_sums[n] = sum;
    return;
  }
  float s = (float)(sum / (double)K);
  s = isnan(s) ? s : fmaxf(s, eps);
  if (lane == 0) scale[n] = s;
  const int64_t rb = bl_packed_row_bytes(K);
  pack_row<DT>(row, K, s, packed + n * rb, rb, lane);
}

/* One block: fixed-order sum of the row sums -> the per-tensor scale. */
__global__ void finalize_kernel(const double *row_sums, int64_t N, int64_t K, float eps,
                                float *scale) {
  __shared__ double part[256];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += 256) s += row_sums[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = 128; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    float v = (float)(part[0] / ((double)N * (double)K));
    scale[0] = isnan(v) ? v : fmaxf(v, eps);
  }
}

template <int DT>
__global__ void pack_kernel(const void *w, int64_t N, int64_t K, int64_t ldw, const float *scale,
                            uint8_t *packed) {
  const int lane = threadIdx.x % 32;
  const int64_t n = (int64_t)blockIdx.x * kRowsPerBlock + threadIdx.x / 32;
  if (n >= N) return;
  const int64_t rb = bl_packed_row_bytes(K);
  pack_row<DT>(row_ptr<DT>(w, n, ldw), K, scale[0], packed + n * rb, rb, lane);
}

template <int DT>
bl_status quantize_weights_dt(const void *w, int64_t N, int64_t K, int64_t ldw, float eps,
                              int per_channel, float *scale, uint8_t *packed, double *row_sums,
                              int *flag, int64_t blocks, cudaStream_t stream) {
  rows_kernel<DT><<<(unsigned)blocks, 32 * kRowsPerBlock, 0, stream>>>(
      w, N, K, ldw, eps, per_channel, scale, packed, row_sums, flag);
  if (!per_channel) {
    finalize_kernel<<<1, 256, 0, stream>>>(row_sums, N, K, eps, scale);
    pack_kernel<DT><<<(unsigned)blocks, 32 * kRowsPerBlock, 0, stream>>>(w, N, K, ldw, scale,
                                                                          packed);
  }
  return blc::launch_status();
}

__global__ void unpack_kernel(const uint8_t *packed, int64_t N, int64_t K, int8_t *wq,
                              int64_t ldq) {
  const int64_t rb = bl_packed_row_bytes(K);
  const int64_t total = N * K;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / K, k = i % K;
    const int64_t b = k / BL_QK, r = k % BL_QK;
    const uint32_t c = (packed[n * rb + b * BL_BLOCK_BYTES + (r % 32)] >> (2 * (r / 32))) & 3u;
    wq[n * ldq + k] = (int8_t)((int)min(c, 2u) - 1); /* the invalid code 3 reads as 2 */
  }
}

size_t flag_offset(int64_t N, int per_channel) {
  return per_channel ? 0 : blc::round_up((size_t)N * sizeof(double), 16);
}

}  // namespace

extern "C" {

int bl_cuda_compiled(void) { return 1; }

size_t bl_cuda_quantize_weights_workspace_bytes(int64_t N, int64_t K, int per_channel) {
  (void)K;
  if (N < 0) return 0;
  return flag_offset(N, per_channel) + 16;
}

bl_status bl_cuda_quantize_weights(const void *w, bl_dtype wdt, int64_t N, int64_t K, int64_t ldw,
                                   float eps, int per_channel, float *scale, uint8_t *packed,
                                   void *workspace, struct CUstream_st *stream) {
  bl_status st = bl_check_matrix(w && scale && packed && workspace, N, K, ldw);
  if (st != BL_OK) return st;
  if (!bl_dtype_ok(wdt) || bl_check_eps(eps) != BL_OK) return BL_ERR_ARG;
  const int64_t blocks = blc::ceil_div(N, kRowsPerBlock);
  if (blocks > 0x7fffffff) return BL_ERR_SIZE;
  double *row_sums = (double *)workspace;
  int *flag = (int *)((char *)workspace + flag_offset(N, per_channel));
  if (cudaMemsetAsync(flag, 0, sizeof(int), stream) != cudaSuccess) return BL_ERR_CUDA;
  switch (wdt) {
    case BL_F16:
      return quantize_weights_dt<BL_F16>(w, N, K, ldw, eps, per_channel, scale, packed, row_sums,
                                         flag, blocks, stream);
    case BL_BF16:
      return quantize_weights_dt<BL_BF16>(w, N, K, ldw, eps, per_channel, scale, packed, row_sums,
                                          flag, blocks, stream);
    default:
      return quantize_weights_dt<BL_F32>(w, N, K, ldw, eps, per_channel, scale, packed, row_sums,
                                         flag, blocks, stream);
  }
}

bl_status bl_cuda_unpack_weights(const uint8_t *packed, int64_t N, int64_t K, int8_t *wq,
                                 int64_t ldq, struct CUstream_st *stream) {
  bl_status st = bl_check_matrix(packed && wq, N, K, ldq);
  if (st != BL_OK) return st;
  const int64_t blocks = blc::ceil_div(N * K, 256);
  unpack_kernel<<<(unsigned)(blocks < 65536 ? blocks : 65536), 256, 0, stream>>>(packed, N, K, wq,
                                                                                ldq);
  return blc::launch_status();
}

}  // extern "C"
