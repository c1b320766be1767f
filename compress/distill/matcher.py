"""Hungarian matching between student and teacher predictions of one decoder stage.

Costs follow the official DETRDistill code: soft-target BCE summed over classes (not averaged), L1 on
normalised cxcywh boxes, negative GIoU. Boxes are normalised cxcywh throughout. The cost functions take
leading batch dimensions, so a whole batch's matrices come from one set of ops and one device-to-host copy
(per-image loops cost more in op launches than the maths on small models, on CPUs and GPUs alike).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from compress.distill.box_ops import cxcywh_to_xyxy, giou


def soft_bce_cost(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """C[..., n, m] = sum_c BCE_with_logits(student_logits[..., n, c], teacher_probs[..., m, c]); shapes
    (..., N, C), (..., M, C).

    Uses BCE(x, p) = softplus(x) - x * p, so the pairwise sum is one matrix product.
    """
    return F.softplus(student_logits).sum(-1, keepdim=True) - student_logits @ teacher_probs.transpose(-1, -2)


def kd_cost_matrix(student_logits: torch.Tensor, student_boxes: torch.Tensor, teacher_probs: torch.Tensor,
                   teacher_boxes: torch.Tensor, cls_weight: float = 1.0, l1_weight: float = 5.0,
                   giou_weight: float = 2.0) -> torch.Tensor:
    """(..., N_student, N_teacher) matching cost; no gradient flows through matching."""
    with torch.no_grad():
        cost = cls_weight * soft_bce_cost(student_logits.float(), teacher_probs.float())
        cost = cost + l1_weight * torch.cdist(student_boxes.float(), teacher_boxes.float(), p=1)
        s_xyxy, t_xyxy = cxcywh_to_xyxy(student_boxes.float()), cxcywh_to_xyxy(teacher_boxes.float())
        return cost - giou_weight * giou(s_xyxy[..., :, None, :], t_xyxy[..., None, :, :])


def hungarian(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment; returns (row indices, column indices) as int64 tensors."""
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    device = cost.device
    return (torch.as_tensor(rows, dtype=torch.long, device=device),
            torch.as_tensor(cols, dtype=torch.long, device=device))
