"""`python -m bitlinear demo`: train a small BitLinear MLP on scikit-learn's bundled digits data set,
deploy it, and check that the deployed integer kernels give the same answers as the trained model.

Data: sklearn.datasets.load_digits (1797 8x8 images, 10 classes, shipped with scikit-learn, no
download), pixels scaled to [0, 1], a stratified 80/20 train/test split. The accuracy reported is
top-1 on the 360 held-out test images. A float twin (same architecture, same init, same batches,
nn.Linear instead of BitLinear) is trained alongside as the yardstick: on this data a float MLP
reaches about 97-98%, and the ternary model should land within a point or two of it.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch
from torch import nn

from .convert import convert, deploy, model_size_bytes, size_report

FULL = dict(epochs=30, hidden=1024, batch_size=64, lr=2e-3)
QUICK = dict(epochs=3, hidden=128, batch_size=64, lr=3e-3)


def load_data(seed: int):
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("the demo needs scikit-learn: pip install scikit-learn") from e
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    idx_tr, idx_te = train_test_split(range(len(y)), test_size=0.2, random_state=seed,
                                      stratify=d.target)
    return x[idx_tr], y[idx_tr], x[idx_te], y[idx_te]


def make_mlp(in_dim: int, hidden: int, classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


def _bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False, file=sys.stderr)


def train(models, x, y, epochs, batch_size, lr, seed, progress):
    """Train several models on identical batch sequences (so the float twin is a fair yardstick)."""
    opts = [torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0) for m in models]
    scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs) for o in opts]
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    steps = (len(y) + batch_size - 1) // batch_size
    bar = _bar(epochs * steps, progress, "train")
    losses = [0.0] * len(models)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for m in models:
            m.train()
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            for i, (m, o) in enumerate(zip(models, opts)):
                o.zero_grad(set_to_none=True)
                loss = loss_fn(m(x[idx]), y[idx])
                loss.backward()
                o.step()
                losses[i] = loss.item()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        for sch in scheds:
            sch.step()
    if bar is not None:
        bar.close()
    return losses


@torch.no_grad()
def logits_of(model, x):
    model.eval()
    return model(x)


def _median_ms(fn, reps):
    from ._timing import median_seconds
    return median_seconds(fn, reps=reps, warmup=5) * 1e3


def run(quick: bool = False, seed: int = 0, epochs=None, hidden=None, threads=None,
        progress: bool = True, reps: int = 50) -> dict:
    cfg = dict(QUICK if quick else FULL)
    if epochs is not None:
        cfg["epochs"] = epochs
    if hidden is not None:
        cfg["hidden"] = hidden
    if threads:
        torch.set_num_threads(threads)
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    x_tr, y_tr, x_te, y_te = load_data(seed)
    t_train0 = time.perf_counter()

    float_model = make_mlp(x_tr.shape[1], cfg["hidden"], 10)
    bit_model = convert(copy.deepcopy(float_model), skip=())  # every layer ternary, output layer too
    train([float_model, bit_model], x_tr, y_tr, cfg["epochs"], cfg["batch_size"], cfg["lr"], seed,
          progress)
    t_train = time.perf_counter() - t_train0

    float_logits = logits_of(float_model, x_te)
    fq_logits = logits_of(bit_model, x_te)
    bytes_before = model_size_bytes(bit_model)
    deploy(bit_model)
    bytes_after = model_size_bytes(bit_model)
    lut_bytes = size_report(bit_model)["decode_layout"]  # CPU decode layout, in memory only
    dep_logits = logits_of(bit_model, x_te)

    def acc(logits):
        return (logits.argmax(1) == y_te).float().mean().item()

    fq_pred, dep_pred = fq_logits.argmax(1), dep_logits.argmax(1)
    max_diff = (dep_logits - fq_logits).abs().max().item()
    scale = fq_logits.abs().max().item()
    # Training mode runs the deployed kernels, so the logits are the same bits (max_diff 0); the
    # tolerance only keeps the check meaningful for the pure-PyTorch fallback too.
    logits_close = bool(torch.allclose(dep_logits, fq_logits, rtol=1e-3, atol=1e-3 * max(scale, 1.0)))

    speed = {}
    for batch in (1, len(y_te)):
        xb = x_te[:batch].contiguous()
        with torch.inference_mode():
            f_ms = _median_ms(lambda: float_model(xb), reps)
            b_ms = _median_ms(lambda: bit_model(xb), reps)
        speed[str(batch)] = {"float_ms": f_ms, "deployed_ms": b_ms, "speedup": f_ms / b_ms}

    import bitlinear
    return {
        "data": "sklearn load_digits, stratified 80/20 split, test top-1 accuracy",
        "config": dict(cfg, seed=seed, threads=torch.get_num_threads(), quick=quick,
                       layers="64-{h}-{h}-10 MLP, all three Linear layers BitLinear".format(h=cfg["hidden"])),
        "kernels": "extension" if getattr(bitlinear, "HAS_BITLINEAR", False) else "pytorch fallback",
        "cpu_isa": _safe(lambda: bitlinear.cpu_isa()),
        "train_seconds": t_train,
        "n_train": len(y_tr), "n_test": len(y_te),
        "float_accuracy": acc(float_logits),
        "fake_quant_accuracy": acc(fq_logits),
        "deployed_accuracy": acc(dep_logits),
        "prediction_agreement": (fq_pred == dep_pred).float().mean().item(),
        "max_abs_logit_diff": max_diff,
        "logits_allclose": logits_close,
        "float_bytes": model_size_bytes(float_model),
        "fake_quant_bytes": bytes_before,
        "deployed_bytes": bytes_after,
        "decode_layout_bytes": lut_bytes,
        "speed": speed,
        "total_seconds": time.perf_counter() - t_start,
    }


def _safe(fn):
    try:
        return fn()
    except Exception:  # informative field only
        return None


def check(result: dict) -> bool:
    """The demo's claim: the deployed model answers like the model it was trained as."""
    return (result["deployed_accuracy"] == result["fake_quant_accuracy"]
            and result["prediction_agreement"] == 1.0)


def format_result(r: dict) -> str:
    kb = 1024.0
    lines = [
        f"data      : {r['data']} ({r['n_train']} train / {r['n_test']} test)",
        f"model     : {r['config']['layers']}, {r['config']['epochs']} epochs, "
        f"kernels: {r['kernels']} ({r['cpu_isa']}), {r['config']['threads']} threads",
        f"accuracy  : float {r['float_accuracy']:.2%} | BitLinear (training mode) {r['fake_quant_accuracy']:.2%}"
        f" | deployed {r['deployed_accuracy']:.2%}",
        f"agreement : deployed vs training-mode predictions {r['prediction_agreement']:.2%}, "
        f"max |logit diff| {r['max_abs_logit_diff']:.2e}, allclose {r['logits_allclose']}",
        f"memory    : float {r['float_bytes'] / kb:.1f} KiB -> deployed {r['deployed_bytes'] / kb:.1f} KiB "
        f"({r['float_bytes'] / r['deployed_bytes']:.1f}x smaller)"
        + (f"; in RAM also {r['decode_layout_bytes'] / kb:.1f} KiB of decode layout (not saved; "
           f"bitlinear.set_cpu_lut('off') drops it)" if r.get("decode_layout_bytes") else ""),
    ]
    for batch, s in r["speed"].items():
        lines.append(f"speed     : batch {batch:>4}: float {s['float_ms']:.3f} ms, deployed "
                     f"{s['deployed_ms']:.3f} ms ({s['speedup']:.2f}x), median of repeats")
    lines.append(f"time      : {r['train_seconds']:.1f} s training, {r['total_seconds']:.1f} s total")
    lines.append("check     : " + ("OK, deployed == training mode" if check(r) else "FAILED"))
    return "\n".join(lines)


def _cli(args) -> int:
    r = run(quick=args.quick, seed=args.seed, epochs=args.epochs, hidden=args.hidden,
            threads=args.threads, progress=not args.no_progress and not args.json)
    print(json.dumps(r, indent=2) if args.json else format_result(r))
    return 0 if check(r) else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="train, deploy and check a BitLinear MLP on sklearn digits",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer epochs, smaller model (a few seconds)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None, help="hidden width (default 1024, quick 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.set_defaults(func=_cli)
    return p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bitlinear.demo")
    sub = parser.add_subparsers(dest="cmd")
    add_parser(sub)
    args = parser.parse_args(["demo"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
