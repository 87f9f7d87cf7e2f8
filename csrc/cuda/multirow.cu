/* multirow.cu - small batches (2 <= M <= 64 by default): every packed weight is read once for up
 * to 64 activation rows, decoded in registers, multiplied on the tensor cores.
 *
 * "Swap AB": mma.sync.m16n8k32 with the weights as the 16-row A operand (u8 codes 0..2) and 8
 * activation rows (tokens) as the B operand (s8); acc = sum(c * x), and the row sum of x is
 * subtracted at the end (sum((c - 1) x) = acc - rowsum), as in gemv.cu. No shared memory for
 * the operands: the A fragment of thread (g, t) is rows g and g + 8, slots 4t..4t+3 (a0, a1) and
 * 16+4t..16+4t+3 (a2, a3); the B fragment is token g, the same slots. The dot product does not
 * care which k a slot holds as long as A and B agree, so each thread loads the 16 contiguous
 * packed bytes 16t..16t+15 of a 64-byte "span" (two 128-k blocks) of its rows, i.e.
 * k = 256 span + 128 (t / 2) + 32 s + 16 (t % 2) + 4 i + j for shift s, word i, byte j, and the
 * 16 activations k0(t, s) .. k0(t, s) + 15 of its token with one 16-byte load. Per span and
 * shift s, words (0, 1) and (2, 3) feed two k32 steps: slots 4t.. <- word 2p, 16+4t.. <- 2p + 1.
 * The invalid code 3 reads as 2 (clamp_codes once per loaded word).
 *
 * Block: 8 warps = 2 row groups of 32 weight rows (two m16 tiles per warp) x 4 warps splitting
 * the block's spans (k-interleaved). The four partial sums meet in shared memory (integer
 * atomicAdd: exact, so the order does not matter), then the block writes its 64 rows x MT tokens
 * coalesced along n. Tokens come in groups of MT = 8 NT <= 32 (interleaved with the n-blocks in
 * gridDim.x); when the grid is small, K is also split over gridDim.y with int32 partials added
 * in order by launch_reduce.
 * Bounds: rows past N read row N - 1 (discarded), tokens past M and the missing second block of
 * an odd last span are zeros and never loaded; every load stays inside [0, Kp) of a valid row.
 */
#include "common.cuh"

namespace {

using blc::clamp_codes;
using blc::word;

constexpr int kKW = 4;                 /* warps splitting K inside a block */
constexpr int kRG = 2;                 /* row groups of 32 per block */
constexpr int kBlockRows = 32 * kRG;   /* 64 */
constexpr int kThreads = 32 * kKW * kRG;

__device__ __forceinline__ int64_t ceil_div_dev(int64_t a, int64_t b) { return (a + b - 1) / b; }



__device__ __forceinline__ uint4 load_stream(const void *p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ void mma_u8s8(int32_t (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* NT <= 2: two blocks (16 warps) per SM, <= 128 registers; NT = 4 needs ~168 (128 spilled). */
template <int NT, int OUT>
__global__ void __launch_bounds__(kThreads, NT >= 4 ? 1 : 2)
    multirow_kernel(const int8_t *xq, int64_t ldq, const int32_t *rowsum, const uint8_t *packed,
                    int64_t M, int64_t N, int64_t K, int64_t spans_per_split, int32_t *partials,
                    blc::Epilogue ep) {
  constexpr int MT = 8 * NT;
  __shared__ int32_t red[kBlockRows][MT + 1]; /* +1: conflict-free column reads */
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, t = lane % 4;
  const int rg = warp / kKW, kw = warp % kKW;
  /* blockIdx.x = n_block * groups + token group: the groups of one n_block run side by side, so
   * all but the first read the block's weights from L2. */
  const int64_t groups = ceil_div_dev(M, MT);
  const int64_t n_block = (int64_t)(blockIdx.x / groups) * kBlockRows;
  const int64_t nb = n_block + rg * 32;
  const int64_t m0 = (int64_t)(blockIdx.x % groups) * MT;
  const int64_t rb = bl_packed_row_bytes(K);
  const int64_t nblk = bl_padded_k(K) / BL_QK;
  const int64_t nspans = (nblk + 1) / 2;
  const int64_t s_begin = (int64_t)blockIdx.y * spans_per_split;
  const int64_t s_end = min(nspans, s_begin + spans_per_split);

  for (int i = tid; i < kBlockRows * (MT + 1); i += kThreads) (&red[0][0])[i] = 0;

  /* Weight rows nb + g + 8r (r = 0, 1: m-tile 0; 2, 3: m-tile 1), clamped to a valid row. */
  const uint8_t *wrow[4];
#pragma unroll
  for (int r = 0; r < 4; r++) wrow[r] = packed + min(nb + g + 8 * r, N - 1) * rb;
  const int8_t *xrow[NT];
  bool tok_ok[NT];
#pragma unroll
  for (int j = 0; j < NT; j++) {
    const int64_t m = m0 + 8 * j + g;
    tok_ok[j] = m < M;
    xrow[j] = xq + min(m, M - 1) * ldq;
  }

  int32_t acc[2][NT][4];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0;

  /* This thread's bytes of span sp exist iff block 2 sp + t / 2 does (an odd last span). */
  int64_t sp = s_begin + kw;
  uint4 wcur[4];
#pragma unroll
  for (int r = 0; r < 4; r++)
    wcur[r] = sp < s_end && blc::mr_present(sp, t, nblk)
                  ? load_stream(wrow[r] + blc::mr_weight_byte(sp, t))
                  : make_uint4(0, 0, 0, 0);
  for (; sp < s_end; sp += kKW) {
    const int64_t nx = sp + kKW;
    uint4 wnext[4];
#pragma unroll
    for (int r = 0; r < 4; r++)
      wnext[r] = nx < s_end && blc::mr_present(nx, t, nblk)
                     ? load_stream(wrow[r] + blc::mr_weight_byte(nx, t))
                     : make_uint4(0, 0, 0, 0);
    const bool have = blc::mr_present(sp, t, nblk);
    uint32_t wc[4][4];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
      for (int i = 0; i < 4; i++) wc[r][i] = clamp_codes(word(wcur[r], i)); /* 0 if absent */
#pragma unroll
    for (int s = 0; s < 4; s++) {
      uint32_t a[2][2][4]; /* [m-tile][pair p][a0..a3] */
#pragma unroll
      for (int i = 0; i < 2; i++)
#pragma unroll
        for (int p = 0; p < 2; p++) {
          a[i][p][0] = (wc[2 * i][2 * p] >> (2 * s)) & 0x03030303u;
          a[i][p][1] = (wc[2 * i + 1][2 * p] >> (2 * s)) & 0x03030303u;
          a[i][p][2] = (wc[2 * i][2 * p + 1] >> (2 * s)) & 0x03030303u;
          a[i][p][3] = (wc[2 * i + 1][2 * p + 1] >> (2 * s)) & 0x03030303u;
        }
#pragma unroll
      for (int j = 0; j < NT; j++) {
        const int8_t *xp = xrow[j] + blc::mr_act_k(sp, t, s);
        const uint4 xv = have && tok_ok[j] ? __ldg(reinterpret_cast<const uint4 *>(xp))
                                           : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int p = 0; p < 2; p++)
#pragma unroll
          for (int i = 0; i < 2; i++)
            mma_u8s8(acc[i][j], a[i][p][0], a[i][p][1], a[i][p][2], a[i][p][3], word(xv, 2 * p),
                     word(xv, 2 * p + 1));
      }
    }
#pragma unroll
    for (int r = 0; r < 4; r++) wcur[r] = wnext[r];
  }

  __syncthreads(); /* red zeroed */
  /* c0, c1: row g, tokens 2t, 2t + 1; c2, c3: row g + 8. */
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int q = 0; q < 4; q++)
        atomicAdd(&red[rg * 32 + 16 * i + g + 8 * (q / 2)][8 * j + 2 * t + (q % 2)], acc[i][j][q]);
  __syncthreads();

  for (int idx = tid; idx < kBlockRows * MT; idx += kThreads) {
    const int lr = idx % kBlockRows, tl = idx / kBlockRows;
    const int64_t n = n_block + lr, m = m0 + tl;
    if (n >= N || m >= M) continue;
    const int32_t v = red[lr][tl];
    if (partials) {
      partials[((int64_t)blockIdx.y * M + m) * N + n] = v;
    } else {
      blc::store_out<OUT>(ep.y, m * ep.ldy + n, v - rowsum[m],
                          OUT == blc::kOutAcc ? 0.0f : ep.xscale[m], ep.wscale, ep.w_per_channel,
                          ep.bias, n);
    }
  }
}

using MultirowFn = void (*)(const int8_t *, int64_t, const int32_t *, const uint8_t *, int64_t,
                            int64_t, int64_t, int64_t, int32_t *, blc::Epilogue);

template <int OUT>
MultirowFn pick_nt(int nt) {
  switch (nt) {
    case 1: return multirow_kernel<1, OUT>;
    case 2: return multirow_kernel<2, OUT>;
    default: return multirow_kernel<4, OUT>;
  }
}

MultirowFn pick(int nt, int out) {
  switch (out) {
    case BL_F16: return pick_nt<BL_F16>(nt);
    case BL_BF16: return pick_nt<BL_BF16>(nt);
    case blc::kOutAcc: return pick_nt<blc::kOutAcc>(nt);
    default: return pick_nt<BL_F32>(nt);
  }
}

/* Token tiles of 8 per group: the smallest of 1, 2, 4 covering M (groups of 32 beyond; 8 tiles
 * took 255 registers and spilled). */
int multirow_nt(int64_t M) { return M <= 8 ? 1 : M <= 16 ? 2 : 4; }

}  // namespace

namespace blc {

int multirow_splits(int64_t M, int64_t N, int64_t K) {
  const int64_t mt = 8 * multirow_nt(M);
  const int64_t blocks = ceil_div(N, kBlockRows) * ceil_div(M, mt);
  const int64_t Kp = bl_padded_k(K);
  const int64_t nspans = (Kp / BL_QK + 1) / 2;
  if (blocks >= 132) return 1;               /* one block per SM of a 132-SM GPU */
  int64_t s = ceil_div(264, blocks);         /* else aim at ~2 blocks per SM */
  s = min(s, nspans / (2 * kKW));            /* >= 2 spans per warp and split */
  s = min(s, Kp / (32 * max(M, (int64_t)1))); /* partials <= half the weight bytes */
  s = min(s, (int64_t)32);
  return (int)max(s, (int64_t)1);
}

/* Requires xq and packed 16-byte aligned, ldq % 16 == 0 and the row sums (checked by the caller).
 * splits > 1: partials holds splits * M * N int32 (exact), added in order by launch_reduce. */
bl_status launch_multirow(const int8_t *xq, int64_t ldq, const int32_t *rowsum,
                          const uint8_t *packed, int64_t M, int64_t N, int64_t K, int splits,
                          int32_t *partials, int out, const Epilogue &ep, cudaStream_t stream) {
  if (M == 0) return BL_OK;
  const int nt = multirow_nt(M);
  const int64_t nspans = (bl_padded_k(K) / BL_QK + 1) / 2;
  if (splits < 1) splits = 1;
  const int64_t sps = ceil_div(nspans, splits);
  const int64_t gx = ceil_div(N, kBlockRows) * ceil_div(M, 8 * nt);
  if (gx > 0x7fffffff || splits > 65535) return BL_ERR_SIZE;
  const dim3 grid((unsigned)gx, (unsigned)splits, 1);
  if (splits > 1) {
    pick(nt, kOutAcc)<<<grid, kThreads, 0, stream>>>(xq, ldq, rowsum, packed, M, N, K, sps,
                                                      partials, ep);
    if (cudaGetLastError() != cudaSuccess) return BL_ERR_CUDA;
    return launch_reduce(partials, splits, rowsum, M, N, out, ep, stream);
  }
  pick(nt, out)<<<grid, kThreads, 0, stream>>>(xq, ldq, rowsum, packed, M, N, K, sps, nullptr, ep);
  return launch_status();
}

}  // namespace blc
