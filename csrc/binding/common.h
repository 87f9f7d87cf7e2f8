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

// Uninitialised tensor of `sizes` on the device of `like`.
Tensor empty_like_device(const std::vector<int64_t>& sizes, ST dtype, const Tensor& like);

// Scratch of at least `bytes` bytes (at least one) on the device of `like`.
Tensor workspace(size_t bytes, const Tensor& like);

// ------------------------------------------------------------------ per-op frames
struct WeightsFrame {  // quantize_weights, fake_quant_weights
  Tensor w;            // float32, contiguous [N, K]
  int64_t N, K;
  Tensor scale;        // float32 [N] or [1]
  Tensor out;          // packed uint8 [N, Kp/4], or float32 [N, K] for fake_quant_weights
};
WeightsFrame weights_frame(const Tensor& weight, bool per_channel, bool packed_out);

struct UnpackFrame {
  int64_t N, K;
  Tensor wq;  // int8 [N, K]
};
UnpackFrame unpack_frame(const Tensor& w_packed, int64_t K);

struct ActsFrame {
  Tensor x;  // rows of K with unit inner stride
  bl_dtype dt;
  int64_t M, K, ldx;
  Tensor xq, scale, rowsum;  // int8 [M, Kp], float32 [M], int32 [M]
};
ActsFrame acts_frame(const Tensor& x);

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
                         const std::optional<Tensor>& bias, int64_t K);

}  // namespace blb
