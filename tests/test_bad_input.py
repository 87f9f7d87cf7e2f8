"""Bad input gets a clear exception naming the problem (never uninitialised memory, an overflow or
a crash): tensors on several devices, in_features past the int32 accumulator bound, eps that would
make a scale zero or denormal, invalid packed codes, junk checkpoint metadata, a missing compiler."""
import os
import subprocess
import sys

import pytest
import torch

import bitlinear
from bitlinear import BitLinear, ops
from bitlinear import reference as ref

from conftest import rand

native = pytest.mark.skipif(not bitlinear.HAS_BITLINEAR, reason="native extension not built")


def _deployed(gen, K=64, N=256):
    layer = BitLinear(K, N)
    with torch.no_grad():
        layer.weight.copy_(rand(gen, N, K))
    return layer.deploy()


# ---------------------------------------------------------------------- devices
@pytest.mark.parametrize("meta", ["w_scale", "w_packed", "bias"])
def test_a_meta_buffer_next_to_a_cpu_input_raises(gen, meta):
    layer = _deployed(gen)
    x = rand(gen, 8, 64)
    args = {"w_scale": layer.w_scale, "w_packed": layer.w_packed, "bias": layer.bias}
    args[meta] = args[meta].to("meta")
    call = (args["w_scale"], args["w_packed"], args["bias"], 1e-6, 64, True)
    with pytest.raises(ValueError, match="device"):
        torch.ops.bitlinear.linear(x, *call)
    with pytest.raises(ValueError, match="device|meta"):
        ops.linear(x, *call)
    setattr(layer, meta, args[meta])
    with pytest.raises(ValueError, match="device|meta"), torch.no_grad():
        layer(x)


@native
def test_legacy_call_with_a_meta_buffer_raises(gen):
    import _bitlinear
    layer = _deployed(gen)
    with pytest.raises(ValueError, match="device|meta"):
        _bitlinear.bitlinear(rand(gen, 8, 64), layer.w_scale.to("meta"), layer.w_packed,
                             layer.bias, 1e-6)


def test_deploy_on_meta_builds_meta_buffers():
    layer = BitLinear(64, 32, device="meta").deploy()
    assert layer.w_packed.device.type == "meta" and layer.w_packed.shape == (32, 32)


# ---------------------------------------------------------------------- sizes
def test_in_features_past_the_int32_bound_is_refused():
    with pytest.raises(ValueError, match="at most 16777215"):
        BitLinear(17_000_000, 1)
    BitLinear(ref.MAX_IN_FEATURES, 1, device="meta")  # the largest allowed
    with pytest.raises(ValueError, match="int32"):
        ref.gemm_acc(torch.zeros(1, ref.padded_k(2 ** 24), dtype=torch.int8),
                     torch.zeros(1, 2 ** 22 + 32, dtype=torch.uint8), 2 ** 24)
    _, p = ops.quantize_weights(torch.randn(2, 10), 1e-6, False)
    with pytest.raises(ValueError, match="in_features"):
        ops.unpack_weights(p, 2 ** 63 - 1)


@native
def test_native_ops_refuse_huge_in_features():
    _, p = ops.quantize_weights(torch.randn(2, 10), 1e-6, False)
    with pytest.raises(RuntimeError, match=r"in_features must be in \[1, 16777215\]"):
        torch.ops.bitlinear.unpack_weights(p, 2 ** 63 - 1)


# ---------------------------------------------------------------------- eps
BAD_EPS = [0.0, -1e-6, 1e-45, 1e-37, float("nan"), float("inf"), 1e39]


@pytest.mark.parametrize("eps", BAD_EPS)
def test_eps_that_could_make_a_scale_zero_or_denormal_is_refused(eps):
    w, x = torch.randn(4, 10), torch.randn(3, 10)
    with pytest.raises(ValueError, match="eps"):
        BitLinear(10, 4, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        ops.quantize_weights(w, eps, False)
    with pytest.raises(ValueError, match="eps"):
        ops.quantize_acts(x, eps, True)
    s, p = ops.quantize_weights(w, 1e-6, False)
    with pytest.raises(ValueError, match="eps"):
        ops.linear(x, s, p, None, eps, 10)
    with pytest.raises(ValueError, match="eps"):
        ops.linear_train(x, w, None, eps)


@native
@pytest.mark.parametrize("eps", [0.0, 1e-45, float("nan")])
def test_native_ops_and_legacy_calls_refuse_bad_eps(eps):
    import _bitlinear
    w, x = torch.randn(4, 10), torch.randn(3, 10)
    with pytest.raises(RuntimeError, match="eps must be"):
        torch.ops.bitlinear.quantize_weights(w, eps, False)
    with pytest.raises(RuntimeError, match="eps must be"):
        torch.ops.bitlinear.quantize_acts(x, eps, True)
    with pytest.raises(ValueError, match="eps"):
        _bitlinear.prepare_weights(w, eps, "ai8pc_wpt")


def test_smallest_allowed_eps_gives_normal_scales():
    w = torch.zeros(3, 10)  # absmean 0: the scale is eps
    s, p = ops.quantize_weights(w, ref.MIN_EPS, True)
    assert (s > 0).all() and torch.isfinite(s).all()
    xq, sx, _ = ops.quantize_acts(torch.zeros(2, 10), ref.MIN_EPS, True)
    assert (sx >= torch.finfo(torch.float32).tiny).all() and (xq == 0).all()


# ---------------------------------------------------------------------- buffers and shapes
@native
def test_native_linear_refuses_2d_scale_and_bias(gen):
    s, p = ops.quantize_weights(rand(gen, 4, 10), 1e-6, False)
    x = rand(gen, 3, 10)
    with pytest.raises(RuntimeError, match="w_scale must be a contiguous 1-D"):
        torch.ops.bitlinear.linear(x, s.reshape(1, 1), p, None, 1e-6, 10, True)
    with pytest.raises(RuntimeError, match="bias must be a contiguous 1-D"):
        torch.ops.bitlinear.linear(x, s, p, torch.ones(2, 2), 1e-6, 10, True)


@native
def test_legacy_bitlinear_on_a_scalar_raises_clearly():
    import _bitlinear
    with pytest.raises(ValueError, match="0-d"):
        _bitlinear.bitlinear(torch.tensor(1.0), torch.ones(1), torch.zeros(1, 32, dtype=torch.uint8))


@pytest.mark.parametrize("byte", [0xFF, 0x03, 0xC0, 0x0F])
def test_invalid_packed_codes_are_refused_at_load(gen, byte):
    sd = _deployed(gen).state_dict()
    sd["w_packed"] = sd["w_packed"].clone()
    sd["w_packed"][3, 5] = byte
    with pytest.raises(ValueError, match="invalid 2-bit code 3"):
        BitLinear(64, 256).deploy().load_state_dict(sd)
    sd["w_packed"][3, 5] = 0x55  # all zero weights: valid
    BitLinear(64, 256).deploy().load_state_dict(sd)


def test_junk_checkpoint_metadata_is_a_clear_error(gen, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file, save_file
    from torch import nn
    model = bitlinear.deploy(bitlinear.convert(nn.Sequential(nn.Linear(64, 32)), skip=()))
    path = tmp_path / "m.safetensors"
    bitlinear.save_deployed(model, path)
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    for junk in ("{not json", "[1, 2]"):
        meta["bitlinear.extra_state"] = junk
        save_file(load_file(str(path)), str(path), metadata=meta)
        with pytest.raises(ValueError, match="bitlinear.extra_state"):
            bitlinear.load_deployed(model, path)


def test_missing_compiler_is_one_clear_line(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "setup.py", "build_ext", "-b", str(tmp_path / "b"),
                        "-t", str(tmp_path / "t")], cwd=root, capture_output=True, text=True,
                       env=dict(os.environ, CC="/nonexistent/cc", BITLINEAR_FORCE_CPU="1"),
                       timeout=300)
    assert r.returncode != 0
    assert "compiler '/nonexistent/cc' not found" in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
