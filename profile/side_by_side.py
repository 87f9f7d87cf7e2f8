"""Model-level decode, ours and llama.cpp's, interleaved in one process on the same cores.

    python profile/side_by_side.py --llama-bench /path/llama-bench --gguf /path/model-tq2_0.gguf \
        --arch llama --vocab 32000 --head int4 --rounds 5 [--threads 2] [--json out.json]

The machine's memory bandwidth drifts from minute to minute on a shared VM (25-60 GB/s read
here), so two runs minutes apart do not compare. This alternates the two sides: each round runs
`llama-bench -m GGUF -p 0 -n STEPS -t THREADS -r 1` (decode only, tg STEPS; its tokens/s), then
our decode of the same number of steps on profile/model_decode.py's model (random weights of the
BitNet-2B shape, `--arch`, `--vocab`, the head `--head`, `--compile`, `--attn`, `--fuse`), and
reports both per round, their medians and the median of the per-round ratios (ours / llama.cpp).

The GGUF must have the same shape and vocabulary (profile/peer_llamacpp_gguf.py writes one; build
llama.cpp outside this repository). Our tokens/s is the median step time of the round (after
`--warmup` untimed steps); llama-bench's is its mean over the run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

import bitlinear
import model_decode as md  # this folder is on sys.path


def llama_bench(exe: str, gguf: str, steps: int, threads: int) -> float:
    out = subprocess.run([exe, "-m", gguf, "-p", "0", "-n", str(steps), "-t", str(threads),
                          "-r", "1", "-o", "json"], capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    return float(rows[0]["avg_ts"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bench", required=True, help="path of llama.cpp's llama-bench")
    ap.add_argument("--gguf", required=True, help="the peer's model (same shape and vocabulary)")
    ap.add_argument("--arch", default="llama", choices=["llama", "bitnet"])
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--head", default="int4", type=md._head_kind)
    ap.add_argument("--compile", default="tuned", choices=["off", "on", "tuned"])
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "bitlinear"])
    ap.add_argument("--fuse", default="on", choices=["on", "off"],
                    help="bitlinear.fuse_projections before compiling (q/k/v, gate/up grouped)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    info = md.machine()
    info.update(arch=a.arch, vocab=a.vocab, head=a.head, compile=a.compile, attn=a.attn,
                fuse=a.fuse, threads=a.threads, steps=a.steps, gguf=os.path.basename(a.gguf))
    print(json.dumps(info), flush=True)
    model = md.build(a.arch, a.vocab, md.FULL)
    md.set_attn(model, a.attn)
    if a.head != "float":
        md.set_head(model, a.head, model.lm_head.weight.detach().float().clone())
    if a.fuse == "on":
        bitlinear.fuse_projections(model)
    torch.set_num_threads(a.threads)
    step_fn = md.compiled(model, a.compile)
    md.decode(model, 2, 2, a.vocab, step_fn=step_fn)  # compiles
    rounds = []
    for r in range(a.rounds):
        peer = llama_bench(a.llama_bench, a.gguf, a.steps, a.threads)
        t0 = time.time()
        times, _ = md.decode(model, a.steps, a.warmup, a.vocab, step_fn=step_fn)
        ours = 1.0 / statistics.median(times)
        rounds.append({"llama_cpp": peer, "ours": ours, "ratio": ours / peer,
                       "loadavg": os.getloadavg()})
        print(f"round {r + 1}: llama.cpp {peer:5.1f} tok/s, ours {ours:5.1f} tok/s "
              f"({time.time() - t0:.0f} s): {ours / peer:.2f}x", flush=True)
    med = {k: statistics.median(x[k] for x in rounds) for k in ("llama_cpp", "ours", "ratio")}
    print(f"median of {a.rounds} rounds: llama.cpp {med['llama_cpp']:.1f}, ours {med['ours']:.1f} "
          f"tok/s; ratio {med['ratio']:.2f}x (per-round ratios "
          f"{[round(x['ratio'], 2) for x in rounds]})")
    info["rounds"], info["median"] = rounds, med
    os.environ.pop("TRANSFORMERS_SDPA_FORCE_GQA", None)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
