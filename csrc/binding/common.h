// common.h - what the binding files share: C status -> error, output and workspace allocation
// through torch, and one "frame" per op that checks the tensors and allocates the outputs the
// same way on every device. The per-device files (ops_cpu.cpp, ops_cuda.cpp) only call the C API.
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

}  // namespace blb
