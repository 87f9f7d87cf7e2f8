"""Typed wrappers around torch.ops.bitlinear.* plus their fake (meta) kernels.

Schemas live in csrc/binding.cpp. Each wrapper validates its inputs with errors that name the
problem, then calls the native op, or the pure-PyTorch reference when the native op is missing for
that device (no extension, or a CUDA tensor on a build without CUDA kernels).
"""
from __future__ import annotations

import torch

from . import reference as ref
from ._ext import HAS_BITLINEAR, HAS_CUDA_KERNELS

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

if HAS_BITLINEAR:

    @torch.library.register_fake("bitlinear::quantize_weights")
    def _(weight, eps, per_channel):
        N, K = weight.shape
        return (weight.new_empty((N if per_channel else 1,), dtype=torch.float32),
                weight.new_empty((N, ref.packed_row_bytes(K)), dtype=torch.uint8))

    @torch.library.register_fake("bitlinear::fake_quant_weights")
    def _(weight, eps, per_channel):
        N, K = weight.shape
        return (weight.new_empty((N if per_channel else 1,), dtype=torch.float32),
                weight.new_empty((N, K), dtype=torch.float32))

    @torch.library.register_fake("bitlinear::unpack_weights")
    def _(w_packed, in_features):
        return w_packed.new_empty((w_packed.shape[0], in_features), dtype=torch.int8)

    @torch.library.register_fake("bitlinear::quantize_acts")
    def _(x, eps, per_token):
        M, K = x.shape
        return (x.new_empty((M, ref.padded_k(K)), dtype=torch.int8),
                x.new_empty((M,), dtype=torch.float32),
                x.new_empty((M,), dtype=torch.int32))

    @torch.library.register_fake("bitlinear::gemm_acc")
    def _(x_q, w_packed, in_features):
        return x_q.new_empty((x_q.shape[0], w_packed.shape[0]), dtype=torch.int32)

    @torch.library.register_fake("bitlinear::linear")
    def _(x, w_scale, w_packed, bias, eps, in_features, per_token):
        return x.new_empty((*x.shape[:-1], w_packed.shape[0]))


def _native_for(t: torch.Tensor) -> bool:
    if not HAS_BITLINEAR:
        return False
    if t.device.type == "cpu":
        return True
    return t.device.type == "cuda" and HAS_CUDA_KERNELS


def check_float_input(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bitlinear: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"bitlinear: {name} must be float32, float16 or bfloat16, got {x.dtype}"
        )


def check_deployed_buffers(w_scale, w_packed, bias, in_features: int, out_features: int) -> None:
    """Validate packed buffers (e.g. after load_state_dict) before any kernel reads them."""
    rb = ref.packed_row_bytes(in_features)
    if not isinstance(w_packed, torch.Tensor) or w_packed.dtype != torch.uint8 \
            or tuple(w_packed.shape) != (out_features, rb):
        got = (f"{w_packed.dtype} {tuple(w_packed.shape)}" if isinstance(w_packed, torch.Tensor)
               else type(w_packed).__name__)
        raise ValueError(f"bitlinear: w_packed must be uint8 of shape ({out_features}, {rb}) for "
                         f"in_features={in_features}, got {got}")
    if not isinstance(w_scale, torch.Tensor) or w_scale.dtype != torch.float32 \
            or w_scale.dim() != 1 or w_scale.numel() not in (1, out_features):
        got = (f"{w_scale.dtype} {tuple(w_scale.shape)}" if isinstance(w_scale, torch.Tensor)
               else type(w_scale).__name__)
        raise ValueError(f"bitlinear: w_scale must be float32 of shape (1,) or ({out_features},), "
                         f"got {got}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dtype != torch.float32
                             or tuple(bias.shape) != (out_features,)):
        got = f"{bias.dtype} {tuple(bias.shape)}" if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"bitlinear: bias must be float32 of shape ({out_features},), got {got}")
    for name, t in (("w_scale", w_scale), ("bias", bias)):
        if t is not None and t.device != w_packed.device:
            raise ValueError(f"bitlinear: {name} is on {t.device} but w_packed is on {w_packed.device}")


def quantize_weights(weight: torch.Tensor, eps: float, per_channel: bool):
    """Ternary-quantize and pack a [N, K] float weight -> (w_scale float32, w_packed uint8)."""
    check_float_input(weight, "weight")
    if weight.dim() != 2 or weight.numel() == 0:
        raise ValueError(f"bitlinear: weight must be a non-empty 2-D tensor, got shape {tuple(weight.shape)}")
    if not _native_for(weight):
        return ref.quantize_weights(weight, eps, per_channel)
    # Checked here, not left to the kernel's status: the op then never has to raise for
    # ordinary bad input (one pass over the weights, once per deploy).
    if not torch.isfinite(weight).all():
        raise ValueError("bitlinear: weight contains NaN or Inf; cannot quantize")
    return torch.ops.bitlinear.quantize_weights(weight, float(eps), bool(per_channel))


def fake_quant_weights(weight: torch.Tensor, eps: float, per_channel: bool):
    """Training-time weight fake quantization -> (scale, s * ternary(w) as float32 [N, K]),
    on detached values: one native pass on the CPU, the reference elsewhere (same bits)."""
    if HAS_BITLINEAR and weight.device.type == "cpu":
        return torch.ops.bitlinear.fake_quant_weights(weight.detach(), float(eps), bool(per_channel))
    return ref.fake_quant_weights(weight, eps, per_channel)


def unpack_weights(w_packed: torch.Tensor, in_features: int) -> torch.Tensor:
    if _native_for(w_packed):
        return torch.ops.bitlinear.unpack_weights(w_packed, int(in_features))
    return ref.unpack_weights(w_packed, in_features)


def quantize_acts(x: torch.Tensor, eps: float, per_token: bool):
    check_float_input(x)
    if _native_for(x):
        return torch.ops.bitlinear.quantize_acts(x, float(eps), bool(per_token))
    return ref.quantize_acts(x, eps, per_token)


def gemm_acc(x_q: torch.Tensor, w_packed: torch.Tensor, in_features: int) -> torch.Tensor:
    if x_q.device != w_packed.device:
        raise ValueError(f"bitlinear: x_q is on {x_q.device} but w_packed is on {w_packed.device}")
    if _native_for(x_q):
        return torch.ops.bitlinear.gemm_acc(x_q, w_packed, int(in_features))
    return ref.gemm_acc(x_q, w_packed, in_features)


def linear(x, w_scale, w_packed, bias, eps: float, in_features: int, per_token: bool = True):
    """Deployed forward: y = dequant(int8(x) @ ternary(w)^T) + bias, in x's dtype."""
    check_float_input(x)
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"bitlinear: expected input with last dimension in_features={in_features}, "
                         f"got shape {tuple(x.shape)}")
    if x.device != w_packed.device:
        raise ValueError(f"bitlinear: input is on {x.device} but the packed weights are on "
                         f"{w_packed.device}; move one of them (e.g. layer.to(x.device))")
    if _native_for(x):
        return torch.ops.bitlinear.linear(x, w_scale, w_packed, bias, float(eps), int(in_features),
                                          bool(per_token))
    return ref.linear(x, w_scale, w_packed, bias, eps, in_features, per_token)
