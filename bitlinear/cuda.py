"""Choosing the CUDA kernel path at run time (the GPU counterpart of bitlinear/isa.py).

The C core keeps the choice in process-wide options read once per call (`bl_cuda_set_option`;
no environment variables). Paths, by name (docs/cuda.md):

* ``auto``: by M: the fused quantize+GEMV kernel for ``M <= fused_max_m`` (bl_cuda_linear only),
  the multi-row tensor-core GEMV from ``multirow_min_m``, the tiled MMA GEMM from ``mma_min_m``,
  else the dp4a GEMV. The defaults (``fused_max_m`` 0 and ``multirow_min_m`` 0: off,
  ``mma_min_m`` 9) reach only kernels verified on a GPU: the GEMV below M = 9, the MMA GEMM from
  there (``python -m bitlinear info`` prints each kernel's status; docs/cuda.md);
* ``simple`` (the plain fallback), ``gemv``, ``fused``, ``multirow``, ``mma``, ``wgmma``: forced
  for every call. ``fused`` applies to the fused forward with M <= 16 (other calls: ``gemv``);
  ``wgmma`` runs ``mma`` where no sm_90a kernel is built.

Options: ``path``, ``fused_max_m`` (0..16), ``multirow_min_m`` (0: off), ``mma_min_m`` (>= 1), ``mma_bn``
(128 or 256: the MMA tile width). Not meant to be changed while another thread launches kernels.
"""
from __future__ import annotations

import contextlib

from . import _ext

OPTIONS = ("path", "fused_max_m", "multirow_min_m", "mma_min_m", "mma_bn")  # bl_cuda_option order


def _native():
    n = _ext.native()  # a clear error without the extension
    if not _ext.HAS_CUDA_KERNELS:
        raise RuntimeError("bitlinear: this build has no CUDA kernels (no CUDA path to choose)")
    return n


def cuda_path_names() -> tuple:
    """The CUDA GEMM path names, by index ("auto" first); empty without CUDA kernels."""
    if not _ext.HAS_CUDA_KERNELS:
        return ()
    return tuple(_ext.native().cuda_path_names())


def _option_index(name: str) -> int:
    if name not in OPTIONS:
        raise ValueError(f"unknown CUDA option {name!r}; known: {', '.join(OPTIONS)}")
    return OPTIONS.index(name)


def cuda_options() -> dict:
    """All options as {name: value} ("path" as its name); {} without CUDA kernels."""
    if not _ext.HAS_CUDA_KERNELS:
        return {}
    n = _ext.native()
    out = {name: int(n.cuda_option_get(i)) for i, name in enumerate(OPTIONS)}
    out["path"] = cuda_path_names()[out["path"]]
    return out


def set_cuda_option(name: str, value) -> None:
    """Set one option; "path" takes a path name. ValueError for a bad name or value."""
    n = _native()
    if name == "path":
        names = cuda_path_names()
        if value not in names:
            raise ValueError(f"unknown CUDA path {value!r}; known: {', '.join(names)}")
        value = names.index(value)
    n.cuda_option_set(_option_index(name), int(value))


def cuda_path() -> str:
    """The forced CUDA path ("auto": chosen by M); "unavailable" without CUDA kernels."""
    if not _ext.HAS_CUDA_KERNELS:
        return "unavailable"
    return cuda_options()["path"]


def set_cuda_path(name: str) -> None:
    """Force a CUDA GEMM path for every call ("auto" restores the choice by M)."""
    set_cuda_option("path", name)


@contextlib.contextmanager
def use_cuda_options(**options):
    """Context manager: set the given options, restore all previous values afterwards."""
    prev = cuda_options() if _ext.HAS_CUDA_KERNELS else {}
    try:
        for name, value in options.items():
            set_cuda_option(name, value)
        yield
    finally:
        for name, value in prev.items():
            set_cuda_option(name, value)


@contextlib.contextmanager
def use_cuda_path(name: str):
    """Context manager: run the block on CUDA path `name`, then restore the previous one."""
    with use_cuda_options(path=name):
        yield
