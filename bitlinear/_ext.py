"""Loads the native extension `_bitlinear` once. A failed load is remembered, not raised:
everything then runs on the pure-PyTorch reference, and `python -m bitlinear info` says why."""
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


def native():
    """The loaded extension module; raises a helpful error if it is missing."""
    if _native is None:
        raise RuntimeError(
            "bitlinear: the native extension _bitlinear is not available "
            f"({LOAD_ERROR}); run `python -m bitlinear info` for details"
        )
    return _native
