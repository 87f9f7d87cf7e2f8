// module.cpp - the `_bitlinear` Python module: loading it registers the native kernels of the
// torch.ops.bitlinear operators (ops_cpu.cpp, ops_cuda.cpp). Its few functions describe the build
// and select the CPU path; they touch no tensors. Python's limited API only.
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

extern "C" {

PyObject* py_isa_names(PyObject*, PyObject*) {  // the one list of CPU path names, by index
  PyObject* t = PyTuple_New(BL_ISA_COUNT);
  if (!t) return nullptr;
  for (int i = 0; i < BL_ISA_COUNT; i++) {
    PyObject* s = PyUnicode_FromString(bl_isa_name(i));
    if (!s || PyTuple_SetItem(t, i, s) != 0) {
      Py_DECREF(t);
      return nullptr;
    }
  }
  return t;
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

// ---- CUDA path options (bl_cuda_set_option / bl_cuda_get_option; bitlinear/cuda.py) ----------
// Without CUDA kernels in the build: no names, get gives None, set raises RuntimeError.
PyObject* py_cuda_path_names(PyObject*, PyObject*) {
#ifdef BITLINEAR_WITH_CUDA
  PyObject* t = PyTuple_New(BL_CUDA_PATH_COUNT);
  if (!t) return nullptr;
  for (int i = 0; i < BL_CUDA_PATH_COUNT; i++) {
    PyObject* s = PyUnicode_FromString(bl_cuda_path_name(i));
    if (!s || PyTuple_SetItem(t, i, s) != 0) {
      Py_DECREF(t);
      return nullptr;
    }
  }
  return t;
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
