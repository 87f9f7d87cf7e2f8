"""bitlinear.convert: swapping nn.Linear for BitLinear, deploy, size accounting, save / load."""
import importlib

import pytest
import torch
from torch import nn

from bitlinear import BitLinear

# the module (bitlinear/__init__.py re-exports the *function* convert under the same name)
cv = importlib.import_module("bitlinear.convert")


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.q_proj = nn.Linear(d, d, bias=False)
        self.up = nn.Linear(d, 3 * d)
        self.down = nn.Linear(3 * d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(self.norm(x)))) + self.q_proj(x)


class Net(nn.Module):
    def __init__(self, d=40, classes=7):
        super().__init__()
        self.embed = nn.Linear(13, d)
        self.blocks = nn.ModuleList([Block(d), Block(d)])
        self.nested = nn.Sequential(nn.Sequential(nn.Linear(d, d), nn.GELU()))
        self.lm_head = nn.Linear(d, classes)

    def forward(self, x):
        h = self.embed(x)
        for b in self.blocks:
            h = b(h)
        return self.lm_head(self.nested(h))


def _net(gen):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    return Net()


def _linear_names(model, cls):
    return sorted(n for n, m in model.named_modules() if type(m) is cls)


def test_convert_in_place_keeps_weights_and_skips_head(gen):
    model = _net(gen)
    before = {n: (m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone())
              for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    out = cv.convert(model)
    assert out is model
    assert _linear_names(model, nn.Linear) == ["lm_head"]
    converted = _linear_names(model, BitLinear)
    assert converted == sorted(set(before) - {"lm_head"})
    assert "nested.0.0" in converted and "blocks.1.q_proj" in converted
    for n, m in model.named_modules():
        if n in before:
            w, b = before[n]
            assert torch.equal(m.weight, w)
            assert (m.bias is None) == (b is None)
            if b is not None:
                assert torch.equal(m.bias, b)
    assert model.blocks[0].q_proj.bias is None
    # converting again changes nothing
    cv.convert(model)
    assert _linear_names(model, BitLinear) == converted


def test_convert_skip_patterns_and_filter(gen):
    model = cv.convert(_net(gen), skip=["blocks.0.*", "re:.*\\.down"])
    assert _linear_names(model, nn.Linear) == ["blocks.0.down", "blocks.0.q_proj", "blocks.0.up",
                                               "blocks.1.down"]
    model = cv.convert(_net(gen), skip=(), filter_fn=lambda m, name: m.in_features != 13)
    assert _linear_names(model, nn.Linear) == ["embed"]
    assert "lm_head" in _linear_names(model, BitLinear)
    seen = []
    cfg = cv.ConvertConfig(quant_type="ai8pc_wpc", eps=1e-5,
                           filter_fn=lambda m, name: seen.append((type(m), name)) or True)
    model = cv.convert(_net(gen), cfg)
    assert all(t is nn.Linear for t, _ in seen) and ("embed", ) == tuple(n for _, n in seen[:1])
    assert all(m.quant_type == "ai8pc_wpc" and m.eps == 1e-5 for _, m in cv.bitlinear_modules(model))
    with pytest.raises(TypeError, match="unknown option"):
        cv.convert(_net(gen), skipp=["x"])
    with pytest.raises(TypeError, match="ConvertConfig"):
        cv.convert(_net(gen), config={"quant_type": "ai8pc_wpt"})


def test_convert_root_linear_tied_and_mha(gen):
    lin = nn.Linear(9, 5)
    bl = cv.convert(lin)
    assert isinstance(bl, BitLinear) and torch.equal(bl.weight, lin.weight)

    tied = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6))
    tied[1].weight = tied[0].weight
    cv.convert(tied)
    assert _linear_names(tied, nn.Linear) == ["0", "1"]  # tied weights stay float

    shared = nn.Linear(6, 6)
    twice = nn.Sequential(shared, nn.ReLU(), shared)
    cv.convert(twice)
    assert isinstance(twice[0], BitLinear) and twice[0] is twice[2]

    mha = nn.Sequential()
    mha.attn = nn.MultiheadAttention(16, 2)
    cv.convert(mha)
    assert not isinstance(mha.attn.out_proj, BitLinear)


def test_convert_keeps_dtype_and_quantizes(gen):
    model = cv.convert(_net(gen).to(torch.bfloat16))
    assert model.blocks[0].up.weight.dtype == torch.bfloat16
    assert model.blocks[0].up.bias.dtype == torch.bfloat16
    assert model(torch.randn(2, 13, generator=gen).to(torch.bfloat16)).dtype == torch.bfloat16

    model = _net(gen)
    ref = Net()
    ref.load_state_dict(model.state_dict())
    cv.convert(model)
    x = torch.randn(5, 13, generator=gen)
    assert not torch.allclose(model(x), ref(x), rtol=1e-3, atol=1e-3)  # really quantizing
    # and it trains: the STE passes gradients to every converted weight
    model(x).square().sum().backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0
               for _, m in cv.bitlinear_modules(model))


def test_deploy_model_and_size_report(gen):
    model = cv.convert(_net(gen)).eval()
    x = torch.randn(4, 3, 13, generator=gen)
    with torch.no_grad():
        y_fq = model(x)
    float_bytes = cv.model_size_bytes(model)
    rep = cv.size_report(model)
    assert rep["total"] == float_bytes and rep["deployed_layers"] == 0
    assert rep["bitlinear_float_weights"] > 0 and rep["packed_weights"] == 0
    assert cv.deploy(model, progress=False) is model
    assert all(m.deployed for _, m in cv.bitlinear_modules(model))
    with torch.no_grad():
        y_dep = model(x)
    # not bit-identical through 8 layers: a last-bit difference can flip one activation rounding in
    # a later layer (measured over 300 seeds: worst 0.3% of the output range, 0.13% in norm)
    assert (y_dep - y_fq).abs().max() <= 2e-2 * y_fq.abs().max()
    assert (y_dep - y_fq).norm() <= 1e-2 * y_fq.norm()

    rep = cv.size_report(model)
    assert rep["deployed_layers"] == rep["bitlinear_layers"] == 8
    assert rep["bitlinear_float_weights"] == 0
    packed = sum(m.w_packed.numel() for _, m in cv.bitlinear_modules(model))
    scales = sum(m.w_scale.numel() * 4 for _, m in cv.bitlinear_modules(model))
    assert rep["packed_weights"] == packed and rep["weight_scales"] == scales
    # every byte accounted: recount all params and buffers by hand
    by_hand = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    assert rep["total"] == cv.model_size_bytes(model) == by_hand
    assert rep["total"] < float_bytes
    assert "total" in rep["text"]
    cv.deploy(model)  # idempotent


def _deployed(gen_seed, quant_type="ai8pc_wpt"):
    torch.manual_seed(gen_seed)
    return cv.deploy(cv.convert(Net(), quant_type=quant_type)).eval()


@pytest.mark.parametrize("quant_type", ["ai8pc_wpt", "ai8pc_wpc"])
def test_state_dict_and_safetensors_round_trip(gen, tmp_path, quant_type):
    pytest.importorskip("safetensors")
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    src = _deployed(seed, quant_type)
    x = torch.randn(6, 13, generator=gen)
    with torch.no_grad():
        y = src(x)

    dst = _deployed(seed + 1, quant_type)
    with torch.no_grad():
        assert not torch.equal(dst(x), y)
    dst.load_state_dict(src.state_dict())
    with torch.no_grad():
        assert torch.equal(dst(x), y)

    path = tmp_path / "m.safetensors"
    cv.save_deployed(src, path)
    dst = _deployed(seed + 2, quant_type)
    assert cv.load_deployed(dst, path) is dst
    with torch.no_grad():
        assert torch.equal(dst(x), y)
    for (n, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), n


def test_safetensors_version_mismatch_and_bad_files(gen, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    src = _deployed(1)
    path = tmp_path / "m.safetensors"
    cv.save_deployed(src, path, metadata={"note": "x"})
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["note"] == "x" and meta[cv.FORMAT_METADATA_KEY] == "1"

    bad = tmp_path / "v2.safetensors"
    save_file(tensors, str(bad), metadata=dict(meta, **{cv.FORMAT_METADATA_KEY: "2"}))
    with pytest.raises(cv.FormatVersionError, match="version 2"):
        cv.load_deployed(_deployed(1), bad)
    plain = tmp_path / "plain.safetensors"
    save_file(tensors, str(plain))
    with pytest.raises(cv.FormatVersionError, match="metadata"):
        cv.load_deployed(_deployed(1), plain)
    # a deployed file into a model that was not deployed: clear error from BitLinear
    with pytest.raises((ValueError, RuntimeError), match="deploy"):
        torch.manual_seed(0)
        cv.load_deployed(cv.convert(Net()), path)


def test_safetensors_shared_tensors(tmp_path, gen):
    pytest.importorskip("safetensors")
    model = nn.Sequential(nn.Embedding(11, 8), nn.Linear(8, 8), nn.Linear(8, 11, bias=False))
    model[2].weight = model[0].weight  # tied output head, stays float
    cv.deploy(cv.convert(model, skip=()))
    assert isinstance(model[1], BitLinear) and not isinstance(model[2], BitLinear)
    path = tmp_path / "tied.safetensors"
    cv.save_deployed(model, path)
    other = nn.Sequential(nn.Embedding(11, 8), nn.Linear(8, 8), nn.Linear(8, 11, bias=False))
    other[2].weight = other[0].weight
    cv.deploy(cv.convert(other, skip=()))
    cv.load_deployed(other, path)
    assert other[2].weight is other[0].weight
    assert torch.equal(other[0].weight, model[0].weight)
    ids = torch.randint(0, 11, (3, 5), generator=gen)
    with torch.no_grad():
        assert torch.equal(other(ids), model(ids))


def test_package_reexports():
    import bitlinear
    for name in ("convert", "deploy", "ConvertConfig"):
        if hasattr(bitlinear, name) and callable(getattr(bitlinear, name)):
            assert getattr(bitlinear, name) is getattr(cv, name)
