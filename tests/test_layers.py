"""The package's layering: one definition of each op (schema, fake, pure-PyTorch default kernel in
bitlinear/ops.py) with native kernels per device, one validation layer (bitlinear/_checks.py) with
one exception type per fault, the CPU path names owned by the C core, and the readable quant form."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import bitlinear
from bitlinear import BitLinear, ops
from bitlinear import reference as ref

from conftest import SEED, rand

native = pytest.mark.skipif(not bitlinear.HAS_BITLINEAR, reason="native extension not built")
OPS = ("quantize_weights", "unpack_weights", "quantize_acts", "gemm_acc", "linear", "linear_q",
       "linear_train")


def _kernels(op):
    """{dispatch key: where its kernel was registered} of torch.ops.bitlinear.<op>."""
    table = torch._C._dispatch_dump(f"bitlinear::{op}")
    out = {}
    for line in table.splitlines():
        key, _, rest = line.partition(":")
        out[key.strip()] = rest.strip()
    return out


@pytest.mark.parametrize("op", OPS)
def test_every_op_has_a_fake_and_a_default_kernel(op):
    k = _kernels(op)
    assert "ops.py" in k["Meta"]
    assert "ops.py" in k["CompositeExplicitAutograd[alias]"]


@native
@pytest.mark.parametrize("op", OPS)
def test_cpu_kernels_come_from_the_cpu_binding_file(op):
    assert "csrc/binding/ops_cpu.cpp" in _kernels(op)["CPU"]


_DEFAULT_SCRIPT = r"""
import sys, torch, bitlinear
from bitlinear import ops
assert not bitlinear.HAS_BITLINEAR
g = torch.Generator().manual_seed(int(sys.argv[2]))
w = torch.randn(37, 300, generator=g)
x = torch.randn(3, 5, 300, generator=g).to(torch.bfloat16)
b = torch.randn(37, generator=g)
out = {}
for pc in (False, True):
    s, p = ops.quantize_weights(w, 1e-6, pc)
    out[f"q{pc}"] = (s, p)
    out[f"t{pc}"] = torch.ops.bitlinear.linear_train(x, w, b, 1e-6, True, pc)
    out[f"u{pc}"] = ops.unpack_weights(p, 300)
    for pt in (False, True):
        xq, sx, rs = ops.quantize_acts(x.reshape(-1, 300), 1e-6, pt)
        out[f"a{pc}{pt}"] = (xq, sx, rs, ops.gemm_acc(xq, p, 300))
        out[f"l{pc}{pt}"] = ops.linear(x, s, p, b, 1e-6, 300, pt)
for name in ("quantize_weights", "linear"):
    args = ((w, 1e-6, True) if name == "quantize_weights" else (x, *out["qTrue"], b, 1e-6, 300, True))
    torch.library.opcheck(getattr(torch.ops.bitlinear, name).default, args)
torch.save(out, sys.argv[1])
"""


@native
def test_default_kernels_equal_the_native_ones(tmp_path):
    """Without the extension every op still runs (the dispatcher's default kernels, i.e. the
    reference), passes opcheck, and gives the same bits as the native CPU kernels."""
    path = tmp_path / "fallback.pt"
    r = subprocess.run([sys.executable, "-c", _DEFAULT_SCRIPT, str(path), str(SEED)],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, BITLINEAR_DISABLE_NATIVE="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    want = torch.load(path, weights_only=True)
    g = torch.Generator().manual_seed(SEED)
    w = torch.randn(37, 300, generator=g)
    x = torch.randn(3, 5, 300, generator=g).to(torch.bfloat16)
    b = torch.randn(37, generator=g)
    for pc in (False, True):
        s, p = ops.quantize_weights(w, 1e-6, pc)
        assert all(torch.equal(a, c) for a, c in zip((s, p), want[f"q{pc}"]))
        assert all(torch.equal(a, c) for a, c in
                   zip(torch.ops.bitlinear.linear_train(x, w, b, 1e-6, True, pc), want[f"t{pc}"]))
        assert torch.equal(ops.unpack_weights(p, 300), want[f"u{pc}"])
        for pt in (False, True):
            xq, sx, rs = ops.quantize_acts(x.reshape(-1, 300), 1e-6, pt)
            got = (xq, sx, rs, ops.gemm_acc(xq, p, 300))
            assert all(torch.equal(a, c) for a, c in zip(got, want[f"a{pc}{pt}"]))
            assert torch.equal(ops.linear(x, s, p, b, 1e-6, 300, pt), want[f"l{pc}{pt}"])


@native
def test_cpu_path_names_come_from_the_c_core():
    import _bitlinear
    names = _bitlinear.cpu_isa_names()
    assert names[0] == "ref" and len(set(names)) == len(names) and "unknown" not in names
    assert bitlinear._ext.CPU_ISA_NAMES == tuple(names)
    assert set(bitlinear.available_cpu_isas()) <= set(names)
    assert bitlinear.isa.best_cpu_isa() in bitlinear.available_cpu_isas()
    with pytest.raises(ValueError, match="unknown CPU path 'avx9'.*ref"):
        bitlinear.set_cpu_isa("avx9")


# ---------------------------------------------------------------------- validation
def _weights(gen):
    return ops.quantize_weights(rand(gen, 4, 10), 1e-6, False)


@pytest.mark.parametrize("exc,match,call", [
    (TypeError, "weight must be float32", lambda s, p, x: ops.quantize_weights(torch.ones(4, 10, dtype=torch.int32), 1e-6, False)),
    (TypeError, "torch.Tensor", lambda s, p, x: ops.quantize_weights([[1.0]], 1e-6, False)),
    (ValueError, "non-empty 2-D", lambda s, p, x: ops.quantize_weights(torch.ones(10), 1e-6, False)),
    (ValueError, "NaN or Inf", lambda s, p, x: ops.quantize_weights(torch.tensor([[1.0, float("inf")]]), 1e-6, False)),
    (ValueError, "NaN or Inf", lambda s, p, x: ops.quantize_weights(torch.tensor([[1.0], [float("nan")]]), 1e-6, True)),
    (ValueError, "eps must be a finite float", lambda s, p, x: ops.quantize_weights(torch.ones(2, 2), 0.0, False)),
    (ValueError, "eps must be a finite float", lambda s, p, x: ops.quantize_acts(x, float("nan"), True)),
    (ValueError, "eps must be a finite float", lambda s, p, x: ops.linear(x, s, p, None, -1.0, 10)),
    (ValueError, "2-D input", lambda s, p, x: ops.quantize_acts(x[0], 1e-6, True)),
    (TypeError, "x must be float32", lambda s, p, x: ops.quantize_acts(x.to(torch.int8), 1e-6, True)),
    (ValueError, "w_packed must be uint8 of shape", lambda s, p, x: ops.unpack_weights(p[:, :8], 10)),
    (ValueError, "in_features must be an int", lambda s, p, x: ops.unpack_weights(p, 0)),
    (ValueError, "x_q must be int8", lambda s, p, x: ops.gemm_acc(x, p, 10)),
    (ValueError, "x_q is on meta", lambda s, p, x: ops.gemm_acc(torch.empty(3, 128, dtype=torch.int8, device="meta"), p, 10)),
    (ValueError, "in_features=10", lambda s, p, x: ops.linear(x[:, :9], s, p, None, 1e-6, 10)),
    (TypeError, "x must be float32", lambda s, p, x: ops.linear(x.double(), s, p, None, 1e-6, 10)),
    (ValueError, "w_scale must be", lambda s, p, x: ops.linear(x, s.reshape(1, 1), p, None, 1e-6, 10)),
    (ValueError, "w_scale must be", lambda s, p, x: ops.linear(x, torch.ones(3), p, None, 1e-6, 10)),
    (ValueError, "bias must be", lambda s, p, x: ops.linear(x, s, p, torch.ones(2, 2), 1e-6, 10)),
    (ValueError, "bias must be", lambda s, p, x: ops.linear(x, s, p, torch.ones(4).double(), 1e-6, 10)),
    (ValueError, "w_scale is on meta", lambda s, p, x: ops.linear(x, s.to("meta"), p, None, 1e-6, 10)),
    (ValueError, "input is on meta", lambda s, p, x: ops.linear(x.to("meta"), s, p, None, 1e-6, 10)),
])
def test_one_exception_type_per_fault(gen, exc, match, call):
    s, p = _weights(gen)
    with pytest.raises(exc, match=match):
        call(s, p, rand(gen, 3, 10))


def test_buffers_are_checked_at_deploy_and_load_not_per_call(gen, monkeypatch):
    from bitlinear import _checks
    layer = BitLinear(10, 4)
    calls = []
    real = _checks.deployed_buffers
    # the full check (with the pass over the packed codes) runs at deploy and load only; calls
    # re-check the cheap structure (codes=False) when something changed (fast path) or per call
    # (op path)
    monkeypatch.setattr(_checks, "deployed_buffers",
                        lambda *a, **k: (calls.append(k.get("codes", True)), real(*a, **k))[1])
    layer.deploy()
    assert calls == [True]
    with torch.no_grad():
        for _ in range(3):
            layer(rand(gen, 2, 10))
        bitlinear.set_fast_path(False)
        try:
            layer(rand(gen, 2, 10))
        finally:
            bitlinear.set_fast_path(True)
    assert sum(calls) == 1 and len(calls) == 3  # first fast call, the op call
    BitLinear(10, 4).deploy().load_state_dict(layer.state_dict())
    assert sum(calls) == 3  # the fresh layer's deploy, then the load


# ---------------------------------------------------------------------- quant spec
@pytest.mark.parametrize("code", list(ref.QUANT_TYPES))
def test_readable_quant_form_equals_the_code(gen, code):
    spec = ref.QUANT_TYPES[code]
    a = BitLinear(40, 6, quant_type=code)
    b = BitLinear(40, 6, act_scale=spec.act_scale, weight_scale=spec.weight_scale)
    c = BitLinear(40, 6, quant_type=code, act_scale=spec.act_scale)
    assert a.quant_type == b.quant_type == c.quant_type == code and b.spec == spec
    b.load_state_dict(a.state_dict())
    x = rand(gen, 3, 40)
    with torch.no_grad():
        assert torch.equal(a.deploy()(x), b.deploy()(x))
    assert f"act_scale={spec.act_scale!r}" in repr(b)


def test_readable_quant_form_errors():
    assert BitLinear(4, 4).quant_type == "ai8pc_wpt"
    assert BitLinear(4, 4, weight_scale="per_channel").quant_type == "ai8pc_wpc"
    assert BitLinear(4, 4, act_scale="per_tensor").quant_type == "ai8pt_wpt"
    with pytest.raises(ValueError, match="act_scale must be one of"):
        BitLinear(4, 4, act_scale="per_row")
    with pytest.raises(ValueError, match="contradicts"):
        BitLinear(4, 4, quant_type="ai8pc_wpt", weight_scale="per_channel")
    with pytest.raises(ValueError, match="not a supported combination"):
        BitLinear(4, 4, act_scale="per_tensor", weight_scale="per_channel")


def test_convert_takes_the_readable_quant_form():
    from torch import nn
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    bitlinear.convert(model, act_scale="per_tensor", skip=())
    assert [m.quant_type for m in model if isinstance(m, BitLinear)] == ["ai8pt_wpt"] * 2
