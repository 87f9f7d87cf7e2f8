"""Decode attention at model level, A/B in one process: SDPA against bitlinear.attention.

    python profile/attn_model_ab.py [--arch llama] [--vocab 32000] [--threads 2] [--rounds 6]

Two identical random-weight models of the BitNet-2B shape (profile/model_decode.py's, same seed,
int4 head), one left on transformers' SDPA, one with `bitlinear.attention.register()`; both
compiled as `model_decode.py --compile tuned`; then alternating decode runs of 64 steps (after 4
untimed), median ms per token per run. Prints whether the greedy tokens agree, each side's
medians and the per-round ratios. The machine's drift cancels in the per-round ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

import model_decode as md  # this folder is on sys.path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="llama", choices=["llama", "bitnet"])
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    models = {}
    for attn in ("sdpa", "bitlinear"):
        m = md.build(a.arch, a.vocab, md.FULL)
        md.set_head(m, "int4", m.lm_head.weight.detach().float().clone())
        md.set_attn(m, attn)
        models[attn] = m
    # compiled() resets dynamo when it makes a wrapper: make both, then compile both
    fns = {k: md.compiled(m, "tuned") for k, m in models.items()}
    for k, m in models.items():
        md.decode(m, 2, 2, a.vocab, step_fn=fns[k])
    toks = {k: md.decode(m, 16, 0, a.vocab, step_fn=fns[k])[1] for k, m in models.items()}
    print("same greedy tokens:", toks["sdpa"] == toks["bitlinear"])
    res = {k: [] for k in models}
    for _ in range(a.rounds):
        for k, m in models.items():
            t, _ = md.decode(m, 64, 4, a.vocab, step_fn=fns[k])
            res[k].append(statistics.median(t) * 1e3)
    for k, v in res.items():
        print(f"{k}: ms/token {[round(x, 2) for x in v]}, median {statistics.median(v):.2f}")
    print("per-round sdpa / bitlinear:", [round(x / y, 3) for x, y in zip(res["sdpa"],
                                                                       res["bitlinear"])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
