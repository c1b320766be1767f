"""Hungarian-matching logits distillation on a hand-built case."""

from __future__ import annotations

import math

import pytest
import torch

from compress.distill.losses.logits_kd import (
    LogitsKDConfig,
    logits_kd_loss,
    match_pairs,
    match_stages,
    query_match,
)
from compress.distill.matcher import kd_cost_matrix


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


S_LOGITS = torch.tensor([[[2.0, -1.0], [-3.0, 0.5]]])
S_BOXES = torch.tensor([[[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]])
T_PROBS = torch.tensor([[[0.1, 0.6], [0.9, 0.2]]])
# teacher 1 sits on student 0 (taller by 0.1), teacher 0 exactly on student 1
T_BOXES = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.3, 0.3, 0.2, 0.3]]])
# BCE(x, p) = softplus(x) - x p, summed over classes, for the pairs (s0, t1) and (s1, t0)
BCE_S0_T1 = softplus(2.0) - 2.0 * 0.9 + softplus(-1.0) + 1.0 * 0.2
BCE_S1_T0 = softplus(-3.0) + 3.0 * 0.1 + softplus(0.5) - 0.5 * 0.6
GIOU_S0_T1 = 0.04 / 0.06  # student box inside the teacher box: IoU = 0.04 / 0.06, hull = union


def test_all_pairs_hand_computed():
    loss = logits_kd_loss(S_LOGITS, S_BOXES, T_PROBS, T_BOXES, LogitsKDConfig())
    assert loss["cls"].item() == pytest.approx((BCE_S0_T1 + BCE_S1_T0) / 2, abs=1e-5)
    assert loss["l1"].item() == pytest.approx(5.0 * 0.1 / 2, abs=1e-5)
    assert loss["giou"].item() == pytest.approx(2.0 * (1 - GIOU_S0_T1) / 2, abs=1e-5)


def test_split_mode_negatives_carry_no_box_terms():
    cfg = LogitsKDConfig(mode="split")
    # teacher 0 positive: student 1 matches it exactly (no box error); student 0 -> negative teacher 1
    loss = logits_kd_loss(S_LOGITS, S_BOXES, T_PROBS, T_BOXES, cfg, [torch.tensor([True, False])])
    assert loss["cls"].item() == pytest.approx((BCE_S0_T1 + BCE_S1_T0) / 2, abs=1e-5)
    assert loss["l1"].item() == pytest.approx(0.0, abs=1e-6)
    assert loss["giou"].item() == pytest.approx(0.0, abs=1e-6)
    # teacher 1 positive: its box error counts, averaged over the single positive pair
    loss = logits_kd_loss(S_LOGITS, S_BOXES, T_PROBS, T_BOXES, cfg, [torch.tensor([False, True])])
    assert loss["l1"].item() == pytest.approx(5.0 * 0.1, abs=1e-5)
    assert loss["giou"].item() == pytest.approx(2.0 * (1 - GIOU_S0_T1), abs=1e-5)


def test_fewer_teacher_queries_leave_students_unmatched():
    # one teacher prediction: only student 1 (exact box) is matched; normalisation stays B x N_student
    loss = logits_kd_loss(S_LOGITS, S_BOXES, T_PROBS[:, :1], T_BOXES[:, :1], LogitsKDConfig())
    assert loss["cls"].item() == pytest.approx(BCE_S1_T0 / 2, abs=1e-5)
    assert loss["l1"].item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_reaches_student_only_through_matched_pairs():
    logits = S_LOGITS.clone().requires_grad_(True)
    boxes = S_BOXES.clone().requires_grad_(True)
    loss = logits_kd_loss(logits, boxes, T_PROBS[:, :1], T_BOXES[:, :1], LogitsKDConfig())
    sum(loss.values()).backward()
    assert logits.grad[0, 1].abs().sum() > 0  # the matched student
    assert logits.grad[0, 0].abs().sum() == 0 and boxes.grad[0, 0].abs().sum() == 0  # the unmatched one


def test_teacher_score_box_weight_is_a_mean_weighted_by_the_teachers_top_probability():
    loss = logits_kd_loss(S_LOGITS, S_BOXES, T_PROBS, T_BOXES, LogitsKDConfig(box_weight="teacher_score"))
    # pairs (s0, t1) weight 0.9 with the box error, (s1, t0) weight 0.6 exact; cls is untouched
    assert loss["cls"].item() == pytest.approx((BCE_S0_T1 + BCE_S1_T0) / 2, abs=1e-5)
    assert loss["l1"].item() == pytest.approx(5.0 * 0.9 * 0.1 / 1.5, abs=1e-5)
    assert loss["giou"].item() == pytest.approx(2.0 * 0.9 * (1 - GIOU_S0_T1) / 1.5, abs=1e-5)
    # a confident teacher on the exact pair: its weight dilutes the erring pair's more than uniform would
    confident = T_PROBS.clone()
    confident[0, 0, 1] = 0.99
    loss = logits_kd_loss(S_LOGITS, S_BOXES, confident, T_BOXES, LogitsKDConfig(box_weight="teacher_score"))
    assert loss["l1"].item() == pytest.approx(5.0 * 0.9 * 0.1 / 1.89, abs=1e-5)
    assert loss["l1"].item() < 5.0 * 0.1 / 2


def test_teacher_query_points_pair_each_query_with_its_own_teacher_prediction():
    cfg = LogitsKDConfig(points="teacher_queries")
    loss = logits_kd_loss(S_LOGITS, S_BOXES, T_PROBS, T_BOXES, cfg, match=query_match(1, 2, "cpu"))
    # pairs (s0, t0) and (s1, t1), though the Hungarian matching would cross them
    bce_s0_t0 = softplus(2.0) - 2.0 * 0.1 + softplus(-1.0) + 1.0 * 0.6
    bce_s1_t1 = softplus(-3.0) + 3.0 * 0.9 + softplus(0.5) - 0.5 * 0.2
    # both pairs disjoint: 1 - GIoU = 1 + (hull - union) / hull
    giou_s0_t0 = 1 + (0.36 - 0.08) / 0.36  # hull 0.6 x 0.6
    giou_s1_t1 = 1 + (0.39 - 0.10) / 0.39  # hull 0.6 x 0.65, the teacher box 0.2 x 0.3
    assert loss["cls"].item() == pytest.approx((bce_s0_t0 + bce_s1_t1) / 2, abs=1e-5)
    assert loss["l1"].item() == pytest.approx(5.0 * (0.8 + 0.9) / 2, abs=1e-5)
    assert loss["giou"].item() == pytest.approx(2.0 * (giou_s0_t0 + giou_s1_t1) / 2, abs=1e-5)
    # split: only the teacher's positive query carries box terms
    loss = logits_kd_loss(S_LOGITS, S_BOXES, T_PROBS, T_BOXES, cfg,
                          match=query_match(1, 2, "cpu", torch.tensor([[False, True]])))
    assert loss["cls"].item() == pytest.approx((bce_s0_t0 + bce_s1_t1) / 2, abs=1e-5)
    assert loss["l1"].item() == pytest.approx(5.0 * 0.9, abs=1e-5)


def test_query_match_pairs_every_image_query_by_query():
    match = query_match(2, 3, "cpu", torch.tensor([[True, False, False], [False, False, True]]))
    assert match.images.tolist() == [0, 0, 0, 1, 1, 1]
    assert match.rows.tolist() == match.cols.tolist() == [0, 1, 2, 0, 1, 2]
    assert match.has_box.tolist() == [True, False, False, False, False, True]


def test_split_mode_requires_positives_and_rejects_unknown_mode():
    with pytest.raises(ValueError, match="positive"):
        logits_kd_loss(S_LOGITS, S_BOXES, T_PROBS, T_BOXES, LogitsKDConfig(mode="split"))
    with pytest.raises(ValueError, match="mode"):
        LogitsKDConfig(mode="kl")
    with pytest.raises(ValueError, match="box_weight"):
        LogitsKDConfig(box_weight="score")
    with pytest.raises(ValueError, match="points"):
        LogitsKDConfig(points="queries")


@pytest.mark.parametrize("mode", ["all_pairs", "split"])
@pytest.mark.parametrize(("n_s", "n_t"), [(9, 7), (170, 160)])  # the second above PARALLEL_MIN_ENTRIES: threads
def test_all_stage_pairs_matched_at_once_equal_each_image_matched_alone(mode, n_s, n_t):
    """match_stages solves every (pair, image) problem side by side from one batched cost: each pair's result
    must be what matching that pair's images one by one gives, images labelled and pairs kept apart."""
    gen = torch.Generator().manual_seed(7)
    cfg = LogitsKDConfig(mode=mode)
    batch, classes = 3, 4
    pairs = [(torch.randn(batch, n_s, classes, generator=gen), torch.rand(batch, n_s, 4, generator=gen) * 0.5 + 0.1,
              torch.rand(batch, n_t, classes, generator=gen), torch.rand(batch, n_t, 4, generator=gen) * 0.5 + 0.1)
             for _ in range(4)]
    positives = [[torch.rand(n_t, generator=gen) < 0.4 for _ in range(batch)] for _ in pairs]
    matches = match_stages(pairs, cfg, positives if mode == "split" else None)
    assert len(matches) == len(pairs)
    for pair, positive, match in zip(pairs, positives, matches):
        for b in range(batch):
            cost = kd_cost_matrix(*(t[b] for t in pair))
            rows, cols, has_box = match_pairs(cost, positive[b] if mode == "split" else None)
            mine = match.images == b
            assert torch.equal(match.rows[mine], rows) and torch.equal(match.cols[mine], cols)
            assert torch.equal(match.has_box[mine], has_box)
        assert len(match.images) == batch * n_t  # every teacher prediction of every image has a student


@pytest.mark.parametrize(("queries", "threads"), [(50, 1), (200, None)])
def test_small_matchings_stay_serial_and_large_ones_take_the_cores(monkeypatch, queries, threads):
    """Handing a 50 x 50 assignment to a thread costs more than solving it; 200 x 200 ones go to the pool."""
    import compress.distill.losses.logits_kd as logits_kd

    asked = []
    real = logits_kd.solve_all

    def recording(*args, threads=None):
        asked.append(threads)
        return real(*args, threads=threads)

    monkeypatch.setattr(logits_kd, "solve_all", recording)
    pair = (torch.zeros(2, queries, 3), torch.full((2, queries, 4), 0.5), torch.zeros(2, queries, 3),
            torch.full((2, queries, 4), 0.5))
    assert len(match_stages([pair, pair], LogitsKDConfig())[1].rows) == 2 * queries
    assert asked == [threads]
