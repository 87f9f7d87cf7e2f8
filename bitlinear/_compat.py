"""The earlier package's native calls, kept working: `_bitlinear.prepare_weights` and
`_bitlinear.bitlinear` resolve here (the PEP 562 hook in csrc/binding/legacy.cpp)."""
from __future__ import annotations

import torch

from . import _checks, ops
from . import reference as ref


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
