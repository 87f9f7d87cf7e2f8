"""One validation for every loader (issue 18, findings 7 and 8; bitlinear/_checks.deployed_state).

Every way a deployed layer's tensors get into a BitLinear refuses the same things with ValueError
naming the layer: ``load_state_dict``, ``load_deployed``, ``from_pretrained`` through our
transformers quantizer, ``convert_bitnet``, and the legacy converter (``load_legacy_deployed`` /
``convert_legacy_state_dict``). Refused: a NaN, +Inf, -Inf, zero, negative or subnormal weight
scale, a NaN bias, the invalid code 3, a non-zero code in a padding position, a w_scale count that
does not fit the quant type, and a checkpoint of other in/out features (the extra state records
them; K = 32 -> 16, 100 -> 128 and 200 -> 129 have the same packed shape). Good checkpoints,
including ones written before the extra state recorded in/out features, still load and give the
same outputs bit for bit.

A refused load leaves the layer as it was (one layer: nothing is copied before the check).
"""
import importlib.util
import json
import math
import shutil

import pytest
import torch
from torch import nn

import bitlinear
from bitlinear import BitLinear
from bitlinear import reference as ref
from bitlinear.legacy import convert_legacy_state_dict, load_legacy_deployed

from conftest import make_deployed, rand

HAS_ST = importlib.util.find_spec("safetensors") is not None
HAS_TF = importlib.util.find_spec("transformers") is not None

needs_st = pytest.mark.skipif(not HAS_ST, reason="safetensors is not installed")
needs_tf = pytest.mark.skipif(not (HAS_TF and HAS_ST), reason="transformers is not installed")

K, N = 100, 24  # K pads to 128: positions 100..127 of every row are padding (code 1)

SCALES = {"scale_nan": math.nan, "scale_inf": math.inf, "scale_neginf": -math.inf,
          "scale_zero": 0.0, "scale_negative": -0.25, "scale_subnormal": 1e-40}
BAD = list(SCALES) + ["bias_nan", "code3", "padding_plus", "padding_minus", "scale_count"]
MATCH = dict({k: "w_scale must be finite and > 0" for k in SCALES},
             bias_nan="bias must be finite", code3="invalid 2-bit code 3",
             padding_plus="padding position", padding_minus="padding position",
             scale_count=r"w_scale has \d+ elements")
SIZES = [(32, 16), (100, 128), (200, 129)]  # (saved in_features, loading in_features): same Kp


def _set_field(wp, row, k, code):
    """Write the 2-bit code of weight k in `row` of a packed buffer (docs/packed_format.md)."""
    b, local = divmod(k, 128)
    s, j = divmod(local, 32)
    byte = 32 * b + j
    wp[row, byte] = (int(wp[row, byte]) & ~(3 << 2 * s) & 0xFF) | (code << 2 * s)


def _tamper(case, w_scale, w_packed, bias, in_features, per_channel):
    """Copies of a deployed layer's buffers with one fault."""
    ws, wp = w_scale.clone(), w_packed.clone()
    b = None if bias is None else bias.clone()
    if case in SCALES:
        ws[-1] = SCALES[case]  # per channel: one bad channel among good ones
    elif case == "bias_nan":
        b[1] = math.nan
    elif case == "code3":
        _set_field(wp, 2, 5, 3)  # a real position
    elif case in ("padding_plus", "padding_minus"):
        _set_field(wp, wp.shape[0] - 1, in_features + 3, 2 if case == "padding_plus" else 0)
    elif case == "scale_count":
        ws = ws[:1].clone() if per_channel else ws.expand(wp.shape[0]).clone()
    return ws, wp, b


def _old(extra):
    """An extra state as written before it recorded in/out features."""
    return {k: v for k, v in extra.items() if k not in ("in_features", "out_features")}


def _same_outputs(a, b, gen, K_):
    for m in (1, 5):
        x = rand(gen, m, K_)
        with torch.no_grad():
            assert torch.equal(a(x), b(x))


def _tensors(module):
    return {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def _unchanged(module, before):
    after = _tensors(module)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


# ---------------------------------------------------------------------------- the check itself
def test_padding_masks_cover_exactly_the_padding_positions():
    """For each K, a non-zero code is refused at exactly the positions k >= K (of Kp)."""
    from bitlinear import _checks
    for K_ in (1, 16, 31, 32, 33, 100, 127, 128, 129, 200, 255):
        Kp = ref.padded_k(K_)
        refused = []
        for k in range(Kp):
            wq = torch.zeros(2, Kp, dtype=torch.int8)
            wq[1, k] = -1
            try:
                _checks.deployed_state(torch.ones(1), ref.pack_ternary(wq), None, K_, 2, False)
            except ValueError as e:
                assert "padding position (row 1" in str(e)
                refused.append(k)
        assert refused == list(range(K_, Kp)), K_


def test_big_layer_check_is_vectorized():
    """A 4096 x 11008 layer's buffers (11 MB packed) are checked in well under a second."""
    import time
    from bitlinear import _checks
    Kb, Nb = 11000, 4096  # not a multiple of 128: the padding check runs too
    wp = torch.full((Nb, ref.packed_row_bytes(Kb)), 0x55, dtype=torch.uint8)
    ws, bias = torch.ones(Nb), torch.zeros(Nb)
    t = time.perf_counter()
    _checks.deployed_state(ws, wp, bias, Kb, Nb, True, "big")
    assert time.perf_counter() - t < 5.0  # about 0.02 s alone; generous for a shared machine
    _set_field(wp, Nb - 1, Kb + 1, 2)
    with pytest.raises(ValueError, match=r"big: .*padding position \(row 4095"):
        _checks.deployed_state(ws, wp, bias, Kb, Nb, True, "big")


# ---------------------------------------------------------------------------- load_state_dict
@pytest.mark.parametrize("quant_type", ["ai8pc_wpt", "ai8pc_wpc"])
@pytest.mark.parametrize("case", BAD)
def test_load_state_dict_refuses(gen, quant_type, case):
    per_channel = ref.QUANT_TYPES[quant_type].weight_per_channel
    sd = make_deployed(gen, K, N, quant_type).state_dict()
    sd["w_scale"], sd["w_packed"], sd["bias"] = _tamper(case, sd["w_scale"], sd["w_packed"],
                                                        sd["bias"], K, per_channel)
    dst = make_deployed(gen, K, N, quant_type)
    before = _tensors(dst)
    with pytest.raises(ValueError, match=MATCH[case]):
        dst.load_state_dict(sd)
    _unchanged(dst, before)
    # the same, nested: the message names the layer
    model = nn.Sequential(nn.Identity(), make_deployed(gen, K, N, quant_type))
    with pytest.raises(ValueError, match=r"BitLinear '1': .*" + MATCH[case]):
        model.load_state_dict({f"1.{k}": v for k, v in sd.items()})


@pytest.mark.parametrize("saved,loading", [((ks, N), (kl, N)) for ks, kl in SIZES]
                         + [((K, N), (K, N + 4)), ((K, N), (K + 1, N))])
def test_load_state_dict_size_mismatch(gen, saved, loading):
    """The extra state records in/out features: another size is refused like nn.Linear's "size
    mismatch", also where the packed shapes are the same (32 -> 16, 100 -> 128, 200 -> 129)."""
    (ks, ns), (kl, nl) = saved, loading
    sd = make_deployed(gen, ks, ns).state_dict()
    assert sd["_extra_state"]["in_features"] == ks and sd["_extra_state"]["out_features"] == ns
    dst = make_deployed(gen, kl, nl)
    before = _tensors(dst)
    with pytest.raises(ValueError, match="size mismatch"):
        dst.load_state_dict(sd)
    _unchanged(dst, before)
    # training-mode layers too (float weights, extra state with the sizes)
    with pytest.raises(ValueError, match="size mismatch"):
        BitLinear(kl, nl).load_state_dict(BitLinear(ks, ns).state_dict())


@pytest.mark.parametrize("saved,loading", SIZES)
def test_old_checkpoint_of_another_in_features(gen, saved, loading):
    """A checkpoint written before the extra state recorded in/out features: a larger K that pads
    to the same Kp has real weights where the smaller layer has padding, and is refused by the
    padding-code check (32 -> 16, 200 -> 129). A smaller K into a larger layer (100 -> 128) cannot
    be told apart: its padding reads as zero weights of the larger layer (docs/packed_format.md)."""
    src = make_deployed(gen, saved, N)
    sd = src.state_dict()
    sd["_extra_state"] = _old(sd["_extra_state"])
    dst = make_deployed(gen, loading, N)
    if saved > loading:
        with pytest.raises(ValueError, match="padding position"):
            dst.load_state_dict(sd)
    else:
        dst.load_state_dict(sd)  # undetectable for old checkpoints; documented
        assert torch.equal(dst.w_packed, src.w_packed)


@pytest.mark.parametrize("quant_type", list(ref.QUANT_TYPES))
@pytest.mark.parametrize("old", [False, True])
def test_good_state_dict_loads_bit_for_bit(gen, quant_type, old):
    src = make_deployed(gen, K, N, quant_type)
    sd = src.state_dict()
    if old:
        sd["_extra_state"] = _old(sd["_extra_state"])
    dst = make_deployed(gen, K, N, quant_type)
    dst.load_state_dict(sd)
    for k in ("w_scale", "w_packed", "bias"):
        assert torch.equal(getattr(dst, k), getattr(src, k))
    _same_outputs(dst, src, gen, K)


def test_extra_state_tensor_form_carries_the_sizes(gen):
    """The uint8 JSON form (safetensors / transformers) records in/out features too, and the old
    JSON without them still loads."""
    src = make_deployed(gen, K, N)
    src._extra_state_as_tensor = True
    sd = src.state_dict()
    state = json.loads(bytes(sd["_extra_state"].tolist()))
    assert state["in_features"] == K and state["out_features"] == N
    with pytest.raises(ValueError, match="size mismatch"):
        make_deployed(gen, 128, N).load_state_dict(sd)
    sd["_extra_state"] = torch.tensor(list(json.dumps(_old(state)).encode()), dtype=torch.uint8)
    dst = make_deployed(gen, K, N)
    dst.load_state_dict(sd)
    _same_outputs(dst, src, gen, K)


# ---------------------------------------------------------------------------- load_deployed
def _model(gen, K_=K, N_=N, quant_type="ai8pc_wpt"):
    return nn.Sequential(make_deployed(gen, K_, N_, quant_type), nn.ReLU())


def _rewrite_meta(path, fn):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    extra = json.loads(meta["bitlinear.extra_state"])
    meta["bitlinear.extra_state"] = json.dumps({k: fn(v) for k, v in extra.items()})
    save_file(load_file(str(path)), str(path), metadata=meta)


@needs_st
@pytest.mark.parametrize("quant_type", ["ai8pc_wpt", "ai8pc_wpc"])
@pytest.mark.parametrize("case", BAD)
def test_load_deployed_refuses(gen, tmp_path, quant_type, case):
    per_channel = ref.QUANT_TYPES[quant_type].weight_per_channel
    src = _model(gen, quant_type=quant_type)
    layer = src[0]
    bufs = _tamper(case, layer.w_scale, layer.w_packed, layer.bias, K, per_channel)
    for name, t in zip(("w_scale", "w_packed", "bias"), bufs):
        layer._buffers[name] = t  # save_deployed writes what it is given
    path = tmp_path / "m.safetensors"
    bitlinear.save_deployed(src, path)
    dst = _model(gen, quant_type=quant_type)
    before = _tensors(dst)
    with pytest.raises(ValueError, match=r"m\.safetensors: BitLinear '0': .*" + MATCH[case]):
        bitlinear.load_deployed(dst, path)
    _unchanged(dst, before)


@needs_st
@pytest.mark.parametrize("saved,loading", SIZES)
@pytest.mark.parametrize("old", [False, True])
def test_load_deployed_size_mismatch(gen, tmp_path, saved, loading, old):
    path = tmp_path / "m.safetensors"
    bitlinear.save_deployed(_model(gen, saved), path)
    if old:
        _rewrite_meta(path, _old)
    dst = _model(gen, loading)
    if not old:
        with pytest.raises(ValueError, match="size mismatch"):
            bitlinear.load_deployed(dst, path)
    elif saved > loading:
        with pytest.raises(ValueError, match="padding position"):
            bitlinear.load_deployed(dst, path)
    else:
        bitlinear.load_deployed(dst, path)  # old checkpoint, smaller K: undetectable (documented)
    # out_features: recorded in the extra state, and in the packed shape for old files
    with pytest.raises(ValueError, match=r"w_packed must be uint8 of shape \(28," if old
                       else "size mismatch"):
        bitlinear.load_deployed(_model(gen, saved, N + 4), path)


@needs_st
@pytest.mark.parametrize("old", [False, True])
def test_good_file_loads_bit_for_bit(gen, tmp_path, old):
    src = _model(gen, quant_type="ai8pc_wpc")
    path = tmp_path / "m.safetensors"
    bitlinear.save_deployed(src, path)
    if old:
        _rewrite_meta(path, _old)
    dst = bitlinear.load_deployed(_model(gen, quant_type="ai8pc_wpc"), path)
    _same_outputs(dst, src, gen, K)


# ---------------------------------------------------------------------------- from_pretrained
LAYER = "model.layers.0.mlp.down_proj"  # in_features = intermediate_size = 100


def _llama(inter=K, only=None, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=inter, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                      mlp_bias=True)
    model = LlamaForCausalLM(cfg).eval()
    kw = {} if only is None else {"filter_fn": lambda m, n: n.endswith(only)}
    return bitlinear.deploy(bitlinear.convert(model, **kw))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    if not (HAS_TF and HAS_ST):
        pytest.skip("needs transformers")
    import bitlinear.hf  # noqa: F401
    d = tmp_path_factory.mktemp("llama")
    model = _llama()
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits
    model.save_pretrained(d)
    return d, ids, logits


def _edit_file(d, fn):
    from safetensors.torch import load_file, save_file
    f = d / "model.safetensors"
    sd = load_file(str(f))
    fn(sd)
    save_file(sd, str(f), metadata={"format": "pt"})


def _old_tensor_extra(sd, key):
    state = _old(json.loads(bytes(sd[key].tolist())))
    sd[key] = torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)


def _from_pretrained(d, **kw):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(d, **kw)


@needs_tf
@pytest.mark.parametrize("case", BAD)
def test_from_pretrained_refuses(llama_dir, tmp_path, case):
    src, _, _ = llama_dir
    d = tmp_path / "ckpt"
    shutil.copytree(src, d)

    def tamper(sd):
        sd[LAYER + ".w_scale"], sd[LAYER + ".w_packed"], sd[LAYER + ".bias"] = _tamper(
            case, sd[LAYER + ".w_scale"], sd[LAYER + ".w_packed"], sd[LAYER + ".bias"], K, False)
    _edit_file(d, tamper)
    match = MATCH[case] if case != "scale_count" else r"'w_scale' has shape \(64,\)"
    with pytest.raises(ValueError, match=match) as info:
        _from_pretrained(d)
    assert LAYER in str(info.value)


@needs_tf
@pytest.mark.parametrize("saved,loading", SIZES)
@pytest.mark.parametrize("old", [False, True])
def test_from_pretrained_size_mismatch(tmp_path, saved, loading, old):
    """A config whose intermediate_size differs from the checkpoint's: down_proj's in_features
    changes, its packed shape does not. (Only down_proj is converted, so transformers' own
    size-mismatch handling of gate/up_proj stays out of the way with ignore_mismatched_sizes.)"""
    model = _llama(saved, only="down_proj")
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = loading
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    if old:
        _edit_file(tmp_path, lambda sd: _old_tensor_extra(sd, LAYER + "._extra_state"))
    if old and saved < loading:
        _from_pretrained(tmp_path, ignore_mismatched_sizes=True)  # undetectable: documented
        return
    with pytest.raises(ValueError, match="padding position" if old else "size mismatch") as info:
        _from_pretrained(tmp_path, ignore_mismatched_sizes=True)
    assert LAYER in str(info.value)


@needs_tf
@pytest.mark.parametrize("old", [False, True])
def test_good_pretrained_loads_bit_for_bit(llama_dir, tmp_path, old):
    src, ids, logits = llama_dir
    d = tmp_path / "ckpt"
    shutil.copytree(src, d)
    if old:
        _edit_file(d, lambda sd: [_old_tensor_extra(sd, k) for k in list(sd)
                                  if k.endswith("._extra_state")])
    back = _from_pretrained(d).eval()
    assert sum(isinstance(m, BitLinear) and m.deployed for m in back.modules()) == 7
    with torch.no_grad():
        assert torch.equal(back(ids).logits, logits)


# ---------------------------------------------------------------------------- convert_bitnet
def _hf_layer(kind, gen, K_=K, N_=N, bias=True):
    """A transformers BitNet layer holding ternary weights q and a weight scale s (y ~ x q^T / s
    for "packed", x q^T * s for "auto")."""
    from transformers.integrations.bitnet import AutoBitLinear, BitLinear as HFBitLinear, pack_weights
    q = torch.randint(-1, 2, (N_, K_), generator=gen).float()
    if kind == "packed":
        m = HFBitLinear(K_, N_, bias=bias, dtype=torch.float32)
        m.weight.copy_(pack_weights(q.clone()))
        m.weight_scale.fill_(7.5)
    else:
        m = AutoBitLinear(K_, N_, bias=bias, online_quant=False)
        with torch.no_grad():
            m.weight.copy_(q)
        m.weight_scale.fill_(0.125)
    if bias:
        with torch.no_grad():
            m.bias.copy_(torch.randn(N_, generator=gen))
    return m


@needs_tf
@pytest.mark.parametrize("kind", ["packed", "auto"])
@pytest.mark.parametrize("case", BAD)
def test_convert_bitnet_refuses(gen, kind, case):
    """The weight_scale itself holds the bad value (the packed layer's w_scale is its reciprocal:
    NaN -> NaN, +-Inf -> +-0, 0 -> Inf, negative -> negative, 1e-40 -> Inf; all refused). The
    transformers formats give K explicitly and have no padding: the padding cases are a weight
    that is not ternary (auto) or a code 3 (packed) in the last column instead."""
    from bitlinear.hf import convert_bitnet
    m = _hf_layer(kind, gen)
    match = MATCH[case]
    if case in SCALES:
        m.weight_scale.fill_(SCALES[case])
    elif case == "bias_nan":
        with torch.no_grad():
            m.bias[1] = math.nan
    elif case == "scale_count":
        m._buffers["weight_scale"] = torch.full((N,), 0.5)  # one per row: not this format
        match = rf"w_scale has {N} elements; a per-tensor weight scale needs 1"
    elif kind == "packed":  # code3 / padding: a code 3 in the packed rows
        m.weight[1, K - 1 if case.startswith("padding") else 5] |= 3
        match = MATCH["code3"]
    else:
        with torch.no_grad():
            m.weight[1, K - 1 if case.startswith("padding") else 5] = 2.0
        match = "not ternary"
    model = nn.Sequential(nn.Identity(), m)
    with pytest.raises(ValueError, match=match) as info:
        convert_bitnet(model)
    assert "layer '1'" in str(info.value)
    assert model[1] is m


@needs_tf
@pytest.mark.parametrize("kind", ["packed", "auto"])
@pytest.mark.parametrize("saved,loading", SIZES + [(K, K)])
def test_convert_bitnet_size_mismatch(gen, kind, saved, loading):
    from bitlinear.hf import convert_bitnet
    m = _hf_layer(kind, gen, K_=saved)
    if saved == loading:
        m.out_features = N + 4  # out_features mismatch instead
    m.in_features = loading
    with pytest.raises(ValueError, match="shape"):
        convert_bitnet(nn.Sequential(m))


@needs_tf
@pytest.mark.parametrize("kind", ["packed", "auto"])
def test_convert_bitnet_good_layer_bit_for_bit(gen, kind):
    """The converted layer computes exactly what the reference does on the converted buffers."""
    from bitlinear.hf import convert_bitnet
    model = convert_bitnet(nn.Sequential(_hf_layer(kind, gen)))
    layer = model[0]
    want_ws = torch.reciprocal(torch.tensor([7.5])) if kind == "packed" else torch.tensor([0.125])
    assert torch.equal(layer.w_scale, want_ws)
    for m in (1, 5):
        x = rand(gen, m, K)
        with torch.no_grad():
            assert torch.equal(layer(x), ref.linear(x, layer.w_scale, layer.w_packed, layer.bias,
                                                    layer.eps, K, True))


# ---------------------------------------------------------------------------- legacy
def _legacy_pack(wq):
    """The earlier package's layout: [N, K/4], codes w+1, first value in the high bits."""
    c = (wq + 1).to(torch.uint8).reshape(wq.shape[0], -1, 4)
    return (c[..., 0] << 6) | (c[..., 1] << 4) | (c[..., 2] << 2) | c[..., 3]


def _legacy_sd(gen, K4=K, N_=N):
    wq = torch.randint(-1, 2, (N_, K4), generator=gen).to(torch.int8)
    return wq, {"w_packed": _legacy_pack(wq), "w_scale": torch.tensor(0.0371),
                "bias": torch.randn(N_, generator=gen)}


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("api", ["load", "convert"])
def test_legacy_refuses(gen, case, api):
    """The earlier package's format: a 0-d scale; K = 4 * the row bytes, so its only padding is
    the last < 4 weights of a row when in_features is given (here 97 of 100)."""
    wq, sd = _legacy_sd(gen)
    k_in = K
    match = MATCH[case]
    if case in SCALES:
        sd["w_scale"] = torch.tensor(SCALES[case])
    elif case == "bias_nan":
        sd["bias"][1] = math.nan
    elif case == "code3":
        sd["w_packed"][2, 5] = 0xFF
    elif case.startswith("padding"):
        wq[N - 1, K - 1] = 1 if case == "padding_plus" else -1
        sd["w_packed"] = _legacy_pack(wq)
        k_in, match = K - 3, "padding weights beyond in_features=97 are not zero"
    elif case == "scale_count":
        sd["w_scale"] = torch.full((N,), 0.5)  # per channel, for a per-tensor quant type
    layer = BitLinear(k_in, N)
    before = _tensors(layer)
    with pytest.raises(ValueError, match=match) as info:
        if api == "load":
            load_legacy_deployed(nn.Sequential(layer), {f"0.{k}": v for k, v in sd.items()})
        else:
            convert_legacy_state_dict({f"0.{k}": v for k, v in sd.items()},
                                      in_features={"0": k_in})
    assert "layer '0'" in str(info.value)
    assert not layer.deployed
    _unchanged(layer, before)


@pytest.mark.parametrize("saved,loading", SIZES + [(K, K)])
@pytest.mark.parametrize("api", ["load", "convert"])
def test_legacy_size_mismatch(gen, saved, loading, api):
    """The earlier format's K is 4 * its row bytes: another in_features does not fit (out_features:
    the row count, checked against the layer by load_legacy_deployed)."""
    if api == "convert" and saved == loading:
        pytest.skip("convert_legacy_state_dict takes no out_features")
    _, sd = _legacy_sd(gen, saved)
    nl = N + 4 if saved == loading else N
    sd = {f"0.{k}": v for k, v in sd.items()}
    layer = BitLinear(loading, nl)
    with pytest.raises(ValueError, match="(does|do) not fit"):
        if api == "load":
            load_legacy_deployed(nn.Sequential(layer), sd)
        else:
            convert_legacy_state_dict(sd, in_features={"0": loading})
    assert not layer.deployed


def test_legacy_good_checkpoint_bit_for_bit(gen):
    """The converted layer equals a BitLinear loaded with the same ternary values and scale in our
    format; the converted extra state records in/out features."""
    wq, sd = _legacy_sd(gen)
    model = load_legacy_deployed(nn.Sequential(BitLinear(K, N)), {f"0.{k}": v for k, v in sd.items()})
    ours = make_deployed(gen, K, N)
    ours.load_state_dict({"w_packed": ref.pack_ternary(wq), "w_scale": sd["w_scale"].reshape(1),
                          "bias": sd["bias"], "_extra_state": ours.get_extra_state()})
    _same_outputs(model[0], ours, gen, K)
    conv = convert_legacy_state_dict(sd, in_features={"<root>": K})
    assert conv["_extra_state"]["in_features"] == K and conv["_extra_state"]["out_features"] == N
