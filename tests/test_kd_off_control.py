"""The distiller with every loss off trains the student exactly as mmdet trains it alone: same loss values and
gradients on the same batch and RNG state, and, seed for seed, the same initial weights and the same RNG state
after them, so every bench-kd entry differs from the baseline by its losses only."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.conftest import make_batch, save_random_detector
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


@pytest.mark.parametrize("sections", [{}, dict(feature_kd=dict(method="mgd"), contrastive_kd=dict(enable=True))],
                         ids=["detrdistill", "mgd_contrastive"])
def test_the_distillers_student_starts_where_the_student_alone_starts(tmp_path, sections):
    """Built and initialised from the same seed, as the Runner does: the teacher, the query projection and the
    feature adapters draw from a stream of their own (before the fix: 45 of 229 tensors differed on the
    embedded pair, the backbone's among them, because the teacher's construction came first)."""
    from mmdet.registry import MODELS

    import compress.distill  # noqa: F401

    teacher_cfg, student_cfg = tiny_model("dino", embed_dims=64), tiny_model("dino", embed_dims=32, width=4)
    ckpt = save_random_detector(teacher_cfg, tmp_path / "teacher.pth", seed=3)

    def seeded(cfg: dict):
        torch.manual_seed(0)
        model = MODELS.build(copy.deepcopy(cfg))  # mmdet's detectors edit the dict they are built from
        model.init_weights()
        return model, torch.get_rng_state()

    alone, state_alone = seeded(student_cfg)
    distiller, state_ours = seeded(dict(type="DETRDistiller", teacher=dict(config=teacher_cfg, checkpoint=str(ckpt)),
                                        student=dict(config=student_cfg), **sections))
    assert distiller.query_proj is not None and distiller.feature_adapters is not None  # they drew numbers
    ours = distiller.student.state_dict()
    assert set(ours) == set(alone.state_dict())
    for name, value in alone.state_dict().items():
        assert torch.equal(ours[name], value), name
    assert torch.equal(state_ours, state_alone)  # the training draws (denoising queries) pair up too
