"""`python profile/bench`: run the CPU suite (bench/cpu.py) or, with --device cuda, the GPU suite
(bench/gpu.py), write the JSON and print its table (bench/report.py)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python profile/bench",
        description="Time deployed BitLinear against float32/bfloat16 nn.Linear, torch's int8 paths and "
                    "the fake-quant forward over batch sizes M, in one process (--device cuda: against "
                    "cuBLAS bf16 and torch._int_mm); then training rows (a BitLinear train step "
                    "against nn.Linear of the same dtype; on CUDA also torchao's bitnet_training "
                    "where installed) and host-time rows (per call of a 64x64 layer). Writes JSON and "
                    "prints tables of median latencies with speedups vs the baseline (f32 nn.Linear; "
                    "on CUDA bf16) or, for training and host time, time / nn.Linear's.",
        epilog="`python profile/bench gpu [options]` is --device cuda, plus --table (only the cases "
               "of profile/gpu_check.sh's table), --rehearse --out F (its CPU rehearsal) and "
               "--issue-table RESULT --out F (the table's rows from a result); see cli.gpu_main.")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and few reps (a smoke test, seconds); CUDA: the 4 headline cases")
    p.add_argument("--shapes", type=_shapes, default=None,
                   help="KxN list, default 4096x4096,2560x6912,6912x2560 (CUDA: with --ms, a grid "
                        "instead of the built-in cases)")
    p.add_argument("--ms", type=_ints, default=None, help="batch sizes M, default 1,2,4,...,1024")
    p.add_argument("--threads", type=_ints, default=None,
                   help=f"CPU thread counts, default all cores and 1 ({os.cpu_count()},1)")
    p.add_argument("--impls", type=lambda s: [v for v in s.split(",") if v], default=None,
                   help="a subset of the suite's implementations, layer sweep and training rows "
                        "(train_*) alike; a part none of them names is not run (see docs/benchmarks.md)")
    p.add_argument("--reps", type=int, default=30,
                   help="timed runs per point (median), default 30 (CUDA: at least 30)")
    p.add_argument("--max-seconds", type=float, default=2.0,
                   help="CPU cap per point: slow points get fewer runs (>= 5); counts are recorded")
    p.add_argument("--max-call-seconds", type=float, default=3.0,
                   help="CPU: skip baseline points predicted to take longer than this per call (recorded)")
    p.add_argument("--warm-cache", action="store_true",
                   help="time one weight copy repeatedly (default: cycle through copies totalling "
                        "4x the last-level cache (CUDA: 2x L2), so weights stream from memory)")
    p.add_argument("--no-model", action="store_true", help="skip the model-level cases (transformers Llama; tiny BitNet: transformers' layers against convert_bitnet)")
    p.add_argument("--no-train", action="store_true",
                   help="skip the training rows (default: CPU 4096x4096 at M=8,512 on all cores, "
                        "or --shapes/--ms/--threads; CUDA: two prefill-sized cases, or the "
                        "--shapes x --ms grid)")
    p.add_argument("--no-host", action="store_true",
                   help="skip the host-time rows (per call of a 64x64 layer at M=1)")
    p.add_argument("--no-hw", action="store_true",
                   help="skip measuring hardware limits (CPU: int8 peak / read bandwidth with "
                        "profile/hw.py; CUDA: copy bandwidth)")
    p.add_argument("--hw", metavar="JSON", default=None,
                   help="CPU limits from a file (`python profile/hw.py --json F`, or a bench result) "
                        "instead of measuring them")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="which suite (default cpu)")
    p.add_argument("--out", "--json", dest="out", default=None,
                   help="JSON path (default profile/results/bench-<cpu|quick|cuda>-<time>.json, "
                        "in the checkout this suite runs from)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--render", metavar="JSON", default=None,
                   help="print the table of an existing result file instead of running")
    p.add_argument("--markdown", action="store_true", help="with --render: a markdown table")
    return p


def run_cli(args) -> int:
    from . import harness, report

    if args.render:
        with open(args.render) as f:
            print(report.render(json.load(f), markdown=args.markdown))
        return 0
    if args.device == "cuda":
        from . import gpu as suite
    else:
        from . import cpu as suite
    why = harness.check_names(args.impls or [], *suite.REGISTRIES)
    if why:
        print(f"bench: {why}", file=sys.stderr)
        return 2
    if any(m < 1 for m in args.ms or []) or any(k < 1 or n < 1 for k, n in args.shapes or []) \
            or any(t < 1 for t in args.threads or []):
        print("bench: sizes and thread counts must be >= 1", file=sys.stderr)
        return 2
    name = "-".join(n for n in ("cuda" if args.device == "cuda" else "", "quick" if args.quick else "")
                    if n) or "cpu"
    out = args.out or harness.default_out(name)
    args.save = lambda partial: harness.write(partial, out)  # a suite may save after each part
    result = suite.run(args)
    if isinstance(result, int):
        return result
    harness.write(result, out)
    print(report.render(result))
    print(f"\nwrote {out}")
    return 0


def main(argv=None) -> int:
    """`python profile/bench [options]`."""
    return run_cli(build_parser().parse_args(argv))


def gpu_main(argv=None) -> int:
    """`python profile/bench gpu [options]` is `python profile/bench --device cuda [options]`,
    plus: --table (only issue 19's table cases), --rehearse --out F (the CPU rehearsal, no GPU),
    --issue-table RESULT.json --out F (the table's rows from a result)."""
    from . import gpu
    argv = list(sys.argv[1:] if argv is None else argv)
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    if "--issue-table" in argv:
        with open(argv[argv.index("--issue-table") + 1]) as f:
            table = gpu.issue_table(json.load(f))
        if out:
            with open(out, "w") as f:
                json.dump(table, f, indent=1)
        for r in table["rows"]:
            v = "not measured" if r["value"] is None else f"{r['value']:.3g}"
            ok = ("-" if r["ok"] is None else "(rehearsal)" if table["rehearsal"] else
                  "MET" if r["ok"] else "missed")
            print(f"{r['row']:<58} {v:>13} {r['op']} {r['want']:<5} {ok}")
        print(f"card: {table['card']}; {table['met']} of {len(table['rows'])} targets met, "
              f"{table['measured']} measured" + (f" ({table['rehearsal']})" if table["rehearsal"] else ""))
        return 0
    if "--rehearse" in argv:
        return gpu.rehearse(build_parser().parse_args(gpu.REHEARSAL_ARGS),
                            out or "gpu_bench_rehearsal.json")
    if "--table" in argv:
        argv.remove("--table")
        os.environ["BITLINEAR_BENCH_CASES"] = "table"
    return main(["--device", "cuda", *argv])


if __name__ == "__main__":
    sys.exit(main())
