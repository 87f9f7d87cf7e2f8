"""Checks with objdump that the VNNI microkernels really run vpdpbusd in their hot loops.

Compiles csrc/cpu/isa_avx512vnni.c and isa_avxvnni.c with their flags from isa_flags.txt (no
AVX-512 CPU needed), disassembles every tile function, finds its loops (backward jumps) and
requires a loop containing vpdpbusd: on zmm registers for AVX-512 VNNI, VEX-encoded
(`{vex} vpdpbusd`) for AVX-VNNI, and no vpmaddubsw fallback. With --so it also checks a built
extension (.so) contains both forms. Exit status 0 when every check passes.

  python tests/tools/check_vnni_disasm.py [--so path/to/_bitlinear.abi3.so] [-v]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CPU = ROOT / "csrc" / "cpu"

# file -> (predicate on an instruction line, description)
CHECKS = {
    "isa_avx512vnni.c": (lambda l: "vpdpbusd" in l and "zmm" in l and "{vex}" not in l,
                         "vpdpbusd on zmm"),
    "isa_avxvnni.c": (lambda l: "{vex} vpdpbusd" in l, "{vex} vpdpbusd (AVX-VNNI)"),
}
INSN = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
JUMP = re.compile(r"\bj[a-z]+\s+([0-9a-f]+)\s+<")


def isa_flags(name: str) -> list:
    common, own = [], []
    for line in (CPU / "isa_flags.txt").read_text().splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#") or len(parts) < 2:
            continue
        if parts[0] == "any" and parts[1] == "*":
            common = parts[2:]
        elif parts[0] == "x86_64" and parts[1] == name:
            own = parts[2:]
    return common + own


def functions(disasm: str) -> dict:
    """name -> list of (address, instruction text)"""
    out, cur = {}, None
    for line in disasm.splitlines():
        m = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if m:
            cur = out.setdefault(m.group(1), [])
            continue
        m = INSN.match(line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), m.group(2)))
    return out


def loops(body: list) -> list:
    """(start, end) address ranges closed by a backward jump"""
    res = []
    for addr, text in body:
        m = JUMP.search(text)
        if m and int(m.group(1), 16) <= addr:
            res.append((int(m.group(1), 16), addr))
    return res


def check_object(obj: Path, pred, what: str, verbose: bool) -> list:
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(obj)], capture_output=True,
                         text=True, check=True).stdout
    errors, tiles = [], {k: v for k, v in functions(dis).items() if re.fullmatch(r"tile_\dx\d", k)}
    if not tiles:
        return [f"{obj.name}: no tile_MxN functions found"]
    for name, body in sorted(tiles.items()):
        best = 0
        for lo, hi in loops(body):
            n = sum(1 for a, t in body if lo <= a <= hi and pred(t))
            best = max(best, n)
        bad = [t for _, t in body if "vpmaddubsw" in t]
        if verbose:
            print(f"  {obj.name}:{name}: hot loop has {best} x {what}")
        if best == 0:
            errors.append(f"{obj.name}:{name}: no loop with {what}")
        if bad:
            errors.append(f"{obj.name}:{name}: uses vpmaddubsw ({len(bad)}x)")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--so", type=Path, help="also check this built extension")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    if shutil.which("objdump") is None:
        print("objdump not found (binutils)", file=sys.stderr)
        return 2
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("no C compiler found", file=sys.stderr)
        return 2
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (pred, what) in CHECKS.items():
            obj = Path(tmp) / (name[:-2] + ".o")
            cmd = [cc, *isa_flags(name), "-c", str(CPU / name), "-o", str(obj)]
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode != 0:
                errors.append(f"compiling {name} failed: {' '.join(cmd)}\n{r.stderr[-1500:]}")
                continue
            errors += check_object(obj, pred, what, a.verbose)
    if a.so is not None:
        dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(a.so)], capture_output=True,
                             text=True, check=True).stdout.splitlines()
        for name, (pred, what) in CHECKS.items():
            n = sum(1 for l in dis if pred(l))
            if a.verbose:
                print(f"  {a.so.name}: {n} x {what}")
            if n == 0:
                errors.append(f"{a.so}: no {what} anywhere")
    for e in errors:
        print("FAIL", e)
    print("vnni disassembly check:", "FAILED" if errors else "ok")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
