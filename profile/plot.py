"""Draw PNGs from a benchmark JSON (profile/results/*.json, written by `python profile/bench`).

    python profile/plot.py [results.json] [--out profile/plots]

Without a path it uses the newest JSON in profile/results/. Writes:
  latency_t<threads>.png     median latency vs batch size M, one panel per (K, N), log axes
  throughput_t<threads>.png  tokens/s vs M, same layout
  memory_speedup.png         static weight memory per implementation, and speedup vs float32
                             nn.Linear at a few M (all thread counts)
"""
import argparse
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STYLE = {  # one colour / marker per implementation, stable across plots
    "bitlinear": ("tab:red", "o", 2.6), "f32": ("tab:blue", "s", 1.6), "bf16": ("tab:cyan", "^", 1.4),
    "int8_dynamic": ("tab:green", "D", 1.4), "int_mm": ("tab:olive", "v", 1.4),
    "fake_quant": ("tab:gray", "x", 1.2),
}
LABEL = {"bitlinear": "BitLinear deployed (2-bit)", "f32": "nn.Linear float32",
         "bf16": "nn.Linear bfloat16", "int8_dynamic": "torch quantize_dynamic int8",
         "int_mm": "torch._int_mm int8", "fake_quant": "BitLinear fake quant (training fwd)"}


def _has_layer_results(path: str) -> bool:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return any("median_ms" in r and "K" in r and "threads" in r and "pass" not in r
               for r in data.get("results", []))


def newest_json() -> str:
    """The newest CPU result with layer rows (training-only or host-only runs have none)."""
    files = sorted(glob.glob(os.path.join(HERE, "results", "*.json")), key=os.path.getmtime)
    files = [f for f in files if _has_layer_results(f)]
    if not files:
        sys.exit("plot.py: no JSON with layer results in profile/results/; run "
                 "`python profile/bench` first")
    return files[-1]


def _series(recs, K, N, t, impl, key):
    pts = sorted((r["M"], r[key]) for r in recs
                 if (r["K"], r["N"], r["threads"], r["impl"]) == (K, N, t, impl) and key in r)
    return [p[0] for p in pts], [p[1] for p in pts]


def _shapes(meta):
    return [tuple(s) for s in meta["shapes"]]


def _cache_note(meta) -> str:
    cache = meta.get("cache", "")
    return ", cold cache" if cache.startswith("cold") else ", warm cache" if cache else ""


def plot_vs_m(result, key, ylabel, fname_prefix, out_dir, transform=lambda v: v):
    meta, recs = result["meta"], result["results"]
    paths = []
    for t in meta["threads"]:
        shapes = _shapes(meta)
        fig, axes = plt.subplots(1, len(shapes), figsize=(5.2 * len(shapes), 4.6), squeeze=False)
        for ax, (K, N) in zip(axes[0], shapes):
            for impl in meta["impls"]:
                ms, vs = _series(recs, K, N, t, impl, key)
                if not ms:
                    continue
                color, marker, lw = STYLE.get(impl, ("k", ".", 1.0))
                ax.plot(ms, [transform(v) for v in vs], color=color, marker=marker, lw=lw, ms=4,
                        label=LABEL.get(impl, impl))
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"K={K}, N={N}")
            ax.set_xlabel("batch size M (tokens)")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel(ylabel)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", fontsize=9, frameon=False,
                   ncol=min(len(labels), 6 if len(shapes) >= 3 else 3))
        fig.suptitle(f"{ylabel} vs batch size - {meta['machine']}, {t} thread(s), "
                     f"torch {meta['torch']}, bitlinear path {meta['cpu_path']}{_cache_note(meta)}",
                     fontsize=11)
        fig.tight_layout(rect=(0, 0.12 if len(shapes) < 3 else 0.08, 1, 0.95))
        path = os.path.join(out_dir, f"{fname_prefix}_t{t}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_memory_speedup(result, out_dir):
    meta, recs = result["meta"], result["results"]
    shapes = _shapes(meta)
    K, N = shapes[0]
    impls = [i for i in meta["impls"]
             if any(r["impl"] == i and "static_bytes" in r and (r["K"], r["N"]) == (K, N) for r in recs)]
    mem = [next(r["static_bytes"] for r in recs if r["impl"] == i and "static_bytes" in r
                and (r["K"], r["N"]) == (K, N)) / 2**20 for i in impls]
    ms_all = meta["ms"]
    pick = [m for m in (1, 16, 256, 1024) if m in ms_all] or ms_all[:4]
    cases = [(k, n, t) for (k, n) in shapes for t in meta["threads"]]
    from matplotlib.ticker import FuncFormatter

    ncols = 3
    nrows = -(-(1 + len(pick)) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.4 * nrows), squeeze=False)
    panels = [a for row in grid for a in row]
    for a in panels[1 + len(pick):]:
        a.axis("off")
    ax = panels[0]
    bars = ax.bar(range(len(impls)), mem, color=[STYLE.get(i, ("k",))[0] for i in impls])
    for b, v in zip(bars, mem):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(impls)), impls, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("MiB")
    ax.set_title(f"static layer memory, K={K} N={N}", fontsize=10)
    others = [i for i in impls if i != "f32"]
    width = 0.8 / max(1, len(others))
    for ax, M in zip(panels[1:], pick):
        for j, impl in enumerate(others):
            vals = []
            for (k, n, t) in cases:
                r = next((r for r in recs if (r["K"], r["N"], r["threads"], r["M"], r["impl"])
                          == (k, n, t, M, impl) and "speedup_vs_f32" in r), None)
                vals.append(r["speedup_vs_f32"] if r else 0.0)
            xs = [c + (j - (len(others) - 1) / 2) * width for c in range(len(cases))]
            ax.bar(xs, vals, width, color=STYLE.get(impl, ("k",))[0], label=impl)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}x" if f"{v:.0e}"[0] in "25" else ""))
        ax.set_xticks(range(len(cases)), [f"{k}x{n} {t}t" for k, n, t in cases], fontsize=8,
                      rotation=30, ha="right")
        ax.set_title(f"speedup vs f32 nn.Linear, M={M}", fontsize=10)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    handles, labels = panels[1].get_legend_handles_labels()
    fig.legend(handles, [LABEL.get(lb, lb) for lb in labels], loc="lower center", fontsize=9,
               frameon=False, ncol=len(labels))
    fig.suptitle(f"memory and speedup - {meta['machine']}, torch {meta['torch']}, "
                 f"bitlinear path {meta['cpu_path']}{_cache_note(meta)}", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    path = os.path.join(out_dir, "memory_speedup.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", nargs="?", default=None)
    p.add_argument("--out", default=os.path.join(HERE, "plots"))
    args = p.parse_args(argv)
    path = args.json or newest_json()
    with open(path) as f:
        result = json.load(f)
    if result["meta"].get("suite", "cpu") != "cpu":
        sys.exit(f"plot.py: {path} is not a CPU suite result; "
                 "print its table with `python profile/bench --render FILE`")
    os.makedirs(args.out, exist_ok=True)
    paths = plot_vs_m(result, "median_ms", "latency (ms)", "latency", args.out)
    paths += plot_vs_m(result, "tokens_per_s", "throughput (tokens/s)", "throughput", args.out)
    paths.append(plot_memory_speedup(result, args.out))
    for pth in paths:
        print(pth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
