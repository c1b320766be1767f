"""Target-aware feature distillation: query selection, quality mask and masked loss by hand."""

from __future__ import annotations

import math

import pytest
import torch

from compress.distill.losses.feature_kd import (
    masked_feature_loss,
    quality_mask,
    quality_masks,
    query_evidence,
    select_queries,
)


def test_quality_mask_hand_computed():
    feature = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (E=2, H=1, W=2): pixel 0 along x, pixel 1 along y
    queries = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    quality = torch.tensor([0.5, 0.2])
    psi00 = 0.5 * 1 + 0.2 / math.sqrt(2)
    psi01 = 0.5 * 0 + 0.2 / math.sqrt(2)
    expected = torch.tensor([[1.0, psi01 / psi00]])
    torch.testing.assert_close(quality_mask(queries, quality, feature), expected)


def test_quality_mask_clamps_negative_evidence():
    feature = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    queries = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    quality = torch.tensor([0.2, 1.0])
    psi01 = 0.2 / math.sqrt(2)  # pixel 0 sums to 0.141 - 1 < 0.01: clamped to 0.01
    expected = torch.tensor([[0.01 / psi01, 1.0]])
    torch.testing.assert_close(quality_mask(queries, quality, feature), expected)


def test_select_queries_quality_is_score_times_best_iou():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.05]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [50.0, 50.0, 60.0, 60.0]])
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 60.0, 60.0]])
    query, quality = select_queries(probs, boxes, gt, top_m=3)
    assert query.tolist() == [0, 1, 2]  # scores 0.9, 0.8, 0.3
    torch.testing.assert_close(quality, torch.tensor([0.9 * 1.0, 0.8 * 0.5, 0.3 * 0.25]))
    _, quality = select_queries(probs, boxes, gt[:0], top_m=2)  # no GT: quality = score
    torch.testing.assert_close(quality, torch.tensor([0.9, 0.8]))


def test_select_queries_allows_a_query_once_per_class():
    probs = torch.tensor([[0.9, 0.8], [0.1, 0.2]])
    query, _ = select_queries(probs, torch.zeros(2, 4), torch.zeros(0, 4), top_m=2)
    assert query.tolist() == [0, 0]


def test_masked_feature_loss_hand_computed():
    f_t = [torch.ones(1, 2, 1, 2)]
    f_s = [torch.zeros(1, 2, 1, 2)]
    mask = [torch.tensor([[[1.0, 0.5]]])]
    # mean over B x C x H x W of (psi * 1)^2 = (1 + 0.25 + 1 + 0.25) / 4
    assert masked_feature_loss(f_t, f_s, mask).item() == pytest.approx(0.625)


def test_batched_masks_equal_the_per_query_cosine_sum():
    """The evidence-vector form equals the definition: clamp(sum_i q_i cos(Q_i, F)), over its max."""
    torch.manual_seed(0)
    queries, quality = torch.randn(2, 7, 5), torch.rand(2, 7)
    features = [torch.randn(2, 5, 3, 4), torch.randn(2, 5, 2, 2)]
    masks = quality_masks(torch.stack([query_evidence(queries[b], quality[b]) for b in range(2)]), features)
    for level, feature in enumerate(features):
        for b in range(2):
            cos = torch.nn.functional.cosine_similarity(queries[b][:, :, None, None], feature[b][None], dim=1)
            psi = (quality[b][:, None, None] * cos).sum(0).clamp(min=0.01)
            torch.testing.assert_close(masks[level][b], psi / psi.max())
