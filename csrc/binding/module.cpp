// module.cpp - the `_bitlinear` Python module: loading it registers the native kernels of the
// torch.ops.bitlinear operators (ops_cpu.cpp, ops_cuda.cpp). Its functions describe the build and
// hold every switch of the native paths: the CPU path (ISA), the CPU options (decode layout), the
// oversubscription governor's thread count, the CUDA path options. They touch no tensors (the
// raw-pointer calls are fastpath.cpp's). Python's limited API only.
#include <Python.h>

#include "bitlinear.h"

extern "C" PyObject* bl_legacy_getattr(PyObject* module, PyObject* name);  // legacy.cpp
extern "C" PyMethodDef bl_fastpath_methods[];                              // fastpath.cpp

namespace {

bool int_arg(PyObject* arg, int* out) {
  const long v = PyLong_AsLong(arg);
  if (v == -1 && PyErr_Occurred()) return false;
  *out = static_cast<int>(v);
  return true;
}

bool ll_arg(PyObject* arg, long long* out) {
  *out = PyLong_AsLongLong(arg);
  return !(*out == -1 && PyErr_Occurred());
}

// (name(0), ..., name(n - 1)) as a tuple of str.
PyObject* names(int n, const char* (*name)(int)) {
  PyObject* t = PyTuple_New(n);
  if (!t) return nullptr;
  for (int i = 0; i < n; i++) {
    PyObject* s = PyUnicode_FromString(name(i));
    if (!s || PyTuple_SetItem(t, i, s) != 0) {
      Py_DECREF(t);
      return nullptr;
    }
  }
  return t;
}

extern "C" {

PyObject* py_isa_names(PyObject*, PyObject*) {  // the one list of CPU path names, by index
  return names(BL_ISA_COUNT, bl_isa_name);
}
PyObject* py_isa_get(PyObject*, PyObject*) { return PyLong_FromLong(bl_isa_get()); }
PyObject* py_isa_best(PyObject*, PyObject*) { return PyLong_FromLong(bl_isa_best()); }
PyObject* py_isa_set(PyObject*, PyObject* arg) {
  int isa;
  if (!int_arg(arg, &isa)) return nullptr;
  if (bl_isa_set(isa) != BL_OK) {
    PyErr_Format(PyExc_ValueError, "bitlinear: CPU path '%s' is not available on this build/CPU",
                 bl_isa_name(isa));
    return nullptr;
  }
  Py_RETURN_NONE;
}
PyObject* py_isa_supported(PyObject*, PyObject* arg) {
  int isa;
  return int_arg(arg, &isa) ? PyBool_FromLong(bl_isa_supported(isa)) : nullptr;
}
PyObject* py_isa_compiled(PyObject*, PyObject* arg) {
  int isa;
  return int_arg(arg, &isa) ? PyBool_FromLong(bl_isa_compiled(isa)) : nullptr;
}
PyObject* py_cuda_built(PyObject*, PyObject*) {
#ifdef BITLINEAR_WITH_CUDA  // the CUDA objects (and ops_cuda.cpp) are linked in
  return PyBool_FromLong(bl_cuda_compiled());
#else
  Py_RETURN_FALSE;
#endif
}
PyObject* py_format_version(PyObject*, PyObject*) { return PyLong_FromLong(BL_FORMAT_VERSION); }

// ---- CPU options (bl_cpu_set_option / bl_cpu_get_option), the decode layout's state, the
// oversubscription governor; bitlinear/isa.py, _fast.py ----------------------------------------
// cpu_option(option[, value]): the option's value; with a value, set it first (ValueError when
// the core refuses it).
PyObject* py_cpu_option(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  long long opt, val;
  if (nargs != 1 && nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "bitlinear: cpu_option takes (option[, value])");
    return nullptr;
  }
  if (!ll_arg(args[0], &opt)) return nullptr;
  if (nargs == 2) {
    if (!ll_arg(args[1], &val)) return nullptr;
    if (bl_cpu_set_option((int)opt, val) != BL_OK) {
      PyErr_Format(PyExc_ValueError, "bitlinear: CPU option %lld cannot take the value %lld", opt,
                   val);
      return nullptr;
    }
  }
  return PyLong_FromLongLong(bl_cpu_get_option((int)opt));
}

// lut_status(M): (has a SIMD LUT kernel on the current ISA, bl_lut_used(M)).
PyObject* py_lut_status(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  long long M;
  if (nargs != 1) {
    PyErr_SetString(PyExc_TypeError, "bitlinear: lut_status takes (M)");
    return nullptr;
  }
  if (!ll_arg(args[0], &M)) return nullptr;
  return Py_BuildValue("(ii)", bl_lut_kernel(), bl_lut_used(M));
}

// threads_now(n): bl_cpu_threads_now(n), the governor's thread count for a region of the caller's.
PyObject* py_threads_now(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  long long n;
  if (nargs != 1) {
    PyErr_SetString(PyExc_TypeError, "bitlinear: threads_now takes (nthreads)");
    return nullptr;
  }
  if (!ll_arg(args[0], &n)) return nullptr;
  return PyLong_FromLong(bl_cpu_threads_now(n > 1 << 20 ? 1 << 20 : (int)n));
}

// ---- end of the CPU options ----------------------------------------------------------------

// ---- CUDA path options (bl_cuda_set_option / bl_cuda_get_option; bitlinear/cuda.py) ----------
// Without CUDA kernels in the build: no names, get gives None, set raises RuntimeError.
PyObject* py_cuda_path_names(PyObject*, PyObject*) {
#ifdef BITLINEAR_WITH_CUDA
  return names(BL_CUDA_PATH_COUNT, bl_cuda_path_name);
#else
  return PyTuple_New(0);
#endif
}
PyObject* py_cuda_option_get(PyObject*, PyObject* arg) {
  int opt;
  if (!int_arg(arg, &opt)) return nullptr;
#ifdef BITLINEAR_WITH_CUDA
  const long long v = bl_cuda_get_option(opt);
  if (v < 0) {
    PyErr_Format(PyExc_ValueError, "bitlinear: unknown CUDA option %d", opt);
    return nullptr;
  }
  return PyLong_FromLongLong(v);
#else
  Py_RETURN_NONE;
#endif
}
PyObject* py_cuda_option_set(PyObject*, PyObject* args) {
  int opt;
  long long value;
  if (!PyArg_ParseTuple(args, "iL", &opt, &value)) return nullptr;
#ifdef BITLINEAR_WITH_CUDA
  if (bl_cuda_set_option(opt, static_cast<int64_t>(value)) != BL_OK) {
    PyErr_Format(PyExc_ValueError, "bitlinear: CUDA option %d cannot be %lld", opt, value);
    return nullptr;
  }
  Py_RETURN_NONE;
#else
  PyErr_SetString(PyExc_RuntimeError, "bitlinear: this build has no CUDA kernels");
  return nullptr;
#endif
}
// ---- end of the CUDA path options ----------------------------------------------------------

PyMethodDef methods[] = {
    {"cpu_isa_names", py_isa_names, METH_NOARGS, "Names of the CPU kernel paths, by index."},
    {"cpu_isa", py_isa_get, METH_NOARGS, "Index of the CPU kernel path in use."},
    {"cpu_isa_best", py_isa_best, METH_NOARGS, "Fastest CPU path this CPU supports."},
    {"cpu_isa_set", py_isa_set, METH_O, "Select a CPU kernel path by index."},
    {"cpu_isa_supported", py_isa_supported, METH_O, "Whether a CPU path can run here."},
    {"cpu_isa_compiled", py_isa_compiled, METH_O, "Whether a CPU path is in this build."},
    {"cpu_option", (PyCFunction)(void (*)(void))py_cpu_option, METH_FASTCALL,
     "Reads (and with a value, sets) a CPU option of the C core."},
    {"lut_status", (PyCFunction)(void (*)(void))py_lut_status, METH_FASTCALL,
     "(LUT kernel on this ISA, LUT used for M rows)."},
    {"threads_now", (PyCFunction)(void (*)(void))py_threads_now, METH_FASTCALL,
     "The oversubscription governor's thread count for a region of the caller's."},
    {"cuda_built", py_cuda_built, METH_NOARGS, "Whether CUDA kernels are compiled in."},
    {"format_version", py_format_version, METH_NOARGS, "Packed weight format version."},
    {"cuda_path_names", py_cuda_path_names, METH_NOARGS, "Names of the CUDA GEMM paths, by index."},
    {"cuda_option_get", py_cuda_option_get, METH_O, "A CUDA tuning option (bl_cuda_option)."},
    {"cuda_option_set", py_cuda_option_set, METH_VARARGS, "Set a CUDA tuning option."},
    {"__getattr__", bl_legacy_getattr, METH_O, nullptr},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_bitlinear",
                          "bitlinear native kernels (the ops live in torch.ops.bitlinear)", -1,
                          methods};

}  // extern "C"
}  // namespace

extern "C" PyMODINIT_FUNC PyInit__bitlinear(void) {
  PyObject* m = PyModule_Create(&module_def);
  if (m && PyModule_AddFunctions(m, bl_fastpath_methods) != 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
