"""Projections that share their input, in one call: q/k/v and gate/up (issue 20).

    bitlinear.convert(model); bitlinear.deploy(model)
    bitlinear.fuse_projections(model)        # after deploy; returns the number of groups fused

Each group's packed weights become consecutive row slices of one tensor (one copy: the layers'
``w_packed`` are views into it, and their state_dict entries stay per layer, in the packed format).
Inside the parent module's forward (the attention block, the MLP), the first member called with
an input computes every member's output in one native call: the activations are quantized once and
the weights streamed once, with each member's own scale and bias (``bl_linear_segments``). The
output is bit for bit the separate layers'. Everywhere else (a member called on its own, another
input, a changed buffer, another device) each layer runs alone, as before.

Under torch.compile the same grouping happens in the graph: fuse_projections installs
``group_pass()`` as inductor's ``post_grad_custom_post_pass`` (when that slot is empty), which
replaces the ``bitlinear::linear`` calls of CPU layers that read one input with
``bitlinear::linear_group2`` / ``linear_group3`` calls. These stream weights that are consecutive
rows of one tensor (a fused group) in one native call, and run any others one by one; bit for bit
the separate calls either way. A graph compiled before fuse_projections keeps its separate calls.

It also replaces transformers' Llama-family RMSNorms by bitlinear.RMSNorm (norms=True; the same
bits, one native call each in eager CPU inference: bitlinear/norm.py).
"""
from __future__ import annotations

import operator
from typing import Sequence, Tuple

import torch
from torch import nn

from . import _fast
from .nn import BitLinear
from .norm import fuse_norms

__all__ = ["fuse_projections", "DEFAULT_FUSE_GROUPS", "group_pass"]

# transformers' Llama / Mistral / Qwen / BitNet names: q/k/v read the attention input, gate/up the
# MLP input
DEFAULT_FUSE_GROUPS: Tuple[Tuple[str, ...], ...] = (("q_proj", "k_proj", "v_proj"),
                                                     ("gate_proj", "up_proj"))


def _fusable(ms) -> bool:
    if not all(isinstance(m, BitLinear) and m.deployed and "_group" not in m.__dict__ for m in ms):
        return False
    K, eps, per_tok = ms[0].in_features, ms[0].eps, ms[0].spec.act_per_token
    for m in ms:
        wp = m._buffers.get("w_packed")
        if (wp is None or type(wp) is not torch.Tensor or not wp.is_cpu or wp.dtype != torch.uint8
                or wp.dim() != 2 or not wp.is_contiguous() or m.in_features != K or m.eps != eps
                or m.spec.act_per_token != per_tok):
            return False
    return True


def _group_linear_calls(graph: torch.fx.Graph) -> int:
    """Replace the bitlinear::linear calls on one CPU input (same eps, in_features and activation
    scaling) by bitlinear::linear_group2 / linear_group3 calls (in threes, then a pair) placed
    at the first of them; returns how many calls it grouped. A call whose weights are not yet
    defined there stays alone."""
    lin = torch.ops.bitlinear.linear.default
    order = {n: i for i, n in enumerate(graph.nodes)}
    groups = {}
    for n in graph.nodes:
        if n.op != "call_function" or n.target is not lin or n.kwargs or len(n.args) != 7:
            continue
        x, _, _, _, eps, K, per_token = n.args
        val = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
        if not isinstance(val, torch.Tensor) or val.device.type != "cpu":
            continue
        groups.setdefault((x, eps, K, per_token), []).append(n)
    ops = {2: torch.ops.bitlinear.linear_group2.default,
           3: torch.ops.bitlinear.linear_group3.default}
    grouped = 0
    for (x, eps, K, per_token), calls in groups.items():
        first = order[calls[0]]
        calls = [c for c in calls if all(not isinstance(a, torch.fx.Node) or order[a] < first
                                         for a in c.args[1:4])]
        while len(calls) >= 2:  # in threes, a last pair (4 = 2 + 2)
            take = 3 if len(calls) in (3, 5) or len(calls) >= 6 else 2
            part, calls = calls[:take], calls[take:]
            layers = tuple(a for c in part for a in c.args[1:4])
            with graph.inserting_before(part[0]):
                g = graph.call_function(ops[take], (x, *layers, eps, K, per_token))
                g.meta["val"] = tuple(c.meta.get("val") for c in part)
                ys = [graph.call_function(operator.getitem, (g, i)) for i in range(take)]
            for c, y in zip(part, ys):  # erased after the insertions: they go before part[0]
                y.meta.update(c.meta)
                c.replace_all_uses_with(y)
                graph.erase_node(c)
            grouped += take
    return grouped


_GROUP_PASS = []  # the pass, made on first use (importing inductor takes about a second)


def group_pass():
    """The post-grad inductor pass that groups bitlinear::linear calls sharing an input (one
    instance, with a uuid for inductor's cache), or None with a torch that has no custom passes."""
    if not _GROUP_PASS:
        try:
            from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files
        except ImportError:
            _GROUP_PASS.append(None)
            return None

        class GroupPass(CustomGraphPass):
            def __call__(self, graph: torch.fx.Graph) -> None:
                _group_linear_calls(graph)

            def uuid(self):
                return get_hash_for_files((__file__,))

        _GROUP_PASS.append(GroupPass())
    return _GROUP_PASS[0]


def _install_group_pass() -> None:
    """group_pass() in inductor's post_grad_custom_post_pass slot, unless something else holds it
    (a user's own pass can call group_pass()(graph) itself)."""
    p = group_pass()
    if p is None:
        return
    from torch._inductor import config
    if getattr(config, "post_grad_custom_post_pass", p) is None:
        config.post_grad_custom_post_pass = p


def fuse_projections(model: nn.Module,
                     groups: Sequence[Sequence[str]] = DEFAULT_FUSE_GROUPS,
                     norms: bool = True) -> int:
    """Fuse every set of deployed CPU BitLinear children named by one entry of ``groups`` (in one
    parent module, same in_features, eps and activation scaling). Returns how many groups were
    fused; layers already in a group, on another device, or not deployed are left alone. Call it
    again after moving the model or loading it from a pickle (the fusion is not pickled).

    norms: also replace transformers' Llama-family RMSNorms (the BitNet sub-norms included) by
    bitlinear.RMSNorm: one native call each in eager CPU inference, the same bits and state_dict
    (bitlinear.norm.fuse_norms)."""
    if norms:
        fuse_norms(model)
    if _fast._linear_segments is None:
        return 0  # an extension without the fused entry point
    fused = 0
    for parent in list(model.modules()):
        for names in groups:
            ms = [parent._modules.get(n) for n in names]
            if len(ms) < 2 or any(m is None for m in ms) or not _fusable(ms):
                continue
            with torch.no_grad():
                stacked = torch.cat([m.w_packed for m in ms])
            group = _fast.FusionGroup(ms)
            off = 0
            for i, m in enumerate(ms):
                n = m.w_packed.shape[0]
                m.w_packed = stacked[off:off + n]  # a view: one copy of the weights
                off += n
                _fast.forget(m)
                m.__dict__["_group"] = (group, i)
            parent.register_forward_pre_hook(_fast.FusionWindow(group, True))
            parent.register_forward_hook(_fast.FusionWindow(group, False), always_call=True)
            fused += 1
    if fused:
        _install_group_pass()
    return fused
