"""`python -m bitlinear bench`: run the benchmark suite, write JSON, print a table."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from typing import List

import torch

from . import suite


def _ints(s: str) -> List[int]:
    try:
        return [int(v) for v in s.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}")


def _shapes(s: str):
    out = []
    for item in s.replace(" ", "").split(","):
        if not item:
            continue
        try:
            k, n = item.lower().split("x")
            out.append((int(k), int(n)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"shapes are KxN, comma separated (4096x4096,2560x6912); "
                                             f"got {item!r}")
    return out


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="benchmark deployed BitLinear against torch linear layers",
        description="Time deployed BitLinear against float32/bfloat16 nn.Linear, torch's int8 paths and "
                    "the fake-quant forward over batch sizes M, in one process. Writes JSON and prints "
                    "a table of median latencies with speedups vs float32 nn.Linear.")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and few reps (a smoke test, seconds)")
    p.add_argument("--shapes", type=_shapes, default=None,
                   help="KxN list, default 4096x4096,2560x6912,6912x2560")
    p.add_argument("--ms", type=_ints, default=None, help="batch sizes M, default 1,2,4,...,1024")
    p.add_argument("--threads", type=_ints, default=None,
                   help=f"thread counts, default all cores and 1 ({os.cpu_count()},1)")
    p.add_argument("--impls", type=lambda s: [v for v in s.split(",") if v], default=None,
                   help="subset of " + ",".join(suite.IMPLS))
    p.add_argument("--reps", type=int, default=30, help="timed runs per point (median), default 30")
    p.add_argument("--max-seconds", type=float, default=2.0,
                   help="cap per point: slow points get fewer runs (>= 5); counts are recorded")
    p.add_argument("--max-call-seconds", type=float, default=3.0,
                   help="skip baseline points predicted to take longer than this per call (recorded)")
    p.add_argument("--warm-cache", action="store_true",
                   help="time one weight copy repeatedly (default: cycle through copies totalling "
                        "4x the last-level cache, so weights stream from memory)")
    p.add_argument("--no-model", action="store_true", help="skip the transformers Llama case")
    p.add_argument("--no-hw", action="store_true", help="skip measuring int8 peak / bandwidth")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cuda runs bitlinear.bench.gpu (helper module) instead")
    p.add_argument("--out", default=None,
                   help="JSON path (default profile/results/bench-<cpu|quick>-<time>.json)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--render", metavar="JSON", default=None,
                   help="print the table of an existing result file instead of running")
    p.add_argument("--markdown", action="store_true", help="with --render: a markdown table")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args) -> int:
    if args.render:
        with open(args.render) as f:
            result = json.load(f)
        print(format_markdown(result) if args.markdown else format_table(result))
        return 0
    if args.device == "cuda":
        return _run_gpu(args)
    import bitlinear

    quick = args.quick
    shapes = args.shapes or (list(suite.QUICK_SHAPES) if quick else list(suite.SHAPES))
    ms = args.ms or (list(suite.QUICK_MS) if quick else list(suite.MS))
    cores = os.cpu_count() or 1
    threads = args.threads or ([cores] if quick else sorted({cores, 1}, reverse=True))
    impls = args.impls or list(suite.IMPLS)
    for name in impls:
        if name not in suite.IMPLS:
            print(f"bench: unknown implementation {name!r}; known: {', '.join(suite.IMPLS)}",
                  file=sys.stderr)
            return 2
    if any(m < 1 for m in ms) or any(k < 1 or n < 1 for k, n in shapes) or any(t < 1 for t in threads):
        print("bench: sizes and thread counts must be >= 1", file=sys.stderr)
        return 2
    reps = 5 if quick else args.reps
    progress = not args.no_progress

    load_before = _loadavg()
    hw = {}
    if not args.no_hw and not quick:
        for t in threads:
            hw[t] = suite.hardware_limits(t)
    records = suite.run_layer_suite(shapes, ms, threads, impls, reps=reps,
                                    max_seconds=0.5 if quick else args.max_seconds,
                                    progress=progress, hw_limits=hw,
                                    max_call_seconds=args.max_call_seconds,
                                    cold_bytes=0 if args.warm_cache else None)
    model = None
    if not args.no_model:
        try:
            model = suite.run_model_suite(quick, threads)
        except ImportError as e:
            model = {"error": f"transformers not installed: {e}"}

    meta = {
        "machine": suite.machine_name(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "bitlinear": bitlinear.collect_info(),
        "cpu_path": bitlinear.cpu_isa(),
        "quantized_engine": torch.backends.quantized.engine,
        "impls_unavailable": {k: v for k, v in suite.available_impls().items() if v},
        "quick": quick, "shapes": [list(s) for s in shapes], "ms": ms, "threads": threads, "impls": impls,
        "reps": reps, "max_seconds": args.max_seconds,
        "hw": {str(t): v for t, v in hw.items()},
        "timing": "wall clock, median of reps after 3 warm-up runs, torch.inference_mode",
        "cache": "warm (one weight copy)" if args.warm_cache else
                 f"cold: calls cycle through weight copies totalling >= 4 x "
                 f"{suite.last_level_cache_bytes() >> 20} MiB last-level cache",
        "loadavg_before": load_before, "loadavg_after": _loadavg(),
    }
    result = {"meta": meta, "results": records, "model": model}
    out = args.out or os.path.join(
        "profile", "results",
        f"bench-{'quick' if quick else 'cpu'}-{_dt.datetime.now():%Y%m%d-%H%M%S}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(format_table(result))
    print(f"\nwrote {out}")
    return 0


def _loadavg():
    """1-minute load average (other processes competing for the cores skew timings)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def format_table(result: dict) -> str:
    meta, recs = result["meta"], result["results"]
    impls = meta["impls"]
    lines = [f"{meta['machine']} | torch {meta['torch']} | bitlinear CPU path {meta['cpu_path']}"
             f" | load average {meta.get('loadavg_before')} -> {meta.get('loadavg_after')}",
             "median ms per call (speedup vs f32 nn.Linear)"]
    for t, lim in meta.get("hw", {}).items():
        parts = []
        if "int8_peak_gops" in lim:
            parts.append(f"int8 peak {lim['int8_peak_gops']:.0f} GOPS ({lim.get('int8_peak_isa')})")
        if "read_bw_gbs" in lim:
            parts.append(f"read bandwidth {lim['read_bw_gbs']:.1f} GB/s")
        if parts:
            lines.append(f"threads={t}: " + ", ".join(parts))
    keys = sorted({(r["K"], r["N"], r["threads"]) for r in recs},
                  key=lambda k: (meta["shapes"].index(list(k[:2])) if list(k[:2]) in meta["shapes"]
                                 else 0, -k[2]))
    width = 18
    for K, N, t in keys:
        lines.append("")
        lines.append(f"K={K} N={N} threads={t}")
        lines.append(f"{'M':>5} " + "".join(f"{name:>{width}}" for name in impls))
        for M in meta["ms"]:
            row = f"{M:>5} "
            for name in impls:
                r = next((r for r in recs if (r["K"], r["N"], r["threads"], r["M"], r["impl"])
                          == (K, N, t, M, name)), None)
                if r is not None and "skipped" in r:
                    cell = "skip"
                elif r is None or "median_ms" not in r:
                    cell = "n/a"
                else:
                    sp = r.get("speedup_vs_f32")
                    cell = f"{r['median_ms']:.3f}" + (f" ({sp:.2f}x)" if sp else "")
                row += f"{cell:>{width}}"
            lines.append(row)
        bl1 = next((r for r in recs if (r["K"], r["N"], r["threads"], r["M"], r["impl"])
                    == (K, N, t, 1, "bitlinear") and "weight_gbs" in r), None)
        if bl1 is not None:
            s = f"  bitlinear M=1: {bl1['weight_gbs']:.1f} GB/s of weight bytes"
            if "frac_read_bw" in bl1:
                s += f" ({bl1['frac_read_bw']:.0%} of read bandwidth)"
            lines.append(s)
        big = [r for r in recs if (r["K"], r["N"], r["threads"], r["impl"]) == (K, N, t, "bitlinear")
               and "frac_int8_peak" in r]
        if big:
            r = max(big, key=lambda r: r["gops"])
            lines.append(f"  bitlinear best: {r['gops']:.0f} GOPS at M={r['M']} "
                         f"({r['frac_int8_peak']:.0%} of int8 peak)")
    mem = {}
    for r in recs:
        if "static_bytes" in r and (r["K"], r["N"]) == tuple(meta["shapes"][0]):
            mem[r["impl"]] = r["static_bytes"]
    if mem:
        lines.append("")
        lines.append(f"static memory at K={meta['shapes'][0][0]} N={meta['shapes'][0][1]}: " + ", ".join(
            f"{k} {v / 2**20:.2f} MiB" for k, v in mem.items()))
    model = result.get("model")
    if model and "results" in model:
        c = model["config"]
        lines.append("")
        lines.append(f"Llama (random init, hidden {c['hidden_size']}, {c['num_hidden_layers']} layers, "
                     f"vocab {c['vocab_size']}), batch 1, prompt {model['prompt_len']}: "
                     f"float {model['bytes']['float'] / 2**20:.1f} MiB, "
                     f"deployed {model['bytes']['deployed'] / 2**20:.1f} MiB")
        for r in model["results"]:
            lines.append(f"  threads={r['threads']:<3} {r['model']:<9} prefill {r['prefill_ms']:8.2f} ms"
                         f"   decode {r['decode_ms_per_token']:7.2f} ms/token "
                         f"({r['decode_tokens_per_s']:.1f} tok/s)")
    elif model and "error" in model:
        lines.append(f"\nLlama case skipped: {model['error']}")
    return "\n".join(lines)


def format_markdown(result: dict) -> str:
    """Markdown: per shape and thread count, median ms and speedup vs f32 for each implementation."""
    meta, recs = result["meta"], result["results"]
    impls = meta["impls"]
    out = [f"Machine: {meta['machine']}; torch {meta['torch']}; bitlinear CPU path `{meta['cpu_path']}`; "
           f"{meta['date']}; load average {meta.get('loadavg_before')} before, "
           f"{meta.get('loadavg_after')} after. Cells: median ms (speedup vs f32 nn.Linear)."]
    for t, lim in meta.get("hw", {}).items():
        if "int8_peak_gops" in lim or "read_bw_gbs" in lim:
            out.append(f"- threads={t}: int8 peak {lim.get('int8_peak_gops', float('nan')):.0f} GOPS "
                       f"({lim.get('int8_peak_isa')}), read bandwidth "
                       f"{lim.get('read_bw_gbs', float('nan')):.1f} GB/s")
    for K, N in [tuple(s) for s in meta["shapes"]]:
        for t in meta["threads"]:
            rows = [r for r in recs if (r["K"], r["N"], r["threads"]) == (K, N, t)]
            if not rows:
                continue
            out += ["", f"K={K}, N={N}, threads={t}", "",
                    "| M | " + " | ".join(impls) + " |", "|---:|" + "---:|" * len(impls)]
            for M in meta["ms"]:
                cells = []
                for name in impls:
                    r = next((r for r in rows if (r["M"], r["impl"]) == (M, name)), None)
                    if r is None or "median_ms" not in r:
                        cells.append("skip" if r is not None and "skipped" in r else "n/a")
                    else:
                        sp = r.get("speedup_vs_f32")
                        cells.append(f"{r['median_ms']:.3g}" + (f" ({sp:.2f}x)" if sp else ""))
                out.append(f"| {M} | " + " | ".join(cells) + " |")
            bl1 = next((r for r in rows if (r["M"], r["impl"]) == (1, "bitlinear") and "weight_gbs" in r),
                       None)
            if bl1:
                s = f"bitlinear at M=1 streams {bl1['weight_gbs']:.1f} GB/s of packed weights"
                if "frac_read_bw" in bl1:
                    s += f" ({bl1['frac_read_bw']:.0%} of the measured read bandwidth)"
                big = [r for r in rows if r["impl"] == "bitlinear" and "frac_int8_peak" in r]
                if big:
                    b = max(big, key=lambda r: r["gops"])
                    s += (f"; best {b['gops']:.0f} GOPS at M={b['M']} "
                          f"({b['frac_int8_peak']:.0%} of the int8 peak)")
                out += ["", s + "."]
    mem = {}
    for r in recs:
        if "static_bytes" in r and [r["K"], r["N"]] == list(meta["shapes"][0]):
            mem[r["impl"]] = r["static_bytes"]
    if mem:
        out += ["", f"Static layer memory at K={meta['shapes'][0][0]}, N={meta['shapes'][0][1]}: "
                + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in mem.items()) + "."]
    model = result.get("model")
    if model and "results" in model:
        c = model["config"]
        out += ["", f"Llama (random init, hidden {c['hidden_size']}, {c['num_hidden_layers']} layers, "
                f"FFN {c['intermediate_size']}, vocab {c['vocab_size']}), batch 1, prompt "
                f"{model['prompt_len']} tokens; float {model['bytes']['float'] / 2**20:.1f} MiB, "
                f"deployed {model['bytes']['deployed'] / 2**20:.1f} MiB:", "",
                "| threads | model | prefill ms | decode ms/token | decode tok/s |",
                "|---:|---|---:|---:|---:|"]
        for r in model["results"]:
            out.append(f"| {r['threads']} | {r['model']} | {r['prefill_ms']:.1f} | "
                       f"{r['decode_ms_per_token']:.2f} | {r['decode_tokens_per_s']:.1f} |")
    return "\n".join(out)


def _run_gpu(args) -> int:
    try:
        from . import gpu
    except ImportError as e:
        print(f"bench --device cuda: bitlinear.bench.gpu is not available ({e})", file=sys.stderr)
        return 2
    if not hasattr(gpu, "main"):
        print("bench --device cuda: bitlinear.bench.gpu has no main()", file=sys.stderr)
        return 2
    argv = []
    if args.out:
        argv += ["--json", args.out]
    if args.quick:
        argv += ["--quick"]
    return int(gpu.main(argv) or 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bitlinear.bench.cli")
    sub = parser.add_subparsers(dest="cmd")
    add_parser(sub)
    args = parser.parse_args(["bench"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
