"""Whole-model helpers: swap nn.Linear for BitLinear, deploy, measure, save and load.

    model = convert(model)                 # in place; nn.Linear -> BitLinear (training mode, fake quant)
    ... train ...
    deploy(model)                          # every BitLinear -> packed 2-bit weights + integer kernels
    print(size_report(model)["text"])
    save_deployed(model, "model.safetensors")

    fresh = build_model(); convert(fresh); deploy(fresh)   # same structure, then
    load_deployed(fresh, "model.safetensors")
"""
from __future__ import annotations

import fnmatch
import json
import re
import sys
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Dict, Iterable, Optional, Sequence

import torch
from torch import nn

from . import _fast
from . import head as _head
from .nn import BitLinear

__all__ = [
    "ConvertConfig", "DEFAULT_SKIP", "convert", "deploy", "bitlinear_modules",
    "model_size_bytes", "size_report", "save_deployed", "load_deployed",
    "FORMAT_METADATA_KEY", "FormatVersionError",
]

# Output heads stay in float by default: they are small next to the body, often tied to the
# embedding, and quantizing them hurts quality the most (BitNet b1.58 keeps them in high precision).
DEFAULT_SKIP: tuple = (
    "lm_head", "*.lm_head", "output", "*.output", "output_layer", "*.output_layer",
    "classifier", "*.classifier", "score", "*.score", "head", "*.head",
)

FORMAT_METADATA_KEY = "bitlinear.format_version"
_EXTRA_METADATA_KEY = "bitlinear.extra_state"
_ALIAS_METADATA_KEY = "bitlinear.aliases"


class FormatVersionError(RuntimeError):
    """A saved file was written with a packed format this version of bitlinear cannot read."""


@dataclass
class ConvertConfig:
    """What `convert` replaces and how.

    skip: names (as in model.named_modules()) of nn.Linear layers to keep in float. Each entry is an
      fnmatch pattern ("*.lm_head", "layers.0.*") or, prefixed with "re:", a regular expression matched
      with re.fullmatch ("re:.*\\.(q|k)_proj"). Defaults to DEFAULT_SKIP (output heads).
    filter_fn(module, name) -> bool: optional extra test; return False to keep that layer in float.
    quant_type, act_scale, weight_scale, eps: passed to BitLinear.from_linear (quant_type=None and
      no act_scale/weight_scale means "ai8pc_wpt": per-token activations, one weight scale).
    """
    quant_type: Optional[str] = None
    eps: float = 1e-6
    act_scale: Optional[str] = None
    weight_scale: Optional[str] = None
    skip: Sequence[str] = field(default_factory=lambda: DEFAULT_SKIP)
    filter_fn: Optional[Callable[[nn.Module, str], bool]] = None

    def skipped(self, name: str) -> bool:
        for pat in self.skip:
            if pat.startswith("re:"):
                if re.fullmatch(pat[3:], name):
                    return True
            elif fnmatch.fnmatchcase(name, pat):
                return True
        return False


def _make_config(config: Optional[ConvertConfig], kw: dict) -> ConvertConfig:
    cfg = config if config is not None else ConvertConfig()
    if not isinstance(cfg, ConvertConfig):
        raise TypeError(f"config must be a ConvertConfig, got {type(cfg).__name__}")
    known = {f.name for f in fields(ConvertConfig)}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise TypeError(f"convert() got unknown option(s) {unknown}; known: {sorted(known)}")
    cfg = replace(cfg, **kw)
    if isinstance(cfg.skip, str):
        cfg = replace(cfg, skip=(cfg.skip,))
    return cfg


def _from_linear(linear: nn.Linear, cfg: ConvertConfig) -> BitLinear:
    return BitLinear.from_linear(linear, quant_type=cfg.quant_type, eps=cfg.eps,
                                 act_scale=cfg.act_scale, weight_scale=cfg.weight_scale)


def _convertible(module: nn.Module, parent: Optional[nn.Module]) -> bool:
    # nn.MultiheadAttention reads out_proj.weight directly, bypassing the module's forward,
    # so replacing that child would silently change nothing (or break); leave it alone.
    if isinstance(parent, nn.MultiheadAttention):
        return False
    return isinstance(module, nn.Linear) and not isinstance(module, BitLinear)


def convert(model: nn.Module, config: Optional[ConvertConfig] = None, *,
            head: Optional[str] = None, **kw) -> nn.Module:
    """Replace nn.Linear layers of `model` by BitLinear, in place, keeping weights, biases,
    device and dtype. Returns the model (a new BitLinear if `model` itself is an nn.Linear).

    Keyword arguments override fields of `config` (quant_type=, act_scale=, weight_scale=, eps=,
    skip=, filter_fn=).
    head: None (default) keeps the output head (DEFAULT_SKIP) in float; "int8" makes it a
    bitlinear.head.Int8Head (int8 weights, one scale per output row, torch's fbgemm int8 GEMV);
    "int4" a bitlinear.head.Int4Head (4-bit codes, one float32 scale per group of 64 weights of a
    row, bitlinear's C kernel; "int4:<G>": groups of G, a multiple of 64 up to 1024). A head tied
    to the input embedding makes that an Int8Embedding / Int4Embedding sharing the table
    (bitlinear/head.py, docs/models.md).
    Layers whose weight is shared with another module (tied weights) are left in float,
    since replacing one side would silently untie them.
    """
    cfg = _make_config(config, kw)
    _head.parse_head(head, "convert")  # ValueError for an unknown head= before any change
    if _convertible(model, None):
        return _from_linear(model, cfg)

    weight_users: Dict[int, int] = {}
    for mod in model.modules():
        w = getattr(mod, "weight", None)
        if isinstance(w, torch.Tensor):
            weight_users[id(w)] = weight_users.get(id(w), 0) + 1

    targets = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent._modules.items():  # not named_children: keeps repeats
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if not _convertible(child, parent) or cfg.skipped(name):
                continue
            if type(child).__module__ == "transformers.integrations.bitnet":
                # transformers' AutoBitLinear is an nn.Linear whose weight_scale from_linear would drop
                raise TypeError(f"convert: layer {name!r} is a transformers {type(child).__name__}; "
                                "convert BitNet models with bitlinear.hf.convert_bitnet(model)")
            if weight_users.get(id(child.weight), 0) > 1:
                continue
            if cfg.filter_fn is not None and not cfg.filter_fn(child, name):
                continue
            targets.append((parent, child_name, child))

    replaced: Dict[int, nn.Module] = {}  # one module registered under several names stays one module
    for parent, child_name, child in targets:
        new = replaced.get(id(child))
        if new is None:
            new = _from_linear(child, cfg)
            new.train(child.training)
            replaced[id(child)] = new
        setattr(parent, child_name, new)
    _head.quantize_head(model, head)
    _hf_attach(model)
    return model


def _hf_attach(model: nn.Module) -> None:
    """A transformers model records its BitLinear layers in its quantization_config, so that
    save_pretrained / from_pretrained keep them (bitlinear/hf.py). Only when transformers is
    already imported: bitlinear never imports it by itself."""
    if "transformers" in sys.modules and hasattr(model, "config"):
        from .hf import attach
        attach(model)


def bitlinear_modules(model: nn.Module):
    """(name, module) for every BitLinear in `model` (each module once)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BitLinear)]


def deploy(model: nn.Module, progress: Optional[bool] = None) -> nn.Module:
    """Deploy every BitLinear of `model` (pack weights, switch to the integer kernels). In place.

    progress: None shows a tqdm bar when the model has >= 32 layers to deploy (if tqdm is installed);
    True / False force it on / off.
    """
    todo = [(n, m) for n, m in bitlinear_modules(model) if not m.deployed]
    if progress is None:
        progress = len(todo) >= 32
    bar = None
    if progress and todo:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(todo), desc="deploy", unit="layer")
        except ImportError:
            bar = None
    try:
        for _, m in todo:
            m.deploy()
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    _hf_attach(model)
    return model


def _unique_tensors(model: nn.Module) -> Iterable:
    """(name, tensor, kind) for each distinct parameter / buffer storage region."""
    seen = set()
    for mod_name, mod in model.named_modules():
        for kind, items in (("param", mod._parameters.items()), ("buffer", mod._buffers.items())):
            for name, t in items:
                if t is None:
                    continue
                key = (t.device, t.data_ptr(), t.numel(), t.dtype) if t.numel() else (id(t),)
                if key in seen:
                    continue
                seen.add(key)
                yield (f"{mod_name}.{name}" if mod_name else name), mod, name, t, kind


def model_size_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (shared tensors counted once)."""
    return sum(t.numel() * t.element_size() for _, _, _, t, _ in _unique_tensors(model))


def size_report(model: nn.Module) -> dict:
    """Byte counts of a model by category: packed ternary weights, their scales, BitLinear biases,
    BitLinear float weights (not yet deployed), and everything else (params / buffers elsewhere).
    Returns a dict with those counts, "total", "bitlinear_layers", "deployed_layers" and "text";
    and "decode_layout": bytes of the CPU decode layouts the deployed layers hold in memory
    (opt-in: bitlinear.set_cpu_lut; never saved, so not in "total"), "resident" = total +
    decode_layout, and "resident_bits_per_weight": RAM bits per ternary weight of the deployed
    layers (2.0 plus K padding on the default path; about 3.8 with a decode layout).
    "int8_head": an Int8Head's / Int8Embedding's int8 weights, scales and bias (in "total");
    "int4_head": an Int4Head's / Int4Embedding's 4-bit codes, group scales and bias (in "total";
    no second copy); "head_packed": the in-memory fbgemm copy of an Int8Head (not saved; in
    "resident")."""
    cats = {"packed_weights": 0, "weight_scales": 0, "bitlinear_bias": 0,
            "bitlinear_float_weights": 0, "int8_head": 0, "int4_head": 0, "other_params": 0,
            "other_buffers": 0}
    n_bl = n_dep = 0
    for _, m in bitlinear_modules(model):
        n_bl += 1
        n_dep += bool(m.deployed)
    for _, mod, name, t, kind in _unique_tensors(model):
        nbytes = t.numel() * t.element_size()
        if isinstance(mod, BitLinear):
            cat = {"w_packed": "packed_weights", "w_scale": "weight_scales", "bias": "bitlinear_bias",
                   "weight": "bitlinear_float_weights"}.get(name)
            if cat is None:
                cat = "other_params" if kind == "param" else "other_buffers"
        elif isinstance(mod, (_head.Int8Head, _head.Int8Embedding)):
            cat = "int8_head"  # int8 head / tied int8 embedding: weight, scales, bias
        elif isinstance(mod, (_head.Int4Head, _head.Int4Embedding)):
            cat = "int4_head"  # int4 head / tied int4 embedding: codes, group scales, bias
        else:
            cat = "other_params" if kind == "param" else "other_buffers"
        cats[cat] += nbytes
    total = sum(cats.values())
    lut = sum(_fast.decode_layout_bytes(m) for _, m in bitlinear_modules(model))
    head_packed = sum(m.packed_bytes() for m in model.modules() if isinstance(m, _head.Int8Head))
    # ternary weights of the deployed layers, and the bits per weight their weights hold in RAM
    # (the packed 2 bits, plus the opt-in decode layout's 1.78 where one is held)
    n_w = sum(m.in_features * m.out_features for _, m in bitlinear_modules(model) if m.deployed)
    bits = 8 * (cats["packed_weights"] + lut) / n_w if n_w else 0.0
    lines = [f"{k:<24}{_human(v):>12}" for k, v in cats.items() if v]
    lines.append(f"{'total':<24}{_human(total):>12}  ({n_dep}/{n_bl} BitLinear layers deployed)")
    if lut:
        lines.append(f"{'decode_layout':<24}{_human(lut):>12}  (CPU, in memory only: not saved; "
                     f"resident {_human(total + lut)})")
    if head_packed:
        lines.append(f"{'head_packed':<24}{_human(head_packed):>12}  (fbgemm copy of the int8 head, "
                     f"in memory only: not saved)")
    if n_w:
        lines.append(f"{'resident bits/weight':<24}{bits:>12.2f}  (ternary weights in RAM, "
                     f"padding included)")
    return dict(cats, total=total, bitlinear_layers=n_bl, deployed_layers=n_dep, decode_layout=lut,
                head_packed=head_packed, resident=total + lut + head_packed,
                resident_bits_per_weight=bits, text="\n".join(lines))


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def _format_version() -> int:
    import bitlinear
    for attr in ("FORMAT_VERSION", "PACKED_FORMAT_VERSION"):
        v = getattr(bitlinear, attr, None)
        if v is not None:
            return int(v)
    return 1


def _jsonable(x):
    try:
        json.dumps(x)
        return True
    except (TypeError, ValueError):
        return False


def save_deployed(model: nn.Module, path, metadata: Optional[Dict[str, str]] = None) -> None:
    """Write the model's state_dict to a safetensors file, with the packed format version
    (and each BitLinear's extra state) in the file's metadata. Tensors shared between several
    names are stored once and re-linked on load. Deploy first: un-deployed BitLinear layers are
    saved as float weights, which load_deployed rejects for a deployed model (shape mismatch)."""
    from safetensors.torch import save_file

    sd = model.state_dict()
    tensors, extra, aliases, by_ptr = {}, {}, {}, {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            if not _jsonable(v):
                raise TypeError(f"state_dict entry {k!r} ({type(v).__name__}) is not JSON-serialisable; "
                                "safetensors can store only tensors and string metadata")
            extra[k] = v
            continue
        key = (v.device, v.data_ptr(), v.numel(), v.dtype, tuple(v.shape), tuple(v.stride()))
        if v.numel() and key in by_ptr:
            aliases[k] = by_ptr[key]
            continue
        by_ptr[key] = k
        tensors[k] = v.detach().contiguous().cpu()
    meta = dict(metadata or {})
    meta[FORMAT_METADATA_KEY] = str(_format_version())
    meta[_EXTRA_METADATA_KEY] = json.dumps(extra)
    meta[_ALIAS_METADATA_KEY] = json.dumps(aliases)
    save_file(tensors, str(path), metadata=meta)


def _metadata_json(meta: dict, key: str, path) -> dict:
    """A JSON object stored under `key` in a safetensors header, with an error that names it."""
    try:
        value = json.loads(meta.get(key, "{}"))
    except ValueError as e:
        raise ValueError(f"{path}: metadata '{key}' is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: metadata '{key}' must be a JSON object, got "
                         f"{type(value).__name__}")
    return value


def load_deployed(model: nn.Module, path, strict: bool = True) -> nn.Module:
    """Load a file written by save_deployed into `model`, which must already have the same structure
    (built, converted and deployed the same way). Raises FormatVersionError if the file's packed
    format version differs from this build's, and ValueError naming the file and the layer for
    whatever every loader refuses (docs/packed_format.md, "What loading accepts"). Returns the
    model."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    version = meta.get(FORMAT_METADATA_KEY)
    if version is None:
        raise FormatVersionError(f"{path}: no '{FORMAT_METADATA_KEY}' in the safetensors metadata; "
                                 "not written by bitlinear.save_deployed")
    if version != str(_format_version()):
        raise FormatVersionError(f"{path}: packed format version {version}, this bitlinear reads "
                                 f"version {_format_version()}")
    device = next((t.device for t in model.state_dict().values() if isinstance(t, torch.Tensor)),
                  torch.device("cpu"))
    sd = load_file(str(path), device=str(device))
    aliases = _metadata_json(meta, _ALIAS_METADATA_KEY, path)
    for k, src in aliases.items():
        if src not in sd:
            raise ValueError(f"{path}: metadata '{_ALIAS_METADATA_KEY}' names a tensor {src!r} "
                             "that the file does not hold")
        sd[k] = sd[src]
    sd.update(_metadata_json(meta, _EXTRA_METADATA_KEY, path))
    try:
        # each BitLinear checks its tensors as every loader does (_checks.deployed_state):
        # shapes, in/out features, codes and padding codes, scales and bias; ValueError naming it
        model.load_state_dict(sd, strict=strict)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return model
