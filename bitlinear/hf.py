"""Hugging Face transformers interop (docs/hf.md).

- ``convert_bitnet(model)``: transformers' BitNet layers (``quant_method: "bitnet"``) -> ours, in place.
- A transformers quantizer, ``quant_method: "bitlinear"``, registered on ``import bitlinear.hf``
  through ``transformers.quantizers.auto.register_quantization_config`` / ``register_quantizer``:
  a model converted with ``bitlinear.convert`` / ``bitlinear.deploy`` (or ``convert_bitnet``) saves
  with ``save_pretrained`` (our packed buffers, safetensors) and loads back with
  ``AutoModelForCausalLM.from_pretrained`` without ever holding float weights.

``import bitlinear`` does not import transformers; this module does (when it is installed).

Conversion math (transformers 5.x, ``transformers/integrations/bitnet.py``):

- offline ``BitLinear``: ``weight`` uint8 ``[N/4, K]``, packed along the output dimension in four row
  chunks (row ``i*N/4 + r`` in bits ``2i..2i+1`` of packed row ``r``, code ``w + 1``);
  ``y = (x_q @ w_q^T) / (input_scale * weight_scale)`` with ``input_scale = 127 / amax``. Ours is
  ``y = acc * s_x * s_w`` with ``s_x = amax / 127``, so ``s_w = 1 / weight_scale``, computed as the
  float32 reciprocal of the (exactly widened) stored scale: one correctly rounded float32 division,
  relative error <= 2^-24.
- offline ``AutoBitLinear``: ternary float weights, ``y = F.linear(x_deq, w, b) * weight_scale``
  (a multiplier, not a reciprocal; the bias is scaled too): ``s_w = float32(weight_scale)`` and
  ``bias = float32(b) * s_w``.
- online ``AutoBitLinear``: float weights quantized every call (absmean, clamp 1e-5): a
  training-mode ``BitLinear`` sharing the same ``weight`` / ``bias`` Parameters.

Activations: transformers quantizes per token, ``round(x * 127 / max(amax, 1e-5)).clamp(-128, 127)``,
which is our "ai8pc_wpt" (per-token int8, one weight scale) with ``eps = 1e-5``. The differences,
all within one code: the offline ``BitLinear`` computes the scale and the product in the model
dtype (bf16: ``127/amax`` is rounded to 8 bits and ``x * scale`` again, so a code can differ by one
and -128 can appear), where we compute ``x / (amax / 127)`` in float32 (codes in [-127, 127]);
``AutoBitLinear`` computes in float32 like us but multiplies by ``127/amax`` instead of dividing by
``amax/127`` (a code differs only at a near tie).
"""
from __future__ import annotations

import sys
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from . import _checks
from . import _head_hf
from . import head as _head
from . import reference as ref
from .nn import BitLinear

__all__ = ["QUANT_METHOD", "HF_EPS", "RMSNormBitLinear", "convert_bitnet", "attach",
           "BitLinearQuantConfig", "BitLinearHfQuantizer", "HAS_TRANSFORMERS"]

QUANT_METHOD = "bitlinear"
HF_EPS = 1e-5  # transformers' clamp of amax (activations) and of mean|w| (online weights)
HF_QUANT_TYPE = "ai8pc_wpt"  # per-token int8 activations, one weight scale per tensor


class RMSNormBitLinear(nn.Module):
    """A transformers BitNet layer built with ``use_rms_norm=True``: its RMSNorm (the same module,
    weights kept) and then our BitLinear. ``forward(x) = linear(rms_norm(x))``."""

    def __init__(self, rms_norm: nn.Module, linear: BitLinear):
        super().__init__()
        self.rms_norm = rms_norm
        self.linear = linear

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.rms_norm(x))


# ---------------------------------------------------------------------------- convert_bitnet
def _hf_bitnet_classes():
    try:
        from transformers.integrations.bitnet import AutoBitLinear, BitLinear as HFBitLinear
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("bitlinear.hf.convert_bitnet needs transformers (pip install transformers)"
                          ) from e
    return HFBitLinear, AutoBitLinear


def _fail(name: str, msg: str, exc=ValueError):
    raise exc(f"convert_bitnet: layer {name!r}: {msg}")


def _unpack_bitnet(packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """transformers' uint8 [N/4, K] (row chunk i in bits 2i..2i+1, code w+1) -> int8 [N, K]."""
    codes = torch.cat([(packed >> (2 * i)) & 3 for i in range(4)], dim=0)[:out_features]
    return codes.to(torch.int8) - 1


def _scale_f32(name: str, ws, what: str) -> torch.Tensor:
    """weight_scale as flat float32 (a float tensor, loaded). Its count and values are checked
    after conversion, with every loader's check (_deployed_layer)."""
    if not isinstance(ws, torch.Tensor) or not ws.is_floating_point():
        _fail(name, f"{what} must be a float tensor, got "
                    f"{ws.dtype if isinstance(ws, torch.Tensor) else type(ws).__name__}", TypeError)
    if ws.device.type == "meta":
        _fail(name, f"{what} is on the meta device (weights not loaded)")
    return ws.detach().to(torch.float32).reshape(-1).contiguous()


def _check_bias(name: str, bias, N: int):
    if bias is None:
        return None
    if not bias.is_floating_point() or tuple(bias.shape) != (N,):
        _fail(name, f"bias must be a float [{N}] tensor, got {bias.dtype} {tuple(bias.shape)}")
    return bias.detach().to(torch.float32).contiguous()


def _deployed_layer(K: int, N: int, w_scale: torch.Tensor, w_packed: torch.Tensor, bias, name: str,
                    scale_is: str) -> BitLinear:
    """A deployed BitLinear holding these buffers: built and deployed on the meta device (no float
    weights, no work), then given the real buffers, checked as every loader checks them
    (_checks.deployed_state: codes, padding, scale count and values, bias values)."""
    layer = BitLinear(K, N, bias=bias is not None, eps=HF_EPS, quant_type=HF_QUANT_TYPE,
                      device="meta")
    layer.deploy()
    _checks.deployed_state(w_scale, w_packed, bias, K, N, layer.spec.weight_per_channel,
                           f"convert_bitnet: layer {name!r} (w_scale = {scale_is})")
    layer.w_scale = w_scale
    layer.w_packed = w_packed
    layer.bias = bias
    return layer


def _from_hf_bitlinear(name: str, m) -> BitLinear:
    N, K = m.out_features, m.in_features
    w = m.weight
    if not isinstance(w, torch.Tensor) or w.dtype != torch.uint8:
        _fail(name, f"packed weight must be uint8, got "
                    f"{w.dtype if isinstance(w, torch.Tensor) else type(w).__name__}", TypeError)
    if N % 4 or w.dim() != 2 or tuple(w.shape) != (N // 4, K):
        _fail(name, f"packed weight has shape {tuple(w.shape)}; out_features={N}, in_features={K} "
                    f"need ({N / 4:g}, {K}) (four output rows per byte)")
    if w.device.type == "meta":
        _fail(name, "weight is on the meta device (weights not loaded)")
    ws = _scale_f32(name, m.weight_scale, "weight_scale")
    s_w = torch.reciprocal(ws)  # float32: y = acc / (s_in * weight_scale) = acc * s_x * (1 / ws)
    wq = _unpack_bitnet(w, N)  # a code 3 unpacks to 2 and packs back to code 3: refused below
    packed = ref.pack_ternary(wq)
    del wq
    return _deployed_layer(K, N, s_w, packed, _check_bias(name, m.bias, N), name,
                           "1 / weight_scale")


def _from_auto_offline(name: str, m) -> BitLinear:
    N, K = m.out_features, m.in_features
    w = m.weight
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        _fail(name, f"offline AutoBitLinear weight must be float (unpacked ternary), got "
                    f"{w.dtype if isinstance(w, torch.Tensor) else type(w).__name__}", TypeError)
    if tuple(w.shape) != (N, K):
        _fail(name, f"weight has shape {tuple(w.shape)}; out_features={N}, in_features={K} need "
                    f"({N}, {K})")
    if w.device.type == "meta":
        _fail(name, "weight is on the meta device (weights not loaded)")
    wd = w.detach()
    if not bool(((wd == -1) | (wd == 0) | (wd == 1)).all()):
        _fail(name, "offline AutoBitLinear weight is not ternary (values other than -1, 0, 1)")
    s_w = _scale_f32(name, m.weight_scale, "weight_scale")  # y = F.linear(x, w, b) * ws
    bias = _check_bias(name, m.bias, N)
    if bias is not None and s_w.numel() == 1:  # another count is refused in _deployed_layer
        bias = (bias * s_w).contiguous()
    packed = ref.pack_ternary(wd.to(torch.int8))
    return _deployed_layer(K, N, s_w, packed, bias, name, "weight_scale")


def _from_auto_online(name: str, m) -> BitLinear:
    N, K = m.out_features, m.in_features
    w = m.weight
    if not isinstance(w, torch.Tensor) or w.dtype not in _checks.FLOAT_DTYPES or tuple(w.shape) != (N, K):
        _fail(name, f"online AutoBitLinear weight must be float32/16 or bfloat16 of shape ({N}, {K}), "
                    f"got {w.dtype} {tuple(w.shape)}", TypeError)
    if w.device.type != "meta" and not bool(torch.isfinite(w.detach()).all()):
        _fail(name, "weight holds NaN or Inf")
    layer = BitLinear(K, N, bias=m.bias is not None, eps=HF_EPS, quant_type=HF_QUANT_TYPE,
                      device="meta", dtype=w.dtype)
    layer.weight = m.weight  # the same Parameters: no copy, optimizers keep working on them
    if m.bias is not None:
        layer.bias = m.bias
    return layer


def _check_quant_method(model: nn.Module) -> None:
    qc = getattr(getattr(model, "config", None), "quantization_config", None)
    if qc is None:
        return
    qm = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    qm = getattr(qm, "value", qm)
    if qm not in ("bitnet", QUANT_METHOD):
        raise ValueError(f"convert_bitnet: the model's quantization_config has quant_method {qm!r}; "
                         "only transformers' 'bitnet' (or an already converted 'bitlinear') model "
                         "can be converted")


def convert_bitnet(model: nn.Module, head: Optional[str] = None) -> nn.Module:
    """Replace transformers' BitNet layers of ``model`` by bitlinear's, in place; returns the model.

    head: None (default) keeps the float output head; "int8" makes it a bitlinear.head.Int8Head
    (int8 weights, a scale per output row; a tied input embedding becomes an Int8Embedding sharing
    the table), "int4" / "int4:<G>" a bitlinear.head.Int4Head (4-bit codes, a scale per group of
    64 / G weights; a tied embedding becomes an Int4Embedding), as ``bitlinear.convert(...,
    head=...)``.

    - offline-packed ``BitLinear`` and offline ``AutoBitLinear`` -> deployed ``BitLinear``
      (the same ternary values; the scale converted as in this module's docstring);
    - online ``AutoBitLinear`` -> training-mode ``BitLinear`` sharing its Parameters;
    - a layer with ``use_rms_norm`` -> ``RMSNormBitLinear(rms_norm, BitLinear)``.

    All layers are checked and converted first, then swapped in: a bad layer raises an error that
    names it and leaves the model unchanged. Repacking is layer by layer (one layer's int8 codes at
    a time, never a float copy of the model). On a transformers model the config's
    ``quantization_config`` becomes bitlinear's, so ``save_pretrained`` / ``from_pretrained`` work.
    """
    HFBitLinear, AutoBitLinear = _hf_bitnet_classes()
    _head.parse_head(head, "convert_bitnet")  # ValueError for an unknown head= before any change
    _check_quant_method(model)
    if isinstance(model, (HFBitLinear, AutoBitLinear)):
        raise TypeError("convert_bitnet converts the layers inside a model; wrap a single layer in "
                        "a container (e.g. nn.Sequential) first")
    plan: List[Tuple[nn.Module, str, nn.Module]] = []  # (parent, child name, module)
    seen: Dict[int, str] = {}
    for parent_name, parent in model.named_modules():
        for child_name, child in parent._modules.items():
            if isinstance(child, (HFBitLinear, AutoBitLinear)):
                name = f"{parent_name}.{child_name}" if parent_name else child_name
                plan.append((parent, child_name, child))
                seen.setdefault(id(child), name)
    new: Dict[int, nn.Module] = {}
    with torch.no_grad():
        for _, _, child in plan:
            if id(child) in new:
                continue
            name = seen[id(child)]
            if isinstance(child, HFBitLinear):
                layer = _from_hf_bitlinear(name, child)
            elif child.online_quant:
                layer = _from_auto_online(name, child)
            else:
                layer = _from_auto_offline(name, child)
            layer.train(child.training)
            if getattr(child, "rms_norm", None) is not None:
                layer = RMSNormBitLinear(child.rms_norm, layer)
                layer.train(child.training)
            new[id(child)] = layer
    for parent, child_name, child in plan:
        setattr(parent, child_name, new[id(child)])
    heads = _head.quantize_head(model, head)
    if plan or heads:
        attach(model)
    return model


# ---------------------------------------------------------------------------- save / load
def _layer_entries(model: nn.Module) -> Dict[str, dict]:
    """{module name: how to rebuild it} for every bitlinear layer of the model."""
    entries: Dict[str, dict] = {}
    wrapped = set()
    for name, m in model.named_modules():
        if isinstance(m, RMSNormBitLinear):
            eps = getattr(m.rms_norm, "variance_epsilon", getattr(m.rms_norm, "eps", None))
            if not isinstance(eps, float):
                raise ValueError(f"bitlinear: layer {name!r}: its RMSNorm has no float eps "
                                 "(variance_epsilon), so it cannot be rebuilt by from_pretrained")
            entries[name] = dict(_entry(m.linear), rms_norm_eps=eps)
            wrapped.add(id(m.linear))
    for name, m in model.named_modules():
        if isinstance(m, BitLinear) and id(m) not in wrapped:
            entries[name] = _entry(m)
    return entries


def _entry(m: BitLinear) -> dict:
    return {"quant_type": m.quant_type, "eps": m.eps, "deployed": bool(m.deployed)}


def _tensor_extra_state(model: nn.Module) -> None:
    """Make the model's BitLinear layers give their extra state as a uint8 tensor of UTF-8 JSON
    (BitLinear.get_extra_state), the one form transformers' loader and safetensors can hold;
    set_extra_state reads it back."""
    for m in model.modules():
        if isinstance(m, BitLinear):
            m._extra_state_as_tensor = True


def _pretrained_model_class():
    tf = sys.modules.get("transformers")
    return None if tf is None else getattr(tf, "PreTrainedModel", None)


def attach(model: nn.Module) -> nn.Module:
    """Record ``model``'s bitlinear layers as its ``quantization_config`` (quant_method
    "bitlinear") and set the quantizer that ``save_pretrained`` uses. A no-op for a model that is
    not a transformers ``PreTrainedModel`` or holds no BitLinear. ``bitlinear.convert``,
    ``bitlinear.deploy`` and ``convert_bitnet`` call it."""
    cls = _pretrained_model_class()
    if cls is None or not isinstance(model, cls) or not HAS_TRANSFORMERS:
        return model
    entries = _layer_entries(model)
    heads = _head_hf.hf_head_entries(model)
    if not entries and not heads:
        return model
    old = getattr(model, "hf_quantizer", None)
    if old is not None and not isinstance(old, BitLinearHfQuantizer):
        qm = getattr(old.quantization_config, "quant_method", None)
        if getattr(qm, "value", qm) != "bitnet":
            import warnings
            warnings.warn(f"bitlinear: the model is quantized with {qm!r} as well; its "
                          "quantization_config is left as it is, so save_pretrained will not "
                          "record the bitlinear layers")
            return model
    _tensor_extra_state(model)
    cfg = BitLinearQuantConfig(modules=entries, heads=heads)
    model.config.quantization_config = cfg
    model.hf_quantizer = BitLinearHfQuantizer(cfg, pre_quantized=True)
    model.is_quantized = True
    model.quantization_method = QUANT_METHOD
    return model


def _rebuild(model: nn.Module, modules: Dict[str, dict]) -> None:
    """Replace the (meta) nn.Linear layers named in ``modules`` by bitlinear layers, deployed ones
    with empty (meta) packed buffers that the checkpoint then fills."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    todo = []
    for name, e in modules.items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"bitlinear: the checkpoint's quantization_config names layer {name!r}, "
                             "which this model does not have") from None
        if not isinstance(old, nn.Linear):
            raise ValueError(f"bitlinear: layer {name!r} is a {type(old).__name__}, not an nn.Linear; "
                             "the checkpoint does not fit this model")
        todo.append((name, old, e))
    for name, old, e in todo:
        w = old.weight
        layer = BitLinear(old.in_features, old.out_features, bias=old.bias is not None,
                          eps=float(e.get("eps", 1e-6)), quant_type=e["quant_type"],
                          device="meta", dtype=w.dtype)
        if e.get("deployed", True):
            layer.deploy()  # on meta: shapes only
        if e.get("rms_norm_eps") is not None:
            with torch.device("meta"):
                norm = LlamaRMSNorm(old.in_features, eps=float(e["rms_norm_eps"]))
            layer = RMSNormBitLinear(norm, layer)
        model.set_submodule(name, layer)
    _tensor_extra_state(model)


_ST_FLOATS = ("F64", "F32", "F16", "BF16")


def _precheck_files(model: nn.Module, modules: Dict[str, dict], checkpoint_files,
                    heads: Dict[str, dict] | None = None) -> None:
    """Check every bitlinear layer's and quantized head's tensors in the safetensors headers
    (dtype, shape, presence) before transformers loads anything, so a bad checkpoint fails with
    the layer's name, not a cast (a float w_packed or head weight would be cast to uint8 / int8)
    or a re-initialised buffer."""
    files = [f for f in (checkpoint_files or []) if str(f).endswith(".safetensors")]
    if not files:
        return
    from safetensors import safe_open

    header, where = {}, {}
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                sl = h.get_slice(k)
                header[k] = (sl.get_dtype(), tuple(sl.get_shape()))
                where[k] = f
    prefix = getattr(model, "base_model_prefix", "") or ""

    def key_of(key):
        if key in header:
            return key
        if prefix and key.startswith(prefix + ".") and key[len(prefix) + 1:] in header:
            return key[len(prefix) + 1:]
        return None

    def find(key):
        k = key_of(key)
        return None if k is None else header[k]

    _check_head_headers(model, heads, find)
    for name, e in modules.items():
        m = model.get_submodule(name)
        layer = m.linear if isinstance(m, RMSNormBitLinear) else m
        base = f"{name}.linear" if isinstance(m, RMSNormBitLinear) else name
        N, K = layer.out_features, layer.in_features
        if layer.deployed:
            nw = N if layer.spec.weight_per_channel else 1
            want = {"w_packed": (("U8",), (N, ref.packed_row_bytes(K))),
                    "w_scale": (("F32",), (nw,))}
            if layer.bias is not None:
                want["bias"] = (("F32",), (N,))
        else:
            want = {"weight": (_ST_FLOATS, (N, K))}
            if layer.bias is not None:
                want["bias"] = (_ST_FLOATS, (N,))
        for t, (dtypes, shape) in want.items():
            got = find(f"{base}.{t}")
            if got is None:
                raise ValueError(f"bitlinear: layer {name!r}: the checkpoint has no '{base}.{t}'")
            if got[0] not in dtypes:
                raise TypeError(f"bitlinear: layer {name!r}: '{t}' is {got[0]} in the checkpoint, "
                                f"expected {' or '.join(dtypes)}")
            if got[1] != shape:
                raise ValueError(f"bitlinear: layer {name!r}: '{t}' has shape {got[1]} in the "
                                 f"checkpoint; the config (in_features={K}, out_features={N}, "
                                 f"quant_type={layer.quant_type!r}) needs {shape}")
        extra = key_of(f"{base}._extra_state")
        if extra is not None:  # its format version, quant_type, in/out features, by layer name
            with safe_open(str(where[extra]), framework="pt") as h:
                state = h.get_tensor(extra)
            try:
                layer.set_extra_state(state)
            except ValueError as err:
                msg = str(err).removeprefix("BitLinear: ")
                raise ValueError(f"bitlinear: layer {name!r}: {msg}") from None


def _check_head_headers(model: nn.Module, heads, find) -> None:
    for name, key, dtypes, shape in _head_hf.hf_head_tensors(model, heads):
        got = find(key)
        if got is None:
            raise ValueError(f"bitlinear: head {name!r}: the checkpoint has no '{key}'")
        if got[0] not in dtypes:
            raise TypeError(f"bitlinear: head {name!r}: '{key}' is {got[0]} in the checkpoint, "
                            f"expected {' or '.join(dtypes)} (a quantized head's table)")
        if got[1] != shape:
            raise ValueError(f"bitlinear: head {name!r}: '{key}' has shape {got[1]} in the "
                             f"checkpoint, expected {shape}")


def _validate_loaded(model: nn.Module, modules: Dict[str, dict]) -> None:
    for name in modules:
        m = model.get_submodule(name)
        for pname, t in m.named_parameters(recurse=True):
            if t.device.type == "meta":
                raise ValueError(f"bitlinear: layer {name!r}: '{pname}' was not in the checkpoint")
        for bname, t in m.named_buffers(recurse=True):
            if t is not None and t.device.type == "meta":
                raise ValueError(f"bitlinear: layer {name!r}: '{bname}' was not in the checkpoint")
        layer = m.linear if isinstance(m, RMSNormBitLinear) else m
        if layer.deployed:  # what every loader checks (bitlinear/_checks.py)
            _checks.deployed_state(layer.w_scale, layer.w_packed, layer.bias, layer.in_features,
                                   layer.out_features, layer.spec.weight_per_channel,
                                   f"bitlinear: layer {name!r}")


try:  # registration needs transformers; `import bitlinear.hf` works without it (HAS_TRANSFORMERS)
    from transformers.quantizers.auto import register_quantization_config, register_quantizer
    from transformers.quantizers.base import HfQuantizer
    from transformers.utils.quantization_config import QuantizationConfigMixin
    HAS_TRANSFORMERS = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_TRANSFORMERS = False

if HAS_TRANSFORMERS:
    class BitLinearQuantConfig(QuantizationConfigMixin):
        """quantization_config of a model holding bitlinear layers.

        modules: {module name: {"quant_type", "eps", "deployed"[, "rms_norm_eps"]}}; the layers
        are rebuilt from it (in/out features and bias from the model's own nn.Linear).
        heads: {head name: {"kind": "int8" | "int4", "group_size": G (int4 only), "tied":
        embedding name or None, "bias": bool}}: the quantized output heads (bitlinear.head).
        format_version: the packed layout version (docs/packed_format.md)."""

        def __init__(self, modules: Dict[str, dict] | None = None,
                     format_version: int = ref.FORMAT_VERSION,
                     heads: Dict[str, dict] | None = None, **kwargs):
            qm = kwargs.pop("quant_method", QUANT_METHOD)
            if getattr(qm, "value", qm) != QUANT_METHOD:
                raise ValueError(f"bitlinear: quantization_config has quant_method {qm!r}, "
                                 f"expected {QUANT_METHOD!r}")
            self.quant_method = QUANT_METHOD
            self.format_version = format_version
            self.modules = {str(k): dict(v) for k, v in (modules or {}).items()}
            # quantized output heads (bitlinear.head): {name: {"kind": "int8" | "int4",
            # ["group_size": G (int4),] "tied", "bias"}}
            self.heads = {str(k): dict(v) for k, v in (heads or {}).items()}
            self.post_init()

        def post_init(self):
            if self.format_version != ref.FORMAT_VERSION:
                raise ValueError(f"bitlinear: checkpoint packed format version "
                                 f"{self.format_version!r}; this bitlinear reads version "
                                 f"{ref.FORMAT_VERSION}")
            for name, e in self.modules.items():
                try:
                    e["quant_type"] = ref.canonical_quant_type(e.get("quant_type"))
                    eps = e.get("eps", 1e-6)
                    _checks.eps(eps, "bitlinear")
                    e.setdefault("deployed", True)
                except ValueError as err:
                    raise ValueError(f"bitlinear: quantization_config, layer {name!r}: {err}"
                                     ) from None

    class BitLinearHfQuantizer(HfQuantizer):
        """Loads checkpoints saved from models with bitlinear layers (quant_method "bitlinear")."""

        requires_calibration = True  # only pre-converted checkpoints: no on-the-fly quantization

        def validate_environment(self, *args, **kwargs):
            return

        def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
            _rebuild(model, self.quantization_config.modules)
            _head_hf.hf_rebuild_heads(model, getattr(self.quantization_config, "heads", None))
            _precheck_files(model, self.quantization_config.modules, checkpoint_files,
                            getattr(self.quantization_config, "heads", None))
            return model

        def _process_model_after_weight_loading(self, model, **kwargs):
            _validate_loaded(model, self.quantization_config.modules)
            _head_hf.hf_validate_heads(model, getattr(self.quantization_config, "heads", None))
            return model

        def is_serializable(self):
            return True

        @property
        def is_trainable(self) -> bool:
            return any(not e.get("deployed", True) for e in self.quantization_config.modules.values())

        def get_state_dict_and_metadata(self, model):
            # safetensors holds only tensors: each BitLinear's extra state (format version,
            # quant_type, deployed) goes in as UTF-8 JSON bytes, which set_extra_state reads back.
            _tensor_extra_state(model)
            sd = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
            return sd, {"bitlinear.format_version": str(ref.FORMAT_VERSION)}

    def _register() -> None:
        from transformers.quantizers import auto
        if auto.AUTO_QUANTIZATION_CONFIG_MAPPING.get(QUANT_METHOD) is None:
            register_quantization_config(QUANT_METHOD)(BitLinearQuantConfig)
        if auto.AUTO_QUANTIZER_MAPPING.get(QUANT_METHOD) is None:
            register_quantizer(QUANT_METHOD)(BitLinearHfQuantizer)

    _register()
else:  # pragma: no cover
    class BitLinearQuantConfig:  # type: ignore[no-redef]
        def __init__(self, *a, **k):
            raise ImportError("bitlinear.hf: transformers is not installed")

    class BitLinearHfQuantizer:  # type: ignore[no-redef]
        def __init__(self, *a, **k):
            raise ImportError("bitlinear.hf: transformers is not installed")
