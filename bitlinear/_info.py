"""What this installation of bitlinear is running: version, kernels, threads, build."""
from __future__ import annotations

import platform

import torch

from . import _ext, isa
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
    info["cpu_path"] = isa.cpu_isa()
    if _ext.HAS_BITLINEAR:
        info["extension_path"] = getattr(_ext.native(), "__file__", None)
        info["cpu_path_best"] = isa.best_cpu_isa()
        info["cpu_paths_supported"] = isa.available_cpu_isas()
        info["cpu_paths_compiled"] = isa.compiled_cpu_isas()
        # what small M (decode) runs on that path (issue 12; docs/cpu.md)
        path = info["cpu_path"]
        prefetch = ", software prefetch 8 KiB ahead" if path != "neon_dot" else ""
        gemv = ("plain C loops (reference path)" if path == "ref" else
                f"{path} dot-product GEMV tiles; M <= 4: one contiguous weight range per "
                f"thread{prefetch}")
        mode, max_m = isa.cpu_lut(), isa.cpu_lut_max_m()
        kernel = _ext.native().lut_status(1)[0]
        if isa.cpu_lut_used(1):
            upto = "every M" if mode == "force" else f"M <= {max_m}"
            lut = (f"{path} vpermw" if kernel and path != "neon_dot" else
                   f"{path} tbl" if kernel else "portable C")
            info["cpu_decode"] = (f"table-lookup GEMV on the decode layout ({lut}) for {upto}; "
                                  f"above: {gemv}")
        else:
            info["cpu_decode"] = gemv
        info["cpu_lut"] = f"{mode} (max M {max_m})"
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info
