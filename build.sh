#!/usr/bin/env bash
# bitlinear build driver. Does all the set-up on a fresh machine (a virtualenv in .venv with the
# pinned CPU build of torch, the build and test dependencies), then:
#   ./build.sh          main job: clean rebuild, verify `import _bitlinear`, run the demo
#   ./build.sh test     clean rebuild, verify, then every test: the plain C core tests, then pytest
#   ./build.sh build    build only
# Environment: PYTHON (interpreter for the venv, default python3), BITLINEAR_VENV (default .venv),
# BITLINEAR_FORCE_CPU=1 (skip CUDA), TORCH_SPEC (default torch==2.13.0; a plain `pip install torch`
# would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-main}
PYTHON=${PYTHON:-python3}
VENV=${BITLINEAR_VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

step() { printf '\n==> %s\n' "$*"; }
# The C tests print a PASS line per check (thousands): show the summaries and any FAIL only.
no_pass() { grep -v '^ *PASS ' || [ $? -eq 1 ]; }

setup_env() {
  if [ ! -x "$VENV/bin/python" ]; then
    step "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
  step "installing dependencies ($TORCH_SPEC, build and test requirements)"
  "$PY" -m pip install -q --disable-pip-version-check --upgrade pip "setuptools>=77" wheel
  "$PY" -m pip install -q --disable-pip-version-check "$TORCH_SPEC" -r requirements-dev.txt
}

build() {
  if [ "${1:-}" = clean ]; then
    step "clean rebuild"
    rm -rf build dist ./*.egg-info _bitlinear*.so
  fi
  step "building the extension"
  # No build isolation: compile against the torch installed above, not a freshly downloaded one.
  "$PY" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
  step "verifying the kernels were built"
  "$PY" -c "import _bitlinear; print('import _bitlinear: OK')"
  "$PY" -m bitlinear info
}

case "$mode" in
  main)
    setup_env
    build clean
    step "demo: train a BitLinear model on real data, deploy it, compare with nn.Linear"
    "$PY" -m bitlinear demo
    ;;
  test)
    setup_env
    build clean
    step "C core tests (no Python)"
    make -s -C tests/c test 2>&1 | no_pass
    if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null; then
      step "C core tests, aarch64 NEON build under qemu"
      make -s -C tests/c cross-aarch64 2>&1 | no_pass
    else
      echo "(aarch64 cross toolchain or qemu-aarch64 not installed: NEON tests skipped)"
    fi
    if [ "$(uname -m)" = x86_64 ] && [ -f /usr/include/simde/x86/avx512.h ]; then
      step "C core tests, AVX-512 VNNI / AVX-VNNI tiles emulated with SIMDe"
      make -s -C tests/c emulated 2>&1 | no_pass
    else
      echo "(SIMDe headers not installed: emulated AVX-512 VNNI tests skipped)"
    fi
    step "pytest"
    "$PY" -m pytest -q tests
    ;;
  build)
    setup_env
    build
    ;;
  *)
    echo "usage: $0 [main|test|build]" >&2
    exit 2
    ;;
esac
