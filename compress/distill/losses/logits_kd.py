"""Hungarian-matching logits distillation (DETRDistill, Sec. 3.2), one decoder stage pair at a time.

Teacher predictions are pseudo targets: soft class probabilities and boxes. Each image's student
predictions are matched one-to-one to them (Hungarian, cost in ``matcher.kd_cost_matrix``), then the
matched pairs get soft-target BCE + L1 + GIoU. Two ways to treat the teacher's background predictions:

* ``all_pairs`` (official code, default): one matching over all predictions, every term on every pair.
* ``split`` (paper, Eq. 3-4): students are matched to the teacher's positives (predictions its own
  Hungarian assigner pairs with a GT) first, the remaining students to the negatives; negatives give
  the classification term only, since a background prediction's box carries no information.

Normalisation: the BCE is summed over classes and matched pairs and divided by B x N_student (as in the
official code); L1 and GIoU are averaged over the pairs that carry box terms. Student queries left
unmatched (more student than teacher queries) get no term.

``box_weight``: ``uniform`` (official) averages the box terms over the boxed pairs alike, so with all pairs
most of the box gradient pulls students towards the teacher's background boxes; ``teacher_score`` weights
each pair by the teacher's top class probability (a weighted mean), which keeps the classification term on
every pair and the box pull on the boxes the teacher believes in, without the hard split's GT assignment.

``points``: ``matched`` (DETRDistill) distils the student's own predictions through the Hungarian matching
above. ``teacher_queries`` takes KD-DETR's consistent distillation points (Wang et al., CVPR 2024): the
teacher's decoder queries run through the student's decoder (the query-prior group), and each query's
student prediction is paired with the teacher's prediction for that same query, no matching. Why: a matched
student query may sit on another object than its teacher pair and the pairing can flip from step to step,
which KD-DETR names as the reason matched logits KD transfers little; the shared query removes both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compress.distill.box_ops import cxcywh_to_xyxy, giou
from compress.distill.losses.options import check_choices
from compress.distill.matcher import PARALLEL_MIN_ENTRIES, hungarian, kd_cost_matrix, solve_all

MODES = ("all_pairs", "split")
BOX_WEIGHTS = ("uniform", "teacher_score")
POINTS = ("matched", "teacher_queries")
CHOICES = {"mode": MODES, "box_weight": BOX_WEIGHTS, "points": POINTS}


@dataclass
class LogitsKDConfig:
    enable: bool = True
    weight: float = 1.0
    mode: str = "all_pairs"
    cls_weight: float = 1.0
    l1_weight: float = 5.0
    giou_weight: float = 2.0
    box_weight: str = "uniform"
    points: str = "matched"

    def __post_init__(self) -> None:
        check_choices("logits_kd", self, CHOICES)


def match_pairs(cost: torch.Tensor, positive: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matched (student rows, teacher cols) and a bool per pair: does it carry box terms.

    ``positive`` (N_teacher bool) selects the paper's split matching; None means all pairs.
    """
    if positive is None:
        rows, cols = hungarian(cost)
        return rows, cols, torch.ones_like(rows, dtype=torch.bool)
    pos_idx = positive.nonzero().flatten()
    neg_idx = (~positive).nonzero().flatten()
    rows_p, cols_p = hungarian(cost[:, pos_idx])
    free = torch.ones(cost.shape[0], dtype=torch.bool, device=cost.device)
    free[rows_p] = False
    free_idx = free.nonzero().flatten()
    rows_n, cols_n = hungarian(cost[free_idx][:, neg_idx])
    rows = torch.cat([rows_p, free_idx[rows_n]])
    cols = torch.cat([pos_idx[cols_p], neg_idx[cols_n]])
    has_box = torch.cat([torch.ones_like(rows_p, dtype=torch.bool), torch.zeros_like(rows_n, dtype=torch.bool)])
    return rows, cols, has_box


@dataclass
class StageMatch:
    """One stage pair's matching over a batch: pair p joins student ``rows[p]`` and teacher ``cols[p]`` of
    image ``images[p]``; ``has_box[p]`` says whether it carries box terms. Shared by the logits KD and the
    contrastive term, which the official code also draws from this one matching."""

    images: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    has_box: torch.Tensor


def query_match(batch: int, num_queries: int, device: torch.device | str,
                has_box: torch.Tensor | None = None) -> StageMatch:
    """The ``teacher_queries`` pairs: student row n of image b with teacher column n of the same image.

    ``has_box`` (B, N) bool says which pairs carry box terms (``split``: the teacher's positives); None: all.
    """
    rows = torch.arange(num_queries, device=device).repeat(batch)
    images = torch.arange(batch, device=device).repeat_interleave(num_queries)
    boxed = torch.ones_like(rows, dtype=torch.bool) if has_box is None else has_box.to(device).flatten()
    return StageMatch(images, rows, rows, boxed)


def match_stages(pairs: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
                 cfg: LogitsKDConfig, teacher_positive: Sequence[Sequence[torch.Tensor]] | None = None
                 ) -> list[StageMatch]:
    """Hungarian matching of every (teacher stage, student stage) pair of a step, image by image.

    Args:
        pairs: per stage pair ``(student_logits, student_boxes, teacher_probs, teacher_boxes)``, shapes as in
            ``logits_kd_loss`` and equal across pairs.
        teacher_positive: per pair, per image an (N_t,) bool of the teacher's GT-assigned predictions;
            required for ``mode='split'``.
    """
    if cfg.mode == "split" and teacher_positive is None:
        raise ValueError("logits_kd.mode='split' needs the teacher's positive predictions")
    # All pairs' costs in one batched call and one host copy (a copy waits for the GPU, so one wait per
    # step); the (pair, image) problems are then solved side by side on the CPU copy.
    with torch.no_grad():
        costs = kd_cost_matrix(*(torch.stack(t) for t in zip(*pairs)),
                               cfg.cls_weight, cfg.l1_weight, cfg.giou_weight).cpu()
    num_pairs, batch = costs.shape[:2]
    positive = (torch.stack([torch.stack(list(p)) for p in teacher_positive]).cpu()
                if cfg.mode == "split" else None)
    solved = solve_all(lambda pb: match_pairs(costs[pb], None if positive is None else positive[pb]),
                       [(p, b) for p in range(num_pairs) for b in range(batch)],
                       threads=1 if costs[0, 0].numel() < PARALLEL_MIN_ENTRIES else None)
    # images, rows, cols, has_box of every pair in one (4, pairs) table: one host-to-device copy
    table = torch.cat([torch.stack([torch.full_like(r, i % batch), r, c, h.long()])
                       for i, (r, c, h) in enumerate(solved)], 1).to(pairs[0][0].device)
    sizes = [sum(len(r) for r, _, _ in solved[p * batch:(p + 1) * batch]) for p in range(num_pairs)]
    return [StageMatch(images, rows, cols, has_box.bool())
            for images, rows, cols, has_box in table.split(sizes, 1)]


def match_stage(student_logits: torch.Tensor, student_boxes: torch.Tensor, teacher_probs: torch.Tensor,
                teacher_boxes: torch.Tensor, cfg: LogitsKDConfig,
                teacher_positive: list[torch.Tensor] | None = None) -> StageMatch:
    """``match_stages`` for one stage pair."""
    positive = None if teacher_positive is None else [teacher_positive]
    return match_stages([(student_logits, student_boxes, teacher_probs, teacher_boxes)], cfg, positive)[0]


def logits_kd_loss(student_logits: torch.Tensor, student_boxes: torch.Tensor, teacher_probs: torch.Tensor,
                   teacher_boxes: torch.Tensor, cfg: LogitsKDConfig,
                   teacher_positive: list[torch.Tensor] | None = None,
                   match: StageMatch | None = None) -> dict[str, torch.Tensor]:
    """Loss of one (teacher stage, student stage) pair.

    Args:
        student_logits: (B, N_s, C) sigmoid-style class logits.
        student_boxes: (B, N_s, 4) normalised cxcywh.
        teacher_probs: (B, N_t, C) soft targets in [0, 1].
        teacher_boxes: (B, N_t, 4) normalised cxcywh.
        teacher_positive: per image an (N_t,) bool of the teacher's GT-assigned predictions; required
            for ``mode='split'``.
        match: this pair's ``match_stage`` result, when the caller has it already.
    Returns: weighted ``cls``, ``l1`` and ``giou`` terms.
    """
    if match is None:
        match = match_stage(student_logits, student_boxes, teacher_probs, teacher_boxes, cfg, teacher_positive)
    batch, num_student = student_logits.shape[:2]
    images, rows, cols, has_box = match.images, match.rows, match.cols, match.has_box
    cls_sum = F.binary_cross_entropy_with_logits(student_logits[images, rows], teacher_probs[images, cols],
                                                 reduction="sum")
    boxed_images, boxed_rows, boxed_cols = images[has_box], rows[has_box], cols[has_box]
    s_box, t_box = student_boxes[boxed_images, boxed_rows], teacher_boxes[boxed_images, boxed_cols]
    if cfg.box_weight == "teacher_score":
        pair_weight = teacher_probs[boxed_images, boxed_cols].max(-1).values
    else:
        pair_weight = torch.ones_like(s_box[:, 0])
    l1_sum = (pair_weight * (s_box - t_box).abs().sum(-1)).sum()
    giou_sum = (pair_weight * (1 - giou(cxcywh_to_xyxy(s_box), cxcywh_to_xyxy(t_box)))).sum()
    total = pair_weight.sum().clamp(min=1e-6)  # no boxed pairs: 0 / eps = 0
    return {"cls": cfg.cls_weight * cls_sum / (batch * num_student),
            "l1": cfg.l1_weight * l1_sum / total,
            "giou": cfg.giou_weight * giou_sum / total}
