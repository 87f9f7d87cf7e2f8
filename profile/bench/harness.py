"""What the CPU and the GPU suite share: implementations and their registry, one record per timed
point, speedups against the suite's baseline, the result's common meta, progress, the JSON file.

A suite is a Registry of implementations. An implementation's builder gets the suite's weights for
one shape (the CPU suite: an nn.Linear; the GPU suite: a case with quantized and bf16 weights) and
returns an Impl, or None where it does not apply. Adding a row to a suite's table is one
`@IMPLS.register("name")` function in profile/bench/cpu.py or gpu.py.

Record schema (the JSON's "results", and the "records" of its "train" and "host" sections;
profile/bench/report.py and profile/plot.py read it):
  K, N, M, impl                          the point (CPU also threads; GPU also label and mode)
  median_ms, min_ms, p90_ms, reps        seconds per call, as milliseconds
  tokens_per_s, gops                     M / time, 2 M N K / time
  static_bytes, weight_gbs               bytes one call reads as weights, and that per second
  speedup_vs_<baseline>                  baseline time / this time, at the same point
  time_vs_linear                         train and host rows: this time / nn.Linear's (same dtype)
  copies                                 weight copies the calls cycle through (timing.Rotation)
  frac_int8_peak, frac_read_bw,          fractions of measured hardware limits, where known
  frac_copy_bw
  note, error, skipped, variant_of       text
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from .timing import Rotation


@dataclass
class Impl:
    """y = call(weights, x) for one shape; `weights` is what Rotation copies."""
    call: Callable[[Any, Any], Any]
    weights: Any
    nbytes: int                      # bytes of `weights`: the layer's static memory
    dtype: Any = None                # input dtype; None: the input as given
    note: str = ""
    env: Dict[str, str] = field(default_factory=dict)  # set around each call (kernel variants)
    clone: Optional[Callable[[Any], Any]] = None       # copies `weights` (default copy.deepcopy)

    def rotation(self, budget_bytes: int) -> Rotation:
        """Copies of the weights holding at least budget_bytes (timing.Rotation)."""
        return Rotation(self.weights, self.nbytes, budget_bytes, clone=self.clone)

    def step(self, rotation: Rotation, x) -> Callable[[], Any]:
        """A zero-argument call on the next weight copy each time, the thing the timers time."""
        if self.dtype is not None:
            x = x.to(self.dtype)
        call = rotation.bind(lambda w: self.call(w, x))
        return _with_env(self.env, call) if self.env else call


def _with_env(env: dict, fn):
    """fn with env set during each call (the kernels read it at launch, also under capture)."""
    def call():
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return fn()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return call


@dataclass
class Entry:
    name: str
    build: Callable[..., Optional[Impl]]
    doc: str = ""
    requires: Optional[Callable[[], str]] = None   # "" if usable here, else why not
    integer: bool = False                          # int8 arithmetic: compared with the int8 peak
    variant_of: Optional[str] = None               # a tuning variant: listed below the table


class Registry:
    """A suite's implementations, by name, in the order of their columns."""

    def __init__(self) -> None:
        self.entries: Dict[str, Entry] = {}

    def register(self, name: str, doc: str = "", **kw):
        def deco(build):
            self.entries[name] = Entry(name, build, doc, **kw)
            return build
        return deco

    def names(self) -> List[str]:
        return list(self.entries)

    def unavailable(self) -> Dict[str, str]:
        """name -> why it cannot run in this torch (only those that cannot)."""
        out = {}
        for e in self.entries.values():
            why = e.requires() if e.requires else ""
            if why:
                out[e.name] = why
        return out

    def build(self, names: Sequence[str], *args,
              errors: Optional[Dict[str, str]] = None) -> Dict[str, Impl]:
        """The usable, applicable implementations among `names` for one shape. With `errors`, a
        builder that raises is left out and why is put there (else the exception propagates)."""
        out = {}
        for n in names:
            e = self.entries[n]
            if e.requires and e.requires():
                continue
            try:
                impl = e.build(*args)
            except Exception as ex:
                if errors is None:
                    raise
                errors[n] = f"{type(ex).__name__}: {ex}"
                continue
            if impl is not None:
                out[n] = impl
        return out

    def select(self, names: Optional[Sequence[str]], default: Optional[Sequence[str]] = None
               ) -> List[str]:
        """This registry's names among `names` (a --impls list spanning several registries), or
        `default` (else all) when no names are given."""
        if names:
            return [n for n in names if n in self.entries]
        return list(self.entries if default is None else default)


def check_names(names: Sequence[str], *registries: Registry) -> str:
    """'' if every name is in one of the registries, else an error message."""
    known = [n for r in registries for n in r.entries]
    bad = [n for n in names if n not in known]
    return f"unknown implementation {bad[0]!r}; known: {', '.join(known)}" if bad else ""


def times(tm: dict) -> dict:
    """median_ms, min_ms, p90_ms and reps (and calls, where timed in loops) of a timing.* result."""
    out = {"median_ms": tm["median_s"] * 1e3, "min_ms": tm["min_s"] * 1e3,
           "p90_ms": tm["p90_s"] * 1e3, "reps": tm["reps"]}
    if "calls" in tm:
        out["calls"] = tm["calls"]
    return out


def point(tm: dict, K: int, N: int, M: int, impl: Impl, ops: float = 2.0) -> dict:
    """The timing fields of a record, from a timing.* result; `ops` per multiply-add of M N K
    (2: a forward GEMM, 6: forward + backward)."""
    s = tm["median_s"]
    rec = {**times(tm), "tokens_per_s": M / s, "gops": ops * M * N * K / s / 1e9,
           "static_bytes": impl.nbytes, "weight_gbs": impl.nbytes / s / 1e9}
    if impl.note:
        rec["note"] = impl.note
    return rec


def add_fractions(rec: dict, limits: dict, integer: bool, bandwidth: bool = True) -> None:
    """frac_int8_peak (integer implementations) and, with `bandwidth`, frac_read_bw / frac_copy_bw
    (weight bytes read per second against the measured bandwidth) where `limits` has them."""
    if integer and limits.get("int8_peak_gops"):
        rec["frac_int8_peak"] = rec["gops"] / limits["int8_peak_gops"]
    for lim, key in (("read_bw_gbs", "frac_read_bw"), ("copy_gbs", "frac_copy_bw")):
        if bandwidth and limits.get(lim):
            rec[key] = rec["weight_gbs"] / limits[lim]


def _with_baseline(records: List[dict], baseline: str, keys: Sequence[str], impl_key: str):
    """(record, the baseline's median_ms at the same `keys`) for every timed record that has one;
    the baseline is the record whose `impl_key` field is `baseline`."""
    base = {tuple(r.get(k) for k in keys): r["median_ms"] for r in records
            if r.get(impl_key) == baseline and "median_ms" in r}
    for r in records:
        b = base.get(tuple(r.get(k) for k in keys))
        if b is not None and "median_ms" in r:
            yield r, b


def add_speedups(records: List[dict], baseline: str, keys: Sequence[str]) -> None:
    """speedup_vs_<baseline> on every timed record: the baseline's time at the same `keys` / its."""
    for r, b in _with_baseline(records, baseline, keys, "impl"):
        r[f"speedup_vs_{baseline}"] = b / r["median_ms"]


def add_time_ratios(records: List[dict], baseline: str, keys: Sequence[str],
                    impl_key: str = "impl") -> None:
    """time_vs_<baseline> on every timed record: its time / the baseline's at the same `keys`
    (lower is better; the train and host rows, whose targets are time ratios)."""
    for r, b in _with_baseline(records, baseline, keys, impl_key):
        r[f"time_vs_{baseline}"] = r["median_ms"] / b


def check_targets(records: List[dict], specs) -> List[dict]:
    """specs: (name, {field: value} a record must match, record field, ">=" or "<=", want). One
    {name, value, op, want, ok} per spec that a record with the field matches."""
    out = []
    for name, match, key, op, want in specs:
        r = next((r for r in records if key in r and all(r.get(k) == v for k, v in match.items())),
                 None)
        if r is not None:
            v = r[key]
            out.append({"name": name, "value": v, "op": op, "want": want,
                        "ok": v >= want if op == ">=" else v <= want})
    return out


def loadavg():
    """1-minute load average (other processes competing for the cores skew timings)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def common_meta(suite: str, baseline: str) -> dict:
    import torch

    import bitlinear
    return {"suite": suite, "baseline": baseline,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "bitlinear": bitlinear.collect_info(),
            "loadavg_before": loadavg()}


RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


def default_out(name: str) -> str:
    """profile/results/bench-<name>-<time>.json of the checkout this suite runs from."""
    return os.path.join(RESULTS, f"bench-{name}-{_dt.datetime.now():%Y%m%d-%H%M%S}.json")


def write(result: dict, out: str) -> None:
    result["meta"]["loadavg_after"] = loadavg()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


class Progress:
    """A tqdm bar over the points (or nothing); log() prints around it."""

    def __init__(self, total: int, enabled: bool = True):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, desc="bench", unit="pt")
            except ImportError:
                pass

    def at(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(label)

    def done(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def log(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
