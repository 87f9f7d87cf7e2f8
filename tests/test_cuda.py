"""The CUDA kernels against the CPU path (itself tested against the plain-C and Python references).

Integer results (packed bytes, x_q, row sums, int32 accumulators) and scales must be identical;
float32 outputs too (same epilogue operations, no FMA); float16/bfloat16 outputs within one unit
in the last place. Every GEMM test runs on each GPU path, forced through the environment:
auto, simple (BITLINEAR_CUDA_SIMPLE=1), gemv and mma (BITLINEAR_CUDA_MMA_MIN_M), mma256
(BITLINEAR_CUDA_MMA_BN=256).
Skipped unless a GPU and a CUDA build of the extension are present.
"""
import pytest
import torch

import bitlinear
from bitlinear import BitLinear, ops
from bitlinear import reference as ref

from conftest import rand

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or not bitlinear.HAS_CUDA_KERNELS,
    reason="needs a CUDA GPU and a CUDA build of the extension")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
QUANT_TYPES = ["ai8pc_wpt", "ai8pt_wpt", "ai8pc_wpc"]
PATHS = {
    "auto": {},
    "simple": {"BITLINEAR_CUDA_SIMPLE": "1"},
    "gemv": {"BITLINEAR_CUDA_MMA_MIN_M": "1000000000"},
    "mma": {"BITLINEAR_CUDA_MMA_MIN_M": "1"},
    "mma256": {"BITLINEAR_CUDA_MMA_MIN_M": "1", "BITLINEAR_CUDA_MMA_BN": "256"},
}
ENV_KEYS = ("BITLINEAR_CUDA_SIMPLE", "BITLINEAR_CUDA_MMA_MIN_M", "BITLINEAR_CUDA_MMA_BN")
# (M, K, N): odd sizes, K tails inside a 128-block, split-K (small N, large K), the MMA tile tails
GEMM_SHAPES = [(1, 1, 1), (1, 3, 7), (3, 7, 129), (7, 129, 3), (1, 1000, 1000), (2, 8192, 64),
               (5, 4096, 33), (16, 1000, 129), (17, 129, 1000), (129, 1000, 7), (300, 1000, 129),
               (300, 129, 1000), (64, 256, 256)]


@pytest.fixture(params=list(PATHS))
def cuda_path(request, monkeypatch):
    """The env vars are read by the kernels at each call, so they switch paths in-process."""
    for k in ENV_KEYS:
        monkeypatch.delenv(k, raising=False)
    for k, v in PATHS[request.param].items():
        monkeypatch.setenv(k, v)
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
