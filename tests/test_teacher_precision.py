"""The teacher's forward under bf16 autocast: float32 outputs for the losses, close to the float32 teacher."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from compress.errors import ConfigError
from tests.conftest import make_batch
from tests.distill_helpers import build_distiller, run_steps
from tests.tiny import tiny_model


def test_bf16_teacher_forward_is_float32_and_close(tmp_path):
    distiller = build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4),
                                teacher_autocast="bfloat16")
    assert distiller.teacher_autocast is torch.bfloat16
    data = distiller.data_preprocessor(make_batch(2, 96), True)
    low = distiller._teacher_forward(data["inputs"], data["data_samples"])
    distiller.teacher_autocast = None
    full = distiller._teacher_forward(data["inputs"], data["data_samples"])
    for a, b in [(low.memory, full.memory), *zip(low.feats, full.feats)]:
        assert a.dtype == torch.float32 and not a.requires_grad
        diff = float((a - b).abs().max())
        assert 0 < diff < 0.05 * float(b.abs().max()), diff  # bf16 really ran, and stayed close
    # the decoder's outputs follow a top-k over encoder proposals, which rounding may reorder: dtype and shape
    for name in ("cls_scores", "bbox_preds"):
        assert getattr(low, name).dtype == torch.float32
        assert getattr(low, name).shape == getattr(full, name).shape


class WeightCasts(TorchDispatchMode):
    """Counts casts (``aten._to_copy``) whose input is one of ``weights``, wherever they come from."""

    def __init__(self, weights):
        super().__init__()
        self.pointers = {w.data_ptr() for w in weights}
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and args[0].data_ptr() in self.pointers:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_bf16_teacher_casts_its_weights_once(tmp_path, monkeypatch):
    """Autocast recasts a frozen teacher's weights on every forward (it keeps casts only of tensors that require
    grad); cast once, no forward casts a float32 weight, the outputs are bitwise the same, and the float32
    parameters are back in place after the forward and follow a move of the distiller."""
    distiller = build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4),
                                teacher_autocast="bfloat16")
    data = distiller.data_preprocessor(make_batch(2, 96), True)
    teacher = distiller.teacher
    linears = [m for m in teacher.modules() if isinstance(m, torch.nn.Linear)
               and not isinstance(m, torch.nn.modules.linear.NonDynamicallyQuantizableLinear)]
    products = [p for m in teacher.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
                and not isinstance(m, torch.nn.modules.linear.NonDynamicallyQuantizableLinear)
                for p in m.parameters(recurse=False)]
    distiller._teacher_forward(data["inputs"], data["data_samples"])  # the first forward makes the copies
    with WeightCasts(products) as once:
        cast_once = distiller._teacher_forward(data["inputs"], data["data_samples"])
    assert all(p.dtype == torch.float32 for p in teacher.parameters())
    monkeypatch.setattr(distiller.teacher_weights, "swapped", contextlib.nullcontext)  # autocast's own casts
    with WeightCasts(products) as every:
        cast_each_time = distiller._teacher_forward(data["inputs"], data["data_samples"])
    assert once.count == 0 and every.count >= len(products) > 20
    for name in ("memory", "cls_scores", "bbox_preds"):
        assert torch.equal(getattr(cast_once, name), getattr(cast_each_time, name))
    assert all(torch.equal(a, b) for a, b in zip(cast_once.feats, cast_each_time.feats))
    monkeypatch.undo()
    distiller.to(torch.device("meta"))
    with distiller.teacher_weights.swapped():
        assert {(m.weight.device.type, m.weight.dtype) for m in linears} == {("meta", torch.bfloat16)}
    assert {(m.weight.device.type, m.weight.dtype) for m in linears} == {("meta", torch.float32)}


def test_bf16_teacher_trains(tmp_path):
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                                teacher_autocast="bfloat16")
    losses = run_steps(distiller, steps=1)[0]
    assert {"loss_lkd_cls_s0", "loss_fkd_t0", "loss_qp_cls_s0"} <= losses.keys()
    assert all(math.isfinite(float(v)) for v in losses.values())


def test_bad_autocast_value_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable"), teacher_autocast="int8")
    text = str(err.value)
    assert "\n" not in text and "model.teacher.autocast='int8'" in text and "'bfloat16'" in text


def test_bf16_teacher_keeps_the_sampling_and_query_self_attention_in_float32(tmp_path, monkeypatch):
    """Under the teacher's autocast deformable attention's sampling op runs in float32 (mmcv's CUDA kernel has
    no bf16 path; the official code casts this op alone), its projections and the FFNs in bf16; the query
    self-attention in float32 (slower in bf16 on CPU); the student's modules and mmcv's ops are untouched."""
    import mmcv.ops.multi_scale_deform_attn as mmcv_msda
    from mmcv.ops import MultiScaleDeformableAttention

    import compress.models.sparse_deformable_attention as sparse

    distiller = build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4),
                                teacher_autocast="bfloat16")
    assert all(type(m) is torch.nn.MultiheadAttention
               for m in distiller.student.modules() if isinstance(m, torch.nn.MultiheadAttention))
    seen = {}
    attention = next(m for m in distiller.teacher.modules() if isinstance(m, MultiScaleDeformableAttention))
    attention.value_proj.register_forward_hook(lambda m, a, out: seen.update(value_proj=out.dtype))
    attention.output_proj.register_forward_hook(lambda m, a, out: seen.update(output_proj=out.dtype))
    ffn = next(m for m in distiller.teacher.modules() if type(m).__name__ == "FFN")
    linear = next(m for m in ffn.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, a, out: seen.update(ffn=out.dtype))
    self_attention = next(m for m in distiller.teacher.modules() if isinstance(m, torch.nn.MultiheadAttention))
    self_attention.register_forward_hook(lambda m, a, out: seen.update(self_attention=out[0].dtype))
    original = sparse.sparse_deformable_attention  # what the teacher's sampling runs on CPU

    def sampling(value, *args):
        seen["sampling"] = value.dtype
        return original(value, *args)

    monkeypatch.setattr(sparse, "sparse_deformable_attention", sampling)
    data = distiller.data_preprocessor(make_batch(2, 96), True)
    distiller._teacher_forward(data["inputs"], data["data_samples"])
    assert seen == {"value_proj": torch.bfloat16, "sampling": torch.float32, "output_proj": torch.bfloat16,
                    "ffn": torch.bfloat16, "self_attention": torch.float32}
    assert mmcv_msda.MultiScaleDeformableAttnFunction.__name__ == "MultiScaleDeformableAttnFunction"


def test_float32_sampling_runs_mmcvs_ops_in_float32_and_restores_them():
    """Both of mmcv's sampling entry points (the CPU fallback and the CUDA Function) get float32 inputs with
    autocast off and hand back the caller's dtype; nesting does not wrap twice; both names come back after."""
    import mmcv.ops.multi_scale_deform_attn as mmcv_msda

    from compress.distill.teacher_precision import float32_sampling

    dense, function = mmcv_msda.multi_scale_deformable_attn_pytorch, mmcv_msda.MultiScaleDeformableAttnFunction
    calls = []

    class Recording:
        @staticmethod
        def apply(value, shapes, start, locations, weights, step):
            calls.append((value.dtype, locations.dtype, weights.dtype, torch.is_autocast_enabled("cpu"), step))
            return value.sum(-1)

    mmcv_msda.MultiScaleDeformableAttnFunction = Recording
    value = torch.randn(1, 6, 2, 4, dtype=torch.bfloat16)
    shapes = torch.tensor([[2, 3]])
    locations, weights = torch.rand(1, 5, 2, 1, 2, 2), torch.rand(1, 5, 2, 1, 2, dtype=torch.bfloat16)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16), float32_sampling(), float32_sampling():
            out = mmcv_msda.MultiScaleDeformableAttnFunction.apply(value, shapes, shapes[:, 0], locations,
                                                                   weights, 64)
            sampled = mmcv_msda.multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)
    finally:
        mmcv_msda.MultiScaleDeformableAttnFunction = function
    assert calls == [(torch.float32, torch.float32, torch.float32, False, 64)]
    assert out.dtype == torch.bfloat16 and sampled.dtype == torch.bfloat16
    expected = dense(value.float(), shapes, locations, weights.float())
    torch.testing.assert_close(sampled.float(), expected, atol=1e-2, rtol=1e-2)
    assert mmcv_msda.multi_scale_deformable_attn_pytorch is dense


def test_moving_the_distiller_moves_the_teachers_preprocessor(tmp_path):
    """The teacher is outside the module tree; ``.to(device)`` must still retarget its data preprocessor, or
    evaluating the teacher on a GPU feeds CPU images against CUDA mean / std (seen on an H100)."""
    distiller = build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4))
    distiller.to(torch.device("meta"))
    assert distiller.teacher.data_preprocessor._device == torch.device("meta")
    assert distiller.data_preprocessor._device == torch.device("meta")
    assert next(distiller.teacher.parameters()).device.type == "meta"
