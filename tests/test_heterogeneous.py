"""Teacher and student that differ: decoder depth, query count, embedding width, backbone."""

from __future__ import annotations

import math

import pytest
import torch

from tests.distill_helpers import build_distiller, run_steps, teacher_snapshot
from tests.tiny import tiny_model


def _check(distiller, history, student_stages: int, teacher_stages: int) -> None:
    losses = history[-1]
    assert {f"loss_lkd_cls_s{s}" for s in range(student_stages)} <= losses.keys()
    assert {f"loss_qp_cls_s{s}" for s in range(student_stages)} <= losses.keys()
    assert {f"loss_fkd_t{t}" for t in range(teacher_stages)} <= losses.keys()
    assert f"loss_lkd_cls_s{student_stages}" not in losses
    for key, value in losses.items():
        assert math.isfinite(float(value)), key
    assert float(losses["_grad_norm"]) > 0


def test_deeper_teacher_groups_stages_uniformly(tmp_path):
    teacher = tiny_model("deformable_refine", dec_layers=4)
    student = tiny_model("deformable_refine", dec_layers=2, width=4)
    distiller = build_distiller(tmp_path, teacher, student)
    _check(distiller, run_steps(distiller), student_stages=2, teacher_stages=4)


@pytest.mark.parametrize("t_queries,s_queries", [(30, 20), (15, 25)])
def test_different_query_counts(tmp_path, t_queries, s_queries):
    distiller = build_distiller(tmp_path, tiny_model("dino", num_queries=t_queries),
                                tiny_model("dino", num_queries=s_queries, width=4))
    _check(distiller, run_steps(distiller), student_stages=2, teacher_stages=2)


@pytest.mark.parametrize("family", ["deformable", "dab", "detr"])
def test_different_embedding_widths_use_adapters(tmp_path, family):
    distiller = build_distiller(tmp_path, tiny_model(family, embed_dims=128), tiny_model(family, embed_dims=64))
    levels = 1 if family in ("dab", "detr") else 4  # one adapter per feature level the neck puts out
    assert len(distiller.feature_adapters) == levels
    assert all(isinstance(a, torch.nn.Conv2d) and (a.in_channels, a.out_channels) == (64, 128)
               for a in distiller.feature_adapters)
    assert distiller.query_proj is not None and distiller.query_proj.weight.shape == (64, 128)
    before = teacher_snapshot(distiller)
    history = run_steps(distiller)
    _check(distiller, history, student_stages=2, teacher_stages=2)
    assert all(a.weight.grad.abs().sum() > 0 for a in distiller.feature_adapters)  # every level is distilled
    assert distiller.query_proj.weight.grad is not None or family == "dab"  # DAB's prior is width-free anchors
    assert all(torch.equal(before[k], v) for k, v in distiller.teacher.state_dict().items())


def test_backbones_r50_teacher_to_r18_and_mobilenet_students(tmp_path):
    teacher = tiny_model("deformable", depth=50, width=8)
    mobilenet = dict(type="MobileNetV2", widen_factor=0.5, out_indices=(2, 4, 6),
                     norm_cfg=dict(type="BN", requires_grad=True))
    for student in (tiny_model("deformable", depth=18, width=8), tiny_model("deformable", backbone=mobilenet)):
        distiller = build_distiller(tmp_path, teacher, student)
        _check(distiller, run_steps(distiller, steps=1), student_stages=2, teacher_stages=2)


def test_encoder_features_and_paper_split_mode(tmp_path):
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                                feature_kd=dict(source="encoder"), logits_kd=dict(mode="split"))
    _check(distiller, run_steps(distiller), student_stages=2, teacher_stages=2)


def test_components_switch_off(tmp_path):
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                                logits_kd=dict(enable=False), feature_kd=dict(enable=False),
                                query_prior=dict(enable=False))
    losses = run_steps(distiller, steps=1)[0]
    assert not [k for k in losses if k.startswith(("loss_lkd", "loss_fkd", "loss_qp"))]
    assert "loss_cls" in losses


# DINO decodes the group in its own decoder call, Deformable DETR in a second one (widths apart: a projection)
@pytest.mark.parametrize(("family", "t_dims"), [("dino", None), ("deformable", 128)])
def test_logits_kd_on_teacher_queries_runs_the_group_without_the_query_prior(tmp_path, family, t_dims):
    def build(**logits_kd):
        s_dims = None if t_dims is None else 64
        return build_distiller(tmp_path, tiny_model(family, embed_dims=t_dims), tiny_model(family, embed_dims=s_dims),
                               logits_kd=logits_kd, feature_kd=dict(enable=False), query_prior=dict(enable=False))

    distiller = build(points="teacher_queries", mode="split")
    losses = run_steps(distiller)[-1]
    assert {"loss_lkd_cls_s0", "loss_lkd_l1_s1"} <= losses.keys()
    assert not [k for k in losses if k.startswith("loss_qp")]
    if t_dims is not None:  # the projection only carries the teacher's queries into the student
        assert distiller.query_proj.weight.grad.abs().sum() > 0
        assert build().query_proj is None  # matched points need no teacher group
