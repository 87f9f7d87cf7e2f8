"""The torch.ops.bitlinear operators, defined once: schema, fake (meta) kernel and a pure-PyTorch
default kernel (bitlinear/reference.py) per op, plus typed wrappers.

The native extension registers the CPU and CUDA kernels (csrc/binding/ops_cpu.cpp,
ops_cuda.cpp). On a device without one (the extension missing or disabled, a CUDA tensor on a
CPU-only build) the dispatcher runs the default kernel, so the ops work
everywhere and nothing here branches on what was built.

The wrappers validate user input once (bitlinear/_checks.py: TypeError / ValueError naming the
problem), then call the op.
"""
from __future__ import annotations

import torch

from . import _checks
from . import reference as ref

_lib = torch.library.Library("bitlinear", "DEF")


def _one_device(fake):
    """The fake kernel, refusing tensors on several devices. The dispatcher runs it for any call
    with a meta tensor among its arguments, so without this a meta buffer next to a CPU input
    would return uninitialised memory instead of an error."""
    def checked(*args, **kwargs):
        flat = [t for a in (*args, *kwargs.values())
                for t in (a if isinstance(a, (list, tuple)) else (a,))]  # Tensor[] arguments too
        devices = {t.device for t in flat if isinstance(t, torch.Tensor)}
        if len(devices) > 1:
            raise ValueError("bitlinear: every tensor argument must be on one device, got "
                             + ", ".join(sorted(map(str, devices))))
        return fake(*args, **kwargs)
    return checked


def _define(schema: str, fake, default) -> None:
    name = schema.split("(", 1)[0]
    _lib.define(schema)
    torch.library.register_fake(f"bitlinear::{name}", _one_device(fake), lib=_lib)
    _lib.impl(name, default, "CompositeExplicitAutograd")  # torch.library's "default" kernel


def _fake_weights(weight, eps, per_channel):
    N, K = weight.shape
    return (weight.new_empty((N if per_channel else 1,), dtype=torch.float32),
            weight.new_empty((N, ref.packed_row_bytes(K)), dtype=torch.uint8))


def _fake_acts(x, eps, per_token):
    M, K = x.shape
    return (x.new_empty((M, ref.padded_k(K)), dtype=torch.int8),
            x.new_empty((M,), dtype=torch.float32), x.new_empty((M,), dtype=torch.int32))


_define("quantize_weights(Tensor weight, float eps, bool per_channel) -> (Tensor, Tensor)",
        _fake_weights, ref.quantize_weights)
_define("unpack_weights(Tensor w_packed, int in_features, ScalarType? dtype=None) -> Tensor",
        lambda w_packed, in_features, dtype=None: w_packed.new_empty(
            (w_packed.shape[0], in_features), dtype=torch.int8 if dtype is None else dtype),
        lambda w_packed, in_features, dtype=None: ref.unpack_weights(w_packed, in_features).to(
            torch.int8 if dtype is None else dtype))
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


def _group_schema(n: int) -> str:
    """linear_group2 / linear_group3: n deployed layers on one input (bitlinear/fuse.py). Fixed
    arity, not Tensor[]: torch.compile's C++ wrapper calls such an op through the dispatcher
    directly, and a list-taking one back through Python (about 10 us a call)."""
    layers = ", ".join(f"Tensor w_scale{i}, Tensor w_packed{i}, Tensor? bias{i}" for i in range(n))
    outs = ", ".join(["Tensor"] * n)
    return (f"linear_group{n}(Tensor x, {layers}, float eps, int in_features, bool per_token) -> "
            f"({outs})")


def _group_layers(args):
    x, *rest = args
    *layers, eps, K, per_token = rest
    return x, [tuple(layers[i:i + 3]) for i in range(0, len(layers), 3)], eps, K, per_token


def _fake_group(*args):
    x, layers, *_ = _group_layers(args)
    return tuple(x.new_empty((*x.shape[:-1], wp.shape[0])) for _, wp, _ in layers)


def _default_group(*args):
    x, layers, eps, K, per_token = _group_layers(args)
    return tuple(ref.linear(x, ws, wp, b, eps, K, per_token) for ws, wp, b in layers)


for _n in (2, 3):
    _define(_group_schema(_n), _fake_group, _default_group)

_define("linear_q(Tensor x_q, Tensor x_scale, Tensor x_rowsum, Tensor w_scale, Tensor w_packed, "
        "Tensor? bias, int in_features, ScalarType out_dtype) -> Tensor",
        lambda x_q, x_scale, x_rowsum, w_scale, w_packed, bias, in_features, out_dtype:
            x_q.new_empty((x_q.shape[0], w_packed.shape[0]), dtype=out_dtype),
        lambda x_q, x_scale, x_rowsum, w_scale, w_packed, bias, in_features, out_dtype:
            ref.linear_q(x_q, x_scale, w_scale, w_packed, bias, in_features, out_dtype))


# ---------------------------------------------------------------------------- training op
def _linear_train(x, weight, bias, eps, per_token, per_channel):
    """BitLinear's training forward: the deployed path on weights quantized now (so its output
    equals the deployed layer's bit for bit), keeping the int8 operands for backward."""
    K, N = x.shape[-1], weight.shape[0]
    w_scale, w_packed = torch.ops.bitlinear.quantize_weights(weight, eps, per_channel)
    x_q, x_scale, rowsum = torch.ops.bitlinear.quantize_acts(x.reshape(-1, K), eps, per_token)
    b = None if bias is None else bias.to(torch.float32).contiguous()
    y = torch.ops.bitlinear.linear_q(x_q, x_scale, rowsum, w_scale, w_packed, b, K, x.dtype)
    return y.view(*x.shape[:-1], N), x_q, x_scale, w_scale, w_packed


def _fake_linear_train(x, weight, bias, eps, per_token, per_channel):
    K, N = x.shape[-1], weight.shape[0]
    return (x.new_empty((*x.shape[:-1], N)),
            x.new_empty((x.numel() // K, ref.padded_k(K)), dtype=torch.int8),
            x.new_empty((x.numel() // K,), dtype=torch.float32),
            weight.new_empty((N if per_channel else 1,), dtype=torch.float32),
            weight.new_empty((N, ref.packed_row_bytes(K)), dtype=torch.uint8))


_define("linear_train(Tensor x, Tensor weight, Tensor? bias, float eps, bool per_token, "
        "bool per_channel) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
        _fake_linear_train, _linear_train)

_MM_CHUNK = 1 << 19  # weights decoded per CPU chunk: 2 MiB of float32, stays in L2


def _ternary_mm(a: torch.Tensor, w_packed: torch.Tensor, K: int) -> torch.Tensor:
    """a [M, N] @ W_q [N, K] in a's dtype, W_q decoded from the packed weights. On the CPU chunk by
    chunk of rows that stay in cache, so no [N, K] float copy of the weights reaches memory."""
    N = w_packed.shape[0]
    if a.device.type != "cpu" or N * K <= _MM_CHUNK:
        return a @ torch.ops.bitlinear.unpack_weights(w_packed, K, a.dtype)
    rows = max(1, _MM_CHUNK // K)
    out = None
    for n0 in range(0, N, rows):
        wq = torch.ops.bitlinear.unpack_weights(w_packed[n0:n0 + rows], K, a.dtype)
        part = a[:, n0:n0 + rows]
        out = part @ wq if out is None else out.addmm_(part, wq)
    return out


def _linear_train_setup(ctx, inputs, output):
    x, weight, bias, _, _, _ = inputs
    _, x_q, x_scale, w_scale, w_packed = output
    ctx.save_for_backward(x_q, x_scale, w_scale, w_packed)  # int8 / 2-bit and scales only
    ctx.shapes = (x.shape, x.dtype, weight.dtype, None if bias is None else bias.dtype)
    ctx.mark_non_differentiable(x_q, x_scale, w_scale, w_packed)


def _linear_train_backward(ctx, gy, *_):
    """Straight-through estimator, in the gradient's dtype:
    grad_x = g @ (s_w W_q), grad_w = g^T @ (s_x X_q), grad_b = sum of g over tokens.
    On the CPU its torch ops take the oversubscription governor's thread count (one thread while
    other processes keep the cores busy, as the C core's own regions do): a descheduled OpenMP
    thread would otherwise hold up every matmul of the step."""
    n = torch.get_num_threads()
    t = _threads_now(n) if gy.is_cpu and n > 1 and _threads_now is not None else n
    if t >= n:
        return _train_backward(ctx, gy)
    torch.set_num_threads(t)
    try:
        return _train_backward(ctx, gy)
    finally:
        torch.set_num_threads(n)


def _train_backward(ctx, gy):
    x_q, x_scale, w_scale, w_packed = ctx.saved_tensors
    x_shape, x_dtype, w_dtype, b_dtype = ctx.shapes
    K = x_shape[-1]
    g = gy.reshape(-1, gy.shape[-1])
    gx = gw = gb = None
    # The float32 scales multiply in float32 and round once into g's dtype (out=): no float32
    # copy, and s_x * x_q (at most amax|x|) cannot overflow a half-precision x's range.
    if ctx.needs_input_grad[0]:
        gs = torch.mul(g, w_scale, out=torch.empty_like(g))  # s_w scales g's columns
        gx = _ternary_mm(gs, w_packed, K).to(x_dtype).view(x_shape)
    if ctx.needs_input_grad[1]:
        xdq = torch.mul(x_q[:, :K], x_scale[:, None],
                        out=torch.empty(g.shape[0], K, dtype=g.dtype, device=g.device))
        gw = (g.t() @ xdq).to(w_dtype)
    if b_dtype is not None and ctx.needs_input_grad[2]:
        gb = g.sum(0).to(b_dtype)
    return gx, gw, gb, None, None, None


torch.library.register_autograd("bitlinear::linear_train", _linear_train_backward,
                                setup_context=_linear_train_setup, lib=_lib)

from . import _ext  # noqa: E402  (the native kernels register for the ops defined above)

_threads_now = getattr(_ext._native, "threads_now", None) if _ext.HAS_BITLINEAR else None


# ---------------------------------------------------------------------------- typed wrappers
def quantize_weights(weight: torch.Tensor, eps: float, per_channel: bool):
    """Ternary-quantize and pack a [N, K] float weight -> (w_scale float32, w_packed uint8)."""
    _checks.weight_matrix(weight)
    w_scale, w_packed = torch.ops.bitlinear.quantize_weights(weight, _checks.eps(eps),
                                                             bool(per_channel))
    _checks.finite_weight_scale(w_scale)  # one pass over the weights, not two
    return w_scale, w_packed


def unpack_weights(w_packed: torch.Tensor, in_features: int, dtype=None) -> torch.Tensor:
    """uint8 [N, Kp/4] -> [N, in_features] in {-1, 0, 1}: int8, or the float dtype given."""
    _checks.packed(w_packed, in_features)
    if dtype is not None and dtype not in _checks.FLOAT_DTYPES:
        raise TypeError(f"bitlinear: dtype must be None (int8) or float32, float16 or bfloat16, "
                        f"got {dtype}")
    return torch.ops.bitlinear.unpack_weights(w_packed, int(in_features), dtype)


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


def linear_train(x, weight, bias, eps: float, per_token: bool = True, per_channel: bool = False):
    """BitLinear's training step as one autograd op: the forward on the exact integer kernels
    (equal to the deployed output), the straight-through backward in the gradient's dtype."""
    _checks.float_tensor(weight, "weight")
    if weight.dim() != 2 or weight.numel() == 0:
        raise ValueError(f"bitlinear: weight must be a non-empty 2-D tensor, got shape "
                         f"{tuple(weight.shape)}")
    _checks.layer_input(x, weight.shape[1], device=weight.device)
    if bias is not None:
        _checks.float_tensor(bias, "bias")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bitlinear: bias must have shape ({weight.shape[0]},), "
                             f"got {tuple(bias.shape)}")
        _checks.same_device(weight=weight, bias=bias)
    return torch.ops.bitlinear.linear_train(x, weight, bias, _checks.eps(eps), bool(per_token),
                                            bool(per_channel))[0]


def linear(x, w_scale, w_packed, bias, eps: float, in_features: int, per_token: bool = True):
    """Deployed forward: y = dequant(int8(x) @ ternary(w)^T) + bias, in x's dtype."""
    _checks.deployed_buffers(w_scale, w_packed, bias, in_features)
    _checks.layer_input(x, in_features, device=w_packed.device)
    return torch.ops.bitlinear.linear(x, w_scale, w_packed, bias, _checks.eps(eps),
                                      int(in_features), bool(per_token))
