"""Pure-PyTorch reference numerics: the single definition of every quantity bitlinear computes.

Used three ways: as the definition of the training forward (train_forward) and of its gradients
(ste_linear), as the default kernel of every
torch.ops.bitlinear op on a device without a native one (bitlinear/ops.py), and as the oracle the C
and CUDA kernels are tested against. It validates nothing: input is checked in bitlinear/_checks.py. The kernels match it bit for bit
(quantized activations and weights, scales, integer accumulators, float32 epilogue).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FORMAT_VERSION = 1  # packed weight layout version (docs/packed_format.md); equals BL_FORMAT_VERSION
QK = 128  # weights per block along K
BLOCK_BYTES = 32  # 128 weights x 2 bits
MAX_IN_FEATURES = 16777215  # |acc| <= 128 K must fit int32 (BL_MAX_K)
MIN_EPS = 127 * 2.0 ** -126  # every scale is a positive normal float32 (BL_MIN_EPS)


@dataclass(frozen=True)
class QuantSpec:
    """What a quant type means: activation and weight scale granularity."""

    name: str  # the compact code, e.g. "ai8pc_wpt"
    act_per_token: bool  # int8 activations: one scale per token (row) or per tensor
    weight_per_channel: bool  # ternary weights: one scale per output channel or per tensor

    @property
    def act_scale(self) -> str:
        return "per_token" if self.act_per_token else "per_tensor"

    @property
    def weight_scale(self) -> str:
        return "per_channel" if self.weight_per_channel else "per_tensor"


# The compact codes (kept for compatibility): "ai8pc" = int8 activations, one scale per token
# ("pc" is per *token* here), "ai8pt" = per tensor; "wpt" = one weight scale per tensor, "wpc" =
# one per output channel. The readable form is act_scale= / weight_scale= (resolve_quant_spec).
QUANT_TYPES = {
    "ai8pc_wpt": QuantSpec("ai8pc_wpt", act_per_token=True, weight_per_channel=False),
    "ai8pt_wpt": QuantSpec("ai8pt_wpt", act_per_token=False, weight_per_channel=False),
    "ai8pc_wpc": QuantSpec("ai8pc_wpc", act_per_token=True, weight_per_channel=True),
}
DEFAULT_QUANT_TYPE = "ai8pc_wpt"
ACT_SCALES = ("per_token", "per_tensor")
WEIGHT_SCALES = ("per_tensor", "per_channel")


def parse_quant_type(quant_type: str) -> QuantSpec:
    spec = QUANT_TYPES.get(quant_type) if isinstance(quant_type, str) else None
    if spec is None:
        raise ValueError(
            f"unknown quant_type {quant_type!r}; valid quant types are: {', '.join(QUANT_TYPES)}"
        )
    return spec


# The earlier package's quant_type spellings -> ours. It implemented only one type: int8 activations
# per token with one ternary weight scale per tensor; its native prepare_weights defaulted to
# "per_tensor" (the weight scale), its Python layer to "ai8pc_wpt".
LEGACY_QUANT_TYPES = {
    "per_tensor": "ai8pc_wpt",
    "per-tensor": "ai8pc_wpt",
    "pertensor": "ai8pc_wpt",
    "per_channel": "ai8pc_wpc",
    "per-channel": "ai8pc_wpc",
}


def canonical_quant_type(quant_type) -> str:
    """Our quant_type for one of ours or an earlier-package spelling ("per_tensor" ->
    "ai8pc_wpt"); ValueError for anything else."""
    if isinstance(quant_type, str):
        if quant_type in QUANT_TYPES:
            return quant_type
        key = quant_type.strip().lower()
        if key in QUANT_TYPES:
            return key
        if key in LEGACY_QUANT_TYPES:
            return LEGACY_QUANT_TYPES[key]
    raise ValueError(f"unknown quant_type {quant_type!r}; valid: {', '.join(QUANT_TYPES)} or the "
                     f"earlier package's {', '.join(repr(k) for k in LEGACY_QUANT_TYPES)}")


def resolve_quant_spec(quant_type=None, act_scale=None, weight_scale=None) -> QuantSpec:
    """The QuantSpec of a compact quant_type and/or the readable act_scale ("per_token" |
    "per_tensor") and weight_scale ("per_tensor" | "per_channel"); unspecified parts default to
    ai8pc_wpt. Both forms together must agree."""
    base = parse_quant_type(DEFAULT_QUANT_TYPE if quant_type is None else quant_type)
    for name, value, allowed in (("act_scale", act_scale, ACT_SCALES),
                                 ("weight_scale", weight_scale, WEIGHT_SCALES)):
        if value is not None and value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        if value is not None and quant_type is not None and value != getattr(base, name):
            raise ValueError(f"quant_type {quant_type!r} means {name}={getattr(base, name)!r}, "
                             f"which contradicts {name}={value!r}")
    act = act_scale or base.act_scale
    wt = weight_scale or base.weight_scale
    for spec in QUANT_TYPES.values():
        if spec.act_scale == act and spec.weight_scale == wt:
            return spec
    raise ValueError(f"act_scale={act!r} with weight_scale={wt!r} is not a supported combination; "
                     "supported: " + ", ".join(f"({s.act_scale}, {s.weight_scale})"
                                               for s in QUANT_TYPES.values()))


def padded_k(K: int) -> int:
    return (K + QK - 1) // QK * QK


def packed_row_bytes(K: int) -> int:
    return padded_k(K) // 4


# ---------------------------------------------------------------------------- weights
def _lane_sums(a: torch.Tensor, lanes: int) -> torch.Tensor:
    """Sum float64 rows [R, L] the way the kernels do: `lanes` partials (partial j adds columns
    j, j + lanes, ... in order), then pairwise j += j + lanes/2, ..., + 1. Exact same bits."""
    R, L = a.shape
    a = F.pad(a, (0, -L % lanes))  # +0.0 leaves every partial as it is
    cols = a.reshape(R, -1, lanes)
    acc = cols[:, 0].clone()
    for i in range(1, cols.shape[1]):  # in order: each partial is a serial sum
        acc += cols[:, i]
    h = lanes // 2
    while h:
        acc = acc[:, :h] + acc[:, h:2 * h]
        h //= 2
    return acc[:, 0]


def weight_scale(w: torch.Tensor, eps: float, per_channel: bool) -> torch.Tensor:
    """absmean scale: float32 of the float64 mean of |w|, at least eps; NaN for non-finite w.
    Shape [N] or [1]. The float64 sums follow one fixed order on every path (a CUDA warp per row:
    32 lanes, then a butterfly; per tensor, one block's 256 partials over the rows, then a tree),
    so CPU, GPU and this reference give the same scale bit for bit."""
    w = w.detach()
    N, K = w.shape
    rows = _lane_sums(w.to(torch.float64).abs(), 32)  # [N]
    if per_channel:
        mean = rows / K
    else:
        mean = (_lane_sums(rows.reshape(-1, 1).T.contiguous(), 256) / (N * K)).reshape(1)
    scale = mean.to(torch.float32).clamp(min=eps)
    return torch.where(torch.isfinite(mean), scale, torch.full_like(scale, float("nan")))


def ternarize(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """w_q = clamp(round(w / s), -1, 1) in float32 (round half to even). scale: [N] or [1].
    Rows whose scale is not finite (NaN/Inf weights) are 0: the epilogue makes their outputs NaN."""
    s = scale.reshape(-1, 1) if scale.numel() > 1 else scale.reshape(1, 1)
    q = torch.round(w.to(torch.float32) / s).clamp(-1, 1)
    return torch.where(torch.isfinite(s), q, torch.zeros_like(q))


def pack_ternary(wq: torch.Tensor) -> torch.Tensor:
    """int-valued [N, K] in {-1,0,1} -> uint8 [N, Kp/4] in the v1 block layout."""
    N, K = wq.shape
    Kp = padded_k(K)
    codes = torch.ones(N, Kp, dtype=torch.uint8, device=wq.device)  # code 1 = weight 0 (padding)
    codes[:, :K] = (wq.to(torch.int16) + 1).to(torch.uint8)
    codes = codes.reshape(N, Kp // QK, 4, 32)  # [n, block, s, j] holds k = 128 b + 32 s + j
    packed = codes[:, :, 0] | (codes[:, :, 1] << 2) | (codes[:, :, 2] << 4) | (codes[:, :, 3] << 6)
    return packed.reshape(N, Kp // 4).contiguous()


def unpack_weights(w_packed: torch.Tensor, K: int) -> torch.Tensor:
    """uint8 [N, Kp/4] -> int8 [N, K] in {-1,0,1}. The invalid code 3 reads as 2 (weight +1), as
    in every kernel (docs/packed_format.md)."""
    N = w_packed.shape[0]
    b = w_packed.reshape(N, -1, 1, 32)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=w_packed.device).reshape(1, 1, 4, 1)
    codes = ((b >> shifts) & 3).clamp_(max=2)  # [n, block, s, j]
    return (codes.reshape(N, -1)[:, :K].to(torch.int8) - 1).contiguous()


def quantize_weights(weight: torch.Tensor, eps: float, per_channel: bool):
    """-> (w_scale float32 [N] or [1], w_packed uint8 [N, Kp/4]).

    Non-finite weights give a non-finite scale and zero codes for what it scales (so outputs are
    NaN, as in training); deploy() refuses them before this runs (bitlinear/_checks.py)."""
    scale = weight_scale(weight, eps, per_channel)
    return scale, pack_ternary(ternarize(weight, scale))


# ---------------------------------------------------------------------------- activations
def act_scale(x: torch.Tensor, eps: float, per_token: bool) -> torch.Tensor:
    """absmax scale of float32 rows x [M, K]: amax(|x|).clamp(min=eps) / 127, shape [M]."""
    a = x.detach().abs()
    amax = a.amax(dim=-1) if per_token else a.amax().expand(x.shape[0])
    return amax.clamp(min=eps) / 127


def quantize_acts(x: torch.Tensor, eps: float, per_token: bool):
    """float rows [M, K] -> (x_q int8 [M, Kp] zero padded, scale float32 [M], rowsum int32 [M]).

    Rows whose scale is not finite (NaN/Inf in x) quantize to zeros; the epilogue makes them NaN.
    """
    xf = x.to(torch.float32)
    M, K = xf.shape
    s = act_scale(xf, eps, per_token)
    q = torch.round(xf / s[:, None]).clamp(-128, 127)
    q = torch.where(torch.isfinite(s)[:, None], q, torch.zeros_like(q))
    xq = torch.zeros(M, padded_k(K), dtype=torch.int8, device=x.device)
    xq[:, :K] = q.to(torch.int8)
    return xq, s, xq.sum(dim=1, dtype=torch.int32)


# ---------------------------------------------------------------------------- GEMM + epilogue
def gemm_acc(x_q: torch.Tensor, w_packed: torch.Tensor, K: int) -> torch.Tensor:
    """Exact int32 accumulators x_q[:, :K] @ w_q^T (float64 products are exact at these sizes).
    K is at most MAX_IN_FEATURES, so they fit int32, as in the kernels."""
    if K > MAX_IN_FEATURES:
        raise ValueError(f"in_features={K} exceeds {MAX_IN_FEATURES}: int32 accumulators could "
                         "overflow")
    wq = unpack_weights(w_packed, K)
    return (x_q[:, :K].to(torch.float64) @ wq.to(torch.float64).T).to(torch.int32)


def epilogue(acc, x_scale, w_scale, bias):
    """y = acc * (s_x * s_w) + bias in float32, in that order; rows with non-finite s_x are NaN."""
    s = x_scale[:, None] * w_scale.reshape(1, -1)
    y = acc.to(torch.float32) * s
    if bias is not None:
        y = y + bias.to(torch.float32)
    return torch.where(torch.isfinite(x_scale)[:, None], y, torch.full_like(y, float("nan")))


def linear_q(x_q, x_scale, w_scale, w_packed, bias, in_features: int, out_dtype):
    """GEMM + epilogue from quantized activations: [M, N] in out_dtype."""
    return epilogue(gemm_acc(x_q, w_packed, in_features), x_scale, w_scale, bias).to(out_dtype)


def linear(x, w_scale, w_packed, bias, eps: float, in_features: int, per_token: bool):
    """The deployed forward, in plain PyTorch (the kernels' oracle and default kernel)."""
    K = in_features
    xq, sx, _ = quantize_acts(x.reshape(-1, K), eps, per_token)
    y = linear_q(xq, sx, w_scale, w_packed, bias, K, x.dtype)
    return y.reshape(*x.shape[:-1], w_packed.shape[0])


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' Llama-family RMSNorm (LlamaRMSNorm, BitNetRMSNorm, ...), the definition
    bitlinear.RMSNorm and bl_rms_norm_apply match bit for bit: the variance in float32 by torch,
    the scale as a correctly rounded 1 / sqrt, the product rounded to x's dtype, then times the
    weight (in the promoted dtype)."""
    h = x.to(torch.float32)
    var = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(var + eps)
    return weight * h.to(x.dtype)


# ---------------------------------------------------------------------------- training
def train_forward(x, weight, bias, eps: float, spec: QuantSpec):
    """BitLinear's training forward: the deployed computation on weights quantized now, so a
    training-mode layer's output equals its deployed output bit for bit.

    -> (y in x's dtype, x_q, x_scale, w_scale, w_packed): the integer operands are what the
    backward pass keeps (see ste_grads)."""
    K = x.shape[-1]
    w_scale, w_packed = quantize_weights(weight.detach(), eps, spec.weight_per_channel)
    x_q, x_scale, _ = quantize_acts(x.detach().reshape(-1, K), eps, spec.act_per_token)
    b = None if bias is None else bias.detach().to(torch.float32)
    y = linear_q(x_q, x_scale, w_scale, w_packed, b, K, x.dtype)
    return y.reshape(*x.shape[:-1], weight.shape[0]), x_q, x_scale, w_scale, w_packed


def fake_quant_weights(w: torch.Tensor, eps: float, per_channel: bool):
    """(s_w, s_w * w_q as float32) of detached weights; NaN/Inf weights give NaN."""
    w = w.detach()
    s = weight_scale(w, eps, per_channel)
    return s, torch.round(w.to(torch.float32) / s.reshape(-1, 1)).clamp(-1, 1) * s.reshape(-1, 1)


def ste_linear(x, weight, bias, eps: float, spec: QuantSpec):
    """The straight-through-estimator formula, in float32: F.linear(s_x x_q, s_w w_q, bias) with
    gradients passed straight through to x and weight. Its autograd gradients are the oracle of
    BitLinear's backward; its values equal train_forward's up to float32 rounding."""
    xf = x.to(torch.float32)
    wf = weight.to(torch.float32)
    x2 = xf.reshape(-1, xf.shape[-1])
    sx = act_scale(x2, eps, spec.act_per_token)[:, None]
    xdq = torch.round(x2.detach() / sx).clamp(-128, 127) * sx
    x_ste = x2 + (xdq - x2).detach()
    _, wdq = fake_quant_weights(wf, eps, spec.weight_per_channel)
    w_ste = wf + (wdq - wf).detach()
    b = bias.to(torch.float32) if bias is not None else None
    y = F.linear(x_ste, w_ste, b)
    return y.reshape(*xf.shape[:-1], weight.shape[0]).to(x.dtype)


# ---------------------------------------------------------------------------- int4 output head
Q4_CHUNK = 64  # weights per 32-byte chunk of the int4 head format ("q4", docs/packed_format.md)
Q4_MAX_GROUP = 1024  # the largest group size (BL_Q4_MAX_GROUP)


def q4_groups(K: int, G: int) -> int:
    """Kg = ceil(K / G): the scales per row of an int4 head with in_features K, group size G."""
    return -(-K // G)


def q4_pack(q: torch.Tensor) -> torch.Tensor:
    """int codes [..., Kp4] in [-8, 7] (Kp4 a multiple of 64) -> uint8 [..., Kp4 / 2]: chunk c
    (k = 64c .. 64c + 63) is bytes 32c .. 32c + 31, byte 32c + j holding q[64c + j] + 8 in its low
    nibble and q[64c + 32 + j] + 8 in its high nibble."""
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    u = u.reshape(*q.shape[:-1], q.shape[-1] // Q4_CHUNK, 2, 32)
    return (u[..., 0, :] | (u[..., 1, :] << 4)).reshape(*q.shape[:-1], -1).contiguous()


def q4_unpack(w4: torch.Tensor) -> torch.Tensor:
    """uint8 [..., Kp4 / 2] -> int8 codes [..., Kp4] in [-8, 7] (every byte is valid: a nibble u
    reads as u - 8). The inverse of q4_pack."""
    b = w4.reshape(*w4.shape[:-1], w4.shape[-1] // 32, 1, 32)
    u = torch.cat((b & 15, b >> 4), dim=-2)  # [..., chunk, half, j]: k = 64 chunk + 32 half + j
    return (u.reshape(*w4.shape[:-1], -1).to(torch.int8) - 8)


def _fma_f32(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 fmaf(p, s, c) from a = p * s held exactly in float64 (|p| < 2^24 and a float32 s:
    at most 49 significant bits) and c float32: the exact sum rounded once to float32. The float64
    sum is rounded to odd (the two-sum error tells an inexact sum; an even result then moves one
    float64 ulp towards the exact value), and round-to-odd at 53 bits followed by round-to-nearest
    at 24 bits is the correctly rounded result (53 >= 24 + 2), so no double-rounding error."""
    c = c.to(torch.float64)
    s = a + c
    bb = s - a
    err = (a - (s - bb)) + (c - bb)  # a + c - s, exactly (Knuth's two-sum) where s is finite
    even = (s.view(torch.int64) & 1) == 0
    fix = (err != 0) & torch.isfinite(err) & even
    if bool(fix.any()):
        towards = torch.where(err > 0, torch.full_like(s, float("inf")),
                              torch.full_like(s, float("-inf")))
        s = torch.where(fix, torch.nextafter(s, towards), s)
    return s.to(torch.float32)


def q4_head_linear_ref(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias,
                       group_size: int, in_features: int, eps: float) -> torch.Tensor:
    """The int4 grouped head's forward (bl_q4_linear) in plain PyTorch: [..., K] -> [..., N] in
    x's dtype. weight uint8 [N, Kg * G / 2] (q4_pack), scale float32 [N, Kg], bias float32 [N] or
    None.

    Activations: quantize_acts per token with eps (x_q in [-128, 127], s_x = max(amax, eps) / 127),
    zeros up to Kg * G. For each row n and token m, eight float32 lane accumulators; per group g, in
    order, lane l's exact integer partial sum p[l] over the bytes 4l..4l+3 of each 32-byte half of
    the group's 64-weight chunks (int64 here), then f[l] = fmaf(p[l], scale[n, g], f[l]); then
    r = ((f0 + f4) + (f2 + f6)) + ((f1 + f5) + (f3 + f7)), y = r * s_x, + bias, rounded to x's
    dtype; a token whose s_x is not finite gives a NaN row.

    The float32 fma is emulated in float64 with a round-to-odd correction (_fma_f32), which is
    exact in every case the tests reach; it is an emulation, so it may differ from the C path in
    the last bit in a case it misses (e.g. a product or sum near float32's overflow), and the tests
    compare it with the C path with a tight tolerance (and count exact matches). Memory is
    O(M * N * Kg * 8) int64: a test oracle, not a kernel."""
    K, G = int(in_features), int(group_size)
    N, Kg = scale.shape
    Kp4 = Kg * G
    x2 = x.reshape(-1, K)
    M = x2.shape[0]
    xq_full, sx, _ = quantize_acts(x2, eps, True)  # int8 [M, padded_k(K)], zeros past K
    xq = torch.zeros(M, Kp4, dtype=torch.int64, device=x.device)
    xq[:, :K] = xq_full[:, :K]
    q = q4_unpack(weight).to(torch.int64)  # [N, Kp4]
    C = G // Q4_CHUNK
    # k = g G + 64 c + 32 h + 4 l + i  ->  [.., g, l, (c, h, i)]: lane l's terms of group g
    xr = xq.reshape(M, Kg, C, 2, 8, 4).permute(0, 1, 4, 2, 3, 5).reshape(M, Kg, 8, G // 8)
    wr = q.reshape(N, Kg, C, 2, 8, 4).permute(0, 1, 4, 2, 3, 5).reshape(N, Kg, 8, G // 8)
    p = torch.einsum("mgls,ngls->mngl", xr, wr)  # [M, N, Kg, 8], exact int64
    a = p.to(torch.float64) * scale.to(torch.float64)[None, :, :, None]  # exact products
    f = torch.zeros(M, N, 8, dtype=torch.float32, device=x.device)
    for g in range(Kg):
        f = _fma_f32(a[:, :, g], f)
    r = ((f[..., 0] + f[..., 4]) + (f[..., 2] + f[..., 6])) + \
        ((f[..., 1] + f[..., 5]) + (f[..., 3] + f[..., 7]))
    y = r * sx[:, None]
    if bias is not None:
        y = y + bias.to(torch.float32)
    y = torch.where(torch.isfinite(sx)[:, None], y, torch.full_like(y, float("nan")))
    return y.to(x.dtype).reshape(*x.shape[:-1], N)
