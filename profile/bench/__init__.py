"""The benchmark suite, run from a source checkout: `python profile/bench [--device cuda]` (see
docs/benchmarks.md). Not part of the installed package: it imports bitlinear, never the reverse.

  timing.py   the timers (CPU wall clock, CUDA events / graphs) and the weight rotation
  harness.py  implementation registry, record schema, speedups, JSON
  cpu.py      the CPU suite (IMPLS registry, layer sweep, decode rows, Llama model case)
  gpu.py      the GPU suite (IMPLS registry, CUDA cases, targets, gpu_check.sh's table)
  train.py    the training and host-time rows of both suites
  hf.py       the tiny transformers BitNet decode case (also profile/hf_decode.py)
  report.py   the table writer (plain text, markdown) for either suite's JSON
  cli.py      the command line; __main__.py runs it
"""
