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

}  // namespace
}  // namespace blb

STABLE_TORCH_LIBRARY_IMPL(bitlinear, CPU, m) {
  m.impl("quantize_weights", TORCH_BOX(&blb::quantize_weights_op<blb::Cpu>));
  m.impl("unpack_weights", TORCH_BOX(&blb::unpack_weights));
  m.impl("quantize_acts", TORCH_BOX(&blb::quantize_acts_op<blb::Cpu>));
  m.impl("gemm_acc", TORCH_BOX(&blb::gemm_acc));
  m.impl("linear", TORCH_BOX(&blb::linear));
  m.impl("linear_q", TORCH_BOX(&blb::linear_q_op<blb::Cpu>));
  m.impl("linear_train", TORCH_BOX(&blb::linear_train_op<blb::Cpu>));
}
