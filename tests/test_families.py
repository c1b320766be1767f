"""Every supported mmdet DETR family as teacher and student, real training steps with all three losses."""

from __future__ import annotations

import math

import pytest
import torch

from tests.distill_helpers import build_distiller, run_steps, teacher_snapshot
from tests.tiny import FAMILIES, tiny_model


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_distills_with_all_losses(tmp_path, family):
    torch.manual_seed(0)
    teacher = tiny_model(family, enc_layers=1, dec_layers=2, num_queries=20)
    student = tiny_model(family, enc_layers=1, dec_layers=2, num_queries=20, width=4)
    distiller = build_distiller(tmp_path, teacher, student)
    before = teacher_snapshot(distiller)
    history = run_steps(distiller, steps=2)
    for losses in history:
        kd = {k: v for k, v in losses.items() if k.startswith(("loss_lkd", "loss_fkd", "loss_qp"))}
        assert any(k.startswith("loss_lkd") for k in kd) and any(k.startswith("loss_fkd") for k in kd)
        assert any(k.startswith("loss_qp") for k in kd)
        for key, value in losses.items():
            assert math.isfinite(float(value)), key
        for key, value in kd.items():
            assert float(value) != 0.0, key
        assert float(losses["_grad_norm"]) > 0
    # every student parameter that the losses touch received a gradient; the teacher none, and is unchanged
    assert all(p.grad is None for p in distiller.teacher.parameters())
    after = distiller.teacher.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert not distiller.teacher.training
    assert not any(k.startswith("teacher.") for k in distiller.state_dict())
