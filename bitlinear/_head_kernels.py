"""The output heads' formats and kernels (bitlinear.head holds the modules and the model-level
steps): the int8 rows (``quantize_rows``; torch's fbgemm int8 GEMV with its packed copy, the op
``bitlinear::int8_head_linear``) and the int4 groups (``quantize_groups_int4``; bitlinear's q4
kernel, the op ``bitlinear::int4_head_linear``). The formats and their rules: bitlinear.head's
docstring and docs/models.md."""
from __future__ import annotations

import threading
import warnings
import weakref
from typing import Dict, Optional, Tuple

import torch
from torch.nn import functional as F

from . import _ext
from . import reference as _ref

# What head= accepts: None, "int8", "int4" (groups of INT4_DEFAULT_GROUP) and "int4:<G>" (G a
# positive multiple of 64, at most INT4_MAX_GROUP), e.g. "int4:128" (parse_head).
HEAD_KINDS = (None, "int8", "int4")
INT4_DEFAULT_GROUP = 64
INT4_MAX_GROUP = 1024  # BL_Q4_MAX_GROUP


def quantize_rows(w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """float [N, K] -> (int8 [N, K], float32 [N]): symmetric per-row absmax, codes in [-127, 127].
    An all-zero row gets scale 1 (codes 0)."""
    if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.dim() != 2:
        raise TypeError(f"quantize_rows: need a 2-D float tensor, got "
                        f"{getattr(w, 'dtype', type(w).__name__)} {tuple(getattr(w, 'shape', ()))}")
    wf = w.detach().to(torch.float32)
    if not bool(torch.isfinite(wf).all()):
        raise ValueError("quantize_rows: the weight holds NaN or Inf")
    amax = wf.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(wf / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


# ---------------------------------------------------------------------------- kernel
_ENGINE_LOCK = threading.Lock()
_PACKED: Dict[tuple, tuple] = {}  # (weight ptr, scale ptr, N, K) -> (version key, packed | None)


def _engine() -> Optional[str]:
    engines = torch.backends.quantized.supported_engines
    for e in ("fbgemm", "x86", "qnnpack"):
        if e in engines:
            return e
    return None


def _reduce_range() -> bool:
    """fbgemm multiplies u8 x s8 pairs with 16-bit saturation (vpmaddubsw) except on VNNI
    (vpdpbusd, 32-bit accumulation): there it can use all 8 bits of the activations."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512_vnni" not in line.split()
    except OSError:
        pass
    return True


_REDUCE_RANGE = _reduce_range()


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter
        return -1


def _prepack(weight: torch.Tensor, scale: torch.Tensor):
    """fbgemm's packed weights for int8 [N, K] + scales [N], with two zero columns appended
    (the +1 / -1 range columns of the input); None where no quantized engine works."""
    eng = _engine()
    if eng is None:
        return None
    N, K = weight.shape
    wq = torch.cat([weight, weight.new_zeros(N, 2)], dim=1)
    try:
        with warnings.catch_warnings():  # quantized tensors are deprecated in torch 2.13
            warnings.simplefilter("ignore")
            qw = torch._make_per_channel_quantized_tensor(wq, scale.to(torch.float64),
                                                          torch.zeros(N, dtype=torch.long), 0)
    except Exception:  # a torch without quantized tensors: the dequantizing path
        return None
    with _ENGINE_LOCK:
        old = torch.backends.quantized.engine
        try:
            torch.backends.quantized.engine = eng
            return torch.ops.quantized.linear_prepack(qw, None)
        except Exception:  # an engine that refuses it, or a torch without the quantized ops
            return None
        finally:
            torch.backends.quantized.engine = old


def _packed_for(weight: torch.Tensor, scale: torch.Tensor):
    key = (weight.data_ptr(), scale.data_ptr(), tuple(weight.shape))
    ver = (_version(weight), _version(scale), weight.dtype, scale.dtype, tuple(scale.shape),
           weight.is_contiguous(), scale.is_contiguous())
    hit = _PACKED.get(key)
    # an inference tensor has no version counter (-1): its writes cannot be seen, so it is packed
    # again on every call (correct, slow; load_state_dict and quantize_head make normal tensors)
    if hit is not None and hit[0] == ver and ver[0] >= 0 and ver[1] >= 0:
        return hit[1]
    packed = _prepack(weight, scale)
    _PACKED[key] = (ver, packed)
    # dropped with the weight tensor (its storage may be reused by another tensor afterwards)
    weakref.finalize(weight, _PACKED.pop, key, None)
    return packed


def _packed_bytes(weight: torch.Tensor, scale: torch.Tensor) -> int:
    hit = _PACKED.get((weight.data_ptr(), scale.data_ptr(), tuple(weight.shape)))
    if hit is None or hit[1] is None:
        return 0
    N, K = weight.shape
    return N * (K + 2)  # fbgemm's packed int8 copy (plus its small column offsets, not counted)


def _dequant_linear(x, weight, scale, bias):
    w = weight.to(torch.float32) * scale[:, None]
    y = F.linear(x.to(torch.float32), w, bias)
    return y.to(x.dtype)


def _int8_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                 bias: Optional[torch.Tensor]) -> torch.Tensor:
    N, K = weight.shape
    if x.device.type != "cpu" or weight.device.type != "cpu":
        return _dequant_linear(x, weight, scale, bias)
    packed = _packed_for(weight, scale)
    if packed is None:
        return _dequant_linear(x, weight, scale, bias)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, K).to(torch.float32)
    M = x2.shape[0]
    if M == 0:
        return x.new_zeros(*lead, N)
    # per row: x / max|x| (an all-zero row stays zero), then the +1 / -1 range columns
    amax = x2.abs().amax(dim=1, keepdim=True).clamp_min_(1e-30)
    ok = bool(torch.isfinite(amax).all())
    if not ok:  # NaN / Inf in a row: that row gives NaN, the others keep the range [-1, 1]
        bad = ~torch.isfinite(amax)
        x2 = x2.masked_fill(bad, 0.0)
        amax = amax.masked_fill(bad, 1.0)
    xa = torch.cat((x2.div(amax), _RANGE_COLS.expand(M, 2)), dim=1)
    y = torch.ops.quantized.linear_dynamic(xa, packed, _REDUCE_RANGE)
    y.mul_(amax)
    if bias is not None:
        y.add_(bias)
    if not ok:
        y.masked_fill_(bad, float("nan"))
    return y.to(x.dtype).reshape(*lead, N)


_RANGE_COLS = torch.tensor([[1.0, -1.0]])


@torch.library.custom_op("bitlinear::int8_head_linear", mutates_args=())
def _int8_head_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                      bias: Optional[torch.Tensor]) -> torch.Tensor:
    return _int8_linear(x, weight, scale, bias)


@_int8_head_linear.register_fake
def _(x, weight, scale, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _int8_head_backward(ctx, grad):
    weight, scale = ctx.saved
    w = weight.to(torch.float32) * scale[:, None]
    return (grad.to(torch.float32) @ w).to(grad.dtype), None, None, None


def _int8_head_setup(ctx, inputs, output):
    ctx.saved = (inputs[1], inputs[2])


_int8_head_linear.register_autograd(_int8_head_backward, setup_context=_int8_head_setup)


# ---------------------------------------------------------------------------- int4 (q4) format
def parse_head(head, who: str = "head") -> Tuple[Optional[str], int]:
    """head= -> (kind, group size): None -> (None, 0), "int8" -> ("int8", 0), "int4" ->
    ("int4", 64), "int4:<G>" -> ("int4", G); ValueError for anything else."""
    if head is None or head == "int8":
        return head, 0
    if head == "int4":
        return "int4", INT4_DEFAULT_GROUP
    if isinstance(head, str) and head.startswith("int4:"):
        g = head[5:]
        if g.isdigit() and g == str(int(g)):
            try:
                return "int4", _check_group(int(g), who)
            except ValueError:
                pass
    raise ValueError(f"{who}: head must be None, 'int8', 'int4' or 'int4:<G>' (G a positive "
                     f"multiple of 64, at most {INT4_MAX_GROUP}), got {head!r}")


def _check_group(group_size, who: str = "int4 head") -> int:
    if (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0
            or group_size % 64 or group_size > INT4_MAX_GROUP):
        raise ValueError(f"{who}: group_size must be a positive multiple of 64, at most "
                         f"{INT4_MAX_GROUP}, got {group_size!r}")
    return group_size


def _q4_shapes(rows: int, K: int, G: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """The int4 buffers' shapes: weight (rows, Kg * G / 2), scale (rows, Kg)."""
    Kg = _ref.q4_groups(K, G)
    return (rows, Kg * G // 2), (rows, Kg)


def quantize_groups_int4(w: torch.Tensor, group_size: int = INT4_DEFAULT_GROUP
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """float [N, K] -> (uint8 [N, Kg * G / 2], float32 [N, Kg]), Kg = ceil(K / G): per row and
    group of G weights, m = the weight of largest |w| (the first such), d = m / -8 (float32),
    q = clamp(rint(w / d), -8, 7) (round half to even), packed as q + 8 in nibbles (q4_pack);
    a group whose m is 0 gets d = 0 and codes 0, as do the padding positions k >= K."""
    G = _check_group(group_size, "quantize_groups_int4")
    if not isinstance(w, torch.Tensor) or not w.is_floating_point() or w.dim() != 2:
        raise TypeError(f"quantize_groups_int4: need a 2-D float tensor, got "
                        f"{getattr(w, 'dtype', type(w).__name__)} {tuple(getattr(w, 'shape', ()))}")
    N, K = w.shape
    if K < 1:
        raise ValueError("quantize_groups_int4: the weight has no columns (in_features 0)")
    wf = w.detach().to(torch.float32)
    if not bool(torch.isfinite(wf).all()):
        raise ValueError("quantize_groups_int4: the weight holds NaN or Inf")
    Kg = _ref.q4_groups(K, G)
    wg = F.pad(wf, (0, Kg * G - K)).reshape(N, Kg, G)
    m = wg.gather(2, wg.abs().argmax(dim=2, keepdim=True))  # argmax: the first largest |w|
    d = torch.where(m == 0, torch.zeros_like(m), m / -8.0)
    ok = d != 0  # d == 0 also where m / -8 underflows: codes 0, as for an all-zero group
    q = torch.where(ok, torch.round(wg / torch.where(ok, d, torch.ones_like(d))).clamp_(-8, 7),
                    torch.zeros_like(wg))
    return _ref.q4_pack(q.reshape(N, Kg * G)), d.reshape(N, Kg).contiguous()


def dequantize_groups_int4(weight: torch.Tensor, scale: torch.Tensor, in_features: int,
                           group_size: int = INT4_DEFAULT_GROUP) -> torch.Tensor:
    """(uint8 [N, Kg * G / 2], float32 [N, Kg]) -> float32 [N, K]: q * d (one float32 multiply
    per weight), the padding dropped."""
    G = _check_group(group_size, "dequantize_groups_int4")
    K = int(in_features)
    N = weight.shape[0]
    wshape, sshape = _q4_shapes(N, K, G)
    if weight.dtype != torch.uint8 or tuple(weight.shape) != wshape or \
            tuple(scale.shape) != sshape:
        raise ValueError(f"dequantize_groups_int4: weight {weight.dtype} {tuple(weight.shape)} "
                         f"and scale {tuple(scale.shape)} do not fit in_features={K}, "
                         f"group_size={G} (need uint8 {wshape} and {sshape})")
    return _dequant4_rows(weight, scale.to(torch.float32), G)[:, :K]


def _dequant4_rows(w4: torch.Tensor, scale: torch.Tensor, G: int) -> torch.Tensor:
    """uint8 [..., Kp4 / 2] and float32 [..., Kg] -> float32 [..., Kp4] (padding included)."""
    q = _ref.q4_unpack(w4).to(torch.float32)
    lead = q.shape[:-1]
    return (q.reshape(*lead, -1, G) * scale[..., None]).reshape(*lead, -1)


_Q4_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # bl_dtype
_DEQUANT_ROWS = 8192  # rows dequantized at a time on the fallback path (bounds its float copy)


def _q4_native():
    return getattr(_ext._native, "q4_linear_cpu", None)


def _check_q4_operands(weight, scale, bias, G: int, K: int) -> None:
    """What the kernel reads through raw pointers: checked on every call (a buffer can be replaced
    or reshaped from Python at any time)."""
    N = weight.shape[0] if weight.dim() == 2 else -1
    wshape, sshape = _q4_shapes(max(N, 0), K, G)
    if weight.dtype != torch.uint8 or tuple(weight.shape) != wshape:
        raise ValueError(f"int4 head: weight is {weight.dtype} {tuple(weight.shape)}, expected "
                         f"torch.uint8 {wshape} (in_features={K}, group_size={G})")
    if scale.dtype != torch.float32 or tuple(scale.shape) != sshape:
        raise ValueError(f"int4 head: scale is {scale.dtype} {tuple(scale.shape)}, expected "
                         f"torch.float32 {sshape}")
    if bias is not None and (bias.dtype != torch.float32 or tuple(bias.shape) != (N,)):
        raise ValueError(f"int4 head: bias is {bias.dtype} {tuple(bias.shape)}, expected "
                         f"torch.float32 ({N},)")


def _int4_dequant_linear(x, weight, scale, bias, G: int, K: int) -> torch.Tensor:
    N = weight.shape[0]
    xf = x.to(torch.float32)
    parts = []
    for n0 in range(0, max(N, 1), _DEQUANT_ROWS):
        n1 = min(N, n0 + _DEQUANT_ROWS)
        w = _dequant4_rows(weight[n0:n1], scale[n0:n1], G)[:, :K]
        parts.append(F.linear(xf, w, None if bias is None else bias[n0:n1]))
    y = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    return y.to(x.dtype)


def _int4_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                 bias: Optional[torch.Tensor], G: int, K: int) -> torch.Tensor:
    _check_q4_operands(weight, scale, bias, G, K)
    if x.shape[-1] != K:
        raise ValueError(f"int4 head: input has {x.shape[-1]} features, expected {K}")
    native = _q4_native()
    code = _Q4_DTYPES.get(x.dtype)
    if (native is None or code is None or x.device.type != "cpu" or weight.device.type != "cpu"
            or scale.device.type != "cpu" or (bias is not None and bias.device.type != "cpu")):
        return _int4_dequant_linear(x, weight, scale, bias, G, K)
    N = weight.shape[0]
    x = x.resolve_neg().contiguous()
    w, s = weight.contiguous(), scale.contiguous()
    b = None if bias is None else bias.contiguous()
    y = x.new_empty(*x.shape[:-1], N)
    M = x.numel() // K
    if M and N:
        native(x.data_ptr(), code, M, K, K, w.data_ptr(), s.data_ptr(), N, G,
               0 if b is None else b.data_ptr(), _ref.MIN_EPS, y.data_ptr(),
               torch.get_num_threads())
    return y


@torch.library.custom_op("bitlinear::int4_head_linear", mutates_args=())
def _int4_head_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                      bias: Optional[torch.Tensor], group_size: int,
                      in_features: int) -> torch.Tensor:
    return _int4_linear(x, weight, scale, bias, group_size, in_features)


@_int4_head_linear.register_fake
def _(x, weight, scale, bias, group_size, in_features):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _int4_head_backward(ctx, grad):
    weight, scale = ctx.saved_tensors
    w = dequantize_groups_int4(weight, scale, ctx.in_features, ctx.group_size)
    return (grad.to(torch.float32) @ w).to(grad.dtype), None, None, None, None, None


def _int4_head_setup(ctx, inputs, output):
    x, weight, scale, bias, group_size, in_features = inputs
    ctx.save_for_backward(weight, scale)
    ctx.group_size, ctx.in_features = group_size, in_features


_int4_head_linear.register_autograd(_int4_head_backward, setup_context=_int4_head_setup)
