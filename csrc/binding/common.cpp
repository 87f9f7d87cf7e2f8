// common.cpp - the device-independent part of every op: tensor checks and output allocation.
#include "common.h"

namespace blb {

void check_status(bl_status st, const char* op) {
  STD_TORCH_CHECK(st == BL_OK, "bitlinear: ", op, " failed: ", bl_status_str(st), " (status ",
                  static_cast<int>(st), ")");
}

Tensor empty_like_device(const std::vector<int64_t>& sizes, ST dtype, const Tensor& like) {
  return torch::stable::new_empty(like, sizes, dtype);
}

Tensor workspace(size_t bytes, const Tensor& like) {
  return empty_like_device({static_cast<int64_t>(bytes > 0 ? bytes : 1)}, ST::Byte, like);
}

bl_dtype float_dtype(const Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case ST::Float: return BL_F32;
    case ST::Half: return BL_F16;
    case ST::BFloat16: return BL_BF16;
    default:
      STD_TORCH_CHECK(false, "bitlinear: ", name,
                      " must be float32, float16 or bfloat16, got dtype code ",
                      static_cast<int>(t.scalar_type()));
  }
  return BL_F32;
}

void check_same_device(const Tensor& a, const Tensor& b, const char* an, const char* bn) {
  STD_TORCH_CHECK(a.device() == b.device(), "bitlinear: ", an, " and ", bn,
                  " must be on the same device");
}

namespace {

// An eps whose scales are positive normal floats (bitlinear.h: BL_MIN_EPS).
void check_eps(double eps) {
  STD_TORCH_CHECK(eps >= BL_MIN_EPS && eps <= 3.4028234663852886e38, "bitlinear: eps must be a "
                  "finite float >= 127 * FLT_MIN (", BL_MIN_EPS, "), got ", eps);
}

void check_in_features(int64_t K) {
  STD_TORCH_CHECK(K >= 1 && K <= BL_MAX_K, "bitlinear: in_features must be in [1, ", BL_MAX_K,
                  "] (int32 accumulators), got ", K);
}

void check_packed(const Tensor& packed, int64_t K) {
  check_in_features(K);
  STD_TORCH_CHECK(packed.scalar_type() == ST::Byte, "bitlinear: w_packed must be uint8");
  const bool two_d = packed.dim() == 2;
  STD_TORCH_CHECK(two_d && packed.size(0) >= 1 && packed.size(1) == bl_packed_row_bytes(K),
                  "bitlinear: w_packed must have shape [out_features, ", bl_packed_row_bytes(K),
                  "] for in_features=", K, ", got ", two_d ? "" : "a non-2-D tensor ",
                  two_d ? packed.size(0) : 0, "x", two_d ? packed.size(1) : 0);
  STD_TORCH_CHECK(packed.is_contiguous(), "bitlinear: w_packed must be contiguous");
}

// w_scale and bias for N outputs of w_packed: -> bias pointer (nullptr: none).
const float* check_scale_bias(const Tensor& w_scale, const Tensor& w_packed,
                              const std::optional<Tensor>& bias, int64_t N) {
  check_same_device(w_scale, w_packed, "w_scale", "w_packed");
  STD_TORCH_CHECK(w_scale.scalar_type() == ST::Float && w_scale.is_contiguous() &&
                      w_scale.dim() == 1 && (w_scale.numel() == 1 || w_scale.numel() == N),
                  "bitlinear: w_scale must be a contiguous 1-D float32 tensor of 1 or ", N,
                  " elements, got ", w_scale.numel());
  if (!bias.has_value() || !bias->defined()) return nullptr;
  check_same_device(*bias, w_packed, "bias", "w_packed");
  STD_TORCH_CHECK(bias->scalar_type() == ST::Float && bias->is_contiguous() && bias->dim() == 1 &&
                      bias->numel() == N,
                  "bitlinear: bias must be a contiguous 1-D float32 tensor of ", N, " elements");
  return bias->const_data_ptr<float>();
}

void check_xq(const Tensor& xq, const Tensor& w_packed, int64_t K) {
  check_same_device(xq, w_packed, "x_q", "w_packed");
  STD_TORCH_CHECK(xq.scalar_type() == ST::Char, "bitlinear: x_q must be int8");
  STD_TORCH_CHECK(xq.dim() == 2 && xq.size(1) == bl_padded_k(K),
                  "bitlinear: x_q must have shape [M, ", bl_padded_k(K), "]");
  STD_TORCH_CHECK(xq.stride(1) == 1 && xq.stride(0) >= bl_padded_k(K),
                  "bitlinear: x_q rows must be contiguous");
}

// x as rows of K with unit inner stride, and the row stride.
std::pair<Tensor, int64_t> as_rows(const Tensor& x, int64_t K) {
  if (x.dim() == 2 && x.stride(1) == 1 && x.stride(0) >= K) return {x, x.stride(0)};
  if (x.is_contiguous()) return {x, K};
  return {torch::stable::contiguous(x), K};
}

}  // namespace

WeightsFrame weights_frame(const Tensor& weight, bool per_channel, double eps) {
  check_eps(eps);
  STD_TORCH_CHECK(weight.dim() == 2, "bitlinear: weight must be 2-D [out_features, in_features]");
  const bl_dtype dt = float_dtype(weight, "weight");
  const int64_t N = weight.size(0), K = weight.size(1);
  STD_TORCH_CHECK(N >= 1 && K >= 1, "bitlinear: weight must be non-empty, got ", N, "x", K);
  check_in_features(K);
  auto [w, ldw] = as_rows(weight, K);  // half-precision weights are read as they are
  Tensor scale = empty_like_device({per_channel ? N : 1}, ST::Float, w);
  return {w, dt, N, K, ldw, scale, empty_like_device({N, bl_packed_row_bytes(K)}, ST::Byte, w)};
}

UnpackFrame unpack_frame(const Tensor& w_packed, int64_t K, std::optional<ST> dtype) {
  check_packed(w_packed, K);
  const int64_t N = w_packed.size(0);
  Tensor wq = empty_like_device({N, K}, dtype.value_or(ST::Char), w_packed);
  return {N, K, wq, dtype.has_value() ? float_dtype(wq, "dtype") : BL_I8};
}

ActsFrame acts_frame(const Tensor& x, double eps) {
  check_eps(eps);
  STD_TORCH_CHECK(x.dim() == 2, "bitlinear: quantize_acts expects a 2-D input [M, K]");
  const bl_dtype dt = float_dtype(x, "x");
  const int64_t M = x.size(0), K = x.size(1);
  check_in_features(K);
  auto [xr, ldx] = as_rows(x, K);
  return {xr, dt, M, K, ldx, empty_like_device({M, bl_padded_k(K)}, ST::Char, x),
          empty_like_device({M}, ST::Float, x), empty_like_device({M}, ST::Int, x)};
}

GemmFrame gemm_frame(const Tensor& xq, const Tensor& w_packed, int64_t K) {
  check_packed(w_packed, K);
  check_xq(xq, w_packed, K);
  const int64_t M = xq.size(0), N = w_packed.size(0);
  return {M, N, K, empty_like_device({M, N}, ST::Int, xq)};
}

LinearFrame linear_frame(const Tensor& x, const Tensor& w_scale, const Tensor& w_packed,
                         const std::optional<Tensor>& bias, int64_t K, double eps) {
  check_eps(eps);
  const bl_dtype dt = float_dtype(x, "x");
  check_packed(w_packed, K);
  const int64_t N = w_packed.size(0);
  STD_TORCH_CHECK(x.dim() >= 1 && x.size(x.dim() - 1) == K, "bitlinear: expected input with last "
                  "dimension in_features=", K, ", got ", x.dim() >= 1 ? x.size(x.dim() - 1) : 0);
  check_same_device(x, w_packed, "x", "w_packed");
  const float* bias_ptr = check_scale_bias(w_scale, w_packed, bias, N);
  const int64_t M = x.numel() / K;
  std::vector<int64_t> out_sizes;
  for (int64_t i = 0; i + 1 < x.dim(); i++) out_sizes.push_back(x.size(i));
  out_sizes.push_back(N);
  Tensor y = empty_like_device(out_sizes, x.scalar_type(), x);
  Tensor rows = x;
  int64_t ldx = K;
  if (M > 0) {
    Tensor x2 = torch::stable::reshape(x.is_contiguous() ? x : torch::stable::contiguous(x), {M, K});
    std::tie(rows, ldx) = as_rows(x2, K);
  }
  return {rows, dt, M, N, K, ldx, bias_ptr, w_scale.numel() == N && N > 1 ? 1 : 0, y};
}

LinearQFrame linear_q_frame(const Tensor& xq, const Tensor& x_scale, const Tensor& x_rowsum,
                            const Tensor& w_scale, const Tensor& w_packed,
                            const std::optional<Tensor>& bias, int64_t K, ST out_dtype) {
  check_packed(w_packed, K);
  check_xq(xq, w_packed, K);
  const int64_t M = xq.size(0), N = w_packed.size(0);
  for (const Tensor* t : {&x_scale, &x_rowsum})
    check_same_device(*t, w_packed, t == &x_scale ? "x_scale" : "x_rowsum", "w_packed");
  STD_TORCH_CHECK(x_scale.scalar_type() == ST::Float && x_scale.is_contiguous() &&
                      x_scale.numel() == M,
                  "bitlinear: x_scale must be a contiguous float32 tensor of ", M, " elements");
  STD_TORCH_CHECK(x_rowsum.scalar_type() == ST::Int && x_rowsum.is_contiguous() &&
                      x_rowsum.numel() == M,
                  "bitlinear: x_rowsum must be a contiguous int32 tensor of ", M, " elements");
  const float* bias_ptr = check_scale_bias(w_scale, w_packed, bias, N);
  Tensor y = empty_like_device({M, N}, out_dtype, xq);
  return {M, N, K, bias_ptr, w_scale.numel() == N && N > 1 ? 1 : 0, float_dtype(y, "out_dtype"),
          y};
}

TrainFrame train_frame(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                       bool per_channel, double eps) {
  float_dtype(x, "x");
  WeightsFrame w = weights_frame(weight, per_channel, eps);
  const int64_t K = w.K, N = w.N;
  STD_TORCH_CHECK(x.dim() >= 1 && x.size(x.dim() - 1) == K, "bitlinear: expected input with last "
                  "dimension in_features=", K, ", got ", x.dim() >= 1 ? x.size(x.dim() - 1) : 0);
  check_same_device(x, weight, "x", "weight");
  const int64_t M = x.numel() / K;
  Tensor x2 = torch::stable::reshape(x.is_contiguous() ? x : torch::stable::contiguous(x), {M, K});
  ActsFrame a = acts_frame(x2, eps);
  Tensor b;
  const float* bias_ptr = nullptr;
  if (bias.has_value() && bias->defined()) {
    check_same_device(*bias, weight, "bias", "weight");
    STD_TORCH_CHECK(bias->numel() == N, "bitlinear: bias must have ", N, " elements");
    float_dtype(*bias, "bias");
    b = torch::stable::contiguous(torch::stable::to(*bias, ST::Float));
    bias_ptr = b.const_data_ptr<float>();
  }
  std::vector<int64_t> out_sizes;
  for (int64_t i = 0; i + 1 < x.dim(); i++) out_sizes.push_back(x.size(i));
  out_sizes.push_back(N);
  return {w, a, b, bias_ptr, empty_like_device(out_sizes, x.scalar_type(), x)};
}

}  // namespace blb
