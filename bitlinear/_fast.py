"""The eager fast path of a deployed BitLinear: one native call on raw pointers.

A deployed forward through ``torch.ops.bitlinear.linear`` pays the dispatcher and the stable-ABI
boxing on every call (about 7 µs of host time for a 64x64 layer, against 3-4 µs for
``nn.Linear``). Plain eager calls, which is how ``generate()`` runs, do not need any of it: the
layer checks the input here (dtype, device, shape, contiguity, the neg bit) and calls the C core
directly (csrc/binding/fastpath.cpp), with the output allocated by torch. The result is bit for
bit the op's: both call ``bl_linear`` / ``bl_cuda_linear`` with the same arguments
(tests/test_fastpath.py).

What the kernel relies on is checked on every call, because Python can change it without a trace:
the buffers' data pointers, shapes, dtypes and contiguity, and the layer's ``in_features`` /
``out_features``. Their first sight (and any change) triggers the full structural validation of
``_checks.deployed_buffers`` plus a storage-size check; a key of those facts is remembered in the
layer's ``FastRecord`` (owned here; other modules use ``forget`` / ``decode_layout``). Writes to the
weights' memory need no tracking: on the default settings a layer holds one copy of its weights
(``w_packed``) and every path reads it.

Everything else takes the op: ``torch.compile`` / export / jit tracing, tensor subclasses and fake
tensors, torch function or dispatch modes (``FlopCounterMode``, ``set_default_device``),
functorch transforms, non-contiguous or negative-view inputs, inputs that need a gradient, buffers
that are not what the op accepts (so its error messages stay the only ones).
``set_fast_path(False)`` turns the fast path off altogether. While a torch profiler is active the
call is recorded as ``bitlinear::linear`` so it shows in traces; without one this costs one check.

Opt-in (``bitlinear.set_cpu_lut("auto")``): a CPU layer may also hold its weights' *decode layout*
(``bl_lut_pack``: 1.78 bits per weight, in memory only, never saved), read by the table-lookup GEMV
for small batches (docs/packed_format.md, "Decode layout"). That is a second copy: it is rebuilt when
``w_packed`` changes in a way torch records (another tensor or storage, its version counter, its
shape), but writes that torch does not record (through ``.data``, NumPy, the storage, DLPack, or an
inference tensor) are invisible to it; ``BitLinear.refresh_decode_layout()`` rebuilds it. The
default mode is "off" for that reason and for memory (docs/benchmarks.md, "One resident copy").
"""
from __future__ import annotations

import threading

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
# Called, never read as torch.compiler._is_compiling_flag: dynamo folds the call to True without a
# guard, but guards a read of the flag on its trace-time value (True), which fails on every
# compiled call and recompiles until the limit, leaving a compiled model on the eager path.
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
_linear_segments = getattr(_native, "linear_cpu_segments", None)


_missing = object()
_profiler = torch.autograd.profiler  # _is_profiler_enabled: set by torch.profiler.profile
_record_function = torch.autograd.profiler.record_function


class FastRecord:
    """What the fast path last validated for one layer: a key of the facts the kernel relies on
    (data pointers, shapes, dtypes, contiguity, in/out features, device), recomputed per call."""
    __slots__ = ("key", "per_channel", "spec", "per_token", "group")

    def __init__(self, key, per_channel, layer):
        self.key = key
        self.per_channel = per_channel
        self.spec = spec = layer.spec  # whose act_per_token is cached (a new spec re-reads it)
        self.per_token = bool(spec.act_per_token)
        self.group = layer.__dict__.get("_group")  # fuse_projections forgets the record


class DecodeLayout:
    """The opt-in CPU decode layout of a layer and the w_packed state it was built from."""
    __slots__ = ("view", "source", "version", "key")

    def __init__(self, view, source, version, key):
        self.view = view
        self.source = source
        self.version = version
        self.key = key


class FusionGroup:
    """Deployed CPU BitLinear layers that read one input inside one parent module's forward
    (q/k/v, gate/up; bitlinear.fuse_projections). Their w_packed are consecutive row slices of
    one tensor (one copy of the weights). Inside the parent's forward (a thread-local window that
    the parent's hooks open and close), the first member called with an input computes every
    member's output in one native call (one activation quantization, one weight stream); each
    other member called with the same input, unchanged (same object, version and data), takes its
    output from that call. Outside the window, or whenever a check fails, each member runs alone.
    Bit for bit the separate layers' outputs either way."""
    __slots__ = ("members", "local", "wasted", "enabled", "__weakref__")

    def __init__(self, members):
        self.members = tuple(members)
        self.local = threading.local()
        self.wasted = 0     # windows that closed with outputs nobody took (inputs not shared)
        self.enabled = True


class FusionWindow:
    """The parent module's forward pre-hook and forward hook (always called) of a FusionGroup:
    they open and close its thread-local window. Pickled or copied, it becomes inert (the copy's
    layers run alone until fuse_projections is called again)."""

    def __init__(self, group, opening):
        self.group, self.opening = group, opening

    def __call__(self, module, args, *rest):
        g = self.group
        if g is None or _is_compiling():
            return None  # compiled, the members run alone on the op (see linear())
        loc = g.local
        if self.opening:
            loc.depth = getattr(loc, "depth", 0) + 1
            return None
        loc.depth = max(getattr(loc, "depth", 1) - 1, 0)
        if loc.depth == 0:
            c = getattr(loc, "cache", None)
            loc.cache = None
            if c is not None and any(y is not None for y in c[3]):
                g.wasted += 1
                if g.wasted >= 3:  # the members do not share their input here: stop fusing
                    g.enabled = False
        return None

    def __getstate__(self):
        return {"group": None, "opening": self.opening}


# Whether CPU layers keep a decode layout: the C core reads one for some M on this ISA with the
# current options (refreshed by bitlinear.isa's setters). Off by default (bl_cpu_lut_mode).
_lut_wanted = False
_lut_pack = _native.lut_pack if _native is not None else None


def refresh_lut_policy() -> None:
    global _lut_wanted
    _lut_wanted = bool(_native is not None and hasattr(_native, "lut_status")
                       and _native.lut_status(1)[1])


refresh_lut_policy()


def _version(t) -> int:
    """t's version counter (in-place writes bump it); -1 for an inference tensor, which has none."""
    return -1 if t.is_inference() else t._version


def _packed_key(wp):
    return (wp.data_ptr(), wp.shape, wp.dtype, wp.is_contiguous(), wp.is_cpu)


def _build_lut(layer, wp):
    """The decode layout of ``wp`` (a CPU uint8 [N, Kp/4] tensor, checked), remembered on the layer
    with what it was built from; None if it cannot be built (the call then reads w_packed)."""
    N, K = layer.out_features, layer.in_features
    nbytes = _native.lut_bytes(N, K)
    if not nbytes or wp.dtype != _uint8 or not wp.is_cpu or not wp.is_contiguous():
        return None
    if wp.numel() != N * ((K + 127) // 128 * 32) or not _storage_holds(wp, wp.numel()):
        return None
    # The version is read before packing: a write during the (GIL-free) pack leaves the record
    # older than the data, so the next call rebuilds instead of keeping a half-old layout.
    version = _version(wp)
    lut = torch.empty(nbytes + 64, dtype=_uint8, device="cpu")
    off = -lut.data_ptr() % 64  # the kernels read 64-byte vectors: align the start
    view = lut[off:off + nbytes]
    _lut_pack(wp.data_ptr(), N, K, view.data_ptr(), _get_threads())
    entry = DecodeLayout(view, wp, version, _packed_key(wp) + (N, K))
    layer.__dict__["_lut"] = entry
    return entry


def _lut_current(layer, wp):
    """The layer's decode layout if it still matches ``wp`` as torch sees it, else None."""
    e = layer.__dict__.get("_lut")
    if (e is None or e.source is not wp or e.version != _version(wp) or e.version < 0
            or e.key != _packed_key(wp) + (layer.out_features, layer.in_features)):
        return None
    return e


def decode_layout(layer):
    """The layer's current decode layout tensor (built if missing or stale), or None when not
    wanted or the layer is not a deployed CPU layer."""
    if not _lut_wanted or not getattr(layer, "deployed", False):
        return None
    wp = layer._buffers.get("w_packed")
    if wp is None or not wp.is_cpu:
        return None
    e = _lut_current(layer, wp) or _build_lut(layer, wp)
    return None if e is None else e.view


def decode_layout_bytes(layer) -> int:
    """Bytes of the decode layout the layer holds now (0: none)."""
    e = layer.__dict__.get("_lut")
    return 0 if e is None else e.view.numel()


def forget(layer) -> None:
    """Drop the layer's derived state (validated-buffer record, decode layout): a pickled or copied
    layer rebuilds both from its buffers."""
    layer.__dict__.pop("_lut", None)
    layer.__dict__.pop("_fast_rec", None)


def prepare(layer) -> None:
    """At deploy() / load / device moves: forget the derived state, then build the decode layout
    now where one is wanted (so the first call does not pay for it). A decode layout that cannot
    be built is not an error: calls then read w_packed."""
    forget(layer)
    if _native is not None and _lut_wanted:
        try:
            decode_layout(layer)
        except (RuntimeError, ValueError, TypeError):
            layer.__dict__.pop("_lut", None)


def set_fast_path(enabled: bool) -> None:
    """Turn the eager fast path of deployed layers on (default) or off (every call then goes
    through ``torch.ops.bitlinear.linear``; results are identical)."""
    global _enabled
    _enabled = bool(enabled) and _available


def fast_path_enabled() -> bool:
    return _enabled


def _storage_holds(t, numel) -> bool:
    """t's storage holds ``numel`` elements from t's start (what the kernel reads)."""
    st = t.untyped_storage()
    return st.nbytes() >= (t.storage_offset() + numel) * t.element_size()


def _check_structure(layer, wp, ws, bias) -> None:
    """What a call relies on in the buffers: their structure (dtype, shape, contiguity, one
    device) and storages that hold what the shapes claim (a storage resized under its tensor would
    otherwise be read past its end). ValueError / TypeError name the problem."""
    _checks.deployed_buffers(ws, wp, bias, layer.in_features, layer.out_features, codes=False)
    for name, t in (("w_packed", wp), ("w_scale", ws), ("bias", bias)):
        if t is not None and t.device.type != "meta" and not _storage_holds(t, t.numel()):
            raise ValueError(f"BitLinear: {name}'s storage holds "
                             f"{t.untyped_storage().nbytes()} bytes, fewer than its shape "
                             f"{tuple(t.shape)} needs (was it resized in place?)")


def check_buffers(layer) -> None:
    """The op path's check of a deployed layer's buffers before a call (outside compile)."""
    b = layer._buffers
    wp, ws = b.get("w_packed"), b.get("w_scale")
    if wp is None or ws is None:
        return  # parameters in their place: the op decides
    _check_structure(layer, wp, ws, b.get("bias"))


def _buffers_ok(layer, x, wp, ws, bias) -> bool:
    """The fast path's version of check_buffers, plus what only it needs (plain tensors, no neg
    bit, the input's device), checked when any of the key's facts changes."""
    if type(wp) is not _Tensor or type(ws) is not _Tensor or (
            bias is not None and type(bias) is not _Tensor):
        return False  # a Parameter or subclass in a buffer's place: the op handles it
    try:
        _check_structure(layer, wp, ws, bias)
    except (TypeError, ValueError):
        return False  # the op raises the error
    if wp.is_neg() or ws.is_neg() or (bias is not None and bias.is_neg()):
        return False
    return wp.is_cpu if x.is_cpu else wp.is_cuda and x.is_cuda


def linear(layer, x: torch.Tensor):
    """The deployed forward of ``layer`` on ``x`` through the fast path, or None when the call
    must take the op (see the module docstring)."""
    if (_is_compiling() or not _enabled or type(x) is not _Tensor
            or _tracing() is not None or _dispatch_modes() or _function_modes() or _functorch()):
        return None
    code = _DTYPE_CODES.get(x.dtype)
    shape = x.shape
    K = layer.in_features
    if (code is None or not shape or shape[-1] != K or not x.is_contiguous() or x.is_neg()
            or (x.requires_grad and _grad_enabled())):
        return None  # the op path handles these (or raises its error)
    # _record, inlined on the hot path (a call costs about 0.1 us of the 6 us budget)
    b = layer._buffers
    wp, ws, bias = b.get("w_packed"), b.get("w_scale"), b.get("bias", _missing)
    if wp is None or ws is None or bias is _missing:
        return None  # re-registered as parameters (or deleted): the op path decides
    N = layer.out_features
    if type(K) is not int or type(N) is not int:
        return None
    cpu = x.is_cpu
    p_wp, p_ws = wp.data_ptr(), ws.data_ptr()
    if bias is None:
        p_b = 0
        key = (p_wp, wp.shape, wp.dtype, wp.is_contiguous(), p_ws, ws.shape, ws.dtype,
               ws.is_contiguous(), K, N, cpu)
    else:
        p_b = bias.data_ptr()
        key = (p_wp, wp.shape, wp.dtype, wp.is_contiguous(), p_ws, ws.shape, ws.dtype,
               ws.is_contiguous(), p_b, bias.shape, bias.dtype, bias.is_contiguous(), K, N, cpu)
    rec = layer.__dict__.get("_fast_rec")
    if rec is None or rec.key != key:
        if not _buffers_ok(layer, x, wp, ws, bias):
            return None
        rec = FastRecord(key, 1 if N > 1 and ws.numel() == N else 0, layer)
        layer.__dict__["_fast_rec"] = rec
    spec = layer.spec
    if spec is not rec.spec:
        rec.spec, rec.per_token = spec, bool(spec.act_per_token)
    grp = rec.group
    if grp is not None and cpu:
        y = _group_call(layer, grp, x, code, shape, K, (rec, N, p_wp, p_ws, p_b))
        if y is not None:
            return y
    if _profiler._is_profiler_enabled:
        with _record_function("bitlinear::linear"):
            return _call(layer, x, code, shape, K, N, p_wp, p_ws, p_b, rec, cpu)
    if cpu and not _lut_wanted:  # the common case, inline
        y = x.new_empty(*shape[:-1], N)
        M = x.numel() // K
        if M:
            _linear_cpu(x.data_ptr(), code, M, K, K, p_wp, N, p_ws, rec.per_channel, p_b,
                        layer.eps, rec.per_token, y.data_ptr(), _get_threads(), 0)
        return y
    return _call(layer, x, code, shape, K, N, p_wp, p_ws, p_b, rec, cpu)


def _record(m, x, K, cpu):
    """Layer m's validated record and buffer pointers for a call on x, or None (take the op).
    What the kernel relies on is read on every call (Python can change any of it without a trace:
    .data =, in-place metadata edits, attributes); a change revalidates in full."""
    b = m._buffers
    wp, ws, bias = b.get("w_packed"), b.get("w_scale"), b.get("bias", _missing)
    if wp is None or ws is None or bias is _missing:
        return None  # re-registered as parameters (or deleted): the op path decides
    N = m.out_features
    if type(K) is not int or type(N) is not int:
        return None
    p_wp, p_ws = wp.data_ptr(), ws.data_ptr()
    if bias is None:
        p_b = 0
        key = (p_wp, wp.shape, wp.dtype, wp.is_contiguous(), p_ws, ws.shape, ws.dtype,
               ws.is_contiguous(), K, N, cpu)
    else:
        p_b = bias.data_ptr()
        key = (p_wp, wp.shape, wp.dtype, wp.is_contiguous(), p_ws, ws.shape, ws.dtype,
               ws.is_contiguous(), p_b, bias.shape, bias.dtype, bias.is_contiguous(), K, N, cpu)
    rec = m.__dict__.get("_fast_rec")
    if rec is None or rec.key != key:
        if not _buffers_ok(m, x, wp, ws, bias):
            return None
        # per channel when the layer has one scale per output (N > 1), as in the op's binding
        rec = FastRecord(key, 1 if N > 1 and ws.numel() == N else 0, m)
        m.__dict__["_fast_rec"] = rec
    return rec, N, p_wp, p_ws, p_b


def _stamp(m):
    """A member's buffers as torch sees them now: the objects themselves (held, so neither they
    nor their addresses can be reused while the stamp lives), data pointers, version counters."""
    b = m._buffers
    return tuple((t, t.data_ptr(), _version(t)) if t is not None else None
                 for t in (b.get("w_packed"), b.get("w_scale"), b.get("bias")))


def _same_stamp(a, b) -> bool:
    for u, v in zip(a, b):
        if u is None or v is None:
            if u is not v:
                return False
        elif u[0] is not v[0] or u[1] != v[1] or u[2] != v[2]:
            return False
    return True


def _group_call(layer, grp, x, code, shape, K, own):
    """layer's output through its FusionGroup (see there), or None to run alone. own: layer's
    record and pointers, just validated by linear()."""
    g, i = grp
    loc = g.local
    if not g.enabled or not getattr(loc, "depth", 0) or _lut_wanted or x.is_inference():
        return None  # outside the parent's forward; an inference tensor's writes are not seen
    c = getattr(loc, "cache", None)
    if c is not None and c[0] is x and c[1] == x._version and c[2] == x.data_ptr():
        y = c[3][i]
        if y is not None and _same_stamp(c[4][i], _stamp(layer)):
            c[3][i] = None
            return y
    if any(t is not None and t.is_inference() for m in g.members
           for t in (m._buffers.get("w_packed"), m._buffers.get("w_scale"), m._buffers.get("bias"))):
        return None  # buffers without version counters: nothing to check a cached output by
    eps, per_tok = layer.eps, bool(layer.spec.act_per_token)
    rb = (K + 127) // 128 * 32
    segs, outs, base, off = [], [], None, 0
    for m in g.members:
        mk = m.in_features
        if m is layer:
            r = own
        else:
            r = _record(m, x, K, True) if type(mk) is int and mk == K else None
        if r is None or m.eps != eps or bool(m.spec.act_per_token) != per_tok:
            return None
        rec, N, p_wp, p_ws, p_b = r
        if base is None:
            base = p_wp
        elif p_wp != base + off:
            return None  # no longer consecutive rows of one tensor (replaced, moved): run alone
        off += N * rb
        y = x.new_empty(*shape[:-1], N)
        segs.append((N, p_ws, rec.per_channel, p_b, y.data_ptr()))
        outs.append(y)
    M = x.numel() // K
    if M:
        if _profiler._is_profiler_enabled:
            with _record_function("bitlinear::linear_fused"):
                _linear_segments(x.data_ptr(), code, M, K, K, base, eps, per_tok, _get_threads(),
                                 tuple(segs))
        else:
            _linear_segments(x.data_ptr(), code, M, K, K, base, eps, per_tok, _get_threads(),
                             tuple(segs))
    y = outs[i]
    outs[i] = None
    # each member's buffers as torch saw them: a write torch records between two members'
    # calls (even inside the parent's forward) makes that member run alone
    loc.cache = [x, x._version, x.data_ptr(), outs, [_stamp(m) for m in g.members]]
    return y


def _call(layer, x, code, shape, K, N, p_wp, p_ws, p_b, rec, cpu):
    M = x.numel() // K
    if cpu:
        y = x.new_empty(*shape[:-1], N)
        if M:
            p_lut = 0
            if _lut_wanted:
                wp = layer._buffers["w_packed"]
                e = _lut_current(layer, wp) or _build_lut(layer, wp)
                if e is not None:
                    p_lut = e.view.data_ptr()
            _linear_cpu(x.data_ptr(), code, M, K, K, p_wp, N, p_ws, rec.per_channel, p_b,
                        layer.eps, rec.per_token, y.data_ptr(), _get_threads(), p_lut)
        return y
    if not x.is_cuda or not _ext.HAS_CUDA_KERNELS or _raw_stream is None:
        return None
    dev = x.get_device()
    if layer._buffers["w_packed"].get_device() != dev or _C._cuda_getDevice() != dev:
        return None  # the op's device guard handles a tensor on another device than the current
    y = x.new_empty(*shape[:-1], N)
    if M:
        nbytes = _native.linear_cuda_workspace_bytes(M, N, K)
        work = x.new_empty(nbytes, dtype=_uint8) if nbytes else None
        _native.linear_cuda(x.data_ptr(), code, M, K, K, p_wp, N, p_ws, rec.per_channel, p_b,
                            layer.eps, rec.per_token, y.data_ptr(),
                            0 if work is None else work.data_ptr(), nbytes, _raw_stream(dev))
    return y
