"""Compatibility with the earlier bitlinear package (the one this project replaces), in one module:
its checkpoints (below), its quant_type spellings (re-exported from reference.py, next to
resolve_quant_spec) and its native calls ``_bitlinear.prepare_weights`` / ``_bitlinear.bitlinear``
(at the end; csrc/binding/legacy.cpp resolves them here).

Its training-mode layers saved a plain ``{weight, bias}`` state dict: those load with
``BitLinear.load_state_dict(sd, strict=True)`` directly (no ``_extra_state`` needed).

Its deployed layers saved ``w_packed``, ``w_scale`` and ``bias`` in another layout:

- ``w_packed``: uint8 ``[N, K/4]`` (it refused K not divisible by 4); byte ``j`` of row ``n`` holds
  the weights ``k = 4j .. 4j+3`` as codes ``w + 1``, the first (``k = 4j``) in the high bits 7..6;
- ``w_scale``: a 0-d float tensor, one scale per tensor (``quant_type`` "ai8pc_wpt", which its
  native ``prepare_weights`` spelled "per_tensor");
- its forward: ``y = (x_q @ w_q^T) * x_scale * w_scale + bias``, ``x_scale`` per token
  (amax / 127), the same numbers as ours.

Our layout is different (docs/packed_format.md: 128-weight blocks along K, low bits first), and for
K % 128 == 0 the two have the same shape, so a packed state dict without our ``_extra_state`` is
refused by ``BitLinear.load_state_dict``; it is converted here::

    from bitlinear.legacy import load_legacy_deployed
    model = build_model(); bitlinear.convert(model)
    load_legacy_deployed(model, torch.load("old_deployed.pt"))   # deploys the layers it fills

The ternary values and the scale are kept exactly (the scale is the same float32 number), so the
outputs equal the earlier package's formula up to float32 rounding of the epilogue.
"""
from __future__ import annotations

from typing import Dict, Mapping

import torch
from torch import nn

from . import _checks, ops
from . import reference as ref

__all__ = ["LEGACY_QUANT_TYPES", "canonical_quant_type", "unpack_legacy", "convert_legacy_state_dict",
           "load_legacy_deployed", "prepare_weights", "bitlinear"]

# The earlier package's quant_type spellings live with the quant specs (reference.py), so the
# core layer reads them without importing this module.
from .reference import LEGACY_QUANT_TYPES, canonical_quant_type  # noqa: E402,F401


def unpack_legacy(w_packed: torch.Tensor, name: str = "layer") -> torch.Tensor:
    """The earlier package's uint8 [N, K/4] (codes w+1, first value in the high bits) -> int8
    [N, K] in {-1, 0, 1}. The code 3 is refused (it is no ternary value)."""
    if not isinstance(w_packed, torch.Tensor) or w_packed.dtype != torch.uint8 or w_packed.dim() != 2 \
            or w_packed.numel() == 0:
        desc = (f"{w_packed.dtype} {tuple(w_packed.shape)}" if isinstance(w_packed, torch.Tensor)
                else type(w_packed).__name__)
        raise ValueError(f"legacy checkpoint, layer {name!r}: w_packed must be a non-empty uint8 "
                         f"[N, K/4] tensor, got {desc}")
    if bool((w_packed & (w_packed >> 1) & 0x55).any()):
        raise ValueError(f"legacy checkpoint, layer {name!r}: w_packed holds the invalid 2-bit code 3")
    N = w_packed.shape[0]
    shifts = torch.tensor([6, 4, 2, 0], dtype=torch.uint8, device=w_packed.device)
    codes = (w_packed.unsqueeze(-1) >> shifts) & 3  # [N, K/4, 4]: k = 4j + i
    return (codes.reshape(N, -1).to(torch.int8) - 1).contiguous()


def _layer_name(prefix: str) -> str:
    return prefix[:-1] if prefix.endswith(".") else (prefix or "<root>")


def convert_legacy_state_dict(state_dict: Mapping[str, torch.Tensor], quant_type: str = "ai8pc_wpt",
                              in_features: Dict[str, int] | None = None) -> Dict[str, object]:
    """A state dict of ours from the earlier package's deployed one: every ``<prefix>w_packed``
    is repacked to our layout, its 0-d ``w_scale`` becomes float32 [1], its bias float32, and an
    ``_extra_state`` is added. Other keys pass through. ``in_features`` (prefix without the dot ->
    K) is optional: K is 4 * the packed row length, which is what the earlier package stored.
    Everything is checked before anything is returned."""
    qt = canonical_quant_type(quant_type)
    spec = ref.QUANT_TYPES[qt]
    out: Dict[str, object] = {}
    prefixes = [k[: -len("w_packed")] for k in state_dict if k.endswith("w_packed")
                and (k == "w_packed" or k.endswith(".w_packed"))]
    for k, v in state_dict.items():
        if not any(k.startswith(p) and k[len(p):] in ("w_packed", "w_scale", "bias", "_extra_state")
                   for p in prefixes):
            out[k] = v
    for p in prefixes:
        name = _layer_name(p)
        wq = unpack_legacy(state_dict[p + "w_packed"], name)
        N, K4 = wq.shape
        K = K4 if in_features is None or name not in in_features else int(in_features[name])
        if K > K4 or K4 - K >= 4 or K < 1:
            raise ValueError(f"legacy checkpoint, layer {name!r}: in_features={K} does not fit a "
                             f"packed row of {K4 // 4} bytes")
        if bool(wq[:, K:].any()):
            raise ValueError(f"legacy checkpoint, layer {name!r}: padding weights beyond "
                             f"in_features={K} are not zero")
        ws = state_dict.get(p + "w_scale")
        if not isinstance(ws, torch.Tensor) or not ws.is_floating_point():
            raise ValueError(f"legacy checkpoint, layer {name!r}: w_scale must be a float tensor, got "
                             f"{ws.dtype if isinstance(ws, torch.Tensor) else type(ws).__name__}")
        ws32 = ws.detach().to(torch.float32).reshape(-1).contiguous()  # a 0-d scale -> [1]
        bias = state_dict.get(p + "bias")
        if bias is not None:
            if not isinstance(bias, torch.Tensor) or not bias.is_floating_point() \
                    or tuple(bias.shape) != (N,):
                raise ValueError(f"legacy checkpoint, layer {name!r}: bias must be a float [{N}] "
                                 "tensor")
            bias = bias.detach().to(torch.float32).contiguous()
        packed = ref.pack_ternary(wq[:, :K])
        # what every loader checks (bitlinear/_checks.py): scale count for the quant type, scale
        # and bias values (finite, scales positive normal float32), codes
        _checks.deployed_state(ws32, packed, bias, K, N, spec.weight_per_channel,
                               f"legacy checkpoint, layer {name!r}")
        if bias is not None:
            out[p + "bias"] = bias
        out[p + "w_packed"] = packed
        out[p + "w_scale"] = ws32
        out[p + "_extra_state"] = {"format_version": ref.FORMAT_VERSION, "quant_type": qt,
                                   "deployed": True, "in_features": K, "out_features": N}
    return out


def load_legacy_deployed(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                         quant_type: str = "ai8pc_wpt", strict: bool = True) -> nn.Module:
    """Load the earlier package's deployed state dict into ``model`` (a BitLinear, or a model whose
    BitLinear layers sit where the checkpoint's packed weights are). Layers that the checkpoint
    fills are deployed first (their current weights are discarded). Returns the model."""
    from .nn import BitLinear

    layers = {n: m for n, m in model.named_modules() if isinstance(m, BitLinear)}
    sizes = {n or "<root>": m.in_features for n, m in layers.items()}
    converted = convert_legacy_state_dict(state_dict, quant_type, in_features=sizes)
    for n, m in layers.items():
        key = f"{n}.w_packed" if n else "w_packed"
        if key in converted and not m.deployed:
            qt = canonical_quant_type(quant_type)
            if m.quant_type != qt:
                raise ValueError(f"legacy checkpoint, layer {n or '<root>'!r}: quant_type {qt!r} "
                                 f"differs from the layer's {m.quant_type!r}")
        if key in converted:
            want = (m.out_features, ref.packed_row_bytes(m.in_features))
            if tuple(converted[key].shape) != want:
                raise ValueError(f"legacy checkpoint, layer {n or '<root>'!r}: packed weights for "
                                 f"{tuple(state_dict[key].shape)} do not fit the layer's "
                                 f"out_features={m.out_features}, in_features={m.in_features}")
    for n, m in layers.items():
        key = f"{n}.w_packed" if n else "w_packed"
        if key in converted and not m.deployed:
            m.deploy()
    model.load_state_dict(converted, strict=strict)
    return model


# ---------------------------------------------------------------- the earlier native calls
# `_bitlinear.prepare_weights` and `_bitlinear.bitlinear` of the earlier package resolve here (the
# PEP 562 module __getattr__ in csrc/binding/legacy.cpp).
def prepare_weights(weight: torch.Tensor, eps: float = 1e-6, quant_type: str = "per_tensor"):
    """Quantize and pack a float weight [N, K] -> (w_scale, w_packed). quant_type takes ours
    ("ai8pc_wpt", ...) or the earlier package's spellings: its default "per_tensor" (one weight
    scale, per-token activations: our ai8pc_wpt) and "per_channel" (bitlinear/legacy.py)."""
    spec = ref.parse_quant_type(ref.canonical_quant_type(quant_type))
    return ops.quantize_weights(weight, eps, spec.weight_per_channel)


def bitlinear(x: torch.Tensor, w_scale: torch.Tensor, w_packed: torch.Tensor, bias=None,
              eps: float = 1e-6) -> torch.Tensor:
    """Deployed forward with per-token activations; in_features is x.shape[-1]."""
    _checks.float_tensor(x)
    if x.dim() == 0:
        raise ValueError("bitlinear: x must have a last dimension (in_features), got a 0-d tensor")
    if bias is not None:
        bias = bias.to(torch.float32).contiguous()
    return ops.linear(x, w_scale, w_packed, bias, eps, x.shape[-1], True)
