"""The CUDA kernels against the CPU path (itself tested against the plain-C and Python references).

Integer results (packed bytes, x_q, row sums, int32 accumulators) and scales must be identical;
float32 outputs too (same epilogue operations, no FMA); float16/bfloat16 outputs within one unit
in the last place. Every GEMM test runs on each GPU path, forced with bitlinear.cuda's setters
(never the environment): auto, simple, gemv, fused (the one-kernel quantize + GEMV of the fused
forward), multirow (skinny mma.sync), mma, mma256 (128 x 256 tiles), wgmma (sm_90a; the mma
path where the build has no sm_90a code). profile/gpu_check.sh runs the wgmma tests in a step of
their own (-k wgmma), since a fault there could hang.
The GPU tests are skipped unless a GPU and a CUDA build of the extension are present; the
`test_host_*` tests need neither.
"""
import pytest
import torch

import bitlinear
from bitlinear import BitLinear, ops
from bitlinear import cuda as blcuda
from bitlinear import reference as ref

from conftest import rand

HAVE_GPU = torch.cuda.is_available() and bitlinear.HAS_CUDA_KERNELS


@pytest.fixture(autouse=True)
def _needs_gpu(request):
    if not HAVE_GPU and not request.node.name.startswith("test_host_"):
        pytest.skip("needs a CUDA GPU and a CUDA build of the extension")


DTYPES = [torch.float32, torch.float16, torch.bfloat16]
QUANT_TYPES = ["ai8pc_wpt", "ai8pt_wpt", "ai8pc_wpc"]
PATHS = {
    "auto": {},
    "simple": {"path": "simple"},
    "gemv": {"path": "gemv"},
    "fused": {"path": "fused"},
    "multirow": {"path": "multirow"},
    "mma": {"path": "mma"},
    "mma256": {"path": "mma", "mma_bn": 256},
    "wgmma": {"path": "wgmma"},  # sm_90a builds on sm_90 GPUs; elsewhere it runs the mma path
}
# (M, K, N): odd sizes, K tails inside a 128-block, split-K (small N, large K), the MMA tile tails
GEMM_SHAPES = [(1, 1, 1), (1, 3, 7), (3, 7, 129), (7, 129, 3), (1, 1000, 1000), (2, 8192, 64),
               (5, 4096, 33), (16, 1000, 129), (17, 129, 1000), (129, 1000, 7), (300, 1000, 129),
               (300, 129, 1000), (64, 256, 256), (40, 1000, 3), (70, 129, 129)]
# every M from 1 to 70 that sits on or next to a threshold or a tile edge
THRESHOLD_MS = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70]


@pytest.fixture(params=list(PATHS))
def cuda_path(request):
    """The options are process-wide and read at each call, so they switch paths in-process."""
    with blcuda.use_cuda_options(**{"path": "auto", "mma_bn": 128, **PATHS[request.param]}):
        yield request.param


def assert_same_float(y_gpu, y_cpu):
    y_gpu = y_gpu.cpu()
    assert y_gpu.dtype == y_cpu.dtype and y_gpu.shape == y_cpu.shape
    nan_g, nan_c = torch.isnan(y_gpu), torch.isnan(y_cpu)
    assert torch.equal(nan_g, nan_c), f"NaN positions differ: {nan_g.sum()} vs {nan_c.sum()}"
    a, b = y_gpu[~nan_g].float(), y_cpu[~nan_c].float()
    if y_cpu.dtype == torch.float32:
        assert torch.equal(a, b), f"max abs diff {(a - b).abs().max()}"
    else:  # one unit in the last place of the output dtype
        rtol = 2.0**-10 if y_cpu.dtype == torch.float16 else 2.0**-7
        torch.testing.assert_close(a, b, rtol=rtol, atol=2.0**-24)


# ------------------------------------------------------------------ weights
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("N,K", [(1, 1), (3, 7), (7, 129), (17, 1000), (129, 300), (64, 4096),
                                 (1000, 129)])
def test_quantize_weights_matches_cpu(gen, N, K, per_channel):
    w = rand(gen, N, K, scale=0.02)
    s_cpu, p_cpu = ops.quantize_weights(w, 1e-6, per_channel)
    s_gpu, p_gpu = ops.quantize_weights(w.cuda(), 1e-6, per_channel)
    assert torch.equal(p_gpu.cpu(), p_cpu)
    assert torch.equal(s_gpu.cpu(), s_cpu)
    s2, p2 = ops.quantize_weights(w.cuda(), 1e-6, per_channel)  # deterministic reduction
    assert torch.equal(s2, s_gpu) and torch.equal(p2, p_gpu)
    s_ref, p_ref = ref.quantize_weights(w, 1e-6, per_channel)
    assert torch.equal(p_gpu.cpu(), p_ref)


def test_quantize_weights_eps_floor(gen):
    w = rand(gen, 5, 300, scale=1e-12)
    s_gpu, p_gpu = ops.quantize_weights(w.cuda(), 1e-6, True)
    s_cpu, p_cpu = ops.quantize_weights(w, 1e-6, True)
    assert torch.equal(s_gpu.cpu(), s_cpu) and torch.equal(p_gpu.cpu(), p_cpu)
    assert (s_cpu == torch.tensor(1e-6, dtype=torch.float32)).all()


@pytest.mark.parametrize("N,K", [(1, 1), (3, 7), (7, 129), (33, 1000)])
def test_unpack_weights_matches_cpu(gen, N, K):
    _, packed = ops.quantize_weights(rand(gen, N, K), 1e-6, False)
    wq = ops.unpack_weights(packed.cuda(), K)
    assert torch.equal(wq.cpu(), ops.unpack_weights(packed, K))
    assert set(wq.unique().tolist()) <= {-1, 0, 1}


# ------------------------------------------------------------------ activations
@pytest.mark.parametrize("per_token", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K", [(1, 1), (3, 7), (7, 129), (1, 1000), (300, 129), (2, 8192)])
def test_quantize_acts_matches_cpu(gen, M, K, dtype, per_token):
    x = rand(gen, M, K, dtype=dtype)
    q_c, s_c, r_c = ops.quantize_acts(x, 1e-6, per_token)
    q_g, s_g, r_g = ops.quantize_acts(x.cuda(), 1e-6, per_token)
    assert torch.equal(q_g.cpu(), q_c)
    assert torch.equal(s_g.cpu(), s_c)
    assert torch.equal(r_g.cpu(), r_c)
    assert torch.equal(q_g.cpu(), ref.quantize_acts(x, 1e-6, per_token)[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize_acts_strided_rows(gen, dtype):
    big = rand(gen, 9, 300, dtype=dtype)
    x = big[::2, 5:134]  # row stride 600, not contiguous
    q_c, s_c, r_c = ops.quantize_acts(x.contiguous(), 1e-6, True)
    q_g, s_g, r_g = ops.quantize_acts(big.cuda()[::2, 5:134], 1e-6, True)
    assert torch.equal(q_g.cpu(), q_c) and torch.equal(s_g.cpu(), s_c)
    assert torch.equal(r_g.cpu(), r_c)


@pytest.mark.parametrize("per_token", [True, False])
def test_quantize_acts_nonfinite_rows(gen, per_token):
    x = rand(gen, 4, 200)
    x[1, 7] = float("nan")
    x[2, 100] = float("inf")
    q_g, s_g, r_g = ops.quantize_acts(x.cuda(), 1e-6, per_token)
    q_c, s_c, r_c = ops.quantize_acts(x, 1e-6, per_token)
    bad = [1, 2] if per_token else [0, 1, 2, 3]
    assert not torch.isfinite(s_g.cpu()[bad]).any()
    assert (q_g.cpu()[bad] == 0).all() and (r_g.cpu()[bad] == 0).all()
    assert torch.equal(q_g.cpu(), q_c) and torch.equal(r_g.cpu(), r_c)
    assert torch.equal(torch.isnan(s_g.cpu()), torch.isnan(s_c))


# ------------------------------------------------------------------ integer GEMM
@pytest.mark.parametrize("M,K,N", GEMM_SHAPES)
def test_gemm_acc_matches_cpu(gen, cuda_path, M, K, N):
    x_q, _, _ = ops.quantize_acts(rand(gen, M, K), 1e-6, True)
    _, packed = ops.quantize_weights(rand(gen, N, K), 1e-6, False)
    acc_cpu = ops.gemm_acc(x_q, packed, K)
    acc_gpu = ops.gemm_acc(x_q.cuda(), packed.cuda(), K)
    assert torch.equal(acc_gpu.cpu(), acc_cpu)
    assert torch.equal(acc_cpu, ref.gemm_acc(x_q, packed, K))


def test_gemm_acc_extreme_values(cuda_path):
    """All -128 activations against all -1 / +1 weights: the largest sums, both signs."""
    M, K, N = 20, 1000, 40
    x_q = torch.zeros(M, ref.padded_k(K), dtype=torch.int8)
    x_q[:, :K] = -128
    x_q[::2, :K] = 127
    w = torch.ones(N, K)
    w[::3] = -1
    _, packed = ops.quantize_weights(w, 1e-6, False)
    acc_gpu = ops.gemm_acc(x_q.cuda(), packed.cuda(), K)
    assert torch.equal(acc_gpu.cpu(), ref.gemm_acc(x_q, packed, K))


def test_gemm_acc_misaligned_input(gen):
    """x_q at an odd address takes the plain path; the result must not change."""
    M, K, N = 33, 300, 70
    x_q, _, _ = ops.quantize_acts(rand(gen, M, K), 1e-6, True)
    _, packed = ops.quantize_weights(rand(gen, N, K), 1e-6, False)
    buf = torch.empty(x_q.numel() + 1, dtype=torch.int8, device="cuda")
    x_odd = buf[1:].view(M, -1)
    x_odd.copy_(x_q.cuda())
    assert x_odd.data_ptr() % 16 != 0
    assert torch.equal(ops.gemm_acc(x_odd, packed.cuda(), K).cpu(), ref.gemm_acc(x_q, packed, K))


def _random_packed(gen, N, K):
    """Arbitrary bytes, code 3 included (read as +1 by every path), padding codes too."""
    return torch.randint(0, 256, (N, ref.packed_row_bytes(K)), generator=gen, dtype=torch.uint8)


@pytest.mark.parametrize("M,K,N", [(1, 129, 7), (3, 1000, 129), (9, 300, 40), (33, 7, 3),
                                   (70, 1000, 129)])
def test_gemm_acc_code3_bytes(gen, cuda_path, M, K, N):
    x_q, _, _ = ops.quantize_acts(rand(gen, M, K), 1e-6, True)
    packed = _random_packed(gen, N, K)
    acc = ops.gemm_acc(x_q.cuda(), packed.cuda(), K).cpu()
    assert torch.equal(acc, ref.gemm_acc(x_q, packed, K))
    assert torch.equal(acc, ops.gemm_acc(x_q, packed, K))


@pytest.mark.parametrize("M", THRESHOLD_MS)
def test_gemm_acc_threshold_ms(gen, cuda_path, M):
    """Every M around a path threshold or a token-tile edge, K with a tail, N not a tile multiple."""
    K, N = 1000, 129
    x_q, _, _ = ops.quantize_acts(rand(gen, M, K), 1e-6, True)
    packed = _random_packed(gen, N, K)
    acc = ops.gemm_acc(x_q.cuda(), packed.cuda(), K).cpu()
    assert torch.equal(acc, ref.gemm_acc(x_q, packed, K))


# ------------------------------------------------------------------ fused linear
def _deployed_pair(gen, K, N, quant_type, bias=True):
    layer = BitLinear(K, N, bias=bias, quant_type=quant_type)
    with torch.no_grad():
        layer.weight.copy_(rand(gen, N, K, scale=0.05))
        if bias:
            layer.bias.copy_(rand(gen, N))
    layer.deploy()
    return layer, _copy_to_cuda(layer)


def _copy_to_cuda(layer):
    import copy
    return copy.deepcopy(layer).to("cuda")


@pytest.mark.parametrize("quant_type", QUANT_TYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 7, 129), (7, 129, 3), (1, 1000, 1000),
                                   (2, 8192, 64), (16, 300, 70), (17, 129, 1000),
                                   (300, 1000, 129)])
def test_linear_matches_cpu(gen, cuda_path, M, K, N, dtype, quant_type):
    cpu, gpu = _deployed_pair(gen, K, N, quant_type, bias=(N % 2 == 1))
    x = rand(gen, M, K, dtype=dtype)
    with torch.no_grad():
        y_cpu = cpu(x)
        y_gpu = gpu(x.cuda())
    assert y_gpu.dtype == dtype and y_gpu.device.type == "cuda"
    assert_same_float(y_gpu, y_cpu)
    y_ref = ref.linear(x, cpu.w_scale, cpu.w_packed, cpu.bias, cpu.eps, K,
                       cpu.spec.act_per_token)
    assert_same_float(y_gpu, y_ref)


@pytest.mark.parametrize("quant_type", QUANT_TYPES)
def test_linear_nan_rows(gen, cuda_path, quant_type):
    cpu, gpu = _deployed_pair(gen, 300, 50, quant_type)
    x = rand(gen, 20, 300)
    x[3, 10] = float("nan")
    x[5, 0] = float("inf")
    x[6, 299] = float("-inf")
    with torch.no_grad():
        y_gpu = gpu(x.cuda()).cpu()
        y_cpu = cpu(x)
    assert_same_float(y_gpu, y_cpu)
    if cpu.spec.act_per_token:
        assert torch.isnan(y_gpu[[3, 5, 6]]).all()
        assert torch.isfinite(y_gpu[[0, 1, 2, 4, 7]]).all()
    else:
        assert torch.isnan(y_gpu).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_leading_dims_and_strides(gen, dtype):
    cpu, gpu = _deployed_pair(gen, 129, 40, "ai8pc_wpt")
    x = rand(gen, 2, 3, 5, 129, dtype=dtype)
    xs = rand(gen, 6, 300, dtype=dtype)[:, 7:136]  # strided rows
    with torch.no_grad():
        assert_same_float(gpu(x.cuda()), cpu(x))
        assert_same_float(gpu(xs.cuda()), cpu(xs.contiguous()))


def test_linear_deterministic(gen, cuda_path):
    _, gpu = _deployed_pair(gen, 4096, 48, "ai8pc_wpt")  # split-K on the GEMV path
    x = rand(gen, 3, 4096).cuda()
    with torch.no_grad():
        a, b = gpu(x), gpu(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("per_token", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", THRESHOLD_MS)
def test_linear_threshold_ms(gen, cuda_path, M, dtype, per_token):
    """The fused forward (ops.linear) for every M around a threshold, code-3 bytes included,
    against the CPU kernels and the Python reference."""
    K, N = 1000, 129
    x = rand(gen, M, K, dtype=dtype)
    if M > 2:
        x[M // 2, 17] = float("nan")
    packed = _random_packed(gen, N, K)
    w_scale = torch.rand(N, generator=gen) * 0.1 + 0.01
    bias = rand(gen, N)
    y = ops.linear(x.cuda(), w_scale.cuda(), packed.cuda(), bias.cuda(), 1e-6, K, per_token)
    assert_same_float(y, ops.linear(x, w_scale, packed, bias, 1e-6, K, per_token))
    assert_same_float(y, ref.linear(x, w_scale, packed, bias, 1e-6, K, per_token))


@pytest.mark.parametrize("per_token", [True, False])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 3, 7), (2, 7, 129), (4, 129, 1000),
                                   (16, 2900, 33), (16, 3000, 70), (1, 40000, 3), (3, 20000, 5),
                                   (5, 129, 64), (11, 1000, 31)])
def test_linear_fused_shapes(gen, M, K, N, per_token):
    """The fused kernel forced, including sizes past its shared-memory limit (then unfused)."""
    x = rand(gen, M, K, dtype=torch.bfloat16)
    packed = _random_packed(gen, N, K)
    w_scale = torch.rand(N, generator=gen) * 0.1 + 0.01
    with blcuda.use_cuda_path("fused"):
        y = ops.linear(x.cuda(), w_scale.cuda(), packed.cuda(), None, 1e-6, K, per_token)
    assert_same_float(y, ops.linear(x, w_scale, packed, None, 1e-6, K, per_token))


def test_linear_fused_unaligned_weights(gen):
    """w_packed at an odd address: the fused kernel's byte-wise weight loads."""
    M, K, N = 3, 1000, 70
    x = rand(gen, M, K)
    packed = _random_packed(gen, N, K)
    buf = torch.empty(packed.numel() + 1, dtype=torch.uint8, device="cuda")
    odd = buf[1:].view(N, -1)
    odd.copy_(packed.cuda())
    assert odd.data_ptr() % 16 != 0
    w_scale = torch.full((1,), 0.05)
    for path in ("fused", "auto", "gemv", "multirow"):
        with blcuda.use_cuda_path(path):
            y = ops.linear(x.cuda(), w_scale.cuda(), odd, None, 1e-6, K, True)
        assert_same_float(y, ref.linear(x, w_scale, packed, None, 1e-6, K, True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_fused_strided_rows(gen, dtype):
    big = rand(gen, 9, 300, dtype=dtype)
    packed = _random_packed(gen, 40, 129)
    w_scale = torch.full((1,), 0.05)
    with blcuda.use_cuda_path("fused"):
        y = ops.linear(big.cuda()[::2, 5:134], w_scale.cuda(), packed.cuda(), None, 1e-6, 129,
                       True)
    assert_same_float(y, ops.linear(big[::2, 5:134].contiguous(), w_scale, packed, None, 1e-6, 129,
                                    True))


# ------------------------------------------------------------------ path options
def test_options_roundtrip():
    prev = blcuda.cuda_options()
    assert prev["path"] in blcuda.cuda_path_names()
    names = blcuda.cuda_path_names()
    assert names[0] == "auto" and {"simple", "gemv", "fused", "multirow", "mma", "wgmma"} <= set(names)
    with blcuda.use_cuda_path("multirow"):
        assert blcuda.cuda_path() == "multirow"
        with blcuda.use_cuda_options(mma_min_m=3, fused_max_m=0, mma_bn=256):
            o = blcuda.cuda_options()
            assert (o["mma_min_m"], o["fused_max_m"], o["mma_bn"]) == (3, 0, 256)
        assert blcuda.cuda_options()["mma_bn"] == prev["mma_bn"]
    assert blcuda.cuda_options() == prev
    for name, bad in [("path", "nope"), ("mma_bn", 64), ("fused_max_m", 17), ("mma_min_m", 0),
                      ("multirow_min_m", -1)]:
        with pytest.raises(ValueError):
            blcuda.set_cuda_option(name, bad)
    with pytest.raises(ValueError):
        blcuda.set_cuda_option("no_such_option", 1)
    assert blcuda.cuda_options() == prev


def test_host_cuda_module_without_cuda():
    """bitlinear.cuda on any build: names and options are empty without CUDA kernels, and
    setting a path says why it cannot."""
    assert "set_cuda_path" in bitlinear.__all__ and bitlinear.use_cuda_path is blcuda.use_cuda_path
    if bitlinear.HAS_CUDA_KERNELS:
        assert blcuda.cuda_path() in blcuda.cuda_path_names()
        return
    assert blcuda.cuda_path() == "unavailable"
    assert blcuda.cuda_path_names() == () and blcuda.cuda_options() == {}
    with pytest.raises(RuntimeError, match="no CUDA kernels"):
        blcuda.set_cuda_path("simple")
    with pytest.raises(RuntimeError):
        with blcuda.use_cuda_path("gemv"):
            pass


# ------------------------------------------------------------------ module behaviour
@pytest.mark.parametrize("quant_type", QUANT_TYPES)
def test_deploy_on_cuda_gives_cpu_bytes(gen, quant_type):
    layer = BitLinear(300, 70, quant_type=quant_type)
    with torch.no_grad():
        layer.weight.copy_(rand(gen, 70, 300, scale=0.05))
    gpu = _copy_to_cuda(layer).deploy()
    cpu = layer.deploy()
    assert torch.equal(gpu.w_packed.cpu(), cpu.w_packed)
    assert torch.equal(gpu.w_scale.cpu(), cpu.w_scale)


def test_to_cuda_and_back(gen):
    cpu, _ = _deployed_pair(gen, 1000, 33, "ai8pc_wpc")
    x = rand(gen, 5, 1000)
    with torch.no_grad():
        y0 = cpu(x)
        moved = cpu.to("cuda")
        y1 = moved(x.cuda())
        back = moved.to("cpu")
        y2 = back(x)
    assert_same_float(y1, y0)
    assert torch.equal(y2, y0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("quant_type", QUANT_TYPES)
def test_fast_path_matches_op_cuda(gen, monkeypatch, cuda_path, dtype, quant_type):
    """The eager fast path (bitlinear/_fast.py: bl_cuda_linear on raw pointers, current stream)
    gives the op's bits, on the default and on a side stream, and is the path taken."""
    from bitlinear import _fast
    _, gpu = _deployed_pair(gen, 1000, 129, quant_type)
    calls = []
    real = _fast._native.linear_cuda
    monkeypatch.setattr(_fast._native, "linear_cuda", lambda *a: calls.append(1) or real(*a))
    side = torch.cuda.Stream()
    for M in (1, 3, 4, 5, 16, 17, 64, 65, 200):
        x = rand(gen, 2, M, 1000, dtype=dtype).cuda()
        with torch.no_grad():
            y = gpu(x)
            expect = torch.ops.bitlinear.linear(x, gpu.w_scale, gpu.w_packed, gpu.bias, gpu.eps,
                                                1000, gpu.spec.act_per_token)
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                y_side = gpu(x)
            torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        assert torch.equal(y, expect) and torch.equal(y_side, expect), (M, dtype)
    assert len(calls) == 2 * 9


@pytest.mark.parametrize("M", [1, 5, 64])  # GEMV with split-K (N small), MMA
def test_cuda_graph_capture_and_replay(gen, M):
    _, gpu = _deployed_pair(gen, 4096, 512, "ai8pc_wpt")
    static_x = rand(gen, M, 4096, dtype=torch.bfloat16).cuda()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(s):
        for _ in range(2):  # warm-up outside capture
            gpu(static_x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(g):
        static_y = gpu(static_x)
    for _ in range(3):
        new_x = rand(gen, M, 4096, dtype=torch.bfloat16).cuda()
        static_x.copy_(new_x)
        g.replay()
        with torch.no_grad():
            expect = gpu(new_x)
        torch.cuda.synchronize()
        assert torch.equal(static_y, expect)


def test_torch_compile_reduce_overhead(gen):
    _, gpu = _deployed_pair(gen, 512, 256, "ai8pc_wpt")
    compiled = torch.compile(gpu, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):
        x = rand(gen, 4, 512, dtype=torch.float16).cuda()
        with torch.no_grad():
            y = compiled(x).clone()
            expect = gpu(x)
        assert torch.equal(y, expect)


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("quant_type", QUANT_TYPES)
@pytest.mark.parametrize("M,K,N", [(1, 7, 5), (9, 300, 129), (64, 1000, 256), (300, 256, 96)])
def test_linear_train_forward_matches_cpu(gen, cuda_path, quant_type, M, K, N, dtype):
    """The training forward on the GPU: weights read in their own dtype, the same scales and
    bytes as the CPU, the output as the deployed GPU path gives it."""
    spec = ref.QUANT_TYPES[quant_type]
    x = rand(gen, M, K, dtype=dtype)
    w = rand(gen, N, K, scale=0.05, dtype=dtype)
    b = rand(gen, N, dtype=dtype)
    args = (1e-6, spec.act_per_token, spec.weight_per_channel)
    got = torch.ops.bitlinear.linear_train(x.cuda(), w.cuda(), b.cuda(), *args)
    want = torch.ops.bitlinear.linear_train(x, w, b, *args)
    for g, c in zip(got[1:], want[1:]):  # x_q, x_scale, w_scale, w_packed
        assert torch.equal(g.cpu(), c)
    assert_same_float(got[0], want[0])
    with torch.no_grad():
        dep = ops.linear(x.cuda(), got[3], got[4], b.float().cuda(), 1e-6, K, spec.act_per_token)
    assert torch.equal(dep, got[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_step_gradients_match_cpu(gen, dtype):
    layer = BitLinear(300, 70).to(dtype)
    x = rand(gen, 2, 9, 300, dtype=dtype)
    g = rand(gen, 2, 9, 70, dtype=dtype)
    grads = []
    for dev in ("cpu", "cuda"):
        m = BitLinear(300, 70).to(dtype).to(dev)
        m.load_state_dict(layer.state_dict())
        xi = x.to(dev).requires_grad_()
        m(xi).backward(g.to(dev))
        grads.append([t.cpu().double() for t in (xi.grad, m.weight.grad, m.bias.grad)])
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}[dtype]
    for a, c in zip(*grads):
        assert ((a - c).norm() / c.norm()).item() <= tol


def test_nonfinite_weights_on_gpu_match_cpu(gen):
    w = rand(gen, 6, 300)
    w[2, 9] = float("inf")
    for per_channel in (False, True):
        s_g, p_g = torch.ops.bitlinear.quantize_weights(w.cuda(), 1e-6, per_channel)
        s_c, p_c = torch.ops.bitlinear.quantize_weights(w, 1e-6, per_channel)
        assert torch.equal(s_g.cpu().isnan(), s_c.isnan()) and torch.equal(p_g.cpu(), p_c)
