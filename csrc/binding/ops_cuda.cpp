// ops_cuda.cpp - CUDA kernels of the torch.ops.bitlinear operators (schemas: bitlinear/ops.py),
// built only with CUDA. Each op: the shared frame (common.h), a device guard, a torch-allocated
// workspace, and one asynchronous call into the C API on torch's current stream (no host sync,
// so CUDA graphs capture it). fake_quant_weights has no CUDA kernel: the dispatcher runs the
// pure-PyTorch default kernel for it.
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

using Guard = torch::stable::accelerator::DeviceGuard;

std::tuple<Tensor, Tensor> quantize_weights(Tensor weight, double eps, bool per_channel) {
  Guard guard(weight.get_device_index());
  WeightsFrame f = weights_frame(weight, per_channel, /*packed_out=*/true);
  const size_t wsb = bl_cuda_quantize_weights_workspace_bytes(f.N, f.K, per_channel);
  Tensor ws = workspace(wsb, f.w);
  check_status(bl_cuda_quantize_weights(f.w.const_data_ptr<float>(), f.N, f.K, f.K,
                                        static_cast<float>(eps), per_channel,
                                        f.scale.mutable_data_ptr<float>(),
                                        f.out.mutable_data_ptr<uint8_t>(), ws.mutable_data_ptr(),
                                        current_stream(f.w)),
               "quantize_weights (cuda)");
  return {f.scale, f.out};
}

Tensor unpack_weights(Tensor w_packed, int64_t K) {
  Guard guard(w_packed.get_device_index());
  UnpackFrame f = unpack_frame(w_packed, K);
  check_status(bl_cuda_unpack_weights(w_packed.const_data_ptr<uint8_t>(), f.N, f.K,
                                      f.wq.mutable_data_ptr<int8_t>(), f.K,
                                      current_stream(w_packed)),
               "unpack_weights (cuda)");
  return f.wq;
}

std::tuple<Tensor, Tensor, Tensor> quantize_acts(Tensor x, double eps, bool per_token) {
  Guard guard(x.get_device_index());
  ActsFrame f = acts_frame(x);
  if (f.M == 0) return {f.xq, f.scale, f.rowsum};
  Tensor ws = workspace(bl_cuda_quantize_acts_workspace_bytes(f.M, f.K, per_token), x);
  check_status(bl_cuda_quantize_acts(f.x.const_data_ptr(), f.dt, f.M, f.K, f.ldx,
                                     static_cast<float>(eps), per_token,
                                     f.xq.mutable_data_ptr<int8_t>(), bl_padded_k(f.K),
                                     f.scale.mutable_data_ptr<float>(),
                                     f.rowsum.mutable_data_ptr<int32_t>(), ws.mutable_data_ptr(),
                                     current_stream(x)),
               "quantize_acts (cuda)");
  return {f.xq, f.scale, f.rowsum};
}

Tensor gemm_acc(Tensor xq, Tensor w_packed, int64_t K) {
  Guard guard(xq.get_device_index());
  GemmFrame f = gemm_frame(xq, w_packed, K);
  if (f.M == 0) return f.acc;
  const size_t wsb = bl_cuda_linear_workspace_bytes(f.M, f.N, f.K);
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
  Guard guard(x.get_device_index());
  LinearFrame f = linear_frame(x, w_scale, w_packed, bias, K);
  if (f.M == 0) return f.y;
  const size_t wsb = bl_cuda_linear_workspace_bytes(f.M, f.N, f.K);
  Tensor ws = workspace(wsb, x);
  check_status(bl_cuda_linear(f.x.const_data_ptr(), f.dt, f.M, f.K, f.ldx,
                              w_packed.const_data_ptr<uint8_t>(), f.N,
                              w_scale.const_data_ptr<float>(), f.w_per_channel, f.bias,
                              static_cast<float>(eps), per_token, f.y.mutable_data_ptr(), f.dt,
                              f.N, ws.mutable_data_ptr(), wsb, current_stream(x)),
               "linear (cuda)");
  return f.y;
}

}  // namespace
}  // namespace blb

STABLE_TORCH_LIBRARY_IMPL(bitlinear, CUDA, m) {
  m.impl("quantize_weights", TORCH_BOX(&blb::quantize_weights));
  m.impl("unpack_weights", TORCH_BOX(&blb::unpack_weights));
  m.impl("quantize_acts", TORCH_BOX(&blb::quantize_acts));
  m.impl("gemm_acc", TORCH_BOX(&blb::gemm_acc));
  m.impl("linear", TORCH_BOX(&blb::linear));
}
