// common.h - what the binding files share: C status -> error, output and workspace allocation
// through torch, and one "frame" per op that checks the tensors and allocates the outputs the
// same way on every device, and the bodies of the ops that differ between devices only in the device
// guard and the C calls they make. The per-device files (ops_cpu.cpp, ops_cuda.cpp) only call the
// C API.
//
// These checks are the second line of defence: user input is validated in Python
// (bitlinear/_checks.py) with TypeError/ValueError; a direct torch.ops.bitlinear.* call that
// bypasses Python still never lets a kernel read out of bounds.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "bitlinear.h"

namespace blb {

using torch::stable::Tensor;
using ST = torch::headeronly::ScalarType;

// Turns a C status into a RuntimeError naming the op.
void check_status(bl_status st, const char* op);

// The bl_dtype of a float32/float16/bfloat16 tensor (RuntimeError naming it otherwise).
bl_dtype float_dtype(const Tensor& t, const char* name);

// Uninitialised tensor of `sizes` on the device of `like`.
Tensor empty_like_device(const std::vector<int64_t>& sizes, ST dtype, const Tensor& like);

// Scratch of at least `bytes` bytes (at least one) on the device of `like`.
Tensor workspace(size_t bytes, const Tensor& like);

// RuntimeError "bitlinear: <an> and <bn> must be on the same device" unless they are.
void check_same_device(const Tensor& a, const Tensor& b, const char* an, const char* bn);

// ------------------------------------------------------------------ per-op frames
struct WeightsFrame {  // quantize_weights
  Tensor w;            // float32/float16/bfloat16 rows [N, K] with unit inner stride
  bl_dtype dt;
  int64_t N, K, ldw;
  Tensor scale;        // float32 [N] or [1]
  Tensor packed;       // uint8 [N, Kp/4]
};
WeightsFrame weights_frame(const Tensor& weight, bool per_channel, double eps);

struct UnpackFrame {
  int64_t N, K;
  Tensor wq;  // [N, K]: int8, or the float dtype asked for
  bl_dtype dt;
};
UnpackFrame unpack_frame(const Tensor& w_packed, int64_t K, std::optional<ST> dtype);

struct ActsFrame {
  Tensor x;  // rows of K with unit inner stride
  bl_dtype dt;
  int64_t M, K, ldx;
  Tensor xq, scale, rowsum;  // int8 [M, Kp], float32 [M], int32 [M]
};
ActsFrame acts_frame(const Tensor& x, double eps);

struct GemmFrame {
  int64_t M, N, K;
  Tensor acc;  // int32 [M, N]
};
GemmFrame gemm_frame(const Tensor& xq, const Tensor& w_packed, int64_t K);

struct LinearFrame {
  Tensor x;  // rows of K with unit inner stride
  bl_dtype dt;
  int64_t M, N, K, ldx;
  const float* bias;  // nullptr without bias
  int w_per_channel;
  Tensor y;  // x's dtype, [..., N]
};
LinearFrame linear_frame(const Tensor& x, const Tensor& w_scale, const Tensor& w_packed,
                         const std::optional<Tensor>& bias, int64_t K, double eps);

struct LinearQFrame {  // linear_q: GEMM + epilogue from quantized activations
  int64_t M, N, K;
  const float* bias;
  int w_per_channel;
  bl_dtype ydt;
  Tensor y;  // [M, N]
};
LinearQFrame linear_q_frame(const Tensor& xq, const Tensor& x_scale, const Tensor& x_rowsum,
                            const Tensor& w_scale, const Tensor& w_packed,
                            const std::optional<Tensor>& bias, int64_t K, ST out_dtype);

struct TrainFrame {  // linear_train: quantize_weights + quantize_acts + linear_q
  WeightsFrame w;
  ActsFrame a;
  Tensor bias;  // float32 contiguous, or undefined
  const float* bias_ptr;
  Tensor y;  // x's dtype, [..., N]
};
TrainFrame train_frame(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                       bool per_channel, double eps);

// ------------------------------------------------------------------ op bodies shared by the devices
// The ops made of frames and the three steps of a device file only. Dev, a struct of that file,
// gives:
//   Dev::Guard, constructed from the op's first tensor: what keeps the call on that tensor's device
//     (CUDA: a device guard; CPU: nothing);
//   static void Dev::quantize(const WeightsFrame&, double eps, bool per_channel);
//   static void Dev::quantize(const ActsFrame&, double eps, bool per_token);
//   static void Dev::gemm_epilogue(xq, x_scale, x_rowsum, w_scale, w_packed, bias, w_per_channel,
//                                  M, N, K, y): y [M, N] (any row-major view of it) from quantized
//                                  activations; nothing when M is 0.
// The device file registers them as TORCH_BOX(&blb::linear_q_op<Dev>), and so on.
template <class Dev>
std::tuple<Tensor, Tensor> quantize_weights_op(Tensor weight, double eps, bool per_channel) {
  typename Dev::Guard guard(weight);
  WeightsFrame f = weights_frame(weight, per_channel, eps);
  Dev::quantize(f, eps, per_channel);
  return {f.scale, f.packed};
}

template <class Dev>
std::tuple<Tensor, Tensor, Tensor> quantize_acts_op(Tensor x, double eps, bool per_token) {
  typename Dev::Guard guard(x);
  ActsFrame f = acts_frame(x, eps);
  Dev::quantize(f, eps, per_token);
  return {f.xq, f.scale, f.rowsum};
}

template <class Dev>
Tensor linear_q_op(Tensor xq, Tensor x_scale, Tensor x_rowsum, Tensor w_scale, Tensor w_packed,
                   std::optional<Tensor> bias, int64_t K, ST out_dtype) {
  typename Dev::Guard guard(xq);
  LinearQFrame f = linear_q_frame(xq, x_scale, x_rowsum, w_scale, w_packed, bias, K, out_dtype);
  Dev::gemm_epilogue(xq, x_scale, x_rowsum, w_scale, w_packed, f.bias, f.w_per_channel, f.M, f.N,
                     f.K, f.y);
  return f.y;
}

template <class Dev>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> linear_train_op(Tensor x, Tensor weight,
                                                                   std::optional<Tensor> bias,
                                                                   double eps, bool per_token,
                                                                   bool per_channel) {
  typename Dev::Guard guard(x);
  TrainFrame f = train_frame(x, weight, bias, per_channel, eps);
  Dev::quantize(f.w, eps, per_channel);
  Dev::quantize(f.a, eps, per_token);
  Dev::gemm_epilogue(f.a.xq, f.a.scale, f.a.rowsum, f.w.scale, f.w.packed, f.bias_ptr,
                     per_channel && f.w.N > 1, f.a.M, f.w.N, f.w.K, f.y);
  return {f.y, f.a.xq, f.a.scale, f.w.scale, f.w.packed};
}

}  // namespace blb
