// fastpath.cpp - `_bitlinear.linear_cpu` / `_bitlinear.linear_cuda`: the deployed forward on raw
// pointers, for BitLinear's eager fast path (bitlinear/_fast.py); `q4_linear_cpu`, the int4 head
// (bitlinear/head.py); `attn_decode_cpu` (bitlinear/attention.py); `rms_norm_cpu`
// (bitlinear/norm.py). No torch headers and no tensor
// objects: the caller (Python) has checked the tensors (dtype, device, shape, contiguity) and
// keeps them alive for the call, so a call costs about one C function call instead of a
// dispatcher round trip through the stable ABI. The C core still checks every size and pointer
// and returns a status, raised here as RuntimeError naming it. Python's limited API only.
#include <Python.h>

#include <cstdint>
#include <cstdlib>

#include "bitlinear.h"

namespace {

// Arguments in order; pointers and sizes travel as Python ints.
bool ll(PyObject* const* args, Py_ssize_t i, long long* out) {
  *out = PyLong_AsLongLong(args[i]);
  return !(*out == -1 && PyErr_Occurred());
}

bool ptr(PyObject* const* args, Py_ssize_t i, void** out) {
  *out = PyLong_AsVoidPtr(args[i]);
  return !(*out == nullptr && PyErr_Occurred());
}

// The argument count of a call (TypeError naming the function otherwise).
bool arity(Py_ssize_t nargs, Py_ssize_t want, const char* name) {
  if (nargs == want) return true;
  PyErr_Format(PyExc_TypeError, "bitlinear: %s takes %d arguments, got %d", name, (int)want,
               (int)nargs);
  return false;
}

// A float32 / float16 / bfloat16 dtype code (ValueError otherwise: a bl_dtype cast stays in range).
bool float_dtype_code(long long code) {
  if (code >= BL_F32 && code <= BL_BF16) return true;
  PyErr_SetString(PyExc_ValueError, "bitlinear: input dtype code out of range");
  return false;
}

PyObject* status_error(bl_status s, const char* where) {
  PyErr_Format(PyExc_RuntimeError, "bitlinear: %s failed: %s", where, bl_status_str(s));
  return nullptr;
}

// Small calls keep the GIL (releasing it costs more than they run); large ones release it.
constexpr double kReleaseGilMacs = 1 << 20;

// CPU scratch for the quantized activations: a per-thread buffer reused while small (decode),
// a fresh allocation for large batches so no thread keeps megabytes after a prefill.
constexpr size_t kKeepScratch = 1 << 20;

struct Scratch {
  void* p = nullptr;
  size_t n = 0;
  ~Scratch() { std::free(p); }
};

void* scratch(size_t bytes, bool* owned) {
  static thread_local Scratch s;
  *owned = false;
  bytes = (bytes + 63) & ~size_t(63);
  if (bytes > kKeepScratch) {
    *owned = true;
    return std::aligned_alloc(64, bytes);
  }
  if (s.n < bytes) {
    std::free(s.p);
    s.p = std::aligned_alloc(64, kKeepScratch);
    s.n = s.p ? kKeepScratch : 0;
  }
  return s.p;
}

enum { kX, kXdt, kM, kK, kLdx, kPacked, kN, kWscale, kPerCh, kBias, kEps, kPerTok, kY, kNargs };

struct Call {
  void *x, *packed, *wscale, *bias, *y;
  long long xdt, M, K, ldx, N, per_ch, per_tok;
  double eps;
};

bool parse(PyObject* const* args, Py_ssize_t nargs, Py_ssize_t want, const char* name, Call* c) {
  if (!arity(nargs, want, name)) return false;
  if (!ptr(args, kX, &c->x) || !ll(args, kXdt, &c->xdt) || !ll(args, kM, &c->M) ||
      !ll(args, kK, &c->K) || !ll(args, kLdx, &c->ldx) || !ptr(args, kPacked, &c->packed) ||
      !ll(args, kN, &c->N) || !ptr(args, kWscale, &c->wscale) || !ll(args, kPerCh, &c->per_ch) ||
      !ptr(args, kBias, &c->bias) || !ll(args, kPerTok, &c->per_tok) || !ptr(args, kY, &c->y))
    return false;
  c->eps = PyFloat_AsDouble(args[kEps]);
  if (c->eps == -1.0 && PyErr_Occurred()) return false;
  return float_dtype_code(c->xdt);
}

extern "C" {

// linear_cpu(x, xdt, M, K, ldx, w_packed, N, w_scale, per_channel, bias, eps, per_token, y,
//            nthreads, w_lut): y [M, N] (row stride N) in x's dtype. w_lut: the decode layout of
//            w_packed (bl_lut_pack) or 0; bl_linear_lut decides by M whether to read it.
PyObject* py_linear_cpu(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  Call c;
  if (!parse(args, nargs, kNargs + 2, "linear_cpu", &c)) return nullptr;
  long long nthreads;
  void* lut;
  if (!ll(args, kNargs, &nthreads) || !ptr(args, kNargs + 1, &lut)) return nullptr;
  if (c.M <= 0) Py_RETURN_NONE;
  const size_t ws_bytes = lut ? bl_linear_lut_workspace_bytes(c.M, c.K)
                              : bl_linear_workspace_bytes(c.M, c.K);
  bool owned;
  void* ws = scratch(ws_bytes, &owned);
  if (!ws) return PyErr_NoMemory();
  const bool release = (double)c.M * (double)c.N * (double)c.K >= kReleaseGilMacs;
  bl_status s;
  PyThreadState* ts = release ? PyEval_SaveThread() : nullptr;
  s = bl_linear_lut(c.x, (bl_dtype)c.xdt, c.M, c.K, c.ldx, (const uint8_t*)c.packed,
                    (const uint8_t*)lut, c.N, (const float*)c.wscale, (int)c.per_ch,
                    (const float*)c.bias, (float)c.eps, (int)c.per_tok, c.y, (bl_dtype)c.xdt, c.N,
                    ws, (int)nthreads);
  if (ts) PyEval_RestoreThread(ts);
  if (owned) std::free(ws);
  if (s != BL_OK) return status_error(s, "linear (CPU)");
  Py_RETURN_NONE;
}

// linear_cpu_segments(x, xdt, M, K, ldx, packed, eps, per_token, nthreads, segs): projections
// sharing x in one call (bl_linear_segments). segs: a tuple of (n, w_scale, per_channel, bias, y)
// with raw pointers; each y is [M, n] (row stride n) in x's dtype.
PyObject* py_linear_cpu_segments(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 10 || !PyTuple_Check(args[9])) {
    PyErr_SetString(PyExc_TypeError, "bitlinear: linear_cpu_segments takes (x, xdt, M, K, ldx, "
                                     "packed, eps, per_token, nthreads, segments tuple)");
    return nullptr;
  }
  void *x, *packed;
  long long xdt, M, K, ldx, per_tok, nthreads;
  if (!ptr(args, 0, &x) || !ll(args, 1, &xdt) || !ll(args, 2, &M) || !ll(args, 3, &K) ||
      !ll(args, 4, &ldx) || !ptr(args, 5, &packed) || !ll(args, 7, &per_tok) ||
      !ll(args, 8, &nthreads))
    return nullptr;
  const double eps = PyFloat_AsDouble(args[6]);
  if (eps == -1.0 && PyErr_Occurred()) return nullptr;
  const Py_ssize_t nseg = PyTuple_Size(args[9]);
  if (nseg < 1 || nseg > BL_MAX_SEGMENTS) {
    PyErr_Format(PyExc_ValueError, "bitlinear: linear_cpu_segments takes 1 to %d segments",
                 BL_MAX_SEGMENTS);
    return nullptr;
  }
  bl_segment segs[BL_MAX_SEGMENTS];
  double macs = 0.0;
  for (Py_ssize_t i = 0; i < nseg; i++) {
    PyObject* t = PyTuple_GetItem(args[9], i);
    if (!t || !PyTuple_Check(t) || PyTuple_Size(t) != 5) {
      PyErr_SetString(PyExc_TypeError,
                      "bitlinear: a segment is (n, w_scale, per_channel, bias, y)");
      return nullptr;
    }
    PyObject* it[5];
    for (Py_ssize_t j = 0; j < 5; j++) it[j] = PyTuple_GetItem(t, j);  // borrowed
    long long n, per_ch;
    void *wscale, *bias, *y;
    if (!ll(it, 0, &n) || !ptr(it, 1, &wscale) || !ll(it, 2, &per_ch) || !ptr(it, 3, &bias) ||
        !ptr(it, 4, &y))
      return nullptr;
    segs[i] = bl_segment{n, (const float*)wscale, (int)per_ch, (const float*)bias, y, n};
    macs += (double)M * (double)n * (double)K;
  }
  if (M <= 0) Py_RETURN_NONE;
  bool owned;
  void* ws = scratch(bl_linear_workspace_bytes(M, K), &owned);
  if (!ws) return PyErr_NoMemory();
  PyThreadState* ts = macs >= kReleaseGilMacs ? PyEval_SaveThread() : nullptr;
  const bl_status s = bl_linear_segments(x, (bl_dtype)xdt, M, K, ldx, (const uint8_t*)packed,
                                         segs, (int)nseg, (float)eps, (int)per_tok,
                                         (bl_dtype)xdt, ws, (int)nthreads);
  if (ts) PyEval_RestoreThread(ts);
  if (owned) std::free(ws);
  if (s != BL_OK) return status_error(s, "linear_segments (CPU)");
  Py_RETURN_NONE;
}

// q4_linear_cpu(x, xdt, M, K, ldx, w4, w_scale, N, G, bias, eps, y, nthreads): the int4 head
// (bl_q4_linear on the current ISA), y [M, N] (row stride N) in x's dtype; bias 0 for none.
PyObject* py_q4_linear_cpu(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  void *x, *w4, *wscale, *bias, *y;
  long long xdt, M, K, ldx, N, G, nthreads;
  if (!arity(nargs, 13, "q4_linear_cpu") || !ptr(args, 0, &x) || !ll(args, 1, &xdt) ||
      !ll(args, 2, &M) || !ll(args, 3, &K) || !ll(args, 4, &ldx) || !ptr(args, 5, &w4) ||
      !ptr(args, 6, &wscale) || !ll(args, 7, &N) || !ll(args, 8, &G) || !ptr(args, 9, &bias) ||
      !ptr(args, 11, &y) || !ll(args, 12, &nthreads) || !float_dtype_code(xdt))
    return nullptr;
  const double eps = PyFloat_AsDouble(args[10]);
  if (eps == -1.0 && PyErr_Occurred()) return nullptr;
  if (M == 0) Py_RETURN_NONE;
  // Bad sizes give no workspace size: the core refuses the call before it reads any workspace.
  alignas(64) static char no_workspace[64];
  const size_t ws_bytes = bl_q4_linear_workspace_bytes(M, K, G);
  bool owned = false;
  void* ws = ws_bytes ? scratch(ws_bytes, &owned) : no_workspace;
  if (!ws) return PyErr_NoMemory();
  const bool release = (double)M * (double)N * (double)K >= kReleaseGilMacs;
  PyThreadState* ts = release ? PyEval_SaveThread() : nullptr;
  const int nt = nthreads < 1 ? 1 : nthreads > 1 << 20 ? 1 << 20 : (int)nthreads;
  const bl_status s = bl_q4_linear(x, (bl_dtype)xdt, M, K, ldx, (const uint8_t*)w4,
                                   (const float*)wscale, N, G, (const float*)bias, (float)eps, y,
                                   (bl_dtype)xdt, N, ws, nt);
  if (ts) PyEval_RestoreThread(ts);
  if (owned) std::free(ws);
  if (s != BL_OK) return status_error(s, "q4_linear (CPU)");
  Py_RETURN_NONE;
}

// rms_norm_cpu(x, xdt, M, K, var, eps, w, wdt, y, ydt, nthreads): bl_rms_norm_apply on contiguous
// CPU rows (bitlinear/norm.py); var: M float32 (torch's mean of x^2). Keeps the GIL while small.
PyObject* py_rms_norm_cpu(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  void *x, *var, *w, *y;
  long long xdt, M, K, wdt, ydt, nthreads;
  if (!arity(nargs, 11, "rms_norm_cpu") || !ptr(args, 0, &x) || !ll(args, 1, &xdt) ||
      !ll(args, 2, &M) || !ll(args, 3, &K) || !ptr(args, 4, &var) || !ptr(args, 6, &w) ||
      !ll(args, 7, &wdt) || !ptr(args, 8, &y) || !ll(args, 9, &ydt) || !ll(args, 10, &nthreads) ||
      !float_dtype_code(xdt) || !float_dtype_code(wdt) || !float_dtype_code(ydt))
    return nullptr;
  const double eps = PyFloat_AsDouble(args[5]);
  if (eps == -1.0 && PyErr_Occurred()) return nullptr;
  const bool release = (double)M * (double)K >= kReleaseGilMacs;
  PyThreadState* ts = release ? PyEval_SaveThread() : nullptr;
  const int nt = nthreads < 1 ? 1 : nthreads > 1 << 20 ? 1 << 20 : (int)nthreads;
  const bl_status s = bl_rms_norm_apply(x, (bl_dtype)xdt, M, K, K, (const float*)var, (float)eps,
                                        w, (bl_dtype)wdt, y, (bl_dtype)ydt, K, nt);
  if (ts) PyEval_RestoreThread(ts);
  if (s != BL_OK) return status_error(s, "rms_norm (CPU)");
  Py_RETURN_NONE;
}

// attn_decode_cpu(B, Hq, Hkv, L, D, q, q_sb, q_sh, k, k_sb, k_sh, k_sl, v, v_sb, v_sh, v_sl,
//                 mask, mask_type, m_sb, m_sh, m_sl, scale, out, o_sb, o_sh, nthreads): decode
// attention on raw float32 CPU pointers (bl_attn_decode; mask 0 with mask_type 0 for none).
// Keeps the GIL while small (a decode call over a short cache runs for microseconds).
PyObject* py_attn_decode_cpu(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (!arity(nargs, 26, "attn_decode_cpu")) return nullptr;
  long long n[26];
  void* p[26];
  // pointer arguments: q, k, v, mask, out
  static const bool is_ptr[26] = {0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0,
                                  0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0};
  for (Py_ssize_t i = 0; i < 26; i++) {
    if (i == 21) continue;  // scale
    if (is_ptr[i] ? !ptr(args, i, &p[i]) : !ll(args, i, &n[i])) return nullptr;
  }
  const double scale = PyFloat_AsDouble(args[21]);
  if (scale == -1.0 && PyErr_Occurred()) return nullptr;
  if (n[17] < 0 || n[17] > 2) {
    PyErr_SetString(PyExc_ValueError, "bitlinear: attn_decode_cpu mask type out of range");
    return nullptr;
  }
  const int nt = n[25] < 1 ? 1 : n[25] > 1 << 20 ? 1 << 20 : (int)n[25];
  const bool release = (double)n[0] * (double)n[1] * (double)n[3] * (double)n[4] >=
                       4 * kReleaseGilMacs;
  PyThreadState* ts = release ? PyEval_SaveThread() : nullptr;
  const bl_status s = bl_attn_decode(
      n[0], n[1], n[2], n[3], n[4], (const float*)p[5], n[6], n[7], (const float*)p[8], n[9],
      n[10], n[11], (const float*)p[12], n[13], n[14], n[15], p[16], (int)n[17], n[18], n[19],
      n[20], (float)scale, (float*)p[22], n[23], n[24], nt);
  if (ts) PyEval_RestoreThread(ts);
  if (s != BL_OK) return status_error(s, "attn_decode (CPU)");
  Py_RETURN_NONE;
}

// linear_cuda(x, xdt, M, K, ldx, w_packed, N, w_scale, per_channel, bias, eps, per_token, y,
//             workspace, workspace_bytes, stream): asynchronous on `stream` (a cudaStream_t as an
//             int, 0 the legacy default stream); workspace: device memory of at least
//             linear_cuda_workspace_bytes(M, N, K) bytes.
PyObject* py_linear_cuda(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  Call c;
  if (!parse(args, nargs, kNargs + 3, "linear_cuda", &c)) return nullptr;
  void *ws, *stream;
  long long ws_bytes;
  if (!ptr(args, kNargs, &ws) || !ll(args, kNargs + 1, &ws_bytes) ||
      !ptr(args, kNargs + 2, &stream))
    return nullptr;
  if (c.M <= 0) Py_RETURN_NONE;
  if (ws_bytes < 0) {
    PyErr_SetString(PyExc_ValueError, "bitlinear: negative workspace size");
    return nullptr;
  }
#ifdef BITLINEAR_WITH_CUDA
  const bl_status s = bl_cuda_linear(
      c.x, (bl_dtype)c.xdt, c.M, c.K, c.ldx, (const uint8_t*)c.packed, c.N, (const float*)c.wscale,
      (int)c.per_ch, (const float*)c.bias, (float)c.eps, (int)c.per_tok, c.y, (bl_dtype)c.xdt, c.N,
      ws, (size_t)ws_bytes, (struct CUstream_st*)stream);
  if (s != BL_OK) return status_error(s, "linear (CUDA)");
  Py_RETURN_NONE;
#else
  return status_error(BL_ERR_NO_CUDA, "linear (CUDA)");
#endif
}

PyObject* py_linear_cuda_workspace_bytes(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  long long M, N, K;
  if (nargs != 3) {
    PyErr_SetString(PyExc_TypeError, "bitlinear: linear_cuda_workspace_bytes takes (M, N, K)");
    return nullptr;
  }
  if (!ll(args, 0, &M) || !ll(args, 1, &N) || !ll(args, 2, &K)) return nullptr;
#ifdef BITLINEAR_WITH_CUDA
  return PyLong_FromSize_t(bl_cuda_linear_workspace_bytes(M, N, K));
#else
  return PyLong_FromSize_t(0);
#endif
}

// lut_bytes(N, K): bytes of the decode layout (0: sizes out of range).
PyObject* py_lut_bytes(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  long long N, K;
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "bitlinear: lut_bytes takes (N, K)");
    return nullptr;
  }
  if (!ll(args, 0, &N) || !ll(args, 1, &K)) return nullptr;
  return PyLong_FromSize_t(bl_lut_bytes(N, K));
}

// lut_pack(w_packed, N, K, out, nthreads): the decode layout of w_packed into out (lut_bytes).
PyObject* py_lut_pack(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  void *packed, *out;
  long long N, K, nthreads;
  if (nargs != 5) {
    PyErr_SetString(PyExc_TypeError, "bitlinear: lut_pack takes (w_packed, N, K, out, nthreads)");
    return nullptr;
  }
  if (!ptr(args, 0, &packed) || !ll(args, 1, &N) || !ll(args, 2, &K) || !ptr(args, 3, &out) ||
      !ll(args, 4, &nthreads))
    return nullptr;
  PyThreadState* ts = PyEval_SaveThread();
  const bl_status s = bl_lut_pack((const uint8_t*)packed, N, K, (uint8_t*)out, (int)nthreads);
  PyEval_RestoreThread(ts);
  if (s != BL_OK) return status_error(s, "lut_pack");
  Py_RETURN_NONE;
}

}  // extern "C"
}  // namespace

// The method-table entries (module.cpp appends them).
extern "C" PyMethodDef bl_fastpath_methods[];
PyMethodDef bl_fastpath_methods[] = {
    {"linear_cpu", (PyCFunction)(void (*)(void))py_linear_cpu, METH_FASTCALL,
     "Deployed forward on raw CPU pointers (BitLinear's eager fast path)."},
    {"lut_bytes", (PyCFunction)(void (*)(void))py_lut_bytes, METH_FASTCALL,
     "Bytes of the CPU decode layout of an [N, K] weight."},
    {"lut_pack", (PyCFunction)(void (*)(void))py_lut_pack, METH_FASTCALL,
     "Builds the CPU decode layout from packed weights (raw pointers)."},
    {"linear_cpu_segments", (PyCFunction)(void (*)(void))py_linear_cpu_segments, METH_FASTCALL,
     "Projections sharing one input in one CPU call (raw pointers; bl_linear_segments)."},
    {"q4_linear_cpu", (PyCFunction)(void (*)(void))py_q4_linear_cpu, METH_FASTCALL,
     "The int4 grouped head on raw CPU pointers (bl_q4_linear)."},
    {"rms_norm_cpu", (PyCFunction)(void (*)(void))py_rms_norm_cpu, METH_FASTCALL,
     "transformers' RMSNorm after the variance on raw CPU pointers (bl_rms_norm_apply)."},
    {"attn_decode_cpu", (PyCFunction)(void (*)(void))py_attn_decode_cpu, METH_FASTCALL,
     "Decode attention (one query token) on raw float32 CPU pointers (bl_attn_decode)."},
    {"linear_cuda", (PyCFunction)(void (*)(void))py_linear_cuda, METH_FASTCALL,
     "Deployed forward on raw CUDA pointers, asynchronous on the given stream."},
    {"linear_cuda_workspace_bytes", (PyCFunction)(void (*)(void))py_linear_cuda_workspace_bytes,
     METH_FASTCALL, "Device workspace bytes linear_cuda needs for (M, N, K)."},
    {nullptr, nullptr, 0, nullptr}};
