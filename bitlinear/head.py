"""Quantized output heads, opt-in: int8 per row, or int4 in groups (and, where the head is tied to
it, the input embedding in the same format).

    convert(model, head="int8")          # or bitlinear.hf.convert_bitnet(model, head="int8")
    convert(model, head="int4")          # int4, a scale per group of 64; "int4:128": groups of 128
    quantize_head(model)                 # the same step alone, on any model (head="int8")

int8 (``Int8Head``, ``Int8Embedding``):

The head's weight becomes int8 with one float32 scale per output row (symmetric absmax:
``scale = max|w_row| / 127``, ``q = round(w / scale)`` in [-127, 127]); the module's state_dict holds
exactly ``weight`` (int8 [N, K]), ``scale`` (float32 [N]) and, if the head had one, ``bias``
(float32 [N]).

Compute (CPU): torch's fbgemm int8 GEMM/GEMV (``torch.ops.quantized.linear_dynamic``), the fastest
option measured at M = 1 (docs/benchmarks.md, "Int8 output head"): each row of the input is
divided by its max |x| and two constant columns (+1, -1, against zero weight columns) are
appended, so fbgemm's per-call activation range is always [-1, 1]; the int8 activations are then
per token, and a row's output does not depend on the other rows of the batch. fbgemm's packed
copy of the weights (one more byte per weight, plus padding) is built on the first call, held in
memory only (never saved) and rebuilt when torch records a change of ``weight`` or ``scale``
(another tensor, its version counter, shape or dtype); size_report lists it as ``head_packed``.
That copy is a second one: writes torch does not record (``.data``, NumPy, the storage, DLPack)
need ``Int8Head.refresh()``, as the opt-in CPU decode layout of BitLinear does. (torch's
``_weight_int8pack_mm`` reads the int8 table itself with no copy, but took 1.7-2.1x fbgemm's time
at M = 1 on Zen 4: 4.4 vs 2.1 ms at 2560 -> 32000, 20.9 vs 12.1 ms at 2560 -> 128256, 2 threads.) Other devices, or a CPU without a quantized engine, dequantize the weight per
call (correct, not fast). Eager calls run the kernel directly; ``torch.compile`` sees the custom op
``torch.ops.bitlinear.int8_head_linear`` (same kernel, same bits).

Tied embeddings: when the head's weight is also an ``nn.Embedding``'s weight, that embedding
becomes an ``Int8Embedding`` holding the int8 table and its scales, and the head reads the same
tensors (one copy, saved once, under the embedding's name): the embedding's output is the
dequantized row ``q[i] * scale[i]`` (so the tie is kept, and the input embeddings change by the
same int8 rounding as the head). Pass ``tied="untie"`` to keep the float embedding and a separate
int8 head instead (both copies in memory).

int4 (``Int4Head``, ``Int4Embedding``; the "q4" format, docs/packed_format.md): per row, groups of
G weights (G a multiple of 64, at most 1024; default 64; K padded to Kg * G, Kg = ceil(K / G)).
In each group the weight m of largest |w| (the first such) gives the scale ``d = m / -8``
(float32) and the codes ``q = clamp(rint(w / d), -8, 7)``, so m itself is exact (-8 d), the other
weights are within |d| / 2 (those of m's opposite sign beyond 7.5 |d|: within |d|); an all-zero
group gets d = 0. The state_dict holds ``weight`` (uint8 [N, Kg * G / 2]: byte 32c + j of a row
holds q[64c + j] + 8 in its low nibble and q[64c + 32 + j] + 8 in its high one), ``scale``
(float32 [N, Kg]) and, if the head had one, ``bias`` (float32 [N]): 0.5 + 4 / G bytes per weight
(0.5625 at G = 64), against 1 + 4 / K for int8. The logit error is larger than int8's (16
levels instead of 255; docs/models.md gives the numbers).

Compute (CPU): bitlinear's own C kernel (``bl_q4_linear`` through ``_bitlinear.q4_linear_cpu``),
int8 activations per token (the smallest eps, as BitLinear's quantizer), exact integer partial
sums per group, one float32 fma per group and lane: the same bits on every ISA and at any thread
count, equal to ``reference.q4_head_linear_ref``. It reads the module's buffers on every call:
there is no second copy, so any write (``.data``, NumPy, in-place) is seen by the next call.
Eager calls run the kernel directly; ``torch.compile``, autograd (a gradient reaches the input,
through the dequantized weight) and tensor subclasses go through the custom op
``torch.ops.bitlinear.int4_head_linear`` (same kernel, same bits). Other devices, or a build
without the kernel, dequantize the weight and call F.linear (correct, not fast; float activations,
so not the kernel's bits). A tied embedding (``Int4Embedding``) dequantizes the rows it looks up.
"""
from __future__ import annotations

import fnmatch
from typing import List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ._head_kernels import (HEAD_KINDS, INT4_DEFAULT_GROUP, INT4_MAX_GROUP, _check_group,
                            _dequant4_rows, _int4_linear, _int8_linear, _packed_bytes,
                            _packed_for, _PACKED, _q4_shapes, dequantize_groups_int4, parse_head,
                            quantize_groups_int4, quantize_rows)

__all__ = ["Int8Head", "Int8Embedding", "Int4Head", "Int4Embedding", "quantize_head",
           "quantize_rows", "quantize_groups_int4", "dequantize_groups_int4", "head_names",
           "parse_head", "HEAD_KINDS", "INT4_DEFAULT_GROUP", "INT4_MAX_GROUP"]


_HEAD_PATTERNS = ("lm_head", "*.lm_head", "output", "*.output", "output_layer", "*.output_layer",
                  "classifier", "*.classifier", "score", "*.score", "head", "*.head")


# ---------------------------------------------------------------------------- modules
def _check_state(prefix: str, state_dict: dict, want: dict, names, what: str,
                 scale_positive: bool) -> None:
    """Each loaded tensor in ``names`` must have ``want[name]``'s dtype and shape (load_state_dict
    would otherwise cast a float weight into the int table silently), and the scales must be
    finite (and > 0 where ``scale_positive``). ``what`` names the format in the message."""
    who = prefix.rstrip(".") or "head"
    for n in names:
        t = state_dict.get(prefix + n)
        if not isinstance(t, torch.Tensor):
            continue  # missing: load_state_dict reports it
        dtype, shape = want[n]
        if t.dtype != dtype or tuple(t.shape) != shape:
            raise ValueError(f"bitlinear: {who}: '{n}' is {t.dtype} {tuple(t.shape)}, expected "
                             f"{dtype} {shape} ({what}; load into a model converted with the "
                             "same head=)")
        if n == "scale" and t.device.type != "meta":
            ok = torch.isfinite(t) & (t > 0) if scale_positive else torch.isfinite(t)
            if not bool(ok.all()):
                raise ValueError(f"bitlinear: {who}: scale must be finite" +
                                 (" and > 0" if scale_positive else " (NaN or Inf found)"))


def _check_loaded(prefix: str, state_dict: dict, rows: int, cols: int, names) -> None:
    """A loaded int8 table must be int8 [rows, cols], its scales float32 [rows], finite and > 0."""
    want = {"weight": (torch.int8, (rows, cols)), "scale": (torch.float32, (rows,)),
            "bias": (torch.float32, (rows,))}
    _check_state(prefix, state_dict, want, names, "an int8 head / embedding", True)


def _apply_keep_float32(module: nn.Module, fn, recurse: bool, names) -> None:
    """nn.Module._apply, except that a dtype cast (model.half()) leaves these float32 buffers in
    float32 (moved with the module): the scales and bias are part of the int8 format."""
    keep = {k: module._buffers[k] for k in names if module._buffers.get(k) is not None}
    nn.Module._apply(module, fn, recurse)
    for k, v in keep.items():
        module._buffers[k] = v.to(device=module._buffers[k].device, dtype=torch.float32)


def _apply_embedding(module: nn.Module, fn, recurse: bool) -> nn.Module:
    """nn.Module._apply for the quantized embeddings: a cast of the model (model.half()) sets the
    output dtype; the table stays int8 / uint8 and the scales float32."""
    probe = fn(torch.empty(0, dtype=module.dtype, device=module.scale.device))
    _apply_keep_float32(module, fn, recurse, ("scale",))
    if probe.is_floating_point():
        module.dtype = probe.dtype
    return module


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows with one float32 scale per row:
    ``forward(ids) = (weight[ids] * scale[ids]).to(dtype)``. Buffers: ``weight`` (int8 [V, D]),
    ``scale`` (float32 [V]). ``dtype`` is the output dtype (the float embedding's)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None,
                 device=None, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.padding_idx = padding_idx
        self.dtype = dtype
        self.register_buffer("weight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8,
                                                   device=device))
        self.register_buffer("scale", torch.ones(num_embeddings, dtype=torch.float32, device=device))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, weight: Optional[torch.Tensor] = None,
                       scale: Optional[torch.Tensor] = None) -> "Int8Embedding":
        """weight / scale: already quantized tensors to share (a tied head's); else quantized here."""
        w = emb.weight
        m = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx, device="meta", dtype=w.dtype)
        if weight is None:
            weight, scale = quantize_rows(w)
        m.weight, m.scale = weight, scale
        return m

    def _apply(self, fn, recurse=True):
        return _apply_embedding(self, fn, recurse)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _check_loaded(prefix, state_dict, self.num_embeddings, self.embedding_dim,
                      ("weight", "scale"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight).to(torch.float32)
        return (rows * F.embedding(ids, self.scale[:, None])).to(self.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows, out dtype={self.dtype}"


class _QuantHead(nn.Module):
    """What Int8Head and Int4Head share: a tie to an embedding (``weight`` / ``scale`` read from
    it, no own copy), float32 ``scale`` / ``bias`` under dtype casts, and forward's checks and
    dispatch (the custom op under torch.compile, with autograd or for tensor subclasses; the
    kernel directly otherwise). Subclasses define ``_op`` and ``_eager``."""

    def _tie(self, embedding: nn.Module, bias: Optional[torch.Tensor]) -> "_QuantHead":
        del self._buffers["weight"], self._buffers["scale"]
        self.__dict__["_tied"] = embedding
        if bias is not None:
            self.bias = bias.detach().to(torch.float32).clone()
        return self

    @property
    def tied(self) -> bool:
        return self.__dict__.get("_tied") is not None

    def __getattr__(self, name):
        tied = self.__dict__.get("_tied")
        if tied is not None and name in ("weight", "scale"):
            return getattr(tied, name)
        return super().__getattr__(name)

    def _apply(self, fn, recurse=True):
        _apply_keep_float32(self, fn, recurse, ("scale", "bias"))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: input has {x.shape[-1]} features, expected "
                             f"{self.in_features}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}: the input must be a float tensor, got "
                            f"{x.dtype}")
        w, s, b = self.weight, self.scale, self.bias
        if (torch.compiler.is_compiling() or (x.requires_grad and torch.is_grad_enabled())
                or type(x) is not torch.Tensor):
            return self._op(x, w, s, b)
        return self._eager(x, w, s, b)


class Int8Head(_QuantHead):
    """A linear output head with int8 weights and one float32 scale per output row.

    Buffers: ``weight`` (int8 [out, in]), ``scale`` (float32 [out]), ``bias`` (float32 [out] or
    None). ``forward(x)`` has x's dtype, like nn.Linear. Inference first: a gradient reaches the
    input (through the dequantized weight) but not the weights.

    Tied: ``Int8Head.tied_to(embedding)`` reads an ``Int8Embedding``'s weight and scale (no own
    copy; its state_dict then holds only its bias)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8,
                                                   device=device))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32, device=device)
                             if bias else None)
        self.__dict__["_tied"] = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Head":
        m = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        m.weight, m.scale = quantize_rows(linear.weight)
        if linear.bias is not None:
            m.bias = linear.bias.detach().to(torch.float32).clone()
        return m

    @classmethod
    def tied_to(cls, embedding: Int8Embedding, bias: Optional[torch.Tensor] = None) -> "Int8Head":
        return cls(embedding.embedding_dim, embedding.num_embeddings, bias=bias is not None,
                   device="meta")._tie(embedding, bias)


    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _check_loaded(prefix, state_dict, self.out_features, self.in_features,
                      ("bias",) if self.tied else ("weight", "scale", "bias"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _op(self, x, w, s, b):
        return torch.ops.bitlinear.int8_head_linear(x, w, s, b)

    def _eager(self, x, w, s, b):
        return _int8_linear(x, w, s, b)

    def prepack(self) -> "Int8Head":
        """Build the fbgemm packed weights now instead of on the first call."""
        if self.weight.device.type == "cpu":
            _packed_for(self.weight, self.scale)
        return self

    def refresh(self) -> "Int8Head":
        """Pack fbgemm's copy again from ``weight`` / ``scale`` now: after writing them in a way
        torch does not record (``.data``, NumPy, the storage, DLPack). Writes through torch ops,
        replaced tensors and load_state_dict are seen without it."""
        _PACKED.pop((self.weight.data_ptr(), self.scale.data_ptr(), tuple(self.weight.shape)),
                    None)
        return self.prepack()

    def packed_bytes(self) -> int:
        """Bytes of the in-memory fbgemm copy (0 before the first call or off the CPU)."""
        return _packed_bytes(self.weight, self.scale)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, int8 per-row" + (", tied" if self.tied else ""))


def _check_loaded4(prefix: str, state_dict: dict, rows: int, K: int, G: int, names) -> None:
    """A loaded int4 table must be uint8 [rows, Kg * G / 2], its scales float32 [rows, Kg] and
    finite (0 is allowed: an all-zero group), a bias float32 [rows]."""
    wshape, sshape = _q4_shapes(rows, K, G)
    want = {"weight": (torch.uint8, wshape), "scale": (torch.float32, sshape),
            "bias": (torch.float32, (rows,))}
    _check_state(prefix, state_dict, want, names,
                 f"an int4 head / embedding, group_size={G}", False)


class Int4Embedding(nn.Module):
    """An embedding table in the int4 head format: ``weight`` (uint8 [V, Kg * G / 2]), ``scale``
    (float32 [V, Kg]); ``forward(ids)`` dequantizes the looked-up rows (``q * d`` in float32, then
    ``dtype``, the float embedding's). ``group_size``: G."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None,
                 group_size: int = INT4_DEFAULT_GROUP, device=None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.padding_idx = padding_idx
        self.group_size = _check_group(group_size, "Int4Embedding")
        self.dtype = dtype
        wshape, sshape = _q4_shapes(self.num_embeddings, self.embedding_dim, self.group_size)
        self.register_buffer("weight", torch.full(wshape, 0x88, dtype=torch.uint8, device=device))
        self.register_buffer("scale", torch.zeros(sshape, dtype=torch.float32, device=device))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, group_size: int = INT4_DEFAULT_GROUP,
                       weight: Optional[torch.Tensor] = None,
                       scale: Optional[torch.Tensor] = None) -> "Int4Embedding":
        """weight / scale: already quantized tensors to share (a tied head's); else quantized here."""
        w = emb.weight
        m = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx, group_size, device="meta",
                dtype=w.dtype)
        if weight is None:
            weight, scale = quantize_groups_int4(w, m.group_size)
        m.weight, m.scale = weight, scale
        return m

    def _apply(self, fn, recurse=True):
        return _apply_embedding(self, fn, recurse)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _check_loaded4(prefix, state_dict, self.num_embeddings, self.embedding_dim,
                       self.group_size, ("weight", "scale"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = _dequant4_rows(F.embedding(ids, self.weight), F.embedding(ids, self.scale),
                              self.group_size)
        return rows[..., :self.embedding_dim].to(self.dtype)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, int4 groups of {self.group_size}, "
                f"out dtype={self.dtype}")


class Int4Head(_QuantHead):
    """A linear output head with int4 weights, one float32 scale per group of ``group_size``
    weights of a row (the q4 format: quantize_groups_int4).

    Buffers: ``weight`` (uint8 [out, Kg * G / 2]), ``scale`` (float32 [out, Kg]), ``bias``
    (float32 [out] or None). ``forward(x)`` has x's dtype, like nn.Linear; it reads the buffers on
    every call (no cached copy). Inference first: a gradient reaches the input (through the
    dequantized weight) but not the weights.

    Tied: ``Int4Head.tied_to(embedding)`` reads an ``Int4Embedding``'s weight and scale (no own
    copy; its state_dict then holds only its bias)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 group_size: int = INT4_DEFAULT_GROUP, device=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.group_size = _check_group(group_size, "Int4Head")
        if self.in_features < 1:
            raise ValueError("Int4Head: in_features must be >= 1")
        wshape, sshape = _q4_shapes(self.out_features, self.in_features, self.group_size)
        self.register_buffer("weight", torch.full(wshape, 0x88, dtype=torch.uint8, device=device))
        self.register_buffer("scale", torch.zeros(sshape, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32, device=device)
                             if bias else None)
        self.__dict__["_tied"] = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = INT4_DEFAULT_GROUP) -> "Int4Head":
        m = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                group_size=group_size, device="meta")
        m.weight, m.scale = quantize_groups_int4(linear.weight, m.group_size)
        if linear.bias is not None:
            m.bias = linear.bias.detach().to(torch.float32).clone()
        return m

    @classmethod
    def tied_to(cls, embedding: Int4Embedding, bias: Optional[torch.Tensor] = None) -> "Int4Head":
        m = cls(embedding.embedding_dim, embedding.num_embeddings, bias=bias is not None,
                group_size=embedding.group_size, device="meta")
        return m._tie(embedding, bias)


    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _check_loaded4(prefix, state_dict, self.out_features, self.in_features, self.group_size,
                       ("bias",) if self.tied else ("weight", "scale", "bias"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _op(self, x, w, s, b):
        return torch.ops.bitlinear.int4_head_linear(x, w, s, b, self.group_size,
                                                    self.in_features)

    def _eager(self, x, w, s, b):
        return _int4_linear(x, w, s, b, self.group_size, self.in_features)

    def dequantized_weight(self) -> torch.Tensor:
        """float32 [out, in]: the weights this head multiplies by (q * d)."""
        return dequantize_groups_int4(self.weight, self.scale, self.in_features, self.group_size)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, int4 groups of {self.group_size}"
                + (", tied" if self.tied else ""))


# ---------------------------------------------------------------------------- model level
def head_names(model: nn.Module) -> List[str]:
    """Names of the model's output heads: ``get_output_embeddings()`` where the model has it
    (transformers), else the nn.Linear layers named like a head (convert.DEFAULT_SKIP)."""
    names = {id(m): n for n, m in model.named_modules()}
    get = getattr(model, "get_output_embeddings", None)
    if callable(get):
        try:
            out = get()
        except (NotImplementedError, AttributeError):
            out = None
        if isinstance(out, (nn.Linear, Int8Head, Int4Head)) and id(out) in names:
            return [names[id(out)]]
    return [n for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, Int8Head, Int4Head)) and n
            and any(fnmatch.fnmatchcase(n, p) for p in _HEAD_PATTERNS)]


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.device == b.device and a.data_ptr() == b.data_ptr()
                      and a.shape == b.shape and a.numel() > 0)


@torch.no_grad()
def quantize_head(model: nn.Module, head: Optional[str] = "int8", tied: str = "share"
                  ) -> List[str]:
    """Replace the model's output head(s) (``head_names``) by ``Int8Head`` (head="int8") or
    ``Int4Head`` (head="int4": groups of 64; "int4:<G>": groups of G, a positive multiple of 64 up
    to 1024), in place. Returns the names replaced. Already quantized heads, and layers that are
    not plain nn.Linear (e.g. a BitLinear), are left alone.

    tied: "share" (default): a head whose weight is an nn.Embedding's weight makes that embedding an
    ``Int8Embedding`` / ``Int4Embedding`` and reads its table (one copy); "untie": the embedding
    stays float and the head gets its own quantized copy. A head tied to anything other than
    nn.Embedding(s) raises."""
    kind, group = parse_head(head, "quantize_head")
    if kind is None:
        return []
    if tied not in ("share", "untie"):
        raise ValueError(f"tied must be 'share' or 'untie', got {tied!r}")
    done = []
    for name in head_names(model):
        lin = model.get_submodule(name)
        if type(lin) is not nn.Linear:
            continue
        users = [(n, m) for n, m in model.named_modules()
                 if m is not lin and isinstance(getattr(m, "weight", None), torch.Tensor)
                 and _same_tensor(m.weight, lin.weight)]
        if users and tied == "share":
            bad = [n for n, m in users if type(m) is not nn.Embedding]
            if bad:
                raise ValueError(f"quantize_head: the weight of {name!r} is shared with {bad}, "
                                 "which are not nn.Embedding; cannot quantize it without untying")
            emb = None
            if kind == "int8":
                w, s = quantize_rows(lin.weight)
            else:
                w, s = quantize_groups_int4(lin.weight, group)
            for n, m in users:
                new_emb = (Int8Embedding.from_embedding(m, w, s) if kind == "int8"
                           else Int4Embedding.from_embedding(m, group, w, s))
                new_emb.train(m.training)
                model.set_submodule(n, new_emb)
                emb = emb or new_emb
            new = (Int8Head if kind == "int8" else Int4Head).tied_to(emb, lin.bias)
            _untie_hf_mapping(model, name)
        else:
            new = (Int8Head.from_linear(lin) if kind == "int8"
                   else Int4Head.from_linear(lin, group))
            if users:
                _untie_hf_mapping(model, name)
        new.train(lin.training)
        model.set_submodule(name, new)
        done.append(name)
    return done


def _untie_hf_mapping(model: nn.Module, head_name: str) -> None:
    """transformers re-ties ``<head>.weight`` to the input embedding at load (setattr of one
    tensor): with the head quantized that is our job (bitlinear.hf rebuilds the tie), so drop the
    head from the model's tie mapping."""
    keys = getattr(model, "all_tied_weights_keys", None)
    if isinstance(keys, dict):
        keys.pop(f"{head_name}.weight", None)
