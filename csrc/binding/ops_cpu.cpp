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
  m.impl("linear_q", TORCH_BOX(&blb::linear_q_op<blb::Cpu>));
  m.impl("linear_train", TORCH_BOX(&blb::linear_train_op<blb::Cpu>));
}
