"""Thin wrapper around the benchmark suite: `python profile/profile.py [bench options]`
is `python -m bitlinear bench [options]` (see docs/benchmarks.md); plot with profile/plot.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bitlinear.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
