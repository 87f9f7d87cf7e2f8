// ops_cpu.cpp - CPU kernels of the torch.ops.bitlinear operators (schemas: bitlinear/ops.py).
// Each op: the shared frame (common.h), then calls into the C core on torch's thread count; the ops
// made of the three steps below only (quantize weights / activations, GEMM + epilogue) are
// common.h's bodies, run with Cpu.
#include "common.h"

namespace blb {
namespace {

int nthreads() { return static_cast<int>(torch::stable::get_num_threads()); }

// The steps of common.h's op bodies on the CPU.
struct Cpu {
  struct Guard {  // nothing to switch: the CPU
    explicit Guard(const Tensor&) {}
  };

  static void quantize(const WeightsFrame& f, double eps, bool per_channel) {
    check_status(bl_quantize_weights(f.w.const_data_ptr(), f.dt, f.N, f.K, f.ldw,
                                     static_cast<float>(eps), per_channel,
                                     f.scale.mutable_data_ptr<float>(),
                                     f.packed.mutable_data_ptr<uint8_t>(), nthreads()),
                 "quantize_weights");
  }

  static void quantize(const ActsFrame& f, double eps, bool per_token) {
    if (f.M > 0)
      check_status(bl_quantize_acts(f.x.const_data_ptr(), f.dt, f.M, f.K, f.ldx,
                                    static_cast<float>(eps), per_token,
                                    f.xq.mutable_data_ptr<int8_t>(), bl_padded_k(f.K),
                                    f.scale.mutable_data_ptr<float>(),
                                    f.rowsum.mutable_data_ptr<int32_t>(), nthreads()),
                   "quantize_acts");
  }

  // y [M, N] (any row-major view of it) from quantized activations.
  static void gemm_epilogue(const Tensor& xq, const Tensor& x_scale, const Tensor& x_rowsum,
                            const Tensor& w_scale, const Tensor& w_packed, const float* bias,
                            int w_per_channel, int64_t M, int64_t N, int64_t K, Tensor& y) {
    if (M > 0)
      check_status(bl_linear_q(xq.const_data_ptr<int8_t>(), xq.stride(0),
                               x_scale.const_data_ptr<float>(), x_rowsum.const_data_ptr<int32_t>(),
                               M, w_packed.const_data_ptr<uint8_t>(), N, K,
                               w_scale.const_data_ptr<float>(), w_per_channel, bias,
                               y.mutable_data_ptr(), float_dtype(y, "y"), N, nthreads()),
                   "linear_q");
  }
};

Tensor unpack_weights(Tensor w_packed, int64_t K, std::optional<ST> dtype) {
  UnpackFrame f = unpack_frame(w_packed, K, dtype);
  check_status(bl_unpack_weights_f(w_packed.const_data_ptr<uint8_t>(), f.N, f.K,
                                   f.wq.mutable_data_ptr(), f.dt, f.K, nthreads()),
               "unpack_weights");
  return f.wq;
}

Tensor gemm_acc(Tensor xq, Tensor w_packed, int64_t K) {
  GemmFrame f = gemm_frame(xq, w_packed, K);
  if (f.M > 0)
    check_status(bl_gemm_acc(xq.const_data_ptr<int8_t>(), xq.stride(0), nullptr,
                             w_packed.const_data_ptr<uint8_t>(), f.M, f.N, f.K,
                             f.acc.mutable_data_ptr<int32_t>(), f.N, nthreads()),
                 "gemm_acc");
  return f.acc;
}

Tensor linear(Tensor x, Tensor w_scale, Tensor w_packed, std::optional<Tensor> bias, double eps,
              int64_t K, bool per_token) {
  LinearFrame f = linear_frame(x, w_scale, w_packed, bias, K, eps);
  if (f.M == 0) return f.y;
  Tensor ws = workspace(bl_linear_workspace_bytes(f.M, f.K), x);
  check_status(bl_linear(f.x.const_data_ptr(), f.dt, f.M, f.K, f.ldx,
                         w_packed.const_data_ptr<uint8_t>(), f.N, w_scale.const_data_ptr<float>(),
                         f.w_per_channel, f.bias, static_cast<float>(eps), per_token,
                         f.y.mutable_data_ptr(), f.dt, f.N, ws.mutable_data_ptr(), nthreads()),
               "linear");
  return f.y;
}

// Deployed layers that read one input (q/k/v, gate/up), as torch.compile'd graphs call them
// (linear_group2 / linear_group3: bitlinear/fuse.py groups their linear calls). Each output is bit
// for bit linear()'s. Weights that are consecutive rows of one tensor
// (bitlinear.fuse_projections) are streamed in one call with the activations quantized once
// (bl_linear_segments); any others run one by one.
std::vector<Tensor> linear_group(const Tensor& x, const std::vector<Tensor>& w_scale,
                                 const std::vector<Tensor>& w_packed,
                                 const std::vector<std::optional<Tensor>>& bias, double eps,
                                 int64_t K, bool per_token) {
  const size_t n = w_packed.size();
  std::vector<LinearFrame> frames;
  frames.reserve(n);
  for (size_t i = 0; i < n; i++) frames.push_back(linear_frame(x, w_scale[i], w_packed[i], bias[i],
                                                               K, eps));
  std::vector<Tensor> ys;
  for (const LinearFrame& f : frames) ys.push_back(f.y);
  const LinearFrame& f0 = frames[0];
  if (f0.M == 0) return ys;
  const int64_t rb = bl_packed_row_bytes(K);
  bool consecutive = n <= BL_MAX_SEGMENTS;
  const uint8_t* base = w_packed[0].const_data_ptr<uint8_t>();
  int64_t rows = 0;
  for (size_t i = 0; i < n && consecutive; i++) {
    consecutive = w_packed[i].const_data_ptr<uint8_t>() == base + rows * rb;
    rows += frames[i].N;
  }
  Tensor ws = workspace(bl_linear_workspace_bytes(f0.M, K), x);
  if (consecutive) {
    bl_segment segs[BL_MAX_SEGMENTS];
    for (size_t i = 0; i < n; i++)
      segs[i] = {frames[i].N, w_scale[i].const_data_ptr<float>(), frames[i].w_per_channel,
                 frames[i].bias, frames[i].y.mutable_data_ptr(), frames[i].N};
    check_status(bl_linear_segments(f0.x.const_data_ptr(), f0.dt, f0.M, K, f0.ldx, base, segs,
                                    static_cast<int>(n), static_cast<float>(eps), per_token, f0.dt,
                                    ws.mutable_data_ptr(), nthreads()),
                 "linear_group");
    return ys;
  }
  for (size_t i = 0; i < n; i++) {
    const LinearFrame& f = frames[i];
    check_status(bl_linear(f.x.const_data_ptr(), f.dt, f.M, K, f.ldx,
                           w_packed[i].const_data_ptr<uint8_t>(), f.N,
                           w_scale[i].const_data_ptr<float>(), f.w_per_channel, f.bias,
                           static_cast<float>(eps), per_token, ys[i].mutable_data_ptr(), f.dt, f.N,
                           ws.mutable_data_ptr(), nthreads()),
                 "linear_group");
  }
  return ys;
}

std::tuple<Tensor, Tensor> linear_group2(Tensor x, Tensor ws0, Tensor wp0, std::optional<Tensor> b0,
                                         Tensor ws1, Tensor wp1, std::optional<Tensor> b1,
                                         double eps, int64_t K, bool per_token) {
  std::vector<Tensor> y = linear_group(x, {ws0, ws1}, {wp0, wp1}, {b0, b1}, eps, K, per_token);
  return {y[0], y[1]};
}

std::tuple<Tensor, Tensor, Tensor> linear_group3(Tensor x, Tensor ws0, Tensor wp0,
                                                 std::optional<Tensor> b0, Tensor ws1, Tensor wp1,
                                                 std::optional<Tensor> b1, Tensor ws2, Tensor wp2,
                                                 std::optional<Tensor> b2, double eps, int64_t K,
                                                 bool per_token) {
  std::vector<Tensor> y = linear_group(x, {ws0, ws1, ws2}, {wp0, wp1, wp2}, {b0, b1, b2}, eps, K,
                                       per_token);
  return {y[0], y[1], y[2]};
}

// attn_decode (schema: bitlinear/attention.py): one query token over a key / value cache,
// q [B, Hq, 1, D], k / v [B, Hkv, L, D] float32 with head_dim read contiguous (copied if it is
// not), mask None / bool / float32 broadcastable to [B, Hq, 1, L]; out [B, 1, Hq, D]. What the
// Python fallback (torch's SDPA) covers beyond that is refused here: torch.compile'd graphs call
// the op only where the kernel applies (bitlinear.attention._kernel_applies). In C++ so that a
// compiled graph's wrapper calls it through the dispatcher without entering Python. A tensor
// with the negative bit arrives resolved (the dispatcher's math-bit fallback runs first).
Tensor attn_decode(Tensor q, Tensor k, Tensor v, std::optional<Tensor> mask, double scale) {
  STD_TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
                  "bitlinear: attn_decode takes 4-D q [B, Hq, 1, D] and k, v [B, Hkv, L, D]");
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(3);
  const int64_t Hkv = k.size(1), L = k.size(2);
  STD_TORCH_CHECK(q.size(2) == 1 && k.size(0) == B && k.size(3) == D && Hkv >= 1 &&
                      Hq % Hkv == 0 && v.size(0) == B && v.size(1) == Hkv && v.size(2) == L &&
                      v.size(3) == D,
                  "bitlinear: attn_decode shapes: q [B, Hq, 1, D], k and v [B, Hkv, L, D] with "
                  "Hq a multiple of Hkv");
  for (const Tensor* t : {&q, &k, &v})
    STD_TORCH_CHECK(t->scalar_type() == ST::Float, "bitlinear: attn_decode takes float32 q, k, v");
  check_same_device(q, k, "q", "k");
  check_same_device(q, v, "q", "v");
  Tensor qc = q.stride(3) == 1 ? q : torch::stable::contiguous(q);
  Tensor kc = k.stride(3) == 1 ? k : torch::stable::contiguous(k);
  Tensor vc = v.stride(3) == 1 ? v : torch::stable::contiguous(v);
  const void* mptr = nullptr;
  int mtype = 0;
  int64_t msb = 0, msh = 0, msl = 0;
  if (mask.has_value()) {
    const Tensor& m = *mask;
    STD_TORCH_CHECK(m.scalar_type() == ST::Float || m.scalar_type() == ST::Bool,
                    "bitlinear: attn_decode mask must be bool or float32");
    check_same_device(q, m, "q", "mask");
    STD_TORCH_CHECK(m.dim() == 4 && (m.size(0) == 1 || m.size(0) == B) &&
                        (m.size(1) == 1 || m.size(1) == Hq) && m.size(2) == 1 &&
                        (m.size(3) == 1 || m.size(3) == L),
                    "bitlinear: attn_decode mask must broadcast to [B, Hq, 1, L]");
    mptr = m.const_data_ptr();
    mtype = m.scalar_type() == ST::Float ? BL_ATTN_MASK_ADD : BL_ATTN_MASK_BOOL;
    msb = m.size(0) != 1 ? m.stride(0) : 0;        // broadcast dimensions read with stride 0
    msh = m.size(1) != 1 ? m.stride(1) : 0;
    msl = m.size(3) != 1 ? m.stride(3) : 0;
  }
  Tensor out = empty_like_device({B, 1, Hq, D}, ST::Float, q);
  check_status(bl_attn_decode(B, Hq, Hkv, L, D, qc.const_data_ptr<float>(), qc.stride(0),
                              qc.stride(1), kc.const_data_ptr<float>(), kc.stride(0), kc.stride(1),
                              kc.stride(2), vc.const_data_ptr<float>(), vc.stride(0), vc.stride(1),
                              vc.stride(2), mptr, mtype, msb, msh, msl, static_cast<float>(scale),
                              out.mutable_data_ptr<float>(), Hq * D, D, nthreads()),
               "attn_decode");
  return out;
}

}  // namespace
}  // namespace blb

STABLE_TORCH_LIBRARY_IMPL(bitlinear, CPU, m) {
  m.impl("quantize_weights", TORCH_BOX(&blb::quantize_weights_op<blb::Cpu>));
  m.impl("unpack_weights", TORCH_BOX(&blb::unpack_weights));
  m.impl("quantize_acts", TORCH_BOX(&blb::quantize_acts_op<blb::Cpu>));
  m.impl("gemm_acc", TORCH_BOX(&blb::gemm_acc));
  m.impl("linear", TORCH_BOX(&blb::linear));
  m.impl("linear_group2", TORCH_BOX(&blb::linear_group2));
  m.impl("linear_group3", TORCH_BOX(&blb::linear_group3));
  m.impl("attn_decode", TORCH_BOX(&blb::attn_decode));
  m.impl("linear_q", TORCH_BOX(&blb::linear_q_op<blb::Cpu>));
  m.impl("linear_train", TORCH_BOX(&blb::linear_train_op<blb::Cpu>));
}
