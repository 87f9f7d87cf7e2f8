"""Model-level decode speed: a tiny transformers BitNet model on transformers' own BitNet layers
against the same checkpoint converted with bitlinear.hf.convert_bitnet (our kernels). CPU.

    python profile/hf_decode.py --threads 2 [--steps 64] [--dtype bfloat16] [--json out.json]

The measurement lives in profile/bench/hf.py (see its docstring), which the benchmark suite
also runs as its "hf_bitnet" model row (`python profile/bench`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import hf  # noqa: E402  (profile/bench/, next to this file)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="decode runs per implementation (median)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--inter", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--skip-compiled", action="store_true", help="no torch.compile'd transformers row")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    info = hf.run(a.threads, a.steps, a.warmup, a.repeats, a.dtype, a.hidden, a.inter, a.layers,
                  compiled=not a.skip_compiled)
    print(hf.render(info))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(info, f, indent=1)
    return info


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
