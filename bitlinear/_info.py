"""What this installation of bitlinear is running: version, kernels, threads, build."""
from __future__ import annotations

import platform

import torch

from . import _ext
from .reference import FORMAT_VERSION

__version__ = "0.2.0"


def collect_info() -> dict:
    info = {
        "bitlinear": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "native_extension": _ext.HAS_BITLINEAR,
        "native_load_error": _ext.LOAD_ERROR,
        "format_version": FORMAT_VERSION,
        "openmp_threads": torch.get_num_threads(),
        "cuda_kernels_built": _ext.HAS_CUDA_KERNELS,
        "cuda_available": torch.cuda.is_available(),
    }
    if _ext.HAS_BITLINEAR:
        n = _ext.native()
        info["extension_path"] = getattr(n, "__file__", None)
        info["cpu_path"] = n.cpu_isa_name(n.cpu_isa())
        info["cpu_path_best"] = n.cpu_isa_name(n.cpu_isa_best())
        info["cpu_paths_supported"] = [n.cpu_isa_name(i) for i in range(8)
                                       if n.cpu_isa_name(i) != "unknown" and n.cpu_isa_supported(i)]
        info["cpu_paths_compiled"] = [n.cpu_isa_name(i) for i in range(8)
                                      if n.cpu_isa_name(i) != "unknown" and n.cpu_isa_compiled(i)]
    else:
        info["cpu_path"] = "pytorch-fallback"
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info
