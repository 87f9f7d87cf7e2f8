"""The project's benchmark suite: `python -m bitlinear bench` (see docs/benchmarks.md)."""
