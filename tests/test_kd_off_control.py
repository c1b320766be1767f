"""The distiller with every loss off trains the student exactly as mmdet trains it alone: same loss values and
gradients on the same batch and RNG state, so every bench-kd entry differs from the baseline by its losses only."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_batch
from tests.distill_helpers import build_distiller
from tests.tiny import tiny_model

OFF = dict(logits_kd=dict(enable=False), feature_kd=dict(enable=False), query_prior=dict(enable=False))


@pytest.mark.parametrize("family", ["dino", "deformable"])
def test_distiller_with_losses_off_is_the_students_own_training_step(tmp_path, family):
    distiller = build_distiller(tmp_path, tiny_model(family), tiny_model(family, width=4), **OFF)
    distiller.train()
    student = distiller.student
    data = distiller.data_preprocessor(make_batch(2), True)

    def step(forward) -> tuple[dict, dict]:
        student.zero_grad()
        torch.manual_seed(0)  # DINO draws its denoising queries from the global RNG
        losses = forward(**data)
        sum(v for k, v in losses.items() if "loss" in k).backward()
        return ({k: v.detach() for k, v in losses.items()},
                {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None})

    own_losses, own_grads = step(lambda **d: student.loss(d["inputs"], d["data_samples"]))
    ours_losses, ours_grads = step(lambda **d: distiller(**d, mode="loss"))
    assert set(ours_losses) == set(own_losses)
    for key in own_losses:
        torch.testing.assert_close(ours_losses[key], own_losses[key], rtol=1e-5, atol=1e-6, msg=key)
    assert set(ours_grads) == set(own_grads) and len(own_grads) > 20
    for name in own_grads:
        torch.testing.assert_close(ours_grads[name], own_grads[name], rtol=1e-4, atol=1e-6, msg=name)
