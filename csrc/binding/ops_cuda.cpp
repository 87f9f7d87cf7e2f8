// ops_cuda.cpp - CUDA kernels of the torch.ops.bitlinear operators (schemas: bitlinear/ops.py),
// built only with CUDA. Each op: the shared frame (common.h), a device guard, a torch-allocated
// workspace, and one asynchronous call into the C API on torch's current stream (no host sync,
// so CUDA graphs capture it). The ops made of the three steps of Cuda below only (quantize weights
// / activations, GEMM + epilogue) are common.h's bodies, run with Cuda.
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>

#include "common.h"

namespace blb {
namespace {

struct CUstream_st* current_stream(const Tensor& t) {
  void* s = nullptr;
  STD_TORCH_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &s) == 0,
                  "bitlinear: could not get the current CUDA stream");
  return static_cast<struct CUstream_st*>(s);
}

// The steps of common.h's op bodies on a CUDA device.
struct Cuda {
  struct Guard {  // the op runs on the device of its first tensor (every op of this file)
    explicit Guard(const Tensor& t) : g(t.get_device_index()) {}
    torch::stable::accelerator::DeviceGuard g;
  };

  static void quantize(const WeightsFrame& f, double eps, bool per_channel) {
    Tensor ws = workspace(bl_cuda_quantize_weights_workspace_bytes(f.N, f.K, per_channel), f.w);
    check_status(bl_cuda_quantize_weights(f.w.const_data_ptr(), f.dt, f.N, f.K, f.ldw,
                                          static_cast<float>(eps), per_channel,
                                          f.scale.mutable_data_ptr<float>(),
                                          f.packed.mutable_data_ptr<uint8_t>(),
                                          ws.mutable_data_ptr(), current_stream(f.w)),
                 "quantize_weights (cuda)");
  }

  static void quantize(const ActsFrame& f, double eps, bool per_token) {
    if (f.M == 0) return;
    Tensor ws = workspace(bl_cuda_quantize_acts_workspace_bytes(f.M, f.K, per_token), f.x);
    check_status(bl_cuda_quantize_acts(f.x.const_data_ptr(), f.dt, f.M, f.K, f.ldx,
                                       static_cast<float>(eps), per_token,
                                       f.xq.mutable_data_ptr<int8_t>(), bl_padded_k(f.K),
                                       f.scale.mutable_data_ptr<float>(),
                                       f.rowsum.mutable_data_ptr<int32_t>(), ws.mutable_data_ptr(),
                                       current_stream(f.x)),
                 "quantize_acts (cuda)");
  }

  // y [M, N] (any row-major view of it) from quantized activations.
  static void gemm_epilogue(const Tensor& xq, const Tensor& x_scale, const Tensor& x_rowsum,
                            const Tensor& w_scale, const Tensor& w_packed, const float* bias,
                            int w_per_channel, int64_t M, int64_t N, int64_t K, Tensor& y) {
    if (M == 0) return;
    const size_t wsb = bl_cuda_gemm_workspace_bytes(M, N, K);
    Tensor ws = workspace(wsb, xq);
    check_status(bl_cuda_linear_q(xq.const_data_ptr<int8_t>(), xq.stride(0),
                                  x_scale.const_data_ptr<float>(),
                                  x_rowsum.const_data_ptr<int32_t>(), M,
                                  w_packed.const_data_ptr<uint8_t>(), N, K,
                                  w_scale.const_data_ptr<float>(), w_per_channel, bias,
                                  y.mutable_data_ptr(), float_dtype(y, "y"), N,
                                  ws.mutable_data_ptr(), wsb, current_stream(xq)),
                 "linear_q (cuda)");
  }
};

Tensor unpack_weights(Tensor w_packed, int64_t K, std::optional<ST> dtype) {
  Cuda::Guard guard(w_packed);
  UnpackFrame f = unpack_frame(w_packed, K, std::nullopt);
  check_status(bl_cuda_unpack_weights(w_packed.const_data_ptr<uint8_t>(), f.N, f.K,
                                      f.wq.mutable_data_ptr<int8_t>(), f.K,
                                      current_stream(w_packed)),
               "unpack_weights (cuda)");
  return dtype.has_value() ? torch::stable::to(f.wq, *dtype) : f.wq;  // -1, 0, 1 are exact
}

Tensor gemm_acc(Tensor xq, Tensor w_packed, int64_t K) {
  Cuda::Guard guard(xq);
  GemmFrame f = gemm_frame(xq, w_packed, K);
  if (f.M == 0) return f.acc;
  const size_t wsb = bl_cuda_gemm_workspace_bytes(f.M, f.N, f.K);
  Tensor ws = workspace(wsb, xq);
  check_status(bl_cuda_gemm_acc(xq.const_data_ptr<int8_t>(), xq.stride(0), nullptr,
                                w_packed.const_data_ptr<uint8_t>(), f.M, f.N, f.K,
                                f.acc.mutable_data_ptr<int32_t>(), f.N, ws.mutable_data_ptr(), wsb,
                                current_stream(xq)),
               "gemm_acc (cuda)");
  return f.acc;
}

Tensor linear(Tensor x, Tensor w_scale, Tensor w_packed, std::optional<Tensor> bias, double eps,
              int64_t K, bool per_token) {
  Cuda::Guard guard(x);
  LinearFrame f = linear_frame(x, w_scale, w_packed, bias, K, eps);
  if (f.M == 0) return f.y;
  const size_t wsb = bl_cuda_linear_workspace_bytes(f.M, f.N, f.K);
  // The fused decode path needs no workspace: no allocation at all then.
  std::optional<Tensor> ws;
  if (wsb > 0) ws = workspace(wsb, x);
  check_status(bl_cuda_linear(f.x.const_data_ptr(), f.dt, f.M, f.K, f.ldx,
                              w_packed.const_data_ptr<uint8_t>(), f.N,
                              w_scale.const_data_ptr<float>(), f.w_per_channel, f.bias,
                              static_cast<float>(eps), per_token, f.y.mutable_data_ptr(), f.dt,
                              f.N, ws ? ws->mutable_data_ptr() : nullptr, wsb,
                              current_stream(x)),
               "linear (cuda)");
  return f.y;
}

}  // namespace
}  // namespace blb

STABLE_TORCH_LIBRARY_IMPL(bitlinear, CUDA, m) {
  m.impl("quantize_weights", TORCH_BOX(&blb::quantize_weights_op<blb::Cuda>));
  m.impl("unpack_weights", TORCH_BOX(&blb::unpack_weights));
  m.impl("quantize_acts", TORCH_BOX(&blb::quantize_acts_op<blb::Cuda>));
  m.impl("gemm_acc", TORCH_BOX(&blb::gemm_acc));
  m.impl("linear", TORCH_BOX(&blb::linear));
  m.impl("linear_q", TORCH_BOX(&blb::linear_q_op<blb::Cuda>));
  m.impl("linear_train", TORCH_BOX(&blb::linear_train_op<blb::Cuda>));
}
