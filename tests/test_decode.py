"""The small-M (decode) CPU paths against the pure-PyTorch reference, bit for bit, on every CPU path
this machine runs: the GEMV tiles (M = 1; AVX-512: the shared one- and two-row tile), the tiles of
up to 4 rows, the weight stream's prefetch and the one-contiguous-range-per-thread schedule of
M <= 4 (csrc/cpu/gemm.c, simd_x86.h). Random packed bytes (every code, the invalid code 3
included), odd K and N, N wide enough for several panels per thread, 1 and 2 threads. Fresh
random inputs every run (conftest.py's `gen`: the run seed is printed, BITLINEAR_TEST_SEED replays).
"""
import pytest
import torch

import bitlinear
from bitlinear import ops
from bitlinear import reference as ref

pytestmark = pytest.mark.skipif(not bitlinear.HAS_BITLINEAR, reason="native extension not built")

ISAS = bitlinear.available_cpu_isas() if bitlinear.HAS_BITLINEAR else []
# (K, N): odd sizes, one block and less, a tile's ragged edge, several panels (192 rows) per thread
SHAPES = [(1, 1), (3, 7), (7, 129), (129, 3), (1000, 1000), (4096, 401), (2560, 771), (300, 2049)]
MS = [1, 2, 3, 4, 5]


@pytest.fixture(params=ISAS)
def isa(request):
    with bitlinear.use_cpu_isa(request.param):
        yield request.param


def _inputs(gen, M, K, N, bytes_mode):
    rb = ref.packed_row_bytes(K)
    if bytes_mode == "random":  # all 256 byte values: codes 0..3 in every field
        p = torch.randint(0, 256, (N, rb), generator=gen, dtype=torch.uint8)
    else:  # a valid layer, padding included
        _, p = ops.quantize_weights(torch.randn(N, K, generator=gen), 1e-6, False)
    xq = torch.randint(-128, 128, (M, ref.padded_k(K)), generator=gen, dtype=torch.int8)
    xq[:, K:] = 0
    return p, xq


@pytest.mark.parametrize("bytes_mode", ["random", "quantized"])
@pytest.mark.parametrize("K,N", SHAPES)
@pytest.mark.parametrize("M", MS)
def test_small_m_gemm_exact(isa, gen, M, K, N, bytes_mode):
    p, xq = _inputs(gen, M, K, N, bytes_mode)
    want = ref.gemm_acc(xq, p, K)
    old = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            got = ops.gemm_acc(xq, p, K)
            assert torch.equal(got, want), f"{isa} threads={t}"
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("K,N", [(7, 129), (1000, 1000), (4096, 401), (300, 2049)])
@pytest.mark.parametrize("M", MS)
def test_small_m_linear_exact(isa, gen, M, K, N):
    """The fused forward (epilogue straight from the tile buffer) at small M, raw op on random
    bytes (code 3 included): float32 output equal to the plain C reference's bit for bit, 1 and 2
    threads; constant activations (x_q = -128 everywhere) too."""
    p = torch.randint(0, 256, (N, ref.packed_row_bytes(K)), generator=gen, dtype=torch.uint8)
    s = torch.rand(N, generator=gen) + 0.01
    b = torch.randn(N, generator=gen)
    for x in (torch.randn(M, K, generator=gen), torch.full((M, K), -1.0)):
        with bitlinear.use_cpu_isa("ref"):
            want = torch.ops.bitlinear.linear(x, s, p, b, 1e-6, K, True)
        old = torch.get_num_threads()
        try:
            outs = []
            for t in (1, 2):
                torch.set_num_threads(t)
                outs.append(torch.ops.bitlinear.linear(x, s, p, b, 1e-6, K, True))
        finally:
            torch.set_num_threads(old)
        for t, y in zip((1, 2), outs):
            assert torch.equal(y, want), f"{isa} threads={t}"


def test_decode_rows_render():
    """The benchmark's decode table (profile/bench/cpu.py) from a tiny run: hot and cold rows at
    M = 1."""
    import sys
    from pathlib import Path
    profile = str(Path(__file__).resolve().parent.parent / "profile")
    if profile not in sys.path:
        sys.path.insert(0, profile)  # the suite runs from the checkout, not installed
    from bench import cpu
    from bitlinear import _ext
    paths = cpu.decode_paths()[:1] + [p for p in cpu.decode_paths() if p.endswith(" packed")]
    recs = cpu.run_decode_suite([(130, 70)], [1, 2], [1], paths,
                                hw_limits={1: {"read_bw_gbs": 10.0}}, reps=3, max_seconds=0.05,
                                cold_bytes=1 << 16, progress=False)
    want = {(1, "hot"), (1, "cold"), (2, "hot"), (2, "cold")}
    for path in paths:
        assert {(r["M"], r["cache"]) for r in recs if r["path"] == path} == want
        cold = next(r for r in recs if r["M"] == 1 and r["cache"] == "cold" and r["path"] == path)
        # the floor counts the bytes the call streams: the decode layout where it reads it
        nbytes = _ext.native().lut_bytes(70, 130) if cold["lut"] else 70 * 64
        assert cold["lut"] == (path == paths[0] and bitlinear.cpu_lut_used(1))
        assert cold["copies"] > 1 and cold["floor_us"] == pytest.approx(nbytes / 10e9 * 1e6)
    text = cpu.render_decode({"records": recs})
    assert "M=1 cold" in text and "130x70" in text
