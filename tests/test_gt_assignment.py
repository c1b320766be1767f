"""The batched teacher assignment equals mmdet's per-(stage, image) ``get_targets``, element for element."""

from __future__ import annotations

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from compress.distill.gt_assignment import stage_targets
from tests.tiny import tiny_model


def _head(family: str):
    model = tiny_model(family, embed_dims=32, num_queries=7)
    cfg = dict(model["bbox_head"], train_cfg=model["train_cfg"])
    with DefaultScope.overwrite_default_scope("mmdet"):
        return MODELS.build(cfg)


def _gt(count: int, h: int, w: int, gen: torch.Generator) -> InstanceData:
    xy = torch.rand(count, 2, generator=gen) * torch.tensor([w * 0.6, h * 0.6])
    wh = torch.rand(count, 2, generator=gen) * torch.tensor([w * 0.4, h * 0.4]) + 2
    gt = InstanceData()
    gt.bboxes = torch.cat([xy, xy + wh], 1)
    gt.labels = torch.randint(0, 6, (count,), generator=gen)
    return gt


# softmax head with ClassificationCost (DETR), focal cost heads (Conditional, DINO)
@pytest.mark.parametrize("family", ["detr", "conditional", "dino"])
def test_stage_targets_equal_mmdet_get_targets(family):
    head = _head(family)
    gen = torch.Generator().manual_seed(0)
    # more GT than queries, no GT at all, one GT; three images share a size (scored together), two differ
    counts, shapes = [3, 0, 9, 1, 2], [(96, 128), (80, 80), (96, 128), (96, 128), (64, 112)]
    gts = [_gt(c, h, w, gen) for c, (h, w) in zip(counts, shapes)]
    metas = [dict(img_shape=s) for s in shapes]
    cls = torch.randn(2, 5, 7, head.cls_out_channels, generator=gen)
    box = torch.rand(2, 5, 7, 4, generator=gen) * 0.5 + 0.25
    ours = stage_targets(head, cls, box, gts, metas)
    assert sorted(ours) == [0, 1]
    for k in range(2):
        ref = head.get_targets(list(cls[k]), list(box[k]), gts, metas)
        for per_image_ours, per_image_ref in zip(ours[k][:4], ref[:4]):  # labels, weights, box targets, weights
            assert len(per_image_ours) == len(per_image_ref) == 5
            for a, b in zip(per_image_ours, per_image_ref):
                assert a.dtype == b.dtype and torch.equal(a, b)
        assert ours[k][4:] == ref[4:] == (3 + 0 + 7 + 1 + 2, 5 * 7 - 13)  # num_pos, num_neg
    # the stages' predictions differ, so the assignments must too: each stage is matched on its own
    assert not all(torch.equal(a, b) for a, b in zip(ours[0][0], ours[1][0]))
