/* gemv.cu - the decode path (few tokens): memory-bound by design.
 *
 * Each warp owns kRows weight rows; each lane streams 16-byte chunks of them (coalesced, two
 * chunks per row in flight) and decodes them in registers: for the 32-bit word holding bytes
 * j..j+3 of a block, (word >> 2s) & 0x03030303 are the u8 codes of k = 128b + 32s + j..j+3,
 * which __dp4a multiplies with four int8 activations. The invalid code 3 reads as 2 (weight +1,
 * docs/packed_format.md): each loaded word is clamped once, before its four shifts, with
 * clamp_codes (2 instructions per word; __vminu4 on the masked codes lowers to ~9 on sm_80/90).
 * sum(c * x) = dot(w, x) + rowsum(x), so
 * the row sum is subtracted once at the end. Tokens are processed in groups of up to MT with
 * the decoded weights reused from registers. When N is small the K range is split over
 * gridDim.y; the int32 partials are exact and are added in a fixed order by reduce_kernel.
 */
#include "common.cuh"

namespace {

using blc::clamp_codes;
using blc::word;

constexpr int kWarps = 8;
constexpr int kRows = 4;                       /* weight rows per warp */
constexpr int kRowsPerBlock = kWarps * kRows;  /* 32 */

__device__ __forceinline__ uint4 load_stream(const void *p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}



/* Adds the chunk c (16 bytes of each of the kRows rows, i.e. 64 values of k) for MT tokens. */
template <int MT>
__device__ __forceinline__ void accumulate_chunk(const uint4 (&w)[kRows], int64_t c,
                                                 const int8_t *xq, int64_t ldq, int mcount,
                                                 int32_t (&acc)[kRows][MT]) {
  uint32_t codes[kRows][4][4]; /* [row][shift s][word i] */
  blc::chunk_codes(w, codes);
  const int64_t kbase = (c / 2) * BL_QK + (c % 2) * 16;
#pragma unroll
  for (int m = 0; m < MT; m++) {
    if (m < mcount) {
      const int8_t *xrow = xq + m * ldq + kbase;
#pragma unroll
      for (int s = 0; s < 4; s++) {
        const uint4 xv = __ldg(reinterpret_cast<const uint4 *>(xrow + 32 * s));
#pragma unroll
        for (int r = 0; r < kRows; r++)
#pragma unroll
          for (int i = 0; i < 4; i++)
            acc[r][m] = __dp4a((int)codes[r][s][i], (int)word(xv, i), acc[r][m]);
      }
    }
  }
}

template <int MT, int OUT>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_kernel(const int8_t *xq, int64_t ldq, const int32_t *rowsum, const uint8_t *packed,
                int64_t M, int64_t N, int64_t K, int64_t chunks_per_split, int32_t *partials,
                blc::Epilogue ep) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int64_t n0 = ((int64_t)blockIdx.x * kWarps + warp) * kRows;
  const int64_t m0 = (int64_t)blockIdx.z * MT;
  const int mcount = (int)min((int64_t)MT, M - m0);
  const int64_t rb = bl_packed_row_bytes(K);
  const int64_t nchunks = rb / 16;
  const int64_t c_begin = (int64_t)blockIdx.y * chunks_per_split;
  const int64_t c_end = min(nchunks, c_begin + chunks_per_split);

  const uint8_t *wrow[kRows];
#pragma unroll
  for (int r = 0; r < kRows; r++) wrow[r] = packed + min(n0 + r, N - 1) * rb; /* clamped: valid */

  int32_t acc[kRows][MT];
#pragma unroll
  for (int r = 0; r < kRows; r++)
#pragma unroll
    for (int m = 0; m < MT; m++) acc[r][m] = 0;

  const int8_t *xbase = xq + m0 * ldq;
  for (int64_t c = c_begin + lane; c < c_end; c += 64) {
    const int64_t c2 = c + 32;
    const bool has2 = c2 < c_end;
    uint4 wa[kRows], wb[kRows];
#pragma unroll
    for (int r = 0; r < kRows; r++) wa[r] = load_stream(wrow[r] + c * 16);
#pragma unroll
    for (int r = 0; r < kRows; r++)
      wb[r] = has2 ? load_stream(wrow[r] + c2 * 16) : make_uint4(0, 0, 0, 0);
    accumulate_chunk<MT>(wa, c, xbase, ldq, mcount, acc);
    if (has2) accumulate_chunk<MT>(wb, c2, xbase, ldq, mcount, acc);
  }

#pragma unroll
  for (int r = 0; r < kRows; r++)
#pragma unroll
    for (int m = 0; m < MT; m++) acc[r][m] = blc::warp_sum_i32(acc[r][m]);

  /* Every lane holds every sum; lane (r * MT + m) % 32 writes pair (r, m). */
#pragma unroll
  for (int r = 0; r < kRows; r++) {
#pragma unroll
    for (int m = 0; m < MT; m++) {
      const int64_t n = n0 + r;
      if (lane != (r * MT + m) % 32 || m >= mcount || n >= N) continue;
      const int64_t mm = m0 + m;
      if (partials) {
        partials[((int64_t)blockIdx.y * M + mm) * N + n] = acc[r][m];
      } else {
        blc::store_out<OUT>(ep.y, mm * ep.ldy + n, acc[r][m] - rowsum[mm], ep.xscale[mm],
                            ep.wscale, ep.w_per_channel, ep.bias, n);
      }
    }
  }
}

/* Fixed-order sum of the split-K partials, minus the row sum (if any), then the epilogue. */
template <int OUT>
__global__ void reduce_kernel(const int32_t *partials, int splits, const int32_t *rowsum,
                              int64_t M, int64_t N, blc::Epilogue ep) {
  const int64_t total = M * N;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t m = i / N, n = i % N;
    int32_t a = 0;
    for (int s = 0; s < splits; s++) a += partials[(int64_t)s * total + i];
    if (rowsum) a -= rowsum[m];
    blc::store_out<OUT>(ep.y, m * ep.ldy + n, a, OUT == blc::kOutAcc ? 0.0f : ep.xscale[m],
                        ep.wscale, ep.w_per_channel, ep.bias, n);
  }
}

__global__ void rowsum_kernel(const int8_t *xq, int64_t ldq, int64_t M, int64_t Kp,
                              int32_t *rowsum) {
  __shared__ int32_t part[8];
  for (int64_t r = blockIdx.x; r < M; r += gridDim.x) {
    int32_t s = 0;
    for (int64_t k = threadIdx.x; k < Kp; k += 256) s += xq[r * ldq + k];
    s = blc::warp_sum_i32(s);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
      int32_t t = 0;
      for (int w = 0; w < 8; w++) t += part[w];
      rowsum[r] = t;
    }
    __syncthreads();
  }
}

/* The kernel for this token-group size and output type. */
using GemvFn = void (*)(const int8_t *, int64_t, const int32_t *, const uint8_t *, int64_t, int64_t,
                        int64_t, int64_t, int32_t *, blc::Epilogue);

template <int OUT>
GemvFn pick_mt(int mt) {
  switch (mt) {
    case 1: return gemv_kernel<1, OUT>;
    case 2: return gemv_kernel<2, OUT>;
    case 4: return gemv_kernel<4, OUT>;
    case 8: return gemv_kernel<8, OUT>;
    default: return gemv_kernel<16, OUT>;
  }
}

GemvFn pick(int mt, int out) {
  switch (out) {
    case BL_F16: return pick_mt<BL_F16>(mt);
    case BL_BF16: return pick_mt<BL_BF16>(mt);
    case blc::kOutAcc: return pick_mt<blc::kOutAcc>(mt);
    default: return pick_mt<BL_F32>(mt);
  }
}

template <int OUT>
void launch_reduce_out(const int32_t *partials, int splits, const int32_t *rowsum, int64_t M,
                   int64_t N, const blc::Epilogue &ep, cudaStream_t stream) {
  const int64_t blocks = blc::ceil_div(M * N, 256);
  reduce_kernel<OUT><<<(unsigned)(blocks < 65536 ? blocks : 65536), 256, 0, stream>>>(
      partials, splits, rowsum, M, N, ep);
}

}  // namespace

namespace blc {

/* Tokens per group: the smallest instantiated MT >= M (16 for larger M, in several groups). */
static int gemv_mt(int64_t M) { return M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : M <= 8 ? 8 : 16; }

int gemv_splits(int64_t M, int64_t N, int64_t K) {
  const int64_t mt = gemv_mt(M);
  const int64_t blocks = ceil_div(N, kRowsPerBlock) * ceil_div(M, mt);
  const int64_t nchunks = bl_packed_row_bytes(K) / 16;
  if (blocks >= 264) return 1;             /* >= 2 blocks per SM of a 132-SM GPU: enough */
  int64_t splits = ceil_div(528, blocks);  /* else aim at ~4 blocks per SM */
  splits = min(splits, nchunks / 32);      /* at least one chunk per lane per split */
  splits = min(splits, (int64_t)32);
  return (int)max(splits, (int64_t)1);
}

/* partials: splits * M * N int32 when splits > 1 (else unused). rowsum is required. */
bl_status launch_gemv(const int8_t *xq, int64_t ldq, const int32_t *rowsum, const uint8_t *packed,
                      int64_t M, int64_t N, int64_t K, int splits, int32_t *partials, int out,
                      const Epilogue &ep, cudaStream_t stream) {
  const int mt = gemv_mt(M);
  const int64_t nchunks = bl_packed_row_bytes(K) / 16;
  const int64_t cps = ceil_div(nchunks, splits);
  const int64_t gx = ceil_div(N, kRowsPerBlock), gz = ceil_div(M, mt);
  if (gx > 0x7fffffff || splits > 65535 || gz > 65535) return BL_ERR_SIZE;
  const dim3 grid((unsigned)gx, (unsigned)splits, (unsigned)gz);
  int32_t *part = splits > 1 ? partials : nullptr;
  pick(mt, out)<<<grid, kWarps * 32, 0, stream>>>(xq, ldq, rowsum, packed, M, N, K, cps, part, ep);
  if (part) return launch_reduce(part, splits, rowsum, M, N, out, ep, stream);
  return launch_status();
}

bl_status launch_reduce(const int32_t *partials, int splits, const int32_t *rowsum, int64_t M,
                        int64_t N, int out, const Epilogue &ep, cudaStream_t stream) {
  switch (out) {
    case BL_F16: launch_reduce_out<BL_F16>(partials, splits, rowsum, M, N, ep, stream); break;
    case BL_BF16: launch_reduce_out<BL_BF16>(partials, splits, rowsum, M, N, ep, stream); break;
    case kOutAcc: launch_reduce_out<kOutAcc>(partials, splits, rowsum, M, N, ep, stream); break;
    default: launch_reduce_out<BL_F32>(partials, splits, rowsum, M, N, ep, stream); break;
  }
  return launch_status();
}

bl_status launch_rowsum(const int8_t *xq, int64_t ldq, int64_t M, int64_t K, int32_t *rowsum,
                        cudaStream_t stream) {
  if (M == 0) return BL_OK;
  rowsum_kernel<<<(unsigned)(M < (1 << 20) ? M : (1 << 20)), 256, 0, stream>>>(
      xq, ldq, M, bl_padded_k(K), rowsum);
  return launch_status();
}

}  // namespace blc
