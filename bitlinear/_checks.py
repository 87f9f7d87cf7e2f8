"""The one validation layer: every check of user input, with one exception type per fault.

- TypeError: an argument of the wrong type or dtype.
- ValueError: a wrong shape or size, a bad number (eps, in_features), NaN/Inf weights, tensors on
  different devices, or a corrupted packed buffer.

Input is checked here, once, where it enters (the `bitlinear.ops` wrappers, `BitLinear`); packed
buffers once, at `deploy()` and at load. The native binding and the C core check again, as a
defence against direct `torch.ops.bitlinear.*` calls, but their errors are not the message path.
"""
from __future__ import annotations

import torch

from .reference import MAX_IN_FEATURES, MIN_EPS  # the limits in_features() and eps() check

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _desc(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"{t.dtype} {tuple(t.shape)} on {t.device}"
    return type(t).__name__


MAX_EPS = 3.4028234663852886e38  # float32 max


def positive_int(value, name: str, who: str = "bitlinear", maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: {name} must be an int >= 1, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{who}: {name} must be at most {maximum} (int32 accumulators of "
                         f"128 * {name} would overflow), got {value}")
    return value


def in_features(value, who: str = "bitlinear") -> int:
    return positive_int(value, "in_features", who, MAX_IN_FEATURES)


def eps(value, who: str = "bitlinear") -> float:
    """eps floors the scales: max(amax, eps) / 127 and max(mean|w|, eps) must be positive normal
    float32 numbers, so eps is finite and at least 127 * 2^-126 (~1.5e-36)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (MIN_EPS <= value <= MAX_EPS):
        raise ValueError(f"{who}: eps must be a finite float >= {MIN_EPS:.3g} (so every scale is "
                         f"a positive normal float32), got {value!r}")
    return float(value)


def float_tensor(x, name: str = "x", who: str = "bitlinear") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{who}: {name} must be float32, float16 or bfloat16, got {x.dtype}")


def layer_input(x, in_features: int, device=None, who: str = "bitlinear", name: str = "x") -> None:
    """A float tensor (..., in_features), on `device` if given."""
    float_tensor(x, name, who)
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"{who}: expected input with last dimension in_features={in_features}, "
                         f"got shape {tuple(x.shape)}")
    if device is not None and x.device != device:
        raise ValueError(f"{who}: input is on {x.device} but the weights are on {device}; "
                         "move one of them (e.g. layer.to(x.device))")


def weight_matrix(w, who: str = "bitlinear") -> None:
    """A non-empty 2-D float weight [out_features, in_features]."""
    float_tensor(w, "weight", who)
    if w.dim() != 2 or w.numel() == 0:
        raise ValueError(f"{who}: weight must be a non-empty 2-D tensor, got shape {tuple(w.shape)}")


def finite_weight_scale(w_scale, who: str = "bitlinear") -> None:
    """Quantized weights are deployable: a NaN scale means NaN or Inf in the weights it scales
    (the quantizer makes it so, on every device), which would make every output NaN."""
    if w_scale.device.type != "meta" and not bool(torch.isfinite(w_scale).all()):
        raise ValueError(f"{who}: weight contains NaN or Inf; cannot quantize")


def same_device(**tensors) -> None:
    """All given tensors (None skipped) on one device."""
    items = [(k, t) for k, t in tensors.items() if t is not None]
    for k, t in items[1:]:
        if t.device != items[0][1].device:
            raise ValueError(f"bitlinear: {k} is on {t.device} but {items[0][0]} is on "
                             f"{items[0][1].device}")


def packed(w_packed, K: int, out_features: int | None = None) -> None:
    """uint8 [out_features, packed_row_bytes(K)] for in_features K, contiguous."""
    from .reference import packed_row_bytes

    K = in_features(K)
    rb = packed_row_bytes(K)
    ok = (isinstance(w_packed, torch.Tensor) and w_packed.dtype == torch.uint8
          and w_packed.dim() == 2 and w_packed.shape[1] == rb and w_packed.shape[0] >= 1
          and (out_features is None or w_packed.shape[0] == out_features))
    if not ok:
        n = out_features if out_features is not None else "out_features"
        raise ValueError(f"bitlinear: w_packed must be uint8 of shape ({n}, {rb}) for "
                         f"in_features={K}, got {_desc(w_packed)}")
    if not w_packed.is_contiguous():
        raise ValueError("bitlinear: w_packed must be contiguous")


def deployed_buffers(w_scale, w_packed, bias, in_features: int, out_features: int | None = None,
                     codes: bool = True) -> None:
    """The buffers of a deployed layer: packed weights, float32 scale(s) and bias, one device;
    with ``codes``, also a pass over the packed bytes for the invalid code 3."""
    packed(w_packed, in_features, out_features)
    n = w_packed.shape[0]
    if not isinstance(w_scale, torch.Tensor) or w_scale.dtype != torch.float32 \
            or w_scale.dim() != 1 or w_scale.numel() not in (1, n) or not w_scale.is_contiguous():
        raise ValueError(f"bitlinear: w_scale must be contiguous float32 of shape (1,) or ({n},), "
                         f"got {_desc(w_scale)}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dtype != torch.float32
                             or tuple(bias.shape) != (n,) or not bias.is_contiguous()):
        raise ValueError(f"bitlinear: bias must be contiguous float32 of shape ({n},), "
                         f"got {_desc(bias)}")
    same_device(w_packed=w_packed, w_scale=w_scale, bias=bias)
    if codes:
        valid_codes(w_packed)


MIN_NORMAL = 2.0 ** -126  # float32's smallest normal number: every weight scale is at least this
_CHUNK_BYTES = 1 << 24  # the code scan works on 16 MiB of rows at a time (bounded temporaries)


def _padding_masks(K: int):
    """(mask, want) as 32 ints, or None when K is a multiple of 128: for byte j of a row's last
    32-byte block, the bits of its 2-bit fields that are padding (k >= K), and the code 1 each of
    them must hold. Field s of byte j is k = 128 b + 32 s + j (docs/packed_format.md)."""
    first = K % 128  # the last block's first padding position (0: no padding)
    if first == 0:
        return None
    mask = [0] * 32
    for local in range(first, 128):
        mask[local % 32] |= 3 << (2 * (local // 32))
    return mask, [m & 0x55 for m in mask]


def deployed_state(w_scale, w_packed, bias, in_features: int, out_features: int, per_channel: bool,
                   who: str = "bitlinear") -> None:
    """What every loader accepts as a deployed layer's buffers (load_state_dict, load_deployed,
    from_pretrained, convert_bitnet, the legacy converter), ValueError naming the problem and
    ``who`` (the layer) otherwise:

    * structure (deployed_buffers): uint8 w_packed (out_features, packed_row_bytes(in_features)),
      float32 w_scale and bias, contiguous, one device;
    * w_scale holds out_features values for a per-channel quant type, else 1;
    * no invalid code 3 anywhere in w_packed;
    * every padding position (k >= in_features in the last 128-block) holds code 1 (weight 0):
      what a packer writes, so a checkpoint of a larger in_features that shares this padded size
      is refused when it has a non-zero weight past in_features;
    * every scale is finite and a positive normal float32 (>= 2^-126): NaN, Inf, 0, negative and
      subnormal scales are refused (a subnormal scale gives results that depend on the
      flush-to-zero mode);
    * a finite bias.

    Vectorized over the uint8 buffer (no loop over rows); meta tensors get the structure checks
    only. Calls deployed_buffers once (positionally: tests count the calls)."""
    try:
        deployed_buffers(w_scale, w_packed, bias, in_features, out_features, False)
    except ValueError as e:
        raise ValueError(f"{who}: {str(e).removeprefix('bitlinear: ')}") from None
    want = out_features if per_channel else 1
    if w_scale.numel() != want:
        kind = "per-channel" if per_channel else "per-tensor"
        raise ValueError(f"{who}: w_scale has {w_scale.numel()} elements; a {kind} weight scale "
                         f"needs {want} (out_features={out_features})")
    if w_packed.device.type == "meta":
        return
    rows = max(1, _CHUNK_BYTES // max(1, w_packed.shape[1]))
    for r0 in range(0, w_packed.shape[0], rows):
        chunk = w_packed[r0:r0 + rows]
        t = chunk >> 1
        t &= chunk
        t &= 0x55
        if bool(t.any()):
            row = r0 + int(t.any(dim=1).nonzero()[0, 0])
            raise ValueError(f"{who}: w_packed holds the invalid 2-bit code 3 (row {row}; the "
                             "format has 0, 1, 2 = weight + 1): corrupted or not a bitlinear buffer")
    masks = _padding_masks(in_features)
    if masks is not None:
        from .reference import padded_k

        mask = torch.tensor(masks[0], dtype=torch.uint8, device=w_packed.device)
        code1 = torch.tensor(masks[1], dtype=torch.uint8, device=w_packed.device)
        bad = (w_packed[:, -32:] & mask) != code1
        if bool(bad.any()):
            row = int(bad.any(dim=1).nonzero()[0, 0])
            raise ValueError(
                f"{who}: w_packed has a non-zero weight in a padding position (row {row}, "
                f"k >= in_features={in_features}); padding must hold code 1 (weight 0). A "
                f"checkpoint of a larger in_features (up to {padded_k(in_features)}) "
                "has this shape too: size mismatch?")
    ok = torch.isfinite(w_scale) & (w_scale >= MIN_NORMAL)
    if not bool(ok.all()):
        i = int((~ok).nonzero()[0, 0])
        raise ValueError(f"{who}: w_scale must be finite and > 0, a normal float32 (>= 2^-126); "
                         f"w_scale[{i}] = {w_scale[i].item()!r}")
    if bias is not None and not bool(torch.isfinite(bias).all()):
        i = int((~torch.isfinite(bias)).nonzero()[0, 0])
        raise ValueError(f"{who}: bias must be finite; bias[{i}] = {bias[i].item()!r}")


def valid_codes(w_packed) -> None:
    """Every 2-bit code is 0, 1 or 2 (w + 1); 3 is not part of the format."""
    if w_packed.device.type == "meta":
        return
    if bool((w_packed & (w_packed >> 1) & 0x55).any()):
        raise ValueError("bitlinear: w_packed holds the invalid 2-bit code 3 (the format has "
                         "0, 1, 2 = weight - 1): corrupted or not a bitlinear buffer")


def quantized_acts(x_q, in_features: int) -> None:
    """int8 rows [M, padded_k(in_features)] with unit inner stride (from quantize_acts)."""
    from .reference import padded_k

    kp = padded_k(in_features)
    if not isinstance(x_q, torch.Tensor) or x_q.dtype != torch.int8 or x_q.dim() != 2 \
            or x_q.shape[1] != kp or x_q.stride(1) != 1 or x_q.stride(0) < kp:
        raise ValueError(f"bitlinear: x_q must be int8 rows of shape (M, {kp}) for "
                         f"in_features={in_features}, got {_desc(x_q)}")
