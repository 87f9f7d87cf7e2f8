/* fused.cu - the decode path of bl_cuda_linear in one kernel: activation quantization fused into
 * the dp4a GEMV (M <= 16, M * Kp <= kFusedSmem bytes).
 *
 * Each block owns 32 weight rows (8 warps x 4 rows, as gemv.cu) and re-derives everything it
 * needs from x: the row absmax (or the tensor absmax, per tensor), the scale, the int8 codes of
 * all M rows (into shared memory) and their row sums. The code of every value comes from the
 * same blc::quant_code as acts.cu and the scale from blc::act_scale, so codes, row sums and int32
 * accumulators equal the unfused path's bit for bit, and the epilogue is the same store_out.
 * x is read twice per block (absmax, then codes) from L2: M * K * dtype bytes, small next to the
 * block's weight bytes for M <= 4 (the default range), redundant work for larger M.
 *
 * Shared memory holds the codes permuted so that the GEMV reads them without bank conflicts:
 * k = 128 b + 32 s + 16 h + j (j < 16) is at byte m * Kp + s * (Kp / 4) + (2 b + h) * 16 + j,
 * i.e. for shift s the 16 codes that the weight chunk c = 2 b + h multiplies are 16 contiguous
 * bytes, and consecutive lanes (consecutive chunks) read consecutive 16-byte words.
 * The first weight chunks are loaded before the quantization, so their latency overlaps it.
 * Weights are read with 16-byte loads when the packed pointer is 16-byte aligned, else byte by
 * byte (correct, slow; torch allocations are aligned).
 */
#include "common.cuh"

namespace {

using blc::clamp_codes;
using blc::word;

constexpr int kWarps = 8;
constexpr int kRows = 4;
constexpr int kRowsPerBlock = kWarps * kRows; /* 32 */
constexpr int kThreads = kWarps * 32;
constexpr int64_t kFusedSmem = 46 * 1024; /* dynamic; + ~1.2 KB static stays under 48 KB */



__device__ __forceinline__ uint4 load_w(const uint8_t *p, bool aligned) {
  uint4 v;
  if (aligned) {
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
  }
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; i++)
    w[i] = (uint32_t)__ldg(p + 4 * i) | ((uint32_t)__ldg(p + 4 * i + 1) << 8) |
           ((uint32_t)__ldg(p + 4 * i + 2) << 16) | ((uint32_t)__ldg(p + 4 * i + 3) << 24);
  return make_uint4(w[0], w[1], w[2], w[3]);
}

/* Adds chunk c (16 bytes of each of the kRows rows = 64 values of k) for the M <= MT rows. */
template <int MT>
__device__ __forceinline__ void accumulate_chunk(const uint4 (&w)[kRows], int64_t c,
                                                 const uint8_t *xs, int64_t Kp, int M,
                                                 int32_t (&acc)[kRows][MT]) {
  uint32_t codes[kRows][4][4]; /* [row][shift s][word i] */
  blc::chunk_codes(w, codes);
#pragma unroll
  for (int m = 0; m < MT; m++) {
    if (m < M) {
#pragma unroll
      for (int s = 0; s < 4; s++) {
        const uint4 xv = *reinterpret_cast<const uint4 *>(xs + blc::fused_chunk_offset(m, s, c, Kp));
#pragma unroll
        for (int r = 0; r < kRows; r++)
#pragma unroll
          for (int i = 0; i < 4; i++)
            acc[r][m] = __dp4a((int)codes[r][s][i], (int)word(xv, i), acc[r][m]);
      }
    }
  }
}

/* The output dtype is a run-time argument here (15 instantiations instead of 45). */
__device__ __forceinline__ void store_any(int out, const blc::Epilogue &ep, int64_t m, int64_t n,
                                          int32_t acc, float sx) {
  const int64_t idx = m * ep.ldy + n;
  if (out == BL_F16) {
    blc::store_out<BL_F16>(ep.y, idx, acc, sx, ep.wscale, ep.w_per_channel, ep.bias, n);
  } else if (out == BL_BF16) {
    blc::store_out<BL_BF16>(ep.y, idx, acc, sx, ep.wscale, ep.w_per_channel, ep.bias, n);
  } else {
    blc::store_out<BL_F32>(ep.y, idx, acc, sx, ep.wscale, ep.w_per_channel, ep.bias, n);
  }
}

template <int MT, int DT>
__global__ void __launch_bounds__(kThreads)
    fused_kernel(const void *x, int M, int64_t K, int64_t ldx, float eps, int per_token,
                 const uint8_t *packed, int64_t N, int aligned, int out, blc::Epilogue ep) {
  extern __shared__ __align__(16) uint8_t xs[]; /* [M][Kp], permuted (see the top) */
  __shared__ uint32_t red_max[kWarps][MT];
  __shared__ int32_t red_sum[kWarps][MT];
  __shared__ float s_scale[MT];
  __shared__ int32_t s_rowsum[MT];
  constexpr int es = DT == BL_F32 ? 4 : 2;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t n0 = ((int64_t)blockIdx.x * kWarps + warp) * kRows;
  const int64_t Kp = bl_padded_k(K), rb = Kp / 4, nchunks = rb / 16;

  const uint8_t *wrow[kRows];
#pragma unroll
  for (int r = 0; r < kRows; r++) wrow[r] = packed + min(n0 + r, N - 1) * rb; /* clamped: valid */

  /* 1. The first weight chunks in flight while x is quantized. */
  int64_t c = lane;
  uint4 wa[kRows], wb[kRows];
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    wa[r] = c < nchunks ? load_w(wrow[r] + c * 16, aligned) : make_uint4(0, 0, 0, 0);
    wb[r] = c + 32 < nchunks ? load_w(wrow[r] + (c + 32) * 16, aligned) : make_uint4(0, 0, 0, 0);
  }

  /* 2. absmax of each row (as bits: NaN on top, as acts.cu), then the scales. */
#pragma unroll
  for (int m = 0; m < MT; m++) {
    uint32_t a = 0;
    if (m < M) {
      const void *row = (const char *)x + (int64_t)m * ldx * es;
      for (int64_t k = tid; k < K; k += kThreads) a = max(a, blc::abs_bits(blc::load_f<DT>(row, k)));
    }
    a = blc::warp_max_u32(a);
    if (lane == 0) red_max[warp][m] = a;
  }
  __syncthreads();
  if (tid == 0) {
    uint32_t row_max[MT], all = 0;
#pragma unroll
    for (int m = 0; m < MT; m++) {
      uint32_t a = 0;
#pragma unroll
      for (int w = 0; w < kWarps; w++) a = max(a, red_max[w][m]);
      row_max[m] = a;
      if (m < M) all = max(all, a); /* per tensor: the max over all M rows */
    }
#pragma unroll
    for (int m = 0; m < MT; m++)
      s_scale[m] = blc::act_scale(__uint_as_float(per_token ? row_max[m] : all), eps);
  }
  __syncthreads();

  /* 3. Codes into shared memory (padding k >= K and non-finite rows: 0), row sums. */
#pragma unroll
  for (int m = 0; m < MT; m++) {
    int32_t sum = 0;
    if (m < M) {
      const void *row = (const char *)x + (int64_t)m * ldx * es;
      const float s = s_scale[m];
      const bool finite = isfinite(s);
      for (int64_t g = tid; g < Kp / 4; g += kThreads) {
        const int64_t k0 = 4 * g;
        uint32_t wd = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
          const int64_t k = k0 + i;
          const int v = finite && k < K ? blc::quant_code(blc::load_f<DT>(row, k), s) : 0;
          sum += v;
          wd |= (uint32_t)(v & 0xff) << (8 * i);
        }
        *reinterpret_cast<uint32_t *>(xs + blc::fused_code_offset(m, k0, Kp)) = wd; /* k0 % 4 == 0 */
      }
    }
    sum = blc::warp_sum_i32(sum);
    if (lane == 0) red_sum[warp][m] = sum;
  }
  __syncthreads();
  if (tid < MT) {
    int32_t t = 0;
#pragma unroll
    for (int w = 0; w < kWarps; w++) t += red_sum[w][tid];
    s_rowsum[tid] = t;
  }
  __syncthreads();

  /* 4. The GEMV over all chunks (no split: one launch), as gemv.cu. */
  int32_t acc[kRows][MT];
#pragma unroll
  for (int r = 0; r < kRows; r++)
#pragma unroll
    for (int m = 0; m < MT; m++) acc[r][m] = 0;
  while (c < nchunks) {
    accumulate_chunk<MT>(wa, c, xs, Kp, M, acc);
    if (c + 32 < nchunks) accumulate_chunk<MT>(wb, c + 32, xs, Kp, M, acc);
    c += 64;
    if (c < nchunks) {
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        wa[r] = load_w(wrow[r] + c * 16, aligned);
        wb[r] = c + 32 < nchunks ? load_w(wrow[r] + (c + 32) * 16, aligned) : make_uint4(0, 0, 0, 0);
      }
    }
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
      if (lane != (r * MT + m) % 32 || m >= M || n >= N) continue;
      store_any(out, ep, m, n, acc[r][m] - s_rowsum[m], s_scale[m]);
    }
  }
}

using FusedFn = void (*)(const void *, int, int64_t, int64_t, float, int, const uint8_t *, int64_t,
                         int, int, blc::Epilogue);

template <int DT>
FusedFn pick_mt(int64_t M) {
  if (M <= 1) return fused_kernel<1, DT>;
  if (M <= 2) return fused_kernel<2, DT>;
  if (M <= 4) return fused_kernel<4, DT>;
  if (M <= 8) return fused_kernel<8, DT>;
  return fused_kernel<16, DT>;
}

FusedFn pick(int64_t M, int xdt) {
  switch (xdt) {
    case BL_F16: return pick_mt<BL_F16>(M);
    case BL_BF16: return pick_mt<BL_BF16>(M);
    default: return pick_mt<BL_F32>(M);
  }
}

}  // namespace

namespace blc {

bool fused_fits(int64_t M, int64_t K) {
  return M >= 1 && M <= kFusedMaxM && K >= 1 && K <= BL_MAX_K && M * bl_padded_k(K) <= kFusedSmem;
}

/* x [M, K] (row stride ldx), checked by the caller; out: a float dtype (not kOutAcc). */
bl_status launch_fused(const void *x, int xdt, int64_t M, int64_t K, int64_t ldx, float eps,
                       int per_token, const uint8_t *packed, int64_t N, int out,
                       const Epilogue &ep, cudaStream_t stream) {
  if (!fused_fits(M, K) || out == kOutAcc) return BL_ERR_ARG;
  const int64_t gx = ceil_div(N, kRowsPerBlock);
  if (gx > 0x7fffffff) return BL_ERR_SIZE;
  const size_t smem = (size_t)(M * bl_padded_k(K));
  const int aligned = ((uintptr_t)packed & 15u) == 0;
  pick(M, xdt)<<<(unsigned)gx, kThreads, smem, stream>>>(x, (int)M, K, ldx, eps, per_token, packed,
                                                          N, aligned, out, ep);
  return launch_status();
}

}  // namespace blc
