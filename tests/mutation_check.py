#!/usr/bin/env python3
"""Mutation check of the C tests: plants small bugs in the AVX2 kernels, in the decode layout
(LUT: lut.c and the AVX-512 LUT GEMV), in the x86 int4 head kernel (q4_x86.h), in decode
attention (attn.c) and in the RMSNorm (norm.c), one at a time, in a copy of csrc/ and tests/c/,
and asserts that the plain C tests (`make -C tests/c test`: test_core and test_directed, fixed
default seed, test_q4, test_attn and test_norm, fresh seeds; plus test_emu and test_q4_emu, the AVX-512 / AVX-VNNI tables on SIMDe,
where libsimde-dev is installed) catch every one of them.

    python3 tests/mutation_check.py [--keep] [--only NAME]

Exit status 0 when the unmutated copy passes and every mutation fails the tests; 1 otherwise
(a mutation the tests miss, a baseline failure, or a mutation whose source pattern no longer
matches: update the pattern here when the kernel changes). Skipped (exit 0) where the AVX2 path
cannot run (not x86-64, or no AVX2). A mutation of the AVX-512 file is skipped (reported, not a
failure) where neither this CPU runs AVX-512 VNNI nor SIMDe emulates it. Needs make and a C
compiler, as the C tests do.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AVX2 = "csrc/cpu/isa_avx2.c"
AVX512 = "csrc/cpu/isa_avx512vnni.c"
LUT = "csrc/cpu/lut.c"
Q4X86 = "csrc/cpu/q4_x86.h"  # the int4 head kernel of the AVX2 / AVX-VNNI / AVX-512 files
ATTN = "csrc/cpu/attn.c"
NORM = "csrc/cpu/norm.c"

# (name, file, regex that must match exactly once, replacement, what it breaks)
MUTATIONS = [
    ("a-weight-round-half-up", AVX2,
     r"_mm256_round_ps\(_mm256_div_ps\(_mm256_loadu_ps\(w \+ 8 \* i\), s\),\s*"
     r"_MM_FROUND_TO_NEAREST_INT \| _MM_FROUND_NO_EXC\)",
     "_mm256_floor_ps(_mm256_add_ps(_mm256_div_ps(_mm256_loadu_ps(w + 8 * i), s), "
     "_mm256_set1_ps(0.5f)))",
     "weight ternarization in the AVX2 packing: floor(w / s + 0.5) instead of round half to even"),
    ("b-bf16-round-half-up", AVX2,
     r"_mm256_add_epi32\(r7fff, _mm256_and_si256\(_mm256_srli_epi32\(bits, 16\), one\)\)",
     "_mm256_add_epi32(r7fff, one)",
     "the AVX2 epilogue's bfloat16 rounding: half up instead of half to even"),
    ("c-gemv-flush-quadrupled", AVX2,
     r"#define FLUSH_BLOCKS_X1 16\b",
     "#define FLUSH_BLOCKS_X1 64",
     "the AVX2 GEMV tile's int16 flush interval quadrupled (16 -> 64 blocks; 32 still fits by "
     "one): int16 overflow"),
    # extras: the same kinds of slip elsewhere in the AVX2 file
    ("d-act-round-half-up", AVX2,
     r"_mm256_round_ps\(_mm256_div_ps\(v, s\), _MM_FROUND_TO_NEAREST_INT \| _MM_FROUND_NO_EXC\)",
     "_mm256_floor_ps(_mm256_add_ps(_mm256_div_ps(v, s), _mm256_set1_ps(0.5f)))",
     "activation quantization in AVX2: floor(x / s + 0.5) instead of round half to even"),
    ("e-f16-round-toward-zero", AVX2,
     r"_mm256_cvtps_ph\(v, _MM_FROUND_TO_NEAREST_INT\)",
     "_mm256_cvtps_ph(v, _MM_FROUND_TO_ZERO)",
     "the AVX2 epilogue's float16 rounding: toward zero instead of to nearest even"),
    ("f-tile-chunk-doubled", AVX2,
     r"#define TILE256_CHUNK_BLOCKS 16\b",
     "#define TILE256_CHUNK_BLOCKS 32",
     "the AVX2 tile's int16 chunk doubled (16 -> 32 blocks): int16 overflow"),
    # the decode layout (LUT)
    ("g-lut-flush-cols", AVX512,
     r"#define LUT_FLUSH_COLS 28\b",
     "#define LUT_FLUSH_COLS 40",
     "the AVX-512 LUT GEMV's int16 flush interval 28 -> 40 columns (40 x 1152 > 32767): int16 "
     "overflow at x = -128 / 127 with weights of one sign"),
    ("h-lut-pad-row-word", LUT,
     r"13 \* \(1 \+ 32 \+ 1024\)",
     "14 * (1 + 32 + 1024)",
     "bl_lut_pack's padding rows (n >= N) hold weight +1 in each triple instead of zeros (outputs "
     "unchanged: only the layout check against the spec sees it)"),
    ("i-lut-code3-kept", LUT,
     r"c\[32 \* s \+ j\] = v > 2 \? 2 : v;",
     "c[32 * s + j] = v;",
     "bl_lut_pack keeps the invalid code 3 as digit 3 instead of reading it as 2"),
    # the int4 head (q4), caught by test_q4 (every path against the plain C path, bit for bit)
    ("j-q4-high-nibble-shift", Q4X86,
     r"_mm256_srli_epi16\(raw, 4\)",
     "_mm256_srli_epi16(raw, 3)",
     "the x86 q4 kernel reads the high nibbles shifted by 3 instead of 4"),
    ("k-q4-lane-tree", Q4X86,
     r"_mm_add_ps\(s, _mm_movehl_ps\(s, s\)\)",
     "_mm_add_ps(s, _mm_movehdup_ps(s))",
     "the x86 q4 kernel sums the 8 lanes in the wrong pairs (bitlinear.h fixes the tree)"),
    # decode attention, caught by test_attn (against a float64 softmax)
    ("l-attn-live-heads", ATTN,
     r"for \(int64_t h = hk; h < hk \+ a->G; h\+\+\) any \|=",
     "for (int64_t h = hk; h < hk + a->G - 1; h++) any |=",
     "a position is live only if a query head other than the kv head's last one attends it"),
    ("m-attn-rescale-sum", ATTN,
     r"run_sum\[i\] \*= f;",
     "run_sum[i] *= 1.0f;",
     "the running sum is not rescaled when a later chunk raises the running maximum"),
    # the RMSNorm, caught by test_norm (its formula written out)
    ("n-norm-bf16-no-round", NORM,
     r"const float h = bl_bf16_f32\(bl_bf16_rne\(bl_bf16_f32\(x\[k\]\) \* r\)\);",
     "const float h = bl_bf16_f32(x[k]) * r;",
     "the bfloat16 row skips the rounding of x * r to the input dtype (transformers' .to(dtype))"),
    ("n-norm-no-eps", NORM,
     r"1\.0f / sqrtf\(j->var\[m\] \+ j->eps\)",
     "1.0f / sqrtf(j->var[m])",
     "the variance's epsilon is not added"),
]
# mutations that only the AVX-512 path (native, or emulated by test_emu) can catch
NEEDS_AVX512 = {"g-lut-flush-cols"}


def run(cmd, cwd, env=None):
    return subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def arch() -> str:
    cc = os.environ.get("CC", "cc")
    return subprocess.run([cc, "-dumpmachine"], stdout=subprocess.PIPE, text=True).stdout.split("-")[0]


def has_simde() -> bool:
    """The emulated build (tests/c/Makefile `emulated`) can be made here."""
    return arch() == "x86_64" and Path("/usr/include/simde/x86/avx512.h").is_file()


def programs() -> tuple[str, ...]:
    return ("test_core", "test_directed", "test_q4", "test_attn", "test_norm") + (
        ("test_emu", "test_q4_emu") if has_simde() else ())


def run_tests(tdir: Path, env) -> tuple[int, dict]:
    """Runs test_core, test_directed and test_emu where it builds (all, even if one fails):
    (failed programs, {program: FAIL lines})."""
    bad, fails = 0, {}
    for prog in programs():
        r = run([str(tdir / "build" / arch() / prog)], tdir, env)
        fails[prog] = [l for l in r.stdout.splitlines() if l.startswith("FAIL")]
        bad += r.returncode != 0
    return bad, fails


def has_avx2() -> bool:
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        return " avx2 " in " " + Path("/proc/cpuinfo").read_text().replace("\n", " ") + " "
    except OSError:
        return False


def has_avx512vnni() -> bool:
    """What bl_isa_supported(BL_ISA_AVX512VNNI) asks of cpuid (the OS state aside)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"} <= flags


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    ap.add_argument("--only", help="run only the mutation with this name")
    args = ap.parse_args()
    if not has_avx2():
        print("mutation check skipped: the AVX2 path cannot run on this machine")
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env.pop("BL_TEST_SEED", None)  # the tests' fixed default seed
    t_start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="bitlinear-mutation-"))
    try:
        shutil.copytree(ROOT / "csrc", tmp / "csrc")
        shutil.copytree(ROOT / "tests" / "c", tmp / "tests" / "c",
                        ignore=shutil.ignore_patterns("build", "*.o"))
        tdir = tmp / "tests" / "c"
        make = ["make", "-s", "-j2", "-C", str(tdir)]
        targets = ["all"] + [f"build/{arch()}/{p}" for p in programs() if p.endswith("_emu")]
        can_avx512 = has_avx512vnni() or has_simde()
        print(f"programs: {', '.join(programs())}; AVX-512 VNNI "
              f"{'native' if has_avx512vnni() else 'emulated (SIMDe)' if has_simde() else 'unavailable'}")

        r = run(make + targets, tmp, env)
        if r.returncode != 0:
            print(r.stdout[-4000:])
            print("mutation check: the unmutated copy does not build")
            return 1
        bad, fails = run_tests(tdir, env)
        if bad:
            print("\n".join(l for f in fails.values() for l in f)[:4000])
            print("mutation check: the unmutated copy fails the C tests")
            return 1
        print(f"baseline: the C tests pass on the unmutated copy ({time.time() - t_start:.0f} s)")

        missed, broken = [], []
        for name, rel, pattern, repl, what in MUTATIONS:
            if args.only and name != args.only:
                continue
            if name in NEEDS_AVX512 and not can_avx512:
                print(f"SKIPPED {name}: needs AVX-512 VNNI or SIMDe (libsimde-dev) to run")
                continue
            t0 = time.time()
            path = tmp / rel
            src = path.read_text()
            new, n = re.subn(pattern, repl, src)
            if n != 1:
                print(f"  {name}: pattern matched {n} times in {rel} (update tests/mutation_check.py)")
                broken.append(name)
                continue
            path.write_text(new)
            try:
                r = run(make + targets, tmp, env)
                if r.returncode != 0:
                    print(r.stdout[-3000:])
                    print(f"  {name}: the mutated source does not build")
                    broken.append(name)
                    continue
                bad, fails = run_tests(tdir, env)
                dt = time.time() - t0
                if bad:
                    counts = ", ".join(f"{p} {len(f)}" for p, f in fails.items())
                    print(f"CAUGHT  {name}: {what} (failing checks: {counts}; {dt:.0f} s)")
                    for l in [l for f in fails.values() for l in f[:2]]:
                        print(f"          {l}")
                else:
                    print(f"MISSED  {name}: {what} ({dt:.0f} s)")
                    missed.append(name)
            finally:
                path.write_text(src)
        total = time.time() - t_start
        if missed or broken:
            print(f"mutation check FAILED: missed {missed or 'none'}, not applicable {broken or 'none'}"
                  f" ({total:.0f} s)")
            return 1
        print(f"mutation check: every mutation caught ({total:.0f} s)")
        return 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
