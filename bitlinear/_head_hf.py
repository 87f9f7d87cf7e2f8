"""The quantized heads' side of transformers interop (bitlinear.hf): the quantization_config
entries that record them, rebuilding them in a fresh model at from_pretrained, and the tensors and
shapes a checkpoint must hold. Split from bitlinear/head.py."""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from . import head as _h
from ._head_kernels import INT4_DEFAULT_GROUP, _check_group, _q4_shapes


def hf_head_entries(model: nn.Module) -> Dict[str, dict]:
    """{head name: entry} for the quantization_config (bitlinear.hf), so that from_pretrained
    rebuilds the heads: {"kind": "int8", "tied": embedding name or None, "bias": bool}, or for an
    int4 head {"kind": "int4", "group_size": G, "tied": ..., "bias": ...}."""
    names = {id(m): n for n, m in model.named_modules()}
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (_h.Int8Head, _h.Int4Head)):
            tied = m.__dict__.get("_tied")
            if tied is not None and id(tied) not in names:
                raise ValueError(f"bitlinear: head {name!r} is tied to an embedding that is not "
                                 "part of the model")
            e = {"kind": "int8"} if isinstance(m, _h.Int8Head) else \
                {"kind": "int4", "group_size": m.group_size}
            e.update(tied=None if tied is None else names[id(tied)], bias=m.bias is not None)
            out[name] = e
    return out


def _entry_kind(name: str, e) -> Tuple[str, int]:
    """(kind, group size) of a quantization_config heads entry; ValueError naming the head."""
    if not isinstance(e, dict):
        raise ValueError(f"bitlinear: head {name!r}: the heads entry must be a dict, got "
                         f"{type(e).__name__}")
    kind = e.get("kind", "int8")
    if kind == "int8":
        return "int8", 0
    if kind == "int4":
        return "int4", _check_group(e.get("group_size", INT4_DEFAULT_GROUP),
                                    f"bitlinear: head {name!r}")
    raise ValueError(f"bitlinear: head {name!r}: unknown kind {kind!r}")


def hf_rebuild_heads(model: nn.Module, heads: Dict[str, dict]) -> None:
    """Replace the (meta) float heads (and tied embeddings) named in ``heads`` by empty int8 / int4
    modules that the checkpoint then fills; drop the heads from transformers' tie mapping."""
    for name, e in (heads or {}).items():
        kind, group = _entry_kind(name, e)
        Head, Emb = (_h.Int8Head, _h.Int8Embedding) if kind == "int8" else (_h.Int4Head, _h.Int4Embedding)
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"bitlinear: the checkpoint's quantization_config names head {name!r}, "
                             "which this model does not have") from None
        if isinstance(old, Head):
            continue
        if not isinstance(old, nn.Linear):
            raise ValueError(f"bitlinear: head {name!r} is a {type(old).__name__}, not an nn.Linear")
        bias = old.bias is not None
        if e.get("tied"):
            emb = model.get_submodule(e["tied"])
            if not isinstance(emb, Emb) or (kind == "int4" and emb.group_size != group):
                if not isinstance(emb, nn.Embedding):
                    raise ValueError(f"bitlinear: head {name!r} is tied to {e['tied']!r}, a "
                                     f"{type(emb).__name__}, not an nn.Embedding")
                if kind == "int8":
                    new_emb = _h.Int8Embedding(emb.num_embeddings, emb.embedding_dim, emb.padding_idx,
                                            device="meta", dtype=emb.weight.dtype)
                else:
                    new_emb = _h.Int4Embedding(emb.num_embeddings, emb.embedding_dim, emb.padding_idx,
                                            group, device="meta", dtype=emb.weight.dtype)
                model.set_submodule(e["tied"], new_emb)
                emb = new_emb
            head = Head.tied_to(emb, torch.zeros(old.out_features, device="meta")
                                if bias else None)
        elif kind == "int8":
            head = _h.Int8Head(old.in_features, old.out_features, bias=bias, device="meta")
        else:
            head = _h.Int4Head(old.in_features, old.out_features, bias=bias, group_size=group,
                            device="meta")
        model.set_submodule(name, head)
        _h._untie_hf_mapping(model, name)


def hf_head_tensors(model: nn.Module, heads: Dict[str, dict]
                    ) -> List[Tuple[str, str, Tuple[str, ...], Tuple[int, ...]]]:
    """(head name, checkpoint key, safetensors dtypes, shape) of every tensor that the heads
    rebuilt by hf_rebuild_heads (and their tied embeddings) read from a checkpoint. bitlinear.hf
    checks them in the safetensors headers before transformers loads anything: transformers
    would cast a float ``weight`` into the int8 / uint8 table, convert a float16 scale, and
    re-initialise a missing one, none of which the checks after loading can see."""
    out = []
    for name in (heads or {}):
        m = model.get_submodule(name)
        if not isinstance(m, (_h.Int8Head, _h.Int4Head)):
            continue
        if m.tied:
            src = next((n for n, x in model.named_modules() if x is m.__dict__["_tied"]), None)
            if src is None:
                continue  # hf_rebuild_heads ties only to the model's own embeddings
        else:
            src = name
        rows, cols = m.out_features, m.in_features
        if isinstance(m, _h.Int8Head):
            want = ((("I8",), (rows, cols)), (("F32",), (rows,)))
        else:
            wshape, sshape = _q4_shapes(rows, cols, m.group_size)
            want = ((("U8",), wshape), (("F32",), sshape))
        out += [(name, f"{src}.weight", *want[0]), (name, f"{src}.scale", *want[1])]
        if m.bias is not None:
            out.append((name, f"{name}.bias", ("F32",), (rows,)))
    return out


def hf_validate_heads(model: nn.Module, heads: Dict[str, dict]) -> None:
    """After from_pretrained: every quantized head's tensors were in the checkpoint, with the
    right dtypes and shapes, and the scales are finite (and > 0 for int8; int4 allows 0)."""
    for name, e in (heads or {}).items():
        kind, group = _entry_kind(name, e)
        m = model.get_submodule(name)
        Head = _h.Int8Head if kind == "int8" else _h.Int4Head
        if not isinstance(m, Head) or (kind == "int4" and m.group_size != group):
            raise ValueError(f"bitlinear: head {name!r} was not rebuilt as an {Head.__name__}"
                             + (f" with group_size {group}" if kind == "int4" else ""))
        N, K = m.out_features, m.in_features
        if kind == "int8":
            want = (("weight", torch.int8, (N, K)), ("scale", torch.float32, (N,)))
        else:
            wshape, sshape = _q4_shapes(N, K, group)
            want = (("weight", torch.uint8, wshape), ("scale", torch.float32, sshape))
        for t, dtype, shape in want + (("bias", torch.float32, (N,)),):
            v = getattr(m, t)
            if v is None:
                continue
            if v.device.type == "meta":
                raise ValueError(f"bitlinear: head {name!r}: '{t}' was not in the checkpoint")
            if v.dtype != dtype or tuple(v.shape) != shape:
                raise ValueError(f"bitlinear: head {name!r}: '{t}' is {v.dtype} "
                                 f"{tuple(v.shape)}, expected {dtype} {shape}")
        s = m.scale
        if not bool(torch.isfinite(s).all()):
            raise ValueError(f"bitlinear: head {name!r}: scale must be finite" +
                             (" and > 0" if kind == "int8" else " (NaN or Inf found)"))
        if kind == "int8" and not bool((s > 0).all()):
            raise ValueError(f"bitlinear: head {name!r}: scale must be finite and > 0")
