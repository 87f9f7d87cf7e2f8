"""BitLinear: a drop-in nn.Linear with ternary weights and int8 activations (BitNet b1.58)."""
from __future__ import annotations

import math

import torch
from torch import nn

from . import _checks, _fast, ops
from . import reference as ref


class BitLinear(nn.Module):
    """Linear layer with ternary weights and int8 activations.

    Training mode runs fake quantization with a straight-through estimator, so gradients reach
    weight, bias and input. ``deploy()`` quantizes and packs the weights to 2 bits and switches to
    the integer kernels (inference only).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, eps: float = 1e-6,
                 quant_type: str | None = None, device=None, dtype=None, *,
                 act_scale: str | None = None, weight_scale: str | None = None):
        """quant_type: "ai8pc_wpt" (default), "ai8pt_wpt" or "ai8pc_wpc"; or the readable form
        act_scale="per_token" | "per_tensor" and weight_scale="per_tensor" | "per_channel"."""
        super().__init__()
        self.in_features = _checks.in_features(in_features, "BitLinear")
        self.out_features = _checks.positive_int(out_features, "out_features", "BitLinear")
        self.eps = _checks.eps(eps, "BitLinear")
        self.spec = ref.resolve_quant_spec(quant_type, act_scale, weight_scale)
        self.quant_type = self.spec.name
        self.deployed = False
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation."""
        if self.deployed:
            raise RuntimeError("BitLinear: cannot reset the parameters of a deployed layer")
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linear(cls, linear: nn.Linear, quant_type: str | None = None, eps: float = 1e-6, *,
                    act_scale: str | None = None, weight_scale: str | None = None):
        """A BitLinear with a copy of ``linear``'s weight and bias (same device and dtype)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"BitLinear.from_linear expects an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, eps=eps,
                    quant_type=quant_type, device=w.device, dtype=w.dtype, act_scale=act_scale,
                    weight_scale=weight_scale)
        with torch.no_grad():
            layer.weight.copy_(w)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.deployed:
            _checks.layer_input(x, self.in_features, self.weight.device, "BitLinear", "input")
            return torch.ops.bitlinear.linear_train(x, self.weight, self.bias, self.eps,
                                                    self.spec.act_per_token,
                                                    self.spec.weight_per_channel)[0]
        # The buffers were validated at deploy() / load: only the input is checked per call.
        # Plain eager calls take one native call on raw pointers (bitlinear/_fast.py), the rest
        # (compile, tracing, subclasses, modes, odd inputs) the op; the results are identical.
        y = _fast.linear(self, x)
        if y is not None:
            return y
        _checks.layer_input(x, self.in_features, self.w_packed.device, "BitLinear", "input")
        if not torch.compiler.is_compiling():
            _fast.check_buffers(self)  # what a user may have changed since deploy() / load
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("BitLinear: a deployed layer is inference-only and has no gradient; "
                               "train before deploy(), or run under torch.no_grad()")
        return torch.ops.bitlinear.linear(x, self.w_scale, self.w_packed, self.bias, self.eps,
                                          self.in_features, self.spec.act_per_token)

    # ------------------------------------------------------------------ deploy
    @torch.no_grad()
    def deploy(self) -> "BitLinear":
        """Quantize and pack the weights; replace weight/bias parameters with the buffers
        ``w_scale`` (float32), ``w_packed`` (uint8, 2 bits per weight) and ``bias`` (float32).
        Atomic: if anything fails the layer is left as it was (still in training mode)."""
        if self.deployed:
            return self
        weight, bias_p = self.weight, self.bias
        dev = weight.device
        # Built outside inference mode (normal tensors, with version counters) and on the weight's
        # device whatever torch.set_default_device says.
        with torch.inference_mode(False), torch.no_grad(), torch.device(dev):
            w_scale, w_packed = ops.quantize_weights(weight, self.eps, self.spec.weight_per_channel)
            bias = None if bias_p is None else bias_p.detach().to(torch.float32).clone()
        _checks.deployed_buffers(w_scale, w_packed, bias, self.in_features, self.out_features)
        if w_packed.device != dev or w_scale.device != dev:
            raise RuntimeError(f"BitLinear.deploy: packed weights landed on {w_packed.device}, "
                               f"not on the weight's device {dev}")
        # Nothing above changed the layer; from here on nothing can fail.
        del self.weight
        del self.bias
        self.register_buffer("w_scale", w_scale)
        self.register_buffer("w_packed", w_packed)
        self.register_buffer("bias", bias)
        self.deployed = True
        _fast.prepare(self)  # the opt-in CPU decode layout (bitlinear.set_cpu_lut)
        return self

    def refresh_decode_layout(self) -> None:
        """Rebuild the opt-in CPU decode layout from ``w_packed`` now (after writing w_packed in a
        way torch does not record: ``.data``, NumPy, the storage, DLPack). Without a decode layout
        (the default) there is nothing to refresh: every path reads w_packed."""
        if self.deployed:
            _fast.prepare(self)

    def _apply(self, fn, recurse=True):
        # A dtype cast (model.half()) must not round the float32 scales and bias of a deployed
        # layer; device moves apply to them as usual.
        if not self.deployed:
            return super()._apply(fn, recurse)
        keep = {k: self._buffers[k] for k in ("w_scale", "bias") if self._buffers.get(k) is not None}
        super()._apply(fn, recurse)
        dev = self.w_packed.device
        for k, v in keep.items():
            self._buffers[k] = v.to(device=dev, dtype=torch.float32)
        _fast.prepare(self)  # rebuilt on the CPU where one is wanted, dropped elsewhere
        return self

    def __getstate__(self):
        # pickling (torch.save of a module, deepcopy) leaves out the fast path's derived state
        # (record, decode layout): __setstate__ rebuilds it from the buffers, as a load does
        state = dict(super().__getstate__())
        state.pop("_lut", None)
        state.pop("_fast_rec", None)
        state.pop("_group", None)  # a fused group (bitlinear.fuse_projections) is not pickled
        return state

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        wp = destination.get(prefix + "w_packed")
        if (isinstance(wp, torch.Tensor) and self.__dict__.get("_group") is not None
                and wp.device.type != "meta"
                and wp.untyped_storage().nbytes() != wp.numel() * wp.element_size()):
            # a row slice of a fused group's weights: checkpoints keep one tensor per layer
            destination[prefix + "w_packed"] = wp.detach().clone()

    def __setstate__(self, state):
        super().__setstate__(state)
        if self.__dict__.get("deployed") and "w_packed" in self._buffers:
            _fast.prepare(self)

    # ------------------------------------------------------------------ state dict
    def get_extra_state(self):
        # in_features / out_features: the packed shape does not tell every K apart (K = 16 and
        # K = 32 both pad to 128), so a load compares them (set_extra_state: "size mismatch").
        state = {"format_version": ref.FORMAT_VERSION, "quant_type": self.quant_type,
                 "deployed": self.deployed, "in_features": self.in_features,
                 "out_features": self.out_features}
        if getattr(self, "_extra_state_as_tensor", False):
            # Layers of a transformers model (bitlinear/hf.py): transformers' loader and safetensors
            # handle only tensors, so the same dict goes as a uint8 tensor of UTF-8 JSON.
            import json
            return torch.tensor(list(json.dumps(state, sort_keys=True).encode("utf-8")),
                                dtype=torch.uint8)
        return state

    def set_extra_state(self, state):
        if isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.dim() == 1:
            # The same dict as UTF-8 JSON bytes: how tensor-only files (safetensors written by
            # save_pretrained, bitlinear/hf.py) carry it.
            import json
            try:
                state = json.loads(bytes(state.tolist()).decode("utf-8"))
            except ValueError:
                raise ValueError("BitLinear: extra state tensor is not UTF-8 JSON") from None
        if not isinstance(state, dict):
            raise ValueError(f"BitLinear: unrecognised extra state {state!r}")
        if state.get("deployed", False):
            ver = state.get("format_version")
            if ver != ref.FORMAT_VERSION:
                raise ValueError(f"BitLinear: checkpoint packed-weight format version {ver!r} is not "
                                 f"supported (this bitlinear reads version {ref.FORMAT_VERSION})")
        qt = state.get("quant_type", self.quant_type)
        try:
            qt = ref.canonical_quant_type(qt)  # also the earlier package's "per_tensor"
        except ValueError:
            pass  # reported just below, against this layer's quant_type
        if qt != self.quant_type:
            raise ValueError(f"BitLinear: checkpoint quant_type {qt!r} differs from this layer's "
                             f"{self.quant_type!r}")
        # Recorded since the extra state has them; checkpoints written before hold neither and
        # load where their shapes fit (the padding-code check of _checks.deployed_state refuses
        # most of the rest; docs/packed_format.md says what it cannot see).
        for key, have in (("in_features", self.in_features), ("out_features", self.out_features)):
            if key in state and (isinstance(state[key], bool) or state[key] != have):
                raise ValueError(f"BitLinear: size mismatch: the checkpoint was saved with "
                                 f"{key}={state[key]!r}, this layer has {key}={have}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        has_packed = prefix + "w_packed" in state_dict
        extra_key = prefix + "_extra_state"
        has_extra = extra_key in state_dict
        who = f"BitLinear {prefix[:-1]!r}" if prefix else "BitLinear"
        if has_packed and not has_extra:
            # Packed weights say nothing about their layout without the extra state: the earlier
            # package's [N, K/4] high-bits-first codes have our shape whenever K % 128 == 0.
            raise ValueError(f"{who}: the checkpoint holds "
                             "packed weights (w_packed) but no '_extra_state' naming their format; a "
                             "checkpoint of the earlier bitlinear package is loaded with "
                             "bitlinear.legacy.load_legacy_deployed(model, state_dict)")
        if has_packed and not self.deployed:
            raise ValueError(f"{who}: the checkpoint holds "
                             "deployed (packed) weights; call deploy() on the model before "
                             "load_state_dict")
        if self.deployed and prefix + "weight" in state_dict and not has_packed:
            raise ValueError(f"{who}: the checkpoint holds "
                             "float weights but this layer is deployed; load before deploy()")
        if has_extra:
            # Checked before anything is copied (nn.Module calls set_extra_state last, after the
            # buffers): format version, quant_type, in/out features ("size mismatch").
            try:
                self.set_extra_state(state_dict[extra_key])
            except ValueError as e:
                raise ValueError(f"{who}: {str(e).removeprefix('BitLinear: ')}") from None
        if self.deployed and has_packed:
            bias_key = prefix + "bias"
            if (self.bias is None) != (bias_key not in state_dict):
                raise ValueError(f"{who}: checkpoint bias presence does not match the layer "
                                 f"(layer bias={'yes' if self.bias is not None else 'no'})")
            # The one validation every loader shares (bitlinear/_checks.py): structure, w_scale
            # count for the quant type, codes, padding codes, scale and bias values.
            _checks.deployed_state(
                state_dict.get(prefix + "w_scale"), state_dict[prefix + "w_packed"],
                state_dict.get(bias_key) if self.bias is not None else None,
                self.in_features, self.out_features, self.spec.weight_per_channel, who)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if not has_extra and extra_key in missing_keys:
            # A float {weight, bias} state dict (nn.Linear's, or the earlier package's training-mode
            # layers) carries no extra state: it loads into a training-mode layer as it stands.
            missing_keys.remove(extra_key)
        if self.deployed and has_packed:
            _fast.prepare(self)  # w_packed was written in place: rebuild the decode layout

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, eps={self.eps}, quant_type={self.quant_type!r} "
                f"(act_scale={self.spec.act_scale!r}, weight_scale={self.spec.weight_scale!r}), "
                f"deployed={self.deployed}")
