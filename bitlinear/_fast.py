"""The eager fast path of a deployed BitLinear: one native call on raw pointers.

A deployed forward through ``torch.ops.bitlinear.linear`` pays the dispatcher and the stable-ABI
boxing on every call (about 7 µs of host time for a 64x64 layer, against 3-4 µs for
``nn.Linear``). Plain eager calls, which is how ``generate()`` runs, do not need any of it: the
buffers were validated once at ``deploy()`` / load, so the layer checks the input here (dtype,
device, shape, contiguity) and calls the C core directly (csrc/binding/fastpath.cpp), with the
output allocated by torch. The result is bit for bit the op's: both call ``bl_linear`` /
``bl_cuda_linear`` with the same arguments (tests/test_fastpath.py).

Everything else takes the op: ``torch.compile`` / export / jit tracing, tensor subclasses and fake
tensors, torch function or dispatch modes (``FlopCounterMode``, ``set_default_device``),
functorch transforms, non-contiguous inputs, inputs that need a gradient, and any input the op
would refuse (so its error messages stay the only ones). ``set_fast_path(False)`` turns the fast
path off altogether.

On the CPU a layer may also hold its weights' *decode layout* (``bl_lut_pack``: 1.78 bits per
weight, in memory only, never saved), read by the table-lookup GEMV for small batches
(docs/packed_format.md, "Decode layout"). It is built at ``deploy()`` / load and rebuilt here when
``w_packed`` changed (another tensor, another storage, or an in-place write: its version
counter), whenever the C core would read it (``bitlinear.cpu_lut``). The C core decides per call
by M whether to read it; the result is the same bits either way.
"""
from __future__ import annotations

import torch

from . import _checks, _ext

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # bl_dtype
_C = torch._C
_native = _ext._native if _ext.HAS_BITLINEAR else None
if _native is not None and not hasattr(_native, "linear_cpu"):
    _native = None  # an extension built before the fast path existed

_probes = ("_get_tracing_state", "_len_torch_dispatch_stack", "_is_torch_function_mode_enabled",
           "_are_functorch_transforms_active")
# The private torch hooks the guard reads; if a torch release drops one, the fast path turns off
# (correct, just slower) rather than guessing.
_available = _native is not None and all(hasattr(_C, p) for p in _probes)
_enabled = _available
_is_compiling = torch.compiler.is_compiling
_tracing = getattr(_C, "_get_tracing_state", None)
_dispatch_modes = getattr(_C, "_len_torch_dispatch_stack", None)
_function_modes = getattr(_C, "_is_torch_function_mode_enabled", None)
_functorch = getattr(_C, "_are_functorch_transforms_active", None)
_raw_stream = getattr(_C, "_cuda_getCurrentRawStream", None)
_get_threads = torch.get_num_threads
_uint8 = torch.uint8
_Tensor = torch.Tensor
_grad_enabled = torch.is_grad_enabled
_linear_cpu = _native.linear_cpu if _native is not None else None


# Whether CPU layers keep a decode layout: the C core reads one for some M on this ISA with the
# current options (refreshed by bitlinear.isa's setters).
_lut_wanted = False
_lut_pack = _native.lut_pack if _native is not None else None


def refresh_lut_policy() -> None:
    global _lut_wanted
    _lut_wanted = bool(_native is not None and hasattr(_native, "lut_status")
                       and _native.lut_status(1)[1])


refresh_lut_policy()


def _version(t) -> int:
    """t's version counter (in-place writes bump it); -1 for an inference tensor, which has none
    (an in-place write to one under inference_mode is not seen: load_state_dict rebuilds anyway)."""
    return -1 if t.is_inference() else t._version


def _build_lut(layer, wp):
    """The decode layout of ``wp`` (a CPU uint8 [N, Kp/4] tensor, checked), remembered on the layer
    with what it was built from; None if it cannot be built (the call then reads w_packed)."""
    N, K = layer.out_features, layer.in_features
    nbytes = _native.lut_bytes(N, K)
    if not nbytes or wp.dtype != _uint8 or not wp.is_cpu or not wp.is_contiguous():
        return None
    if wp.numel() != N * ((K + 127) // 128 * 32):
        return None
    lut = torch.empty(nbytes + 64, dtype=_uint8)
    off = -lut.data_ptr() % 64  # the kernels read 64-byte vectors: align the start
    view = lut[off:off + nbytes]
    _lut_pack(wp.data_ptr(), N, K, view.data_ptr(), _get_threads())
    entry = (view, wp, _version(wp), wp.data_ptr())
    layer.__dict__["_lut"] = entry
    return entry


def lut_for(layer):
    """The layer's current decode layout (built if missing or stale), or None when not wanted or
    the layer is not a deployed CPU layer."""
    if not _lut_wanted or not getattr(layer, "deployed", False):
        return None
    wp = layer._buffers.get("w_packed")
    if wp is None or not wp.is_cpu:
        return None
    e = layer.__dict__.get("_lut")
    if e is not None and e[1] is wp and e[2] == _version(wp) and e[3] == wp.data_ptr():
        return e[0]
    e = _build_lut(layer, wp)
    return None if e is None else e[0]


def prepare_lut(layer) -> None:
    """At deploy() / load / device moves: build the decode layout now (so the first call does not
    pay for it), or drop it where it is not read (CUDA, LUT off)."""
    layer.__dict__.pop("_lut", None)
    if _native is not None:
        lut_for(layer)


def set_fast_path(enabled: bool) -> None:
    """Turn the eager fast path of deployed layers on (default) or off (every call then goes
    through ``torch.ops.bitlinear.linear``; results are identical)."""
    global _enabled
    _enabled = bool(enabled) and _available


def fast_path_enabled() -> bool:
    return _enabled


def _buffers_ok(layer, x, wp, ws, bias) -> bool:
    """The buffers' structure (dtype, shape, contiguity, device: what keeps the kernel in bounds),
    checked when the layer's buffers change, not per call. The packed codes were checked at
    deploy() / load; an invalid code cannot make a kernel read out of bounds anyway."""
    try:
        _checks.deployed_buffers(ws, wp, bias, layer.in_features, layer.out_features, codes=False)
    except (TypeError, ValueError):
        return False  # the op raises the error
    return wp.is_cpu if x.is_cpu else wp.is_cuda and x.is_cuda


def linear(layer, x: torch.Tensor):
    """The deployed forward of ``layer`` on ``x`` through the fast path, or None when the call
    must take the op (see the module docstring)."""
    if (not _enabled or type(x) is not _Tensor or _is_compiling() or _tracing() is not None
            or _dispatch_modes() or _function_modes() or _functorch()):
        return None
    code = _DTYPE_CODES.get(x.dtype)
    shape = x.shape
    K = layer.in_features
    if (code is None or not shape or shape[-1] != K or not x.is_contiguous()
            or (x.requires_grad and _grad_enabled())):
        return None  # the op path handles these (or raises its error)
    b = layer._buffers
    wp = b["w_packed"]
    ws = b["w_scale"]
    bias = b["bias"]
    p_wp, p_ws, p_b = wp.data_ptr(), ws.data_ptr(), 0 if bias is None else bias.data_ptr()
    # The buffers as last validated (the objects themselves, held, so neither an id nor an
    # address can be reused by another tensor, and their data pointers: `.data =` swaps them).
    seen = layer.__dict__.get("_fast_seen")
    if (seen is None or seen[0] is not wp or seen[1] is not ws or seen[2] is not bias
            or seen[3] != p_wp or seen[4] != p_ws or seen[5] != p_b
            or seen[6] != x.is_cpu):
        if not _buffers_ok(layer, x, wp, ws, bias):
            return None
        layer.__dict__["_fast_seen"] = (wp, ws, bias, p_wp, p_ws, p_b, x.is_cpu)
    N = layer.out_features
    M = x.numel() // K
    # per channel when the layer has one scale per output (N > 1), as in the op's binding
    per_channel = 1 if N > 1 and ws.numel() == N else 0
    if x.is_cpu:
        y = x.new_empty(*shape[:-1], N)
        if M:
            p_lut = 0
            if _lut_wanted:
                e = layer.__dict__.get("_lut")
                if e is None or e[1] is not wp or e[2] != _version(wp) or e[3] != p_wp:
                    e = _build_lut(layer, wp)
                if e is not None:
                    p_lut = e[0].data_ptr()
            _linear_cpu(x.data_ptr(), code, M, K, K, p_wp, N, p_ws, per_channel, p_b, layer.eps,
                        layer.spec.act_per_token, y.data_ptr(), _get_threads(), p_lut)
        return y
    if not x.is_cuda or not _ext.HAS_CUDA_KERNELS or _raw_stream is None:
        return None
    dev = x.get_device()
    if wp.get_device() != dev or _C._cuda_getDevice() != dev:
        return None  # the op's device guard handles a tensor on another device than the current
    y = x.new_empty(*shape[:-1], N)
    if M:
        nbytes = _native.linear_cuda_workspace_bytes(M, N, K)
        work = x.new_empty(nbytes, dtype=_uint8) if nbytes else None
        _native.linear_cuda(x.data_ptr(), code, M, K, K, p_wp, N, p_ws, per_channel, p_b,
                            layer.eps, layer.spec.act_per_token, y.data_ptr(),
                            0 if work is None else work.data_ptr(), nbytes, _raw_stream(dev))
    return y
