"""Decode attention on the CPU: one query token over a key/value cache (csrc/cpu/attn.c).

For a transformers model, two lines:

    import bitlinear.attention
    bitlinear.attention.register()                      # name "bitlinear_sdpa"
    model.set_attn_implementation("bitlinear_sdpa")

`decode_attention` is then the model's attention function. It runs the native kernel
(`bl_attn_decode`) where it applies: CPU, float32 query / key / value, one query token, head_dim
contiguous, the same head_dim for query, key and value, query heads a multiple of kv heads (GQA
without copying key / value), a bool or float32 mask broadcastable to [B, Hq, 1, L] (or none), no
dropout in training, no softcap / sliding window / attention sinks / position bias, no gradient.
Everything else goes to transformers' own `sdpa_attention_forward`, unchanged. Under torch.compile
the kernel is the custom op `torch.ops.bitlinear.attn_decode`.

Numerics: float32 with the running maximum subtracted (within float rounding of torch's SDPA, not
its bits); a masked position (-inf / False) is skipped without reading its key and value; a query
head with every position masked gives zeros, as torch's CPU SDPA does.

transformers is imported only inside `register` and the fallback: it stays optional.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch.nn import functional as F

from . import _ext

__all__ = ["attn_decode", "decode_attention", "register", "DEFAULT_NAME"]

DEFAULT_NAME = "bitlinear_sdpa"
_MASK_TYPES = {torch.float32: 1, torch.bool: 2}  # bl_attn_mask_type
_UNSUPPORTED_KWARGS = ("softcap", "sliding_window", "s_aux", "sinks", "position_bias")


def _native():
    return getattr(_ext._native, "attn_decode_cpu", None)


def _kernel_applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    mask: Optional[torch.Tensor]) -> bool:
    """Shapes, dtypes, devices and strides the kernel takes (static facts: fine under dynamo)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return False
    B, Hq, Lq, D = q.shape
    Bk, Hkv, L, Dk = k.shape
    if (Lq != 1 or tuple(v.shape) != (Bk, Hkv, L, Dk) or Bk != B or Dk != D or Hkv < 1
            or Hq % Hkv != 0 or B < 1):
        return False
    for t in (q, k, v):
        if t.dtype != torch.float32 or t.device.type != "cpu" or type(t) is not torch.Tensor:
            return False
    if mask is not None:
        if (mask.dtype not in _MASK_TYPES or mask.device.type != "cpu" or mask.dim() != 4
                or type(mask) is not torch.Tensor):
            return False
        ms = mask.shape
        if (ms[0] not in (1, B) or ms[1] not in (1, Hq) or ms[2] != 1 or ms[3] not in (1, L)):
            return False
    return True


def _run_kernel(native, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """The native call on operands _kernel_applies accepted. A decode step makes one call per layer
    of a few microseconds, so this stays lean: no expand, no resolve_* dispatcher calls."""
    B, Hq, _, D = q.shape
    _, Hkv, L, _ = k.shape
    # head_dim must be contiguous (and no lazy negation); everything else is read through strides
    if q.stride(3) != 1 or q.is_neg():
        q = q.contiguous().resolve_neg()
    if k.stride(3) != 1 or k.is_neg():
        k = k.contiguous().resolve_neg()
    if v.stride(3) != 1 or v.is_neg():
        v = v.contiguous().resolve_neg()
    qs, ks, vs = q.stride(), k.stride(), v.stride()
    out = q.new_empty((B, 1, Hq, D))
    if mask is None:
        mptr = mtype = msb = msh = msl = 0
    else:
        if mask.is_neg():
            mask = mask.resolve_neg()
        ms, mst = mask.shape, mask.stride()
        mptr, mtype = mask.data_ptr(), _MASK_TYPES[mask.dtype]
        # broadcast dimensions (size 1) read with stride 0
        msb = mst[0] if ms[0] != 1 else 0
        msh = mst[1] if ms[1] != 1 else 0
        msl = mst[3] if ms[3] != 1 else 0
    native(B, Hq, Hkv, L, D, q.data_ptr(), qs[0], qs[1], k.data_ptr(), ks[0], ks[1], ks[2],
           v.data_ptr(), vs[0], vs[1], vs[2], mptr, mtype, msb, msh, msl, scale,
           out.data_ptr(), Hq * D, D, torch.get_num_threads())
    return out


def _attn_decode_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      mask: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """out [B, 1, Hq, D] (contiguous: the layout transformers' attention functions return)."""
    native = _native()
    if native is None or not _kernel_applies(q, k, v, mask):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                             enable_gqa=q.shape[1] != k.shape[1])
        return out.transpose(1, 2).contiguous()
    return _run_kernel(native, q, k, v, mask, scale)


# torch.ops.bitlinear.attn_decode: what torch.compile'd graphs call, where the kernel applies.
# Defined with a plain torch.library.Library (schema, default kernel, fake) rather than
# torch.library.custom_op: a decode step calls it once per layer, and custom_op's Python wrappers
# (its autograd kernel and the output aliasing check) cost about 7 us more per call here (10.6 vs
# 3.5 us for an empty kernel). The CPU kernel is C++ (csrc/binding/ops_cpu.cpp: a compiled graph's
# C++ wrapper calls it without entering Python: 14.7 instead of 21.6 us a call for 20 query heads
# over 40 of 128 cached positions on the 2-core Zen 4, profile/attn_decode.py) and refuses inputs the native kernel does not take; the Python kernel below
# serves other devices and builds without the extension. No autograd: decode_attention never
# calls it with inputs that require grad (it falls back to transformers' SDPA instead).
_LIB = torch.library.Library("bitlinear", "FRAGMENT")
_LIB.define("attn_decode(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale) -> Tensor")
_LIB.impl("attn_decode", _attn_decode_impl, "CompositeExplicitAutograd")


@torch.library.register_fake("bitlinear::attn_decode", lib=_LIB)
def _(q, k, v, mask, scale):
    return q.new_empty(q.shape[0], 1, q.shape[1], q.shape[3])


def attn_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: Optional[torch.Tensor] = None,
                scale: Optional[float] = None) -> torch.Tensor:
    """Decode attention: q [B, Hq, 1, D], k / v [B, Hkv, L, D] (any strides with head_dim
    contiguous), mask None, bool (True attends) or additive float32, broadcastable to
    [B, Hq, 1, L]; returns [B, 1, Hq, D] (transformers' layout). The native kernel where it
    applies (see the module doc), else torch's SDPA. No autograd."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if torch.compiler.is_compiling() and _native() is not None and _kernel_applies(q, k, v, mask):
        return torch.ops.bitlinear.attn_decode(q, k, v, mask, float(scale))
    return _attn_decode_impl(q, k, v, mask, float(scale))


def _sdpa_fallback(module, query, key, value, attention_mask, scaling, dropout, kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, **kwargs)


def decode_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: Optional[torch.Tensor],
                     scaling: Optional[float] = None, dropout: float = 0.0,
                     **kwargs) -> Tuple[torch.Tensor, None]:
    """A transformers attention function (AttentionInterface): query [B, Hq, q_len, D], key /
    value [B, Hkv, L, D]; returns (attn_output [B, q_len, Hq, D], None). The native decode kernel
    where it applies, else transformers' sdpa_attention_forward with the same arguments."""
    use = (_native() is not None
           and (dropout == 0.0 or not getattr(module, "training", False))
           and not any(kwargs.get(n) is not None for n in _UNSUPPORTED_KWARGS)
           and not (torch.is_grad_enabled()
                    and (query.requires_grad or key.requires_grad or value.requires_grad))
           and (attention_mask is None or isinstance(attention_mask, torch.Tensor))
           and _kernel_applies(query, key, value, attention_mask))
    if not use:
        return _sdpa_fallback(module, query, key, value, attention_mask, scaling, dropout, kwargs)
    if scaling is None:
        scaling = 1.0 / math.sqrt(query.shape[-1])
    if torch.compiler.is_compiling():
        return torch.ops.bitlinear.attn_decode(query, key, value, attention_mask,
                                               float(scaling)), None
    return _run_kernel(_native(), query, key, value, attention_mask, float(scaling)), None


def register(name: str = DEFAULT_NAME) -> str:
    """Registers `decode_attention` with transformers under `name` (AttentionInterface), with
    masks built as for "sdpa" (AttentionMaskInterface: bool masks, or none where sdpa skips them).
    Idempotent. Then: model.set_attn_implementation(name). Returns name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(name, decode_attention)
    AttentionMaskInterface.register(name, sdpa_mask)
    return name
