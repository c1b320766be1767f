"""The frozen teacher's forward under bf16 / fp16 autocast, with float32 kept where it must be or is faster.

Autocast casts matrix products and convolutions to the low dtype. Two places stay in float32:

- deformable attention's sampling, the op alone (``float32_sampling``): mmcv 2.1's CUDA kernel has no bf16
  path (NotImplementedError on a GPU), the sparse CPU product exists in float32 only, and the official Deformable
  DETR / DINO code casts this op alone to float32 under mixed precision (``custom_fwd(cast_inputs=float32)``).
  Its four projections (value, offsets, weights, output) run in the low dtype like every other linear layer.
  Until 2026-11-29 the whole attention module ran in float32, projections included: about 30 % of the
  encoder's matrix work kept out of bf16.
- the decoder's query self-attention (``nn.MultiheadAttention``, ``Float32MultiheadAttention``): on CPU it is
  slower in bf16 than in float32: mmcv hands it the queries transposed (sequence-first, not contiguous), so
  its input projection runs as a batched product over the queries, which in bf16 copies the weight once per
  query (8 of the default teacher's ~140 ms per forward); it is a small product (queries x width) either way.

Both together, on the default teacher (batch 4, 192 px, 2 Zen 4 cores, one process, the two scopes interleaved):
its bf16 forward 143 -> 129 ms, float32 166 ms (docs/bench_kd_results.md, "The bf16 teacher's float32 scope").

The weights those products read are cast once, not on every forward (``LowPrecisionWeights``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import mmcv.ops.multi_scale_deform_attn as mmcv_msda
import torch
import torch.nn as nn

from compress.errors import ConfigError

# None / 'float32': no autocast
AUTOCAST_DTYPES = {None: None, "float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(name: str | None) -> torch.dtype | None:
    if name not in AUTOCAST_DTYPES:
        raise ConfigError(f"model.teacher.autocast={name!r} is not supported; use None, 'bfloat16' or 'float16'")
    return AUTOCAST_DTYPES[name]


def _float32(value):
    return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def _call_in_float32(op: Callable, *args, **kwargs):
    """``op`` with autocast off and its floating-point tensor arguments in float32."""
    tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
    with torch.autocast(tensors[0].device.type if tensors else "cpu", enabled=False):
        return op(*map(_float32, args), **{k: _float32(v) for k, v in kwargs.items()})


# What the float32 stand-ins call: mmcv's ops as they were when ``float32_sampling`` was entered (the sparse
# product's dispatcher where ``sparse_deformable_sampling`` is active). The stand-ins themselves are fixed
# module-level objects, which is how a nested ``float32_sampling`` recognises that they are already in place.
_WRAPPED: dict[str, Callable] = {}


def _sampling_in_float32(value, *args):  # the result in the values' dtype, as mmcv's op gives it
    return _call_in_float32(_WRAPPED["pytorch"], value, *args).to(value.dtype)


class _FunctionInFloat32:
    """Stands in for mmcv's CUDA ``MultiScaleDeformableAttnFunction`` in its module."""

    @staticmethod
    def apply(value, *args):
        return _call_in_float32(_WRAPPED["function"].apply, value, *args).to(value.dtype)


@contextlib.contextmanager
def float32_sampling() -> Iterator[None]:
    """Inside: mmcv's deformable-attention sampling (CPU fallback and CUDA kernel) runs in float32.

    ``MultiScaleDeformableAttention.forward`` looks both up in its module at every call, so swapping the two
    names reroutes every such layer for the duration; its projections stay under the caller's autocast."""
    if mmcv_msda.multi_scale_deformable_attn_pytorch is _sampling_in_float32:  # already inside
        yield
        return
    _WRAPPED.update(pytorch=mmcv_msda.multi_scale_deformable_attn_pytorch,
                    function=mmcv_msda.MultiScaleDeformableAttnFunction)
    mmcv_msda.multi_scale_deformable_attn_pytorch = _sampling_in_float32
    mmcv_msda.MultiScaleDeformableAttnFunction = _FunctionInFloat32
    try:
        yield
    finally:
        mmcv_msda.multi_scale_deformable_attn_pytorch = _WRAPPED.pop("pytorch")
        mmcv_msda.MultiScaleDeformableAttnFunction = _WRAPPED.pop("function")


class Float32MultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with autocast off and float32 inputs (see the module doc). Swapped in as the
    module's class, so weights, state dict and deepcopies are untouched."""

    def forward(self, *args, **kwargs):
        return _call_in_float32(super().forward, *args, **kwargs)


def float32_self_attention(detector: nn.Module) -> None:
    """Prepare a teacher for autocast: its query self-attention layers become ``Float32MultiheadAttention``
    (the sampling op is ``float32_sampling``'s, entered around each forward)."""
    for module in detector.modules():
        if type(module) is nn.MultiheadAttention:
            module.__class__ = Float32MultiheadAttention


# The modules whose weight and bias autocast casts to the low dtype for their product (its lower-precision op list).
_PRODUCT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class LowPrecisionWeights:
    """A frozen detector's product weights in the autocast dtype, swapped in around its autocast forward.

    Why: autocast keeps its casts for one region only for leaf tensors that require grad, so a frozen teacher's
    every linear and convolution weight and bias is cast again on every forward (102 tensors on the default
    teacher, 2.7-4.6 ms of its 74-78 ms forward on AMX). The cast is the same rounding whether autocast or this does
    it, and autocast leaves a tensor already in its dtype alone, so the forward's results are bitwise the same.
    Outside ``swapped()`` the float32 parameters are in place: the teacher evaluated on its own, its state dict
    and ``.to()`` see them; the copies are made on first use and again after the detector moves (``reset``).
    Modules inside ``Float32MultiheadAttention`` keep float32: they run with autocast off.
    """

    detector: nn.Module
    dtype: torch.dtype
    _slots: list[tuple[nn.Module, str]] = field(init=False)
    _low: list[nn.Parameter] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        kept = {id(m) for outer in self.detector.modules() if isinstance(outer, Float32MultiheadAttention)
                for m in outer.modules()}
        self._slots = [(module, name) for module in self.detector.modules()
                       if isinstance(module, _PRODUCT_MODULES) and id(module) not in kept
                       for name in ("weight", "bias") if module._parameters.get(name) is not None]

    def reset(self) -> None:
        self._low = None

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        if self._low is None:
            self._low = [nn.Parameter(module._parameters[name].detach().to(self.dtype), requires_grad=False)
                         for module, name in self._slots]
        kept = [module._parameters[name] for module, name in self._slots]
        for (module, name), low in zip(self._slots, self._low):
            module._parameters[name] = low
        try:
            yield
        finally:
            for (module, name), param in zip(self._slots, kept):
                module._parameters[name] = param
