"""Loads the native extension `_bitlinear` once; loading it registers the CPU (and CUDA) kernels of
the torch.ops.bitlinear operators defined in bitlinear/ops.py. A failed load is remembered, not
raised: the operators then run their pure-PyTorch default kernels, and `python -m bitlinear info`
says why."""
from __future__ import annotations

import os

import torch  # noqa: F401  (loads libtorch before the extension)

_native = None
LOAD_ERROR: str | None = None

if os.environ.get("BITLINEAR_DISABLE_NATIVE", "0") in ("", "0"):
    try:
        import _bitlinear as _native  # registers torch.ops.bitlinear.*
    except Exception as e:  # ImportError, or an OSError from a broken build
        LOAD_ERROR = f"{type(e).__name__}: {e}"
else:
    LOAD_ERROR = "disabled by BITLINEAR_DISABLE_NATIVE"

HAS_BITLINEAR = _native is not None
HAS_CUDA_KERNELS = bool(HAS_BITLINEAR and _native.cuda_built())
# The CPU path names, by index: the C core owns the list (bl_isa_name).
CPU_ISA_NAMES: tuple = tuple(_native.cpu_isa_names()) if HAS_BITLINEAR else ()


def native():
    """The loaded extension module; raises a helpful error if it is missing."""
    if _native is None:
        raise RuntimeError(
            "bitlinear: the native extension _bitlinear is not available "
            f"({LOAD_ERROR}); run `python -m bitlinear info` for details"
        )
    return _native
