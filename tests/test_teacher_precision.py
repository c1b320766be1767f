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
