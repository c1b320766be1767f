"""Query-prior assignment distillation: mmdet-equal losses, and the teacher's assignment is the one used."""

from __future__ import annotations

import torch

import compress.distill.distiller as distiller_module
from compress.distill.losses.query_prior_kd import loss_under_assignment
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
