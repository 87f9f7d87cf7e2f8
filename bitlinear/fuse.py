"""Projections that share their input, in one call: q/k/v and gate/up (issue 20).

    bitlinear.convert(model); bitlinear.deploy(model)
    bitlinear.fuse_projections(model)        # after deploy; returns the number of groups fused

Each group's packed weights become consecutive row slices of one tensor (one copy: the layers'
``w_packed`` are views into it, and their state_dict entries stay per layer, in the packed format).
Inside the parent module's forward (the attention block, the MLP), the first member called with
an input computes every member's output in one native call: the activations are quantized once and
the weights streamed once, with each member's own scale and bias (``bl_linear_segments``). The
output is bit for bit the separate layers'. Everywhere else (a member called on its own, another
input, a changed buffer, compile, another device) each layer runs alone, as before.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from . import _fast
from .nn import BitLinear

__all__ = ["fuse_projections", "DEFAULT_FUSE_GROUPS"]

# transformers' Llama / Mistral / Qwen / BitNet names: q/k/v read the attention input, gate/up the
# MLP input
DEFAULT_FUSE_GROUPS: Tuple[Tuple[str, ...], ...] = (("q_proj", "k_proj", "v_proj"),
                                                     ("gate_proj", "up_proj"))


def _fusable(ms) -> bool:
    if not all(isinstance(m, BitLinear) and m.deployed and "_group" not in m.__dict__ for m in ms):
        return False
    K, eps, per_tok = ms[0].in_features, ms[0].eps, ms[0].spec.act_per_token
    for m in ms:
        wp = m._buffers.get("w_packed")
        if (wp is None or type(wp) is not torch.Tensor or not wp.is_cpu or wp.dtype != torch.uint8
                or wp.dim() != 2 or not wp.is_contiguous() or m.in_features != K or m.eps != eps
                or m.spec.act_per_token != per_tok):
            return False
    return True


def fuse_projections(model: nn.Module,
                     groups: Sequence[Sequence[str]] = DEFAULT_FUSE_GROUPS) -> int:
    """Fuse every set of deployed CPU BitLinear children named by one entry of ``groups`` (in one
    parent module, same in_features, eps and activation scaling). Returns how many groups were
    fused; layers already in a group, on another device, or not deployed are left alone. Call it
    again after moving the model or loading it from a pickle (the fusion is not pickled)."""
    if _fast._linear_segments is None:
        return 0  # an extension without the fused entry point
    fused = 0
    for parent in list(model.modules()):
        for names in groups:
            ms = [parent._modules.get(n) for n in names]
            if len(ms) < 2 or any(m is None for m in ms) or not _fusable(ms):
                continue
            with torch.no_grad():
                stacked = torch.cat([m.w_packed for m in ms])
            group = _fast.FusionGroup(ms)
            off = 0
            for i, m in enumerate(ms):
                n = m.w_packed.shape[0]
                m.w_packed = stacked[off:off + n]  # a view: one copy of the weights
                off += n
                _fast.forget(m)
                m.__dict__["_group"] = (group, i)
            parent.register_forward_pre_hook(_fast.FusionWindow(group, True))
            parent.register_forward_hook(_fast.FusionWindow(group, False), always_call=True)
            fused += 1
    return fused
