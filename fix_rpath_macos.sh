#!/usr/bin/env bash
# macOS only: add torch's lib folder to the rpath of a built _bitlinear extension, for the
# "Library not loaded: @rpath/libc10.dylib" error of some editable installs. Linux builds carry
# the rpath already (setup.py). Usage: ./fix_rpath_macos.sh [path/to/_bitlinear*.so]
set -euo pipefail
if [ "$(uname -s)" != Darwin ]; then
  echo "fix_rpath_macos.sh: not macOS, nothing to do" >&2
  exit 0
fi
PY=${PYTHON:-python3}
TORCH_LIB=$("$PY" -c "import torch, pathlib; print(pathlib.Path(torch.__file__).parent / 'lib')")
EXT=${1:-$(find . -name "_bitlinear*.so" -not -path "./build/*" | head -1)}
if [ -z "$EXT" ] || [ ! -f "$EXT" ]; then
  echo "fix_rpath_macos.sh: no _bitlinear*.so found; build first (./build.sh build)" >&2
  exit 1
fi
if otool -l "$EXT" | grep -q "path $TORCH_LIB "; then
  echo "rpath already present in $EXT"
else
  install_name_tool -add_rpath "$TORCH_LIB" "$EXT"
  echo "added rpath $TORCH_LIB to $EXT"
fi
"$PY" -c "import _bitlinear; print('import _bitlinear: OK')"
