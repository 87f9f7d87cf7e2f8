"""The torch.ops.bitlinear operators, defined once: schema, fake (meta) kernel and a pure-PyTorch
default kernel (bitlinear/reference.py) per op, plus typed wrappers.

The native extension registers the CPU and CUDA kernels (csrc/binding/ops_cpu.cpp,
ops_cuda.cpp). On a device without one (the extension missing or disabled, a CUDA tensor on a
CPU-only build, fake_quant_weights on CUDA) the dispatcher runs the default kernel, so the ops work
everywhere and nothing here branches on what was built.

The wrappers validate user input once (bitlinear/_checks.py: TypeError / ValueError naming the
problem), then call the op.
"""
from __future__ import annotations

import torch

from . import _checks
from . import reference as ref

_lib = torch.library.Library("bitlinear", "DEF")


def _define(schema: str, fake, default) -> None:
    name = schema.split("(", 1)[0]
    _lib.define(schema)
    torch.library.register_fake(f"bitlinear::{name}", fake, lib=_lib)
    _lib.impl(name, default, "CompositeExplicitAutograd")  # torch.library's "default" kernel


def _fake_weights(weight, eps, per_channel):
    N, K = weight.shape
    return (weight.new_empty((N if per_channel else 1,), dtype=torch.float32),
            weight.new_empty((N, ref.packed_row_bytes(K)), dtype=torch.uint8))


def _fake_fake_quant(weight, eps, per_channel):
    N, K = weight.shape
    return (weight.new_empty((N if per_channel else 1,), dtype=torch.float32),
            weight.new_empty((N, K), dtype=torch.float32))


def _fake_acts(x, eps, per_token):
    M, K = x.shape
    return (x.new_empty((M, ref.padded_k(K)), dtype=torch.int8),
            x.new_empty((M,), dtype=torch.float32), x.new_empty((M,), dtype=torch.int32))


_define("quantize_weights(Tensor weight, float eps, bool per_channel) -> (Tensor, Tensor)",
        _fake_weights, ref.quantize_weights)
_define("fake_quant_weights(Tensor weight, float eps, bool per_channel) -> (Tensor, Tensor)",
        _fake_fake_quant, ref.fake_quant_weights)
_define("unpack_weights(Tensor w_packed, int in_features) -> Tensor",
        lambda w_packed, in_features: w_packed.new_empty((w_packed.shape[0], in_features),
                                                         dtype=torch.int8),
        ref.unpack_weights)
_define("quantize_acts(Tensor x, float eps, bool per_token) -> (Tensor, Tensor, Tensor)",
        _fake_acts, ref.quantize_acts)
_define("gemm_acc(Tensor x_q, Tensor w_packed, int in_features) -> Tensor",
        lambda x_q, w_packed, in_features: x_q.new_empty((x_q.shape[0], w_packed.shape[0]),
                                                         dtype=torch.int32),
        ref.gemm_acc)
_define("linear(Tensor x, Tensor w_scale, Tensor w_packed, Tensor? bias, float eps, "
        "int in_features, bool per_token) -> Tensor",
        lambda x, w_scale, w_packed, bias, eps, in_features, per_token:
            x.new_empty((*x.shape[:-1], w_packed.shape[0])),
        ref.linear)

from . import _ext  # noqa: E402  (the native kernels register for the ops defined above)


# ---------------------------------------------------------------------------- typed wrappers
def quantize_weights(weight: torch.Tensor, eps: float, per_channel: bool):
    """Ternary-quantize and pack a [N, K] float weight -> (w_scale float32, w_packed uint8)."""
    _checks.weight_matrix(weight)
    return torch.ops.bitlinear.quantize_weights(weight, _checks.eps(eps), bool(per_channel))


def fake_quant_weights(weight: torch.Tensor, eps: float, per_channel: bool):
    """Training-time weight fake quantization -> (scale, s * ternary(w) as float32 [N, K]), on
    detached values. NaN/Inf weights are allowed (training may diverge): they give NaN."""
    _checks.float_tensor(weight, "weight")
    return torch.ops.bitlinear.fake_quant_weights(weight.detach(), _checks.eps(eps),
                                                  bool(per_channel))


def unpack_weights(w_packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """uint8 [N, Kp/4] -> int8 [N, in_features] in {-1, 0, 1}."""
    _checks.packed(w_packed, in_features)
    return torch.ops.bitlinear.unpack_weights(w_packed, int(in_features))


def quantize_acts(x: torch.Tensor, eps: float, per_token: bool):
    """Float rows [M, K] -> (x_q int8 [M, Kp] zero padded, scale float32 [M], rowsum int32 [M])."""
    _checks.float_tensor(x)
    if x.dim() != 2 or x.shape[1] < 1:
        raise ValueError(f"bitlinear: quantize_acts expects a 2-D input [M, K] with K >= 1, "
                         f"got shape {tuple(x.shape)}")
    return torch.ops.bitlinear.quantize_acts(x, _checks.eps(eps), bool(per_token))


def gemm_acc(x_q: torch.Tensor, w_packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """Exact int32 accumulators x_q @ ternary(w)^T, [M, N]."""
    _checks.packed(w_packed, in_features)
    _checks.quantized_acts(x_q, in_features)
    _checks.same_device(x_q=x_q, w_packed=w_packed)
    return torch.ops.bitlinear.gemm_acc(x_q, w_packed, int(in_features))


def linear(x, w_scale, w_packed, bias, eps: float, in_features: int, per_token: bool = True):
    """Deployed forward: y = dequant(int8(x) @ ternary(w)^T) + bias, in x's dtype."""
    _checks.deployed_buffers(w_scale, w_packed, bias, in_features)
    _checks.layer_input(x, in_features, device=w_packed.device)
    return torch.ops.bitlinear.linear(x, w_scale, w_packed, bias, _checks.eps(eps),
                                      int(in_features), bool(per_token))
