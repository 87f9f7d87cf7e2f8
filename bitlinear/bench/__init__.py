"""The benchmark harness: `python -m bitlinear bench [--device cuda]` (see docs/benchmarks.md).

  timing.py   the timers (CPU wall clock, CUDA events / graphs) and the weight rotation
  harness.py  implementation registry, record schema, speedups, JSON
  cpu.py      the CPU suite (IMPLS registry, layer sweep, Llama model case)
  gpu.py      the GPU suite (IMPLS registry, CUDA cases, targets)
  report.py   the table writer (plain text, markdown) for either suite's JSON
  cli.py      the `bench` subcommand
"""
