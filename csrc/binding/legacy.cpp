// legacy.cpp - the earlier package's `_bitlinear.prepare_weights` and `_bitlinear.bitlinear`.
// They live in Python (bitlinear/legacy.py); this PEP 562 module __getattr__ resolves them on
// first use, so importing _bitlinear never imports the package recursively.
#include <Python.h>

extern "C" PyObject* bl_legacy_getattr(PyObject*, PyObject* name) {
  if (PyUnicode_CompareWithASCIIString(name, "prepare_weights") != 0 &&
      PyUnicode_CompareWithASCIIString(name, "bitlinear") != 0) {
    PyErr_Format(PyExc_AttributeError, "module '_bitlinear' has no attribute '%U'", name);
    return nullptr;
  }
  PyObject* compat = PyImport_ImportModule("bitlinear.legacy");
  if (!compat) return nullptr;
  PyObject* r = PyObject_GetAttr(compat, name);
  Py_DECREF(compat);
  return r;
}
