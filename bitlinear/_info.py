"""What this installation of bitlinear is running: version, kernels, threads, build."""
from __future__ import annotations

import platform

import torch

from . import _ext, isa
from .reference import FORMAT_VERSION

__version__ = "0.2.0"


# ---------------------------------------------------------------- CUDA kernels: verification
# What has run on a GPU (docs/cuda.md, "Verification", keeps the same table with more words).
# Static: a kernel is "verified" only when profile/gpu_check.sh passed it on real hardware; edit
# this table (and the defaults in csrc/cuda/api.cu) only from such a run.
_H100 = "H100 80GB HBM3 2026-11-26 c11d832"  # the one GPU run so far (3 device calls)
_PASSED = "self-check PASS, test_cuda.py 522 passed"
CUDA_KERNELS = {
    # name: (file, status, device date commit, tests, memcheck, changed since (not run), auto)
    "gemv": ("gemv.cu", "verified", _H100, _PASSED, "clean", "code-3 clamp",
             "M < mma_min_m (9)"),
    "mma": ("mma.cu", "verified", _H100, _PASSED + " (mma_bn 128, 256)", "clean (mma_bn 128)",
            "code-3 clamp", "M >= mma_min_m (9)"),
    "simple": ("simple.cu", "verified", _H100, _PASSED, "not run", "code-3 clamp",
               "operands not 16-byte aligned"),
    "acts": ("acts.cu", "verified", _H100, _PASSED, "clean", "shared quant_code",
             "every unfused call"),
    "weights": ("weights.cu", "verified", _H100, _PASSED, "clean (packing)",
                "float16/bfloat16 weights, code-3", "packing, training, unpack"),
    "fused": ("fused.cu", "never run", "-", "-", "never run", "", "off (fused_max_m 0)"),
    "multirow": ("multirow.cu", "never run", "-", "-", "never run", "",
                 "off (multirow_min_m 0)"),
    "wgmma": ("wgmma.cu", "never run", "-", "-", "never run", "", "never (forced only)"),
}
# The training op on CUDA (torch.ops.bitlinear.linear_train): forward = weights.cu + acts.cu +
# bl_cuda_linear_q (the GEMM path below, under auto: gemv or mma), backward = unpack_weights
# (weights.cu) and torch matmuls. Its kernels are verified ones; the op itself has never run on a
# GPU (it was written after the H100 run).
CUDA_TRAINING = ("auto: verified kernels only (weights, acts, then gemv for M < 9, mma from 9; "
                 "backward: unpack + torch matmul); the training op itself never ran on a GPU")
# bl_cuda_option defaults (csrc/cuda/api.cu g_opts; csrc/bitlinear.h documents them)
CUDA_DEFAULT_OPTIONS = {"path": "auto", "fused_max_m": 0, "multirow_min_m": 0, "mma_min_m": 9,
                        "mma_bn": 128}
_FUSED_SMEM = 46 * 1024  # fused.cu kFusedSmem: M * padded K bytes of codes in shared memory
_FUSED_MAX_M = 16


def cuda_auto_kernel(M: int, K: int, entry: str = "linear", options=None) -> str:
    """The CUDA kernel a call runs (csrc/cuda/api.cu blc::chosen_path, in Python): entry "linear"
    (bl_cuda_linear: a deployed layer, ops.linear; may fuse) or "gemm" (gemm_acc, linear_q, the
    training forward); options as bitlinear.cuda.cuda_options() gives them (missing: defaults).
    Aligned operands assumed (else "simple"); "wgmma" runs "mma" where no sm_90a code loaded.
    tests/cuda/cuda_auto_paths.txt is the table both this and the C function are tested against."""
    from .reference import padded_k
    o = dict(CUDA_DEFAULT_OPTIONS)
    o.update(options or {})
    path = o["path"]
    if entry not in ("linear", "gemm"):
        raise ValueError(f"entry must be 'linear' or 'gemm', not {entry!r}")
    if entry == "linear":
        want = path == "fused" or (path == "auto" and M <= o["fused_max_m"])
        if want and 1 <= M <= _FUSED_MAX_M and M * padded_k(K) <= _FUSED_SMEM:
            return "fused"
    if path == "fused":
        return "gemv"
    if path != "auto":
        return path
    if M >= o["mma_min_m"]:
        return "mma"
    if o["multirow_min_m"] >= 1 and M >= o["multirow_min_m"]:
        return "multirow"
    return "gemv"


def cuda_auto_summary(options=None, K: int = 4096) -> str:
    """What auto runs, by M ranges (both entries), e.g. "M 1-8: gemv; M >= 9: mma"."""
    def kern(m):
        a, b = cuda_auto_kernel(m, K, "linear", options), cuda_auto_kernel(m, K, "gemm", options)
        return a if a == b else f"{a} (linear_q/gemm_acc: {b})"
    parts, start, cur = [], 1, kern(1)
    top = max(1024, int((options or {}).get("mma_min_m", 9)) + 1)
    for m in range(2, top + 1):
        k = kern(m)
        if k != cur:
            parts.append((start, m - 1, cur))
            start, cur = m, k
    parts.append((start, None, cur))
    return "; ".join(f"M {a}-{b}: {k}" if b and b > a else f"M {a}: {k}" if b else f"M >= {a}: {k}"
                     for a, b, k in parts)


def cuda_kernel_info(options=None) -> dict:
    """info's CUDA lines: auto's mapping, each kernel's verification status, training."""
    out = {"cuda_auto": cuda_auto_summary(options) + f" (K = 4096; options {options or 'defaults'})"}
    for name, (file, status, run, tests, memcheck, since, auto) in CUDA_KERNELS.items():
        if status == "verified":
            line = (f"VERIFIED design ({run}: {tests}, memcheck {memcheck}); since then "
                    f"{since}: not run on a GPU")
        else:
            line = "NEVER RUN on a GPU"
        out[f"cuda_kernel_{name}"] = f"{line}; auto: {auto} [{file}]"
    out["cuda_training"] = CUDA_TRAINING
    return out


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
    # each CUDA kernel's verification status (a static table: docs/cuda.md, "Verification")
    if _ext.HAS_CUDA_KERNELS:
        from .cuda import cuda_options
        opts = cuda_options()
        info.update(cuda_kernel_info(None if opts == CUDA_DEFAULT_OPTIONS else opts))
    else:
        info["cuda_kernels_note"] = "no CUDA kernels in this build; the lines below apply to CUDA builds"
        info.update(cuda_kernel_info())
    return info
