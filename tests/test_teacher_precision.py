"""The teacher's forward under bf16 autocast: float32 outputs for the losses, close to the float32 teacher."""

from __future__ import annotations

import math

import pytest
import torch

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


def test_bf16_teacher_keeps_deformable_attention_in_float32(tmp_path):
    """mmcv's CUDA deformable attention has no bf16 kernel: under the teacher's autocast the op runs in float32
    (as in the official code), everything around it in bf16; the student's modules are untouched."""
    from mmcv.ops import MultiScaleDeformableAttention

    distiller = build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4),
                                teacher_autocast="bfloat16")
    attention = [m for m in distiller.teacher.modules() if isinstance(m, MultiScaleDeformableAttention)]
    assert attention and all(type(m).__name__ == "Float32DeformableAttention" for m in attention)
    assert all(type(m) is MultiScaleDeformableAttention
               for m in distiller.student.modules() if isinstance(m, MultiScaleDeformableAttention))
    seen = {}
    attention[0].register_forward_hook(lambda m, a, out: seen.update(attn=out.dtype))  # None: output kept
    ffn = next(m for m in distiller.teacher.modules() if type(m).__name__ == "FFN")
    linear = next(m for m in ffn.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, a, out: seen.update(ffn=out.dtype))
    data = distiller.data_preprocessor(make_batch(2, 96), True)
    distiller._teacher_forward(data["inputs"], data["data_samples"])
    assert seen == {"attn": torch.float32, "ffn": torch.bfloat16}


def test_moving_the_distiller_moves_the_teachers_preprocessor(tmp_path):
    """The teacher is outside the module tree; ``.to(device)`` must still retarget its data preprocessor, or
    evaluating the teacher on a GPU feeds CPU images against CUDA mean / std (seen on an H100)."""
    distiller = build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4))
    distiller.to(torch.device("meta"))
    assert distiller.teacher.data_preprocessor._device == torch.device("meta")
    assert distiller.data_preprocessor._device == torch.device("meta")
    assert next(distiller.teacher.parameters()).device.type == "meta"
