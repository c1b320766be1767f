"""Target-aware feature distillation (DETRDistill, Sec. 3.3), official-code form.

Per teacher decoder stage: the teacher's top-M (query, class) scores pick M query embeddings; each gets a
quality q = score x (max IoU of its box with the image's GT) (q = score for an image without GT). The mask
of a feature level is psi = clamp(sum_i q_i cos(Q_i, F_T(x, y)), min=0.01) divided by its spatial maximum,
and the loss is mean((psi * (F_T - phi(F_S)))^2) over B x C x H x W, summed over levels. The paper's
unweighted mask gives only minor gains; the quality weighting is what concentrates the loss on objects.

That concentration needs the teacher's decoder queries to point the same way as its features at the objects
they found. Where they do not (on the embedded default the mask puts about as much of its weight inside the
GT boxes as their share of the map: ``tools/feature_mask_focus.py``), ``mask='boxes'`` keeps the same top-M
queries and quality and lays each quality on the footprint of the query's predicted box instead of its
cosine: psi = clamp(sum_i q_i [cell (x, y) overlaps box_i], min=0.01) / max, target-aware by construction.

``normalize='channel'`` compares the maps after standardising each channel over the batch and positions (PKD,
Cao et al., NeurIPS 2022): a from-scratch student's adapted features need not match the teacher's scale and
offset per channel, only their pattern, and a few large-magnitude teacher channels no longer dominate the sum.
With ``method='fitnet'`` it is PKD itself (whose loss is this MSE halved).

``source`` picks the maps: the neck outputs (the official code), the encoder memory, or the backbone outputs
the neck reads (level i of each is the same stride), which a pair with one backbone architecture can compare
without an adapter.

``adapter`` is phi: ``'linear'`` (the official code: a 1x1 conv where the widths differ, none where they agree)
or ``'mlp'`` (1x1 conv, ReLU, 1x1 conv, also between equal widths; the nonlinear projector of Chen et al.,
"Improved Feature Distillation via Projector Ensemble", NeurIPS 2022). Why: a linear phi asks the student's
maps to hold the teacher's up to a linear map, a constraint that competes with what the student's own
detection loss shapes them into; a small nonlinear projector takes up part of the mismatch, so the imitation
passes on what the teacher's maps know with less pull on the student's own layout. Measured on the embedded
pair (README, "Where the targets stand"): it lifted the term alone over the linear phi on three seeds of one
machine and not on nine of another, and lowered the full method on both, so the linear phi stays the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from compress.distill.box_ops import iou
from compress.distill.losses.options import check_choices

SOURCES = ("neck", "encoder", "backbone")
# 'detrdistill': the quality-weighted mask below; 'fitnet' and 'mgd': the peer baselines of the paper's
# comparison, on the same features and adapters (losses/fitnet.py, losses/mgd.py).
METHODS = ("detrdistill", "fitnet", "mgd")
MASKS = ("cosine", "boxes")
NORMALIZE = ("none", "channel")
ADAPTERS = ("linear", "mlp")
# The string options and their values (checked by options.check_choices).
CHOICES = {"source": SOURCES, "method": METHODS, "mask": MASKS, "normalize": NORMALIZE, "adapter": ADAPTERS}


@dataclass
class FeatureKDConfig:
    enable: bool = True
    weight: float = 1.0
    source: str = "neck"
    top_m: int = 100
    min_mask: float = 0.01
    method: str = "detrdistill"
    mgd_mask_ratio: float = 0.65
    mask: str = "cosine"
    normalize: str = "none"
    adapter: str = "linear"
    # Indices of the distilled feature levels (neck outputs, encoder-memory or backbone levels, finest first);
    # None = all, as in the official code.
    levels: list[int] | None = None

    def __post_init__(self) -> None:
        check_choices("feature_kd", self, CHOICES)
        if self.source == "backbone" and self.method == "detrdistill" and self.mask == "cosine":
            raise ValueError("feature_kd.source='backbone' needs mask='boxes': the cosine mask compares the "
                             "teacher's queries with features of their width, which backbone maps do not have")
        if self.levels is not None:
            self.levels = list(self.levels)
            if (not self.levels or len(set(self.levels)) != len(self.levels)
                    or not all(isinstance(i, int) and i >= 0 for i in self.levels)):
                raise ValueError(f"feature_kd.levels must be None (all) or distinct level indices >= 0, "
                                 f"got {self.levels!r}")
        if not 0 <= self.mgd_mask_ratio < 1:
            raise ValueError(f"feature_kd.mgd_mask_ratio must be in [0, 1), got {self.mgd_mask_ratio}")


def feature_adapter(student_channels: int, teacher_channels: int, kind: str = "linear") -> nn.Module:
    """phi, from the student's width to the teacher's (see the module doc for the two kinds)."""
    if kind == "mlp":
        return nn.Sequential(nn.Conv2d(student_channels, teacher_channels, kernel_size=1), nn.ReLU(),
                             nn.Conv2d(teacher_channels, teacher_channels, kernel_size=1))
    if student_channels == teacher_channels:
        return nn.Identity()
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1)


def gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (..., N, D) and index (..., M) -> (..., M, D): rows picked per leading index."""
    return values.gather(-2, index[..., None].expand(*index.shape, values.shape[-1]))


def select_queries(probs: torch.Tensor, boxes_xyxy: torch.Tensor, gt_xyxy: torch.Tensor, top_m: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-M (query, class) pairs of one image: returns (query indices (..., M), quality (..., M)).

    probs: (..., N, C) teacher scores; boxes_xyxy: (..., N, 4) and gt_xyxy: (G, 4) in the same units (leading
    dims: the teacher's decoder stages, selected together). A query may appear once per class, as in the
    official code.
    """
    num_classes = probs.shape[-1]
    scores, flat = probs.flatten(-2).topk(min(top_m, probs.shape[-1] * probs.shape[-2]))
    query = flat // num_classes
    if gt_xyxy.numel() == 0:
        return query, scores
    best_iou = iou(gather_rows(boxes_xyxy, query)[..., None, :], gt_xyxy).max(dim=-1).values
    return query, scores * best_iou


def query_evidence(queries: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """sum_i q_i Q_i / |Q_i|: (..., M, E) queries and (..., M) quality -> (..., E).

    The mask's sum of quality-weighted cosines is linear in the normalised queries, so
    sum_i q_i cos(Q_i, F) = (sum_i q_i Q_i / |Q_i|) . F / |F|: one vector per image replaces an (M, H, W)
    tensor per level (same value; 100x less work at M = 100)."""
    return (quality[..., None] * F.normalize(queries, dim=-1)).sum(-2)


def normalised(psi: torch.Tensor, min_mask: float) -> torch.Tensor:
    """clamp(psi, min_mask) over its per-map maximum: (..., H, W) in (0, 1]."""
    psi = psi.clamp(min=min_mask)
    return psi / psi.flatten(-2).max(dim=-1).values[..., None, None]


def quality_masks(evidence: torch.Tensor, features: list[torch.Tensor], min_mask: float = 0.01
                  ) -> list[torch.Tensor]:
    """psi (..., B, H, W) in (0, 1] per level; evidence (..., B, E) from ``query_evidence`` (leading dims: one
    mask per teacher stage from a single normalisation of each map), features (B, E, H, W)."""
    return [normalised(torch.einsum("...be,behw->...bhw", evidence, F.normalize(feature, dim=1)), min_mask)
            for feature in features]


def box_cover(boxes_xyxy: torch.Tensor, weights: torch.Tensor, input_hw: tuple[int, int], size: tuple[int, int]
              ) -> torch.Tensor:
    """(..., H, W): the summed weight of the boxes overlapping each cell of an H x W map over the input.

    boxes (..., M, 4) in input pixels, weights (..., M). A cell counts for a box when their areas overlap, so a box
    smaller than a coarse level's stride still marks the cell it lies in."""
    (in_h, in_w), (h, w) = input_hw, size
    edges_x = torch.arange(w + 1, device=boxes_xyxy.device, dtype=boxes_xyxy.dtype) * (in_w / w)
    edges_y = torch.arange(h + 1, device=boxes_xyxy.device, dtype=boxes_xyxy.dtype) * (in_h / h)
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)  # each (..., M)
    in_x = (x1[..., None] < edges_x[1:]) & (x2[..., None] > edges_x[:-1])  # (..., M, W)
    in_y = (y1[..., None] < edges_y[1:]) & (y2[..., None] > edges_y[:-1])  # (..., M, H)
    return torch.einsum("...m,...mh,...mw->...hw", weights, in_y.to(weights.dtype), in_x.to(weights.dtype))


def box_masks(boxes_xyxy: torch.Tensor, quality: torch.Tensor, input_hw: tuple[int, int],
              sizes: list[tuple[int, int]], min_mask: float = 0.01) -> list[torch.Tensor]:
    """psi (..., B, H, W) in (0, 1] per level from (..., B, M, 4) boxes in input pixels and (..., B, M) quality."""
    return [normalised(box_cover(boxes_xyxy, quality, input_hw, size), min_mask) for size in sizes]


def weight_in_boxes(psi: torch.Tensor, boxes_xyxy: list[torch.Tensor], input_hw: tuple[int, int]
                    ) -> tuple[float, float]:
    """How target-aware a mask is: (share of the cells inside any box, share of the loss weight psi^2 there)
    over the batch. psi (B, H, W); boxes_xyxy one (G, 4) tensor in input pixels per image. A mask blind to the
    objects puts the same share of its weight inside them as their share of the map."""
    inside = torch.stack([box_cover(b[None].to(psi), psi.new_ones(1, len(b)), input_hw, psi.shape[-2:])[0] > 0
                          for b in boxes_xyxy]).to(psi.dtype)
    weight = psi**2
    return inside.mean().item(), (weight * inside).sum().item() / weight.sum().item()


def quality_mask(queries: torch.Tensor, quality: torch.Tensor, feature: torch.Tensor, min_mask: float = 0.01
                 ) -> torch.Tensor:
    """psi (H, W) for one image and level; queries (M, E), quality (M,), feature (E, H, W)."""
    return quality_masks(query_evidence(queries, quality)[None], [feature[None]], min_mask)[0][0]


def channel_standardised(feature: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, C, H, W) with each channel at zero mean and unit standard deviation over B x H x W (PKD's norm)."""
    mean = feature.mean(dim=(0, 2, 3), keepdim=True)
    std = feature.std(dim=(0, 2, 3), keepdim=True)
    return (feature - mean) / (std + eps)


def masked_feature_loss(teacher_feats: list[torch.Tensor], student_feats: list[torch.Tensor],
                        masks: list[torch.Tensor]) -> torch.Tensor:
    """sum over levels of mean((psi * (F_T - F_S))^2) over B x C x H x W; feats (B, C, H, W), masks (..., B, H, W)
    -> one value per leading index (a scalar for (B, H, W) masks).

    psi is constant over channels, so the loss is sum(psi^2 * |F_T - F_S|^2_C) / (B C H W): the channel-summed
    squared error, computed once per level, serves every teacher stage's mask (its backward, the one pass over
    B x C x H x W, too); the per-stage form costs a full-size pass per stage in each direction."""
    total = student_feats[0].new_zeros(())
    for f_t, f_s, psi in zip(teacher_feats, student_feats, masks):
        error = (f_t - f_s).square().sum(dim=1)
        total = total + (psi.square() * error).flatten(-3).sum(dim=-1) / f_s.numel()
    return total
