"""`auto` on a CUDA build dispatches only to kernels verified on a GPU (issue 19), on any build.

The mapping (entry, M, K, options) -> kernel is one table, tests/cuda/cuda_auto_paths.txt:
tests/cuda/cuda_host_check.cu (CI, nvcc, no GPU) checks csrc/cuda/api.cu's choice against it, and
these tests check the Python mirror that `python -m bitlinear info` prints
(bitlinear._info.cuda_auto_kernel) against it, the defaults of the C source and of the C API's
comments against the package's, and that every kernel auto reaches by default is marked verified.
On a CUDA build with a GPU, the real options are compared too (test_gpu_auto_options_on_device).
"""
import re
from pathlib import Path

import pytest
import torch

import bitlinear
from bitlinear import _info

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "tests" / "cuda" / "cuda_auto_paths.txt"


def _table():
    rows = []
    for line in TABLE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        lhs, want = line.split("->")
        entry, m, k, *opts = lhs.split()
        options = {}
        for o in opts:
            name, value = o.split("=")
            options[name] = value if name == "path" else int(value)
        rows.append((entry, int(m), int(k), options, want.strip()))
    return rows


def test_gpu_auto_table_is_read():
    rows = _table()
    assert len(rows) >= 20
    assert {r[4] for r in rows} >= {"gemv", "mma", "fused", "multirow", "simple", "wgmma"}


@pytest.mark.parametrize("entry,M,K,options,want", _table())
def test_gpu_auto_mapping(entry, M, K, options, want):
    assert _info.cuda_auto_kernel(M, K, entry, options) == want


def test_gpu_auto_defaults_reach_verified_kernels_only():
    verified = {n for n, v in _info.CUDA_KERNELS.items() if v[1] == "verified"}
    assert verified == {"gemv", "mma", "simple", "acts", "weights"}
    for name in ("fused", "multirow", "wgmma"):  # never run on a GPU
        assert _info.CUDA_KERNELS[name][1] == "never run"
    for K in (1, 1000, 3001, 3200, 4096, 8640, 11008, 28672):
        for M in range(1, 1100):
            for entry in ("linear", "gemm"):
                k = _info.cuda_auto_kernel(M, K, entry)
                assert k in verified, (entry, M, K, k)
                assert k == ("gemv" if M < 9 else "mma")
    assert _info.cuda_auto_summary() == "M 1-8: gemv; M >= 9: mma"


def test_gpu_auto_forced_paths_stay_reachable():
    for path in ("fused", "multirow", "wgmma", "simple", "gemv", "mma"):
        assert _info.cuda_auto_kernel(1, 4096, "linear", {"path": path}) == path


def _c_defaults():
    """The option defaults in csrc/cuda/api.cu (g_opts) and in csrc/bitlinear.h's comments."""
    api = (ROOT / "csrc" / "cuda" / "api.cu").read_text()
    body = api[api.index("g_opts[BL_CUDA_OPT_COUNT]"):]
    body = body[:body.index("};")]
    vals = re.findall(r"\{(\w+)\},\s*/\* (BL_CUDA_OPT_\w+)", body)
    src = {opt: v for v, opt in vals}
    hdr = (ROOT / "csrc" / "bitlinear.h").read_text()
    doc = dict(re.findall(r"(BL_CUDA_OPT_\w+) = \d+,\s*/\*[^*]*?\(default (\w+)", hdr))
    return src, doc


def test_gpu_auto_c_defaults_match_package():
    src, doc = _c_defaults()
    want = _info.CUDA_DEFAULT_OPTIONS
    assert src == {"BL_CUDA_OPT_PATH": "BL_CUDA_PATH_AUTO", "BL_CUDA_OPT_FUSED_MAX_M": str(
        want["fused_max_m"]), "BL_CUDA_OPT_MULTIROW_MIN_M": str(want["multirow_min_m"]),
        "BL_CUDA_OPT_MMA_MIN_M": str(want["mma_min_m"]), "BL_CUDA_OPT_MMA_BN": str(want["mma_bn"])}
    assert doc == {"BL_CUDA_OPT_PATH": "AUTO", "BL_CUDA_OPT_FUSED_MAX_M": "0",
                   "BL_CUDA_OPT_MULTIROW_MIN_M": "0", "BL_CUDA_OPT_MMA_MIN_M": "9",
                   "BL_CUDA_OPT_MMA_BN": "128"}


def test_gpu_auto_docs_table_matches_package():
    """docs/cuda.md's verification table names each kernel with the package's status."""
    doc = (ROOT / "docs" / "cuda.md").read_text()
    sec = doc[doc.index("## Verification"):]
    sec = sec[:sec.index("\n## ", 5)]
    for name, (file, status, *_rest) in _info.CUDA_KERNELS.items():
        row = next((ln for ln in sec.splitlines() if ln.startswith(f"| `{name}`")), None)
        assert row is not None, name
        assert file in row and (("never run" in row) == (status == "never run")), row


def test_gpu_auto_info_prints_each_kernel():
    info = bitlinear.collect_info()
    for name in _info.CUDA_KERNELS:
        assert f"cuda_kernel_{name}" in info
    assert "NEVER RUN" in info["cuda_kernel_fused"] and "VERIFIED" in info["cuda_kernel_gemv"]
    assert info["cuda_auto"].startswith("M 1-8: gemv; M >= 9: mma")
    assert "cuda_training" in info
    if not bitlinear.HAS_CUDA_KERNELS:
        assert "apply to CUDA builds" in info["cuda_kernels_note"]


@pytest.mark.skipif(not (torch.cuda.is_available() and bitlinear.HAS_CUDA_KERNELS),
                    reason="needs a CUDA build and a GPU")
def test_gpu_auto_options_on_device():
    from bitlinear.cuda import cuda_options
    assert cuda_options() == _info.CUDA_DEFAULT_OPTIONS
