"""Training step time (forward + backward + SGD step) with 1 and 2 threads, idle and beside busy
processes: BitLinear against nn.Linear of the same shape (issue 18, finding 9: the digits demo took
14x longer with 2 threads than with 1 beside other jobs).

    python profile/train_under_load.py [--trials 5] [--steps 20] [--model layer|mlp]
                                       [--batch 128] [--load spin|torch] [--load-procs 2]
                                       [--states idle,loaded] [--kinds bitlinear,linear]
                                       [--forward-only | --layer-only]

Load "spin": --load-procs Python processes spinning in a loop (one busy thread each); "torch": each
process runs a 2-thread 1024^2 matmul loop (profile/oversubscription.py's load). For each trial and
thread count: a few warm-up steps, then --steps timed steps; the figure of a trial is its mean step
time (total / steps: a stall of a few steps counts, as it does in a training run), and the table
gives the median over trials. The 1- and 2-thread runs alternate, so a change in the background
load hits both. A benchmark, not a test: the numbers depend on the machine and what else runs.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

import bitlinear

LOADS = {
    "spin": "while True:\n    pass\n",
    "torch": "import torch\ntorch.set_num_threads(2)\na = torch.randn(1024, 1024)\nwhile True: a @ a\n",
}


def make_model(kind, model, width, depth):
    lin = (lambda i, o: bitlinear.BitLinear(i, o)) if kind == "bitlinear" else torch.nn.Linear
    if model == "layer":
        return lin(width, width)
    layers = []
    for i in range(depth):
        layers.append(lin(width, width))
        if i + 1 < depth:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def step_time(net, opt, x, threads, steps, warmup=3, forward_only=False, layer_only=False):
    """Mean seconds per training step (or training-mode forward only, or the layer's forward and
    backward only) at `threads` threads."""
    torch.set_num_threads(threads)
    g = None

    def step():
        nonlocal g
        if forward_only:  # BitLinear: its own regions only (quantization, the GEMM)
            with torch.no_grad():
                net(x)
            return
        if layer_only:  # the layer's forward and backward: no loss, no optimizer (torch's ops)
            for p in net.parameters():
                p.grad = None
            y = net(x)
            if g is None:
                g = torch.randn_like(y)
            y.backward(g)
            return
        opt.zero_grad(set_to_none=True)
        loss = net(x).float().square().mean()
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def measure(kinds, args, x):
    out = {}
    for kind in kinds:
        torch.manual_seed(0)
        net = make_model(kind, args.model, args.width, args.depth)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)
        per = {1: [], 2: []}
        for trial in range(args.trials):
            order = (1, 2) if trial % 2 == 0 else (2, 1)
            for t in order:
                per[t].append(step_time(net, opt, x, t, args.steps,
                                        forward_only=args.forward_only,
                                        layer_only=args.layer_only) * 1e3)
        out[kind] = per
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--model", choices=("layer", "mlp"), default="layer")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=3, help="layers of the mlp")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--load", choices=tuple(LOADS), default="spin")
    ap.add_argument("--load-procs", type=int, default=2)
    ap.add_argument("--states", default="idle,loaded")
    ap.add_argument("--kinds", default="bitlinear,linear")
    ap.add_argument("--layer-only", action="store_true",
                    help="time the layers' forward + backward only (no loss, no optimizer step)")
    ap.add_argument("--forward-only", action="store_true",
                    help="time the training-mode forward alone (no autograd, no optimizer)")
    args = ap.parse_args(argv)
    old = torch.get_num_threads()
    x = torch.randn(args.batch, args.width)
    kinds = args.kinds.split(",")
    result = {}
    for state in args.states.split(","):
        n = args.load_procs if state == "loaded" else 0
        procs = [subprocess.Popen([sys.executable, "-c", LOADS[args.load]]) for _ in range(n)]
        try:
            time.sleep(1.5 if procs else 0)
            result[state] = measure(kinds, args, x)
        finally:
            for p in procs:
                p.kill()
                p.wait()
            torch.set_num_threads(old)
    what = ("forward only" if args.forward_only else
            "forward + backward" if args.layer_only else "training step")
    print(f"{what}: "
          f"model={args.model} width={args.width} batch={args.batch} load={args.load} x "
          f"{args.load_procs}, {args.trials} trials x {args.steps} steps; ms per step "
          f"(median over trials of the mean step), ratio = 2 threads / 1 thread")
    summary = {}
    for state, by_kind in result.items():
        for kind, per in by_kind.items():
            m1, m2 = statistics.median(per[1]), statistics.median(per[2])
            summary[f"{state}_{kind}"] = {"1t_ms": m1, "2t_ms": m2, "ratio": m2 / m1,
                                          "trials_1t": per[1], "trials_2t": per[2]}
            print(f"{state:<7} {kind:<10} 1 thread {m1:8.2f}   2 threads {m2:8.2f}   "
                  f"ratio {m2 / m1:6.2f}   trials 2t: " + " ".join(f"{v:.1f}" for v in per[2]))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
