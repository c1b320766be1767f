"""Target-aware feature distillation (DETRDistill, Sec. 3.3), official-code form.

Per teacher decoder stage: the teacher's top-M (query, class) scores pick M query embeddings; each gets a
quality q = score x (max IoU of its box with the image's GT) (q = score for an image without GT). The mask
of a feature level is psi = clamp(sum_i q_i cos(Q_i, F_T(x, y)), min=0.01) divided by its spatial maximum,
and the loss is mean((psi * (F_T - phi(F_S)))^2) over B x C x H x W, summed over levels. The paper's
unweighted mask gives only minor gains; the quality weighting is what concentrates the loss on objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compress.distill.box_ops import iou

SOURCES = ("neck", "encoder")
# 'detrdistill': the quality-weighted mask below; 'fitnet' and 'mgd': the peer baselines of the paper's
# comparison, on the same features and adapters (losses/fitnet.py, losses/mgd.py).
METHODS = ("detrdistill", "fitnet", "mgd")


@dataclass
class FeatureKDConfig:
    enable: bool = True
    weight: float = 1.0
    source: str = "neck"
    top_m: int = 100
    min_mask: float = 0.01
    method: str = "detrdistill"
    mgd_mask_ratio: float = 0.65

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"feature_kd.source must be one of {SOURCES}, got {self.source!r}")
        if self.method not in METHODS:
            raise ValueError(f"feature_kd.method must be one of {METHODS}, got {self.method!r}")
        if not 0 <= self.mgd_mask_ratio < 1:
            raise ValueError(f"feature_kd.mgd_mask_ratio must be in [0, 1), got {self.mgd_mask_ratio}")


def select_queries(probs: torch.Tensor, boxes_xyxy: torch.Tensor, gt_xyxy: torch.Tensor, top_m: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-M (query, class) pairs of one image: returns (query indices (M,), quality (M,)).

    probs: (N, C) teacher scores; boxes_xyxy: (N, 4) and gt_xyxy: (G, 4) in the same units.
    A query may appear once per class, as in the official code.
    """
    num_classes = probs.shape[1]
    scores, flat = probs.flatten().topk(min(top_m, probs.numel()))
    query = flat // num_classes
    if gt_xyxy.numel() == 0:
        return query, scores
    best_iou = iou(boxes_xyxy[query][:, None], gt_xyxy[None]).max(dim=1).values
    return query, scores * best_iou


def query_evidence(queries: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """sum_i q_i Q_i / |Q_i|: (M, E) queries and (M,) quality -> (E,).

    The mask's sum of quality-weighted cosines is linear in the normalised queries, so
    sum_i q_i cos(Q_i, F) = (sum_i q_i Q_i / |Q_i|) . F / |F|: one vector per image replaces an (M, H, W)
    tensor per level (same value; 100x less work at M = 100)."""
    return (quality[:, None] * F.normalize(queries, dim=-1)).sum(0)


def quality_masks(evidence: torch.Tensor, features: list[torch.Tensor], min_mask: float = 0.01
                  ) -> list[torch.Tensor]:
    """psi (B, H, W) in (0, 1] per level; evidence (B, E) from ``query_evidence``, features (B, E, H, W)."""
    masks = []
    for feature in features:
        psi = torch.einsum("be,behw->bhw", evidence, F.normalize(feature, dim=1)).clamp(min=min_mask)
        masks.append(psi / psi.flatten(1).max(dim=1).values[:, None, None])
    return masks


def quality_mask(queries: torch.Tensor, quality: torch.Tensor, feature: torch.Tensor, min_mask: float = 0.01
                 ) -> torch.Tensor:
    """psi (H, W) for one image and level; queries (M, E), quality (M,), feature (E, H, W)."""
    return quality_masks(query_evidence(queries, quality)[None], [feature[None]], min_mask)[0][0]


def masked_feature_loss(teacher_feats: list[torch.Tensor], student_feats: list[torch.Tensor],
                        masks: list[torch.Tensor]) -> torch.Tensor:
    """sum over levels of mean((psi * (F_T - F_S))^2); feats (B, C, H, W), masks (B, H, W)."""
    total = student_feats[0].new_zeros(())
    for f_t, f_s, psi in zip(teacher_feats, student_feats, masks):
        total = total + ((psi[:, None] * (f_t - f_s)) ** 2).mean()
    return total
