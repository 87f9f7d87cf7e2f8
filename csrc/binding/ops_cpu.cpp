// ops_cpu.cpp - CPU kernels of the torch.ops.bitlinear operators (schemas: bitlinear/ops.py).
// Each op: the shared frame (common.h), then one call into the C core on torch's thread count.
#include "common.h"

namespace blb {
namespace {

int nthreads() { return static_cast<int>(torch::stable::get_num_threads()); }

std::tuple<Tensor, Tensor> quantize_weights(Tensor weight, double eps, bool per_channel) {
  WeightsFrame f = weights_frame(weight, per_channel, /*packed_out=*/true);
  check_status(bl_quantize_weights(f.w.const_data_ptr<float>(), f.N, f.K, f.K,
                                   static_cast<float>(eps), per_channel,
                                   f.scale.mutable_data_ptr<float>(),
                                   f.out.mutable_data_ptr<uint8_t>(), nthreads()),
               "quantize_weights");
  return {f.scale, f.out};
}

std::tuple<Tensor, Tensor> fake_quant_weights(Tensor weight, double eps, bool per_channel) {
  WeightsFrame f = weights_frame(weight, per_channel, /*packed_out=*/false);
  check_status(bl_fake_quant_weights(f.w.const_data_ptr<float>(), f.N, f.K, f.K,
                                     static_cast<float>(eps), per_channel,
                                     f.scale.mutable_data_ptr<float>(),
                                     f.out.mutable_data_ptr<float>(), f.K, nthreads()),
               "fake_quant_weights");
  return {f.scale, f.out};
}

Tensor unpack_weights(Tensor w_packed, int64_t K) {
  UnpackFrame f = unpack_frame(w_packed, K);
  check_status(bl_unpack_weights(w_packed.const_data_ptr<uint8_t>(), f.N, f.K,
                                 f.wq.mutable_data_ptr<int8_t>(), f.K),
               "unpack_weights");
  return f.wq;
}

std::tuple<Tensor, Tensor, Tensor> quantize_acts(Tensor x, double eps, bool per_token) {
  ActsFrame f = acts_frame(x);
  if (f.M > 0)
    check_status(bl_quantize_acts(f.x.const_data_ptr(), f.dt, f.M, f.K, f.ldx,
                                  static_cast<float>(eps), per_token,
                                  f.xq.mutable_data_ptr<int8_t>(), bl_padded_k(f.K),
                                  f.scale.mutable_data_ptr<float>(),
                                  f.rowsum.mutable_data_ptr<int32_t>(), nthreads()),
                 "quantize_acts");
  return {f.xq, f.scale, f.rowsum};
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
  LinearFrame f = linear_frame(x, w_scale, w_packed, bias, K);
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
  m.impl("quantize_weights", TORCH_BOX(&blb::quantize_weights));
  m.impl("fake_quant_weights", TORCH_BOX(&blb::fake_quant_weights));
  m.impl("unpack_weights", TORCH_BOX(&blb::unpack_weights));
  m.impl("quantize_acts", TORCH_BOX(&blb::quantize_acts));
  m.impl("gemm_acc", TORCH_BOX(&blb::gemm_acc));
  m.impl("linear", TORCH_BOX(&blb::linear));
}
