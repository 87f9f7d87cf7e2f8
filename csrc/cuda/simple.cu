/* simple.cu - the plain fallback GEMM: one thread per output, the same loop as the C
 * reference (w = min(c, 2) - 1: the invalid code 3 reads as +1; no row sum). Slow; used for
 * unaligned inputs and, forced with bl_cuda_set_option(BL_CUDA_OPT_PATH, BL_CUDA_PATH_SIMPLE)
 * (bitlinear.cuda.set_cuda_path("simple")), to tell a fault of the fast paths from
 * one elsewhere. */
#include "common.cuh"

namespace {

template <int OUT>
__global__ void simple_gemm_kernel(const int8_t *xq, int64_t ldq, const uint8_t *packed,
                                   int64_t M, int64_t N, int64_t K, blc::Epilogue ep) {
  const int64_t rb = bl_packed_row_bytes(K), nb = bl_padded_k(K) / BL_QK;
  const int64_t total = M * N;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t m = i / N, n = i % N;
    const int8_t *x = xq + m * ldq;
    const uint8_t *w = packed + n * rb;
    int32_t s = 0;
    for (int64_t b = 0; b < nb; b++)
      for (int j = 0; j < BL_BLOCK_BYTES; j++) {
        const uint32_t byte = w[b * BL_BLOCK_BYTES + j];
#pragma unroll
        for (int g = 0; g < 4; g++)
          s += (int32_t)x[b * BL_QK + 32 * g + j] * ((int32_t)min((byte >> (2 * g)) & 3u, 2u) - 1);
      }
    blc::store_out<OUT>(ep.y, m * ep.ldy + n, s, OUT == blc::kOutAcc ? 0.0f : ep.xscale[m],
                        ep.wscale, ep.w_per_channel, ep.bias, n);
  }
}

template <int OUT>
void launch_out(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M, int64_t N,
                int64_t K, const blc::Epilogue &ep, cudaStream_t stream) {
  const int64_t blocks = blc::ceil_div(M * N, 128);
  simple_gemm_kernel<OUT><<<(unsigned)(blocks < 65536 ? blocks : 65536), 128, 0, stream>>>(
      xq, ldq, packed, M, N, K, ep);
}

}  // namespace

namespace blc {

bl_status launch_simple_gemm(const int8_t *xq, int64_t ldq, const uint8_t *packed, int64_t M,
                             int64_t N, int64_t K, int out, const Epilogue &ep,
                             cudaStream_t stream) {
  if (M == 0) return BL_OK;
  switch (out) {
    case BL_F16: launch_out<BL_F16>(xq, ldq, packed, M, N, K, ep, stream); break;
    case BL_BF16: launch_out<BL_BF16>(xq, ldq, packed, M, N, K, ep, stream); break;
    case kOutAcc: launch_out<kOutAcc>(xq, ldq, packed, M, N, K, ep, stream); break;
    default: launch_out<BL_F32>(xq, ldq, packed, M, N, K, ep, stream); break;
  }
  return launch_status();
}

}  // namespace blc
