"""Query-prior assignment distillation (DETRDistill, Sec. 3.4).

The teacher's (detached) decoder queries run through the student's decoder as an extra group; that
group's predictions are supervised with GT under the teacher's own Hungarian assignment (from
``teacher.bbox_head.get_targets`` on the teacher's predictions), with the student's ordinary detection
losses. No matching happens on the student side, so the assignment cannot flip between stages or steps.

``loss_under_assignment`` is the body of mmdet's ``DETRHead.loss_by_feat_single`` with the targets given
instead of computed; mmdet's own assigner-free precedent is DINO's denoising loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmdet.utils import reduce_mean


@dataclass
class QueryPriorConfig:
    enable: bool = True
    weight: float = 1.0
    # The official code's step: the student's encoder and decoder run a second time, for the teacher group
    # alone, on the shared backbone/neck features. Off by default; kept for parity runs and timing.
    encoder_twice: bool = False


def loss_under_assignment(head, cls_scores: torch.Tensor, bbox_preds: torch.Tensor, targets: tuple,
                          batch_img_metas: list[dict]) -> dict[str, torch.Tensor]:
    """Student head losses of one stage with a fixed assignment.

    Args:
        head: the student's mmdet DETR-family head (its loss_cls / loss_bbox / loss_iou are used).
        cls_scores: (B, N, cls_out_channels); bbox_preds: (B, N, 4) normalised cxcywh.
        targets: the tuple returned by a DETR head's ``get_targets`` (labels, label_weights,
            bbox_targets, bbox_weights, num_pos, num_neg), per image lists.
    """
    labels_list, label_weights_list, bbox_targets_list, bbox_weights_list, num_pos, num_neg = targets
    labels = torch.cat(labels_list)
    label_weights = torch.cat(label_weights_list)
    bbox_targets = torch.cat(bbox_targets_list)
    bbox_weights = torch.cat(bbox_weights_list)

    cls_avg_factor = num_pos * 1.0 + num_neg * head.bg_cls_weight
    if head.sync_cls_avg_factor:
        cls_avg_factor = reduce_mean(cls_scores.new_tensor([cls_avg_factor]))
    cls_avg_factor = max(cls_avg_factor, 1)
    loss_cls = head.loss_cls(cls_scores.reshape(-1, head.cls_out_channels), labels, label_weights,
                             avg_factor=cls_avg_factor)

    num_pos_avg = torch.clamp(reduce_mean(cls_scores.new_tensor([num_pos])), min=1).item()
    factors = torch.cat([bbox_preds.new_tensor([m["img_shape"][1], m["img_shape"][0]] * 2).expand(
        bbox_preds.shape[1], 4) for m in batch_img_metas])
    flat_preds = bbox_preds.reshape(-1, 4)
    loss_iou = head.loss_iou(bbox_cxcywh_to_xyxy(flat_preds) * factors, bbox_cxcywh_to_xyxy(bbox_targets) * factors,
                             bbox_weights, avg_factor=num_pos_avg)
    loss_bbox = head.loss_bbox(flat_preds, bbox_targets, bbox_weights, avg_factor=num_pos_avg)
    return {"cls": loss_cls, "bbox": loss_bbox, "iou": loss_iou}
