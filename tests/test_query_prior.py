"""Query-prior assignment distillation: mmdet-equal losses, and the teacher's assignment is the one used."""

from __future__ import annotations

import torch

import compress.distill.distiller as distiller_module
from compress.distill.losses.query_prior_kd import loss_under_assignment
from compress.distill.taps import decode_query_group, forward_taps
from tests.conftest import make_batch
from tests.distill_helpers import build_distiller
from tests.tiny import tiny_model


def test_fixed_assignment_loss_equals_mmdet_when_assignment_is_the_same(tmp_path):
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4))
    head = distiller.student.bbox_head
    data = distiller.data_preprocessor(make_batch(2), True)
    gts = [s.gt_instances for s in data["data_samples"]]
    metas = [s.metainfo for s in data["data_samples"]]
    torch.manual_seed(0)
    cls, box = torch.randn(2, 20, 6), torch.rand(2, 20, 4) * 0.5 + 0.25
    targets = head.get_targets(list(cls), list(box), gts, metas)
    ours = loss_under_assignment(head, cls, box, targets, metas)
    ref_cls, ref_bbox, ref_iou = head.loss_by_feat_single(cls, box, gts, metas)
    torch.testing.assert_close(ours["cls"], ref_cls)
    torch.testing.assert_close(ours["bbox"], ref_bbox)
    torch.testing.assert_close(ours["iou"], ref_iou)


def test_student_predictions_do_not_change_the_teacher_assignment(tmp_path, monkeypatch):
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4),
                                logits_kd=dict(enable=False), feature_kd=dict(enable=False))
    seen = []

    def recording(head, cls_scores, bbox_preds, targets, metas):
        seen.append((targets, cls_scores.detach(), bbox_preds.detach()))
        return loss_under_assignment(head, cls_scores, bbox_preds, targets, metas)

    monkeypatch.setattr(distiller_module, "loss_under_assignment", recording)
    data = distiller.data_preprocessor(make_batch(2), True)
    distiller.train()
    distiller.loss(**data)
    first = seen[:]
    seen.clear()
    with torch.no_grad():  # a very different student
        for p in distiller.student.bbox_head.parameters():
            p.add_(torch.randn_like(p))
    distiller.loss(**data)
    assert len(first) == len(seen) == 2
    gts = [s.gt_instances for s in data["data_samples"]]
    metas = [s.metainfo for s in data["data_samples"]]
    student_assignment_differs = False
    for (t_a, cls_a, box_a), (t_b, cls_b, box_b) in zip(first, seen):
        assert not torch.allclose(box_a, box_b)  # the student's group predictions did change
        for a, b in zip(t_a[:4], t_b[:4]):  # labels, label weights, box targets, box weights per image
            for x, y in zip(a, b):
                assert torch.equal(x, y)
        # the student's own matcher would have paired the queries differently
        own_a = distiller.student.bbox_head.get_targets(list(cls_a), list(box_a), gts, metas)
        own_b = distiller.student.bbox_head.get_targets(list(cls_b), list(box_b), gts, metas)
        student_assignment_differs |= any(not torch.equal(x, y) for x, y in zip(own_a[0], own_b[0]))
    assert student_assignment_differs


def _taps_with_group(model, data, group, seed: int):
    torch.manual_seed(seed)  # DINO draws its denoising queries at random
    return forward_taps(model, data["inputs"], data["data_samples"], group)


def test_dino_decodes_the_group_in_its_own_call_exactly_as_a_separate_call(tmp_path):
    """One decoder call with a block-diagonal self-attention mask == own queries alone + group alone."""
    distiller = build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4))
    student = distiller.student.train()
    data = distiller.data_preprocessor(make_batch(2), True)
    torch.manual_seed(1)
    group = {"query": torch.randn(2, 7, student.embed_dims), "reference_points": torch.rand(2, 7, 4)}
    with torch.no_grad():
        merged = _taps_with_group(student, data, group, seed=0)
        alone = _taps_with_group(student, data, None, seed=0)
        separate = decode_query_group(student, alone.decoder_inputs, group)
    assert merged.num_dn > 0 and merged.cls_scores.shape == alone.cls_scores.shape
    torch.testing.assert_close(merged.cls_scores, alone.cls_scores)  # own queries never see the group
    torch.testing.assert_close(merged.bbox_preds, alone.bbox_preds)
    assert merged.extras["group"][0].shape[:3] == (2, 2, 7)
    torch.testing.assert_close(merged.extras["group"][0], separate[0])  # nor the group the own queries
    torch.testing.assert_close(merged.extras["group"][1], separate[1])


def test_other_families_decode_the_group_in_a_second_call(tmp_path):
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4))
    student = distiller.student.train()
    data = distiller.data_preprocessor(make_batch(2), True)
    group = distiller._query_group(distiller._teacher_forward(data["inputs"], data["data_samples"]))
    with torch.no_grad():
        taps = _taps_with_group(student, data, group, seed=0)
        separate = decode_query_group(student, taps.decoder_inputs, group)
    torch.testing.assert_close(taps.extras["group"][1], separate[1])
