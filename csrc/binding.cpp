// binding.cpp - the only torch-aware native file: checks tensors, allocates outputs through
// torch, calls the C API (csrc/bitlinear.h) and registers the ops under torch.ops.bitlinear.
// Built against the LibTorch stable ABI (TORCH_TARGET_VERSION 2.10) and Python's limited API,
// so one build serves several torch and Python versions.
#include <Python.h>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#ifdef BITLINEAR_WITH_CUDA
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#endif

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "bitlinear.h"

using torch::stable::Tensor;
using ST = torch::headeronly::ScalarType;

namespace {

// Turns a C status into a Python RuntimeError naming the op.
void check_status(bl_status st, const char* what) {
  STD_TORCH_CHECK(st == BL_OK, "bitlinear: ", what, " failed: ", bl_status_str(st),
                  " (status ", static_cast<int>(st), ")");
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
                  " must be on the same device (", an, " on ",
                  a.is_cuda() ? "cuda" : "cpu", ", ", bn, " on ", b.is_cuda() ? "cuda" : "cpu",
                  ")");
}

void check_packed(const Tensor& packed, int64_t K) {
  STD_TORCH_CHECK(K >= 1, "bitlinear: in_features must be >= 1, got ", K);
  STD_TORCH_CHECK(packed.scalar_type() == ST::Byte, "bitlinear: w_packed must be uint8");
  STD_TORCH_CHECK(packed.dim() == 2 && packed.size(0) >= 1 &&
                      packed.size(1) == bl_packed_row_bytes(K),
                  "bitlinear: w_packed must have shape [out_features, ", bl_packed_row_bytes(K),
                  "] for in_features=", K, ", got ", packed.dim() == 2 ? "" : "a non-2-D tensor ",
                  packed.dim() == 2 ? packed.size(0) : 0, "x",
                  packed.dim() == 2 ? packed.size(1) : 0);
  STD_TORCH_CHECK(packed.is_contiguous(), "bitlinear: w_packed must be contiguous");
}

int nthreads() { return static_cast<int>(torch::stable::get_num_threads()); }

Tensor empty_on(std::vector<int64_t> sizes, ST dtype, const Tensor& like) {
  return torch::stable::new_empty(like, sizes, dtype);
}

// x as rows of K with unit inner stride: returns the tensor to read and its row stride.
std::pair<Tensor, int64_t> as_rows(const Tensor& x, int64_t K) {
  if (x.dim() == 2 && x.stride(1) == 1 && x.stride(0) >= K) return {x, x.stride(0)};
  if (x.is_contiguous()) return {x, K};
  return {torch::stable::contiguous(x), K};
}

#ifdef BITLINEAR_WITH_CUDA
struct CUstream_st* cuda_stream(const Tensor& t) {
  void* s = nullptr;
  STD_TORCH_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &s) == 0,
                  "bitlinear: could not get the current CUDA stream");
  return static_cast<struct CUstream_st*>(s);
}
#define BL_CUDA_GUARD(t) torch::stable::accelerator::DeviceGuard guard_((t).get_device_index())
#else
#define BL_CUDA_NOT_BUILT(t) \
  STD_TORCH_CHECK(!(t).is_cuda(), "bitlinear: this build has no CUDA kernels (see python -m bitlinear info)")
#endif

// ------------------------------------------------------------------ ops
std::tuple<Tensor, Tensor> quantize_weights(Tensor weight, double eps, bool per_channel) {
  STD_TORCH_CHECK(weight.dim() == 2, "bitlinear: weight must be 2-D [out_features, in_features]");
  float_dtype(weight, "weight");
  const int64_t N = weight.size(0), K = weight.size(1);
  STD_TORCH_CHECK(N >= 1 && K >= 1, "bitlinear: weight must be non-empty, got ", N, "x", K);
  Tensor w = torch::stable::contiguous(torch::stable::to(weight, ST::Float));
  Tensor scale = empty_on({per_channel ? N : 1}, ST::Float, w);
  Tensor packed = empty_on({N, bl_packed_row_bytes(K)}, ST::Byte, w);
  if (w.is_cuda()) {
#ifdef BITLINEAR_WITH_CUDA
    BL_CUDA_GUARD(w);
    size_t wsb = bl_cuda_quantize_weights_workspace_bytes(N, K, per_channel);
    Tensor ws = empty_on({static_cast<int64_t>(wsb > 0 ? wsb : 1)}, ST::Byte, w);
    check_status(bl_cuda_quantize_weights(w.const_data_ptr<float>(), N, K, K,
                                          static_cast<float>(eps), per_channel,
                                          scale.mutable_data_ptr<float>(),
                                          packed.mutable_data_ptr<uint8_t>(),
                                          ws.mutable_data_ptr(), cuda_stream(w)),
                 "quantize_weights (cuda)");
#else
    BL_CUDA_NOT_BUILT(w);
#endif
  } else {
    bl_status st = bl_quantize_weights(w.const_data_ptr<float>(), N, K, K, static_cast<float>(eps),
                                       per_channel, scale.mutable_data_ptr<float>(),
                                       packed.mutable_data_ptr<uint8_t>(), nthreads());
    STD_TORCH_CHECK(st != BL_ERR_NONFINITE, "bitlinear: weight contains NaN or Inf; cannot quantize");
    check_status(st, "quantize_weights");
  }
  return {scale, packed};
}

// CPU only: on CUDA the training forward stays in torch (bitlinear/reference.py).
std::tuple<Tensor, Tensor> fake_quant_weights(Tensor weight, double eps, bool per_channel) {
  STD_TORCH_CHECK(weight.dim() == 2, "bitlinear: weight must be 2-D [out_features, in_features]");
  STD_TORCH_CHECK(!weight.is_cuda(), "bitlinear: fake_quant_weights runs on the CPU only");
  float_dtype(weight, "weight");
  const int64_t N = weight.size(0), K = weight.size(1);
  STD_TORCH_CHECK(N >= 1 && K >= 1, "bitlinear: weight must be non-empty, got ", N, "x", K);
  Tensor w = torch::stable::contiguous(torch::stable::to(weight, ST::Float));
  Tensor scale = empty_on({per_channel ? N : 1}, ST::Float, w);
  Tensor wdq = empty_on({N, K}, ST::Float, w);
  bl_status st = bl_fake_quant_weights(w.const_data_ptr<float>(), N, K, K, static_cast<float>(eps),
                                       per_channel, scale.mutable_data_ptr<float>(),
                                       wdq.mutable_data_ptr<float>(), K, nthreads());
  check_status(st, "fake_quant_weights");
  return {scale, wdq};
}

Tensor unpack_weights(Tensor packed, int64_t K) {
  check_packed(packed, K);
  const int64_t N = packed.size(0);
  Tensor wq = empty_on({N, K}, ST::Char, packed);
  if (packed.is_cuda()) {
#ifdef BITLINEAR_WITH_CUDA
    BL_CUDA_GUARD(packed);
    check_status(bl_cuda_unpack_weights(packed.const_data_ptr<uint8_t>(), N, K,
                                        wq.mutable_data_ptr<int8_t>(), K, cuda_stream(packed)),
                 "unpack_weights (cuda)");
#else
    BL_CUDA_NOT_BUILT(packed);
#endif
  } else {
    check_status(bl_unpack_weights(packed.const_data_ptr<uint8_t>(), N, K,
                                   wq.mutable_data_ptr<int8_t>(), K),
                 "unpack_weights");
  }
  return wq;
}

std::tuple<Tensor, Tensor, Tensor> quantize_acts(Tensor x, double eps, bool per_token) {
  STD_TORCH_CHECK(x.dim() == 2, "bitlinear: quantize_acts expects a 2-D input [M, K]");
  const bl_dtype dt = float_dtype(x, "x");
  const int64_t M = x.size(0), K = x.size(1), Kp = bl_padded_k(K);
  STD_TORCH_CHECK(K >= 1, "bitlinear: the input's last dimension must be >= 1");
  auto [xr, ldx] = as_rows(x, K);
  Tensor xq = empty_on({M, Kp}, ST::Char, x);
  Tensor scale = empty_on({M}, ST::Float, x);
  Tensor rowsum = empty_on({M}, ST::Int, x);
  if (M == 0) return {xq, scale, rowsum};
  if (x.is_cuda()) {
#ifdef BITLINEAR_WITH_CUDA
    BL_CUDA_GUARD(x);
    size_t wsb = bl_cuda_quantize_acts_workspace_bytes(M, K, per_token);
    Tensor ws = empty_on({static_cast<int64_t>(wsb > 0 ? wsb : 1)}, ST::Byte, x);
    check_status(bl_cuda_quantize_acts(xr.const_data_ptr(), dt, M, K, ldx, static_cast<float>(eps),
                                       per_token, xq.mutable_data_ptr<int8_t>(), Kp,
                                       scale.mutable_data_ptr<float>(),
                                       rowsum.mutable_data_ptr<int32_t>(), ws.mutable_data_ptr(),
                                       cuda_stream(x)),
                 "quantize_acts (cuda)");
#else
    BL_CUDA_NOT_BUILT(x);
#endif
  } else {
    check_status(bl_quantize_acts(xr.const_data_ptr(), dt, M, K, ldx, static_cast<float>(eps),
                                  per_token, xq.mutable_data_ptr<int8_t>(), Kp,
                                  scale.mutable_data_ptr<float>(),
                                  rowsum.mutable_data_ptr<int32_t>(), nthreads()),
                 "quantize_acts");
  }
  return {xq, scale, rowsum};
}

Tensor gemm_acc(Tensor xq, Tensor packed, int64_t K) {
  check_packed(packed, K);
  check_same_device(xq, packed, "x_q", "w_packed");
  STD_TORCH_CHECK(xq.scalar_type() == ST::Char, "bitlinear: x_q must be int8");
  STD_TORCH_CHECK(xq.dim() == 2 && xq.size(1) == bl_padded_k(K),
                  "bitlinear: x_q must have shape [M, ", bl_padded_k(K), "]");
  STD_TORCH_CHECK(xq.stride(1) == 1 && xq.stride(0) >= bl_padded_k(K),
                  "bitlinear: x_q rows must be contiguous");
  const int64_t M = xq.size(0), N = packed.size(0);
  Tensor acc = empty_on({M, N}, ST::Int, xq);
  if (M == 0) return acc;
  if (xq.is_cuda()) {
#ifdef BITLINEAR_WITH_CUDA
    BL_CUDA_GUARD(xq);
    size_t wsb = bl_cuda_linear_workspace_bytes(M, N, K);
    Tensor ws = empty_on({static_cast<int64_t>(wsb > 0 ? wsb : 1)}, ST::Byte, xq);
    check_status(bl_cuda_gemm_acc(xq.const_data_ptr<int8_t>(), xq.stride(0), nullptr,
                                  packed.const_data_ptr<uint8_t>(), M, N, K,
                                  acc.mutable_data_ptr<int32_t>(), N, ws.mutable_data_ptr(), wsb,
                                  cuda_stream(xq)),
                 "gemm_acc (cuda)");
#else
    BL_CUDA_NOT_BUILT(xq);
#endif
  } else {
    check_status(bl_gemm_acc(xq.const_data_ptr<int8_t>(), xq.stride(0), nullptr,
                             packed.const_data_ptr<uint8_t>(), M, N, K,
                             acc.mutable_data_ptr<int32_t>(), N, nthreads()),
                 "gemm_acc");
  }
  return acc;
}

Tensor linear(Tensor x, Tensor w_scale, Tensor w_packed, std::optional<Tensor> bias, double eps,
              int64_t K, bool per_token) {
  const bl_dtype dt = float_dtype(x, "x");
  check_packed(w_packed, K);
  const int64_t N = w_packed.size(0);
  STD_TORCH_CHECK(x.dim() >= 1 && x.size(x.dim() - 1) == K, "bitlinear: expected input with last "
                  "dimension in_features=", K, ", got ", x.dim() >= 1 ? x.size(x.dim() - 1) : 0);
  check_same_device(x, w_packed, "x", "w_packed");
  check_same_device(w_scale, w_packed, "w_scale", "w_packed");
  STD_TORCH_CHECK(w_scale.scalar_type() == ST::Float && w_scale.is_contiguous() &&
                      (w_scale.numel() == 1 || w_scale.numel() == N),
                  "bitlinear: w_scale must be a contiguous float32 tensor of 1 or ", N,
                  " elements, got ", w_scale.numel());
  const float* bias_ptr = nullptr;
  if (bias.has_value() && bias->defined()) {
    check_same_device(*bias, w_packed, "bias", "w_packed");
    STD_TORCH_CHECK(bias->scalar_type() == ST::Float && bias->is_contiguous() && bias->numel() == N,
                    "bitlinear: bias must be a contiguous float32 tensor of ", N, " elements");
    bias_ptr = bias->const_data_ptr<float>();
  }
  const int64_t M = x.numel() / K;
  std::vector<int64_t> out_sizes;
  for (int64_t i = 0; i + 1 < x.dim(); i++) out_sizes.push_back(x.size(i));
  out_sizes.push_back(N);
  Tensor y = empty_on(out_sizes, x.scalar_type(), x);
  if (M == 0) return y;
  Tensor x2 = torch::stable::reshape(x.is_contiguous() ? x : torch::stable::contiguous(x), {M, K});
  auto [xr, ldx] = as_rows(x2, K);
  const int per_channel = w_scale.numel() == N && N > 1;
  if (x.is_cuda()) {
#ifdef BITLINEAR_WITH_CUDA
    BL_CUDA_GUARD(x);
    size_t wsb = bl_cuda_linear_workspace_bytes(M, N, K);
    Tensor ws = empty_on({static_cast<int64_t>(wsb > 0 ? wsb : 1)}, ST::Byte, x);
    check_status(bl_cuda_linear(xr.const_data_ptr(), dt, M, K, ldx,
                                w_packed.const_data_ptr<uint8_t>(), N,
                                w_scale.const_data_ptr<float>(), per_channel, bias_ptr,
                                static_cast<float>(eps), per_token, y.mutable_data_ptr(), dt, N,
                                ws.mutable_data_ptr(), wsb, cuda_stream(x)),
                 "linear (cuda)");
#else
    BL_CUDA_NOT_BUILT(x);
#endif
  } else {
    size_t wsb = bl_linear_workspace_bytes(M, K);
    Tensor ws = empty_on({static_cast<int64_t>(wsb > 0 ? wsb : 1)}, ST::Byte, x);
    check_status(bl_linear(xr.const_data_ptr(), dt, M, K, ldx, w_packed.const_data_ptr<uint8_t>(), N,
                           w_scale.const_data_ptr<float>(), per_channel, bias_ptr,
                           static_cast<float>(eps), per_token, y.mutable_data_ptr(), dt, N,
                           ws.mutable_data_ptr(), nthreads()),
                 "linear");
  }
  return y;
}

}  // namespace

STABLE_TORCH_LIBRARY(bitlinear, m) {
  m.def("quantize_weights(Tensor weight, float eps, bool per_channel) -> (Tensor, Tensor)");
  m.def("fake_quant_weights(Tensor weight, float eps, bool per_channel) -> (Tensor, Tensor)");
  m.def("unpack_weights(Tensor w_packed, int in_features) -> Tensor");
  m.def("quantize_acts(Tensor x, float eps, bool per_token) -> (Tensor, Tensor, Tensor)");
  m.def("gemm_acc(Tensor x_q, Tensor w_packed, int in_features) -> Tensor");
  m.def("linear(Tensor x, Tensor w_scale, Tensor w_packed, Tensor? bias, float eps, "
        "int in_features, bool per_token) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(bitlinear, CPU, m) {
  m.impl("quantize_weights", TORCH_BOX(&quantize_weights));
  m.impl("fake_quant_weights", TORCH_BOX(&fake_quant_weights));
  m.impl("unpack_weights", TORCH_BOX(&unpack_weights));
  m.impl("quantize_acts", TORCH_BOX(&quantize_acts));
  m.impl("gemm_acc", TORCH_BOX(&gemm_acc));
  m.impl("linear", TORCH_BOX(&linear));
}

#ifdef BITLINEAR_WITH_CUDA
STABLE_TORCH_LIBRARY_IMPL(bitlinear, CUDA, m) {
  m.impl("quantize_weights", TORCH_BOX(&quantize_weights));
  m.impl("unpack_weights", TORCH_BOX(&unpack_weights));
  m.impl("quantize_acts", TORCH_BOX(&quantize_acts));
  m.impl("gemm_acc", TORCH_BOX(&gemm_acc));
  m.impl("linear", TORCH_BOX(&linear));
}
#endif

// ------------------------------------------------------------------ Python module
// Plain functions about the build and the CPU path; they touch no tensors.
extern "C" {
static PyObject* py_isa_get(PyObject*, PyObject*) { return PyLong_FromLong(bl_isa_get()); }
static PyObject* py_isa_best(PyObject*, PyObject*) { return PyLong_FromLong(bl_isa_best()); }
static PyObject* py_isa_set(PyObject*, PyObject* arg) {
  long isa = PyLong_AsLong(arg);
  if (isa == -1 && PyErr_Occurred()) return nullptr;
  if (bl_isa_set(static_cast<int>(isa)) != BL_OK) {
    PyErr_Format(PyExc_ValueError, "bitlinear: CPU path '%s' is not available on this build/CPU",
                 bl_isa_name(static_cast<int>(isa)));
    return nullptr;
  }
  Py_RETURN_NONE;
}
static PyObject* py_isa_supported(PyObject*, PyObject* arg) {
  long isa = PyLong_AsLong(arg);
  if (isa == -1 && PyErr_Occurred()) return nullptr;
  return PyBool_FromLong(bl_isa_supported(static_cast<int>(isa)));
}
static PyObject* py_isa_compiled(PyObject*, PyObject* arg) {
  long isa = PyLong_AsLong(arg);
  if (isa == -1 && PyErr_Occurred()) return nullptr;
  return PyBool_FromLong(bl_isa_compiled(static_cast<int>(isa)));
}
static PyObject* py_isa_name(PyObject*, PyObject* arg) {
  long isa = PyLong_AsLong(arg);
  if (isa == -1 && PyErr_Occurred()) return nullptr;
  return PyUnicode_FromString(bl_isa_name(static_cast<int>(isa)));
}
static PyObject* py_cuda_built(PyObject*, PyObject*) {
#ifdef BITLINEAR_WITH_CUDA
  return PyBool_FromLong(bl_cuda_compiled());
#else
  Py_RETURN_FALSE;
#endif
}
static PyObject* py_format_version(PyObject*, PyObject*) { return PyLong_FromLong(BL_FORMAT_VERSION); }
// PEP 562: the seed's _bitlinear.prepare_weights / _bitlinear.bitlinear live in Python
// (bitlinear/_compat.py); resolve them lazily so importing this module never recurses.
static PyObject* py_getattr(PyObject*, PyObject* name) {
  if (PyUnicode_CompareWithASCIIString(name, "prepare_weights") != 0 &&
      PyUnicode_CompareWithASCIIString(name, "bitlinear") != 0) {
    PyErr_Format(PyExc_AttributeError, "module '_bitlinear' has no attribute '%U'", name);
    return nullptr;
  }
  PyObject* compat = PyImport_ImportModule("bitlinear._compat");
  if (!compat) return nullptr;
  PyObject* r = PyObject_GetAttr(compat, name);
  Py_DECREF(compat);
  return r;
}

static PyMethodDef methods[] = {
    {"cpu_isa", py_isa_get, METH_NOARGS, "Index of the CPU kernel path in use."},
    {"cpu_isa_best", py_isa_best, METH_NOARGS, "Fastest CPU path this CPU supports."},
    {"cpu_isa_set", py_isa_set, METH_O, "Select a CPU kernel path by index."},
    {"cpu_isa_supported", py_isa_supported, METH_O, "Whether a CPU path can run here."},
    {"cpu_isa_compiled", py_isa_compiled, METH_O, "Whether a CPU path is in this build."},
    {"cpu_isa_name", py_isa_name, METH_O, "Name of a CPU path index."},
    {"cuda_built", py_cuda_built, METH_NOARGS, "Whether CUDA kernels are compiled in."},
    {"format_version", py_format_version, METH_NOARGS, "Packed weight format version."},
    {"__getattr__", py_getattr, METH_O, nullptr},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_bitlinear",
                                        "bitlinear native kernels (ops live in torch.ops.bitlinear)",
                                        -1, methods};

PyMODINIT_FUNC PyInit__bitlinear(void) { return PyModule_Create(&module_def); }
}
