"""Box maths. Formats are in the names (cxcywh, xyxy); functions broadcast over leading dimensions, so
``giou(a[:, None], b[None])`` is the pairwise (N, M) matrix and ``giou(a, b)`` the aligned (K,) vector."""

from __future__ import annotations

import torch


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def _area(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    wh = (boxes_xyxy[..., 2:] - boxes_xyxy[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _inter_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    wh = (torch.min(a[..., 2:], b[..., 2:]) - torch.max(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, _area(a) + _area(b) - inter


def iou(a_xyxy: torch.Tensor, b_xyxy: torch.Tensor) -> torch.Tensor:
    inter, union = _inter_union(a_xyxy, b_xyxy)
    return inter / union.clamp(min=1e-7)


def giou(a_xyxy: torch.Tensor, b_xyxy: torch.Tensor) -> torch.Tensor:
    inter, union = _inter_union(a_xyxy, b_xyxy)
    hull_wh = (torch.max(a_xyxy[..., 2:], b_xyxy[..., 2:]) - torch.min(a_xyxy[..., :2], b_xyxy[..., :2])).clamp(min=0)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return inter / union.clamp(min=1e-7) - (hull - union) / hull.clamp(min=1e-7)
