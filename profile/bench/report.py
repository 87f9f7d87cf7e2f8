"""The one table writer: a result JSON of either suite (harness.py's record schema) as plain text or
markdown. `python profile/bench --render FILE [--markdown]`.

A table per group of records (LAYOUTS: CPU per shape and thread count, GPU per timing mode), a row
per batch size M (CPU) or case (GPU), a column per implementation, cells "median (speedup vs the
baseline)"; then notes: hardware limits, weight streaming rates, tuning variants; the host-time
and training tables (SECTIONS: cells "median (time / nn.Linear's)"); targets, static memory, the
model case.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple


@dataclass(frozen=True)
class Layout:
    group: Tuple[str, ...]          # record fields: one table per distinct value
    row: Tuple[str, ...]            # record fields: one row per distinct value, a column each
    unit: str                       # "ms" or "us"
    extras: Tuple[Tuple[str, str, str], ...] = ()  # (record field of bitlinear, column, format)
    notes: bool = False             # per table: bitlinear's weight streaming at M=1, best GOPS


LAYOUTS: Dict[str, Layout] = {
    "cpu": Layout(group=("K", "N", "threads"), row=("M",), unit="ms", notes=True),
    "cuda": Layout(group=("mode",), row=("label",), unit="us",
                   extras=(("weight_gbs", "wGB/s", "{:.0f}"), ("frac_copy_bw", "%copy", "{:.0%}"))),
}
# the result's "host" and "train" sections (bench/train.py): suite -> layout, and what they are
SECTIONS: Dict[str, Dict[str, Layout]] = {
    "host": dict.fromkeys(("cpu", "cuda"), Layout(group=(), row=("case",), unit="us")),
    "train": {"cpu": Layout(group=("K", "N", "threads"), row=("M", "pass"), unit="ms"),
              "cuda": Layout(group=(), row=("label", "pass"), unit="us")},
}
SECTION_TEXT = {
    "host": "Host time per call of a {K}x{N} layer at M=1 ({dtype}, nn.Linear's default bias), "
            "weights hot: \"train forward\" with grad enabled and the weight requiring grad "
            "(BitLinear in training mode), \"no_grad\" under torch.no_grad() (BitLinear deployed, "
            "its eager fast path), \"no_grad, op path\" the same with the fast path off (every "
            "call through torch.ops.bitlinear.linear); "
            "{timing}.",
    "train": "Training step of one layer (no bias): fwd = the forward alone as in training, "
             "fwd+bwd = y = layer(x); y.backward(g) with x requiring grad; {timing}.",
}
RATIO = "time_vs_linear"  # the sections' ratio: time / nn.Linear's (same dtype), lower is better
MODES = {"graph": "CUDA graph replays (GPU time per call)",
         "eager": "eager (one call after a synchronize, launch included)",
         "wall": "host wall clock per call"}
SCALE = {"ms": 1.0, "us": 1e3}


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _cell(r, unit: str, speedup_key: str) -> str:
    if r is None:
        return "-"
    if "median_ms" not in r:
        return "skip" if "skipped" in r else "n/a"
    sp = r.get(speedup_key)
    return _num(r["median_ms"] * SCALE[unit]) + (f" ({sp:.2f}x)" if sp else "")


def _title(keys: Sequence[str], values: tuple) -> str:
    if tuple(keys) == ("mode",):
        return MODES.get(values[0], values[0])
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values))


def _hw_lines(meta: dict) -> List[str]:
    out = []
    for key, lim in meta.get("hw", {}).items():
        parts = []
        if "int8_peak_gops" in lim:
            parts.append(f"int8 peak {lim['int8_peak_gops']:.0f} GOPS ({lim.get('int8_peak_isa')})")
        if "read_bw_gbs" in lim:
            parts.append(f"read bandwidth {lim['read_bw_gbs']:.1f} GB/s")
        if "copy_gbs" in lim:
            parts.append(f"copy bandwidth {lim['copy_gbs']:.0f} GB/s (read + write)")
        if parts:
            out.append(f"- {'threads=' + key if key.isdigit() else key}: " + ", ".join(parts))
    if meta.get("hw_note"):
        out.append(meta["hw_note"])
    return out


def _tables(recs: List[dict], lay: Layout, impls: Sequence[str], ratio_key: str) -> List[object]:
    """A table per group (lay.group) of `recs`, a row per lay.row, a column per implementation."""
    doc: List[object] = []
    groups: Dict[tuple, List[dict]] = {}
    for r in recs:
        groups.setdefault(tuple(r.get(k) for k in lay.group), []).append(r)
    for gkey, rows in groups.items():
        index = {(tuple(r[k] for k in lay.row), r["impl"]): r for r in rows}
        row_keys = list(dict.fromkeys(tuple(r[k] for k in lay.row) for r in rows))
        header = list(lay.row) + list(impls) + [col for _, col, _ in lay.extras]
        body = []
        for rk in row_keys:
            line = [str(v) for v in rk] + [_cell(index.get((rk, name)), lay.unit, ratio_key)
                                           for name in impls]
            ours = index.get((rk, "bitlinear"), {})
            line += [fmt.format(ours[f]) if f in ours else "" for f, _, fmt in lay.extras]
            body.append(line)
        doc.append((_title(lay.group, gkey), header, body))
        if lay.notes and _streaming_note(rows):
            doc.append(_streaming_note(rows))
    return doc


def _section(result: dict, name: str, suite: str) -> List[object]:
    """The host-time or training tables of a result, if it has them."""
    sec = result.get(name)
    if not sec or not sec.get("records"):
        return []
    recs, lay = sec["records"], SECTIONS[name][suite]
    r0 = recs[0]
    impls = sec.get("impls") or list(dict.fromkeys(r["impl"] for r in recs))
    doc: List[object] = [SECTION_TEXT[name].format(timing=sec.get("timing", ""), **r0)
                         + f" Cells: median {lay.unit} per call (time / nn.Linear's of the same "
                           f"dtype: lower is better)."]
    doc += _tables(recs, lay, impls, RATIO)
    why = {r["impl"]: f"{k}: {r[k]}" for r in recs for k in ("skipped", "error") if k in r}
    doc += [f"- {n}: {w}" for n, w in why.items()]
    return doc


def _streaming_note(rows: List[dict]) -> str:
    bl1 = next((r for r in rows if (r["M"], r["impl"]) == (1, "bitlinear") and "weight_gbs" in r), None)
    if bl1 is None:
        return ""
    what = "its decode layout" if bl1.get("decode_layout") else "packed weights"
    s = f"bitlinear at M=1 streams {bl1['weight_gbs']:.1f} GB/s of {what}"
    if "frac_read_bw" in bl1:
        s += f" ({bl1['frac_read_bw']:.0%} of the measured read bandwidth)"
    big = [r for r in rows if r["impl"] == "bitlinear" and "frac_int8_peak" in r]
    if big:
        b = max(big, key=lambda r: r["gops"])
        s += f"; best {b['gops']:.0f} GOPS at M={b['M']} ({b['frac_int8_peak']:.0%} of the int8 peak)"
    return s + "."


def build(result: dict) -> List[object]:
    """The document: a list of paragraphs (str) and tables (title, header, rows)."""
    meta, recs = result["meta"], result["results"]
    lay = LAYOUTS[meta.get("suite", "cpu")]
    baseline = meta.get("baseline", "f32")
    speedup_key = f"speedup_vs_{baseline}"
    head = [meta.get("machine") or meta.get("device", "?"), f"torch {meta['torch']}"]
    if meta.get("cpu_path"):
        head.append(f"bitlinear CPU path {meta['cpu_path']}")
    if meta.get("cuda"):
        head.append(f"CUDA {meta['cuda']}")
    head += [meta.get("date", ""), f"load average {meta.get('loadavg_before')} before, "
                                   f"{meta.get('loadavg_after')} after"]
    doc: List[object] = ["; ".join(p for p in head if p) + "."]
    grid = [r for r in recs if "variant_of" not in r]
    if grid:
        doc[0] += (f"\nCells: median {lay.unit} per call (speedup vs {baseline}); "
                   f"{meta.get('cache', '')}.")
    doc += _hw_lines(meta)
    doc += _tables(grid, lay, meta["impls"], speedup_key)

    variants = [r for r in recs if "variant_of" in r and "median_ms" in r]
    if variants:
        doc.append("Variants of the bitlinear path (vs its default):")
        for r in variants:
            base = next((b for b in grid if b["impl"] == r["variant_of"] and "median_ms" in b
                         and all(b.get(k) == r.get(k) for k in (*lay.row, *lay.group))), None)
            ratio = f" ({base['median_ms'] / r['median_ms']:.2f}x the default)" if base else ""
            doc.append(f"- {' '.join(str(r.get(k)) for k in lay.row)} {r['impl']} "
                       f"{r.get('mode', '')}: {_num(r['median_ms'] * SCALE[lay.unit])} {lay.unit}{ratio}")
    suite = meta.get("suite", "cpu")
    doc += _section(result, "host", suite) + _section(result, "train", suite)
    doc += [f"- target {t['name']}: {t['value']:.2f} (want {t.get('op', '>=')} {t['want']}) "
            f"{'PASS' if t['ok'] else 'MISS'}" for t in result.get("targets") or []]

    shapes = meta.get("shapes")
    mem = {r["impl"]: r["static_bytes"] for r in recs
           if shapes and "static_bytes" in r and [r["K"], r["N"]] == list(shapes[0])}
    if mem:
        doc.append(f"Static layer memory at K={shapes[0][0]}, N={shapes[0][1]}: "
                   + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in mem.items()) + ".")
    doc += _model(result.get("model"))
    doc += _hf_bitnet(result.get("hf_bitnet"))
    return doc


def _hf_bitnet(info) -> List[object]:
    if info and "rows" in info:
        vs = "its default, torch.compile" if "compiled" in info["ratio_against"] else "eager"
        return [f"Tiny transformers BitNet model (hidden {info['hidden']}, intermediate "
                f"{info['inter']}, {info['layers']} layers, {info['dtype']}), decode with the KV "
                f"cache, {info['threads']} thread(s); median of {info['repeats']} runs of "
                f"{info['steps']} steps (p10: 10th percentile of all steps). Ours is "
                f"{info['ratio']:.2f}x transformers ({vs}) and {info['ratio_vs_eager']:.2f}x its "
                f"eager path in tokens/s:",
                ("", ["implementation", "ms/token", "tokens/s", "p10 ms"],
                 [[name, f"{r['step_ms']:.3f}", f"{r['tokens_per_s']:.1f}", f"{r['p10_ms']:.3f}"]
                  for name, r in info["rows"].items()])]
    if info and "error" in info:
        return [f"transformers BitNet case skipped: {info['error']}"]
    return []


def _model(model) -> List[object]:
    if model and "results" in model:
        c = model["config"]
        return [f"Llama (random init, hidden {c['hidden_size']}, {c['num_hidden_layers']} layers, "
                f"FFN {c['intermediate_size']}, vocab {c['vocab_size']}), batch 1, prompt "
                f"{model['prompt_len']} tokens; float {model['bytes']['float'] / 2**20:.1f} MiB, "
                f"deployed {model['bytes']['deployed'] / 2**20:.1f} MiB:",
                ("", ["threads", "model", "prefill ms", "decode ms/token", "decode tok/s"],
                 [[str(r["threads"]), r["model"], f"{r['prefill_ms']:.1f}",
                   f"{r['decode_ms_per_token']:.2f}", f"{r['decode_tokens_per_s']:.1f}"]
                  for r in model["results"]])]
    if model and "error" in model:
        return [f"Llama case skipped: {model['error']}"]
    return []


def _numeric(s: str) -> bool:
    return s[:1].isdigit() or s[:1] in "-." or s in ("skip", "n/a")


def render(result: dict, markdown: bool = False) -> str:
    """Paragraphs and list items ("- ...") as they are, tables aligned (plain) or piped (markdown)."""
    out: List[str] = []
    prev_item = False
    for block in build(result):
        item = isinstance(block, str) and block.startswith("- ")
        if out and not (item and prev_item):
            out.append("")
        prev_item = item
        if isinstance(block, str):
            out.append(block)
            continue
        title, header, rows = block
        if title:
            out += [title, ""] if markdown else [title]
        right = [all(_numeric(r[i]) for r in rows) for i in range(len(header))]
        if markdown:
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "".join("---:|" if a else "---|" for a in right))
            out += ["| " + " | ".join(r) + " |" for r in rows]
        else:
            widths = [max(len(x) for x in col) for col in zip(header, *rows)]
            for r in [header] + rows:
                out.append("  ".join(c.rjust(w) if a else c.ljust(w)
                                     for c, w, a in zip(r, widths, right)).rstrip())
    return "\n".join(out)
