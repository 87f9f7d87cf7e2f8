"""Command line: python -m bitlinear {info,bench,demo}."""
from __future__ import annotations

import argparse
import importlib
import json
import sys

# Subcommands that live in their own modules; each exposes add_parser(subparsers) and sets
# `func` (namespace -> exit code) with set_defaults.
_PLUGINS = ("bitlinear.bench", "bitlinear.demo")


def _info(args) -> int:
    from ._info import collect_info

    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            if isinstance(v, list):
                v = ", ".join(v)
            print(f"{k:<{width}}  {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bitlinear",
                                description="bitlinear: ternary-weight linear layers for PyTorch")
    sub = p.add_subparsers(dest="command", metavar="{info,bench,demo}")
    pi = sub.add_parser("info", help="show version, CPU kernel path, threads, CUDA build, torch",
                        description="Show what this bitlinear installation runs: version, the CPU "
                                    "kernel path in use, OpenMP threads, whether CUDA kernels are "
                                    "built, and the torch version.")
    pi.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pi.set_defaults(func=_info)
    for mod in _PLUGINS:
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        m.add_parser(sub)
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
