"""Hungarian matching between student and teacher predictions of one decoder stage.

Costs follow the official DETRDistill code: soft-target BCE summed over classes (not averaged), L1 on
normalised cxcywh boxes, negative GIoU. Boxes are normalised cxcywh throughout. The cost functions take
leading batch dimensions, so a whole batch's matrices come from one set of ops and one device-to-host copy
(per-image loops cost more in op launches than the maths on small models, on CPUs and GPUs alike).

The assignments themselves run on the CPU in scipy. At the paper's size (300 x 300 per image and stage pair,
12 problems per step at batch 2) each takes about 16 ms, and serially they were 207 of a 446 ms step on an
H200 while the GPU idled; scipy releases the GIL, so ``solve_all`` runs them side by side on the cores
the process may use (exactly the same assignments, only sooner).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from compress.distill.box_ops import cxcywh_to_xyxy, giou

# Below about 150 x 150 entries an assignment takes less than handing it to a thread costs (tools/bench_matching.py
# on 2 cores: twelve 50 x 50 problems 1.5 ms serial, 2.5 ms on threads; 150 x 150 1.34x faster on threads).
PARALLEL_MIN_ENTRIES = 150 * 150
Problem = TypeVar("Problem")
Result = TypeVar("Result")


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


def matching_threads() -> int:
    """The cores this process may use, shared with the other processes torchrun started on this node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def solve_all(solve: Callable[[Problem], Result], problems: Sequence[Problem],
              threads: int | None = None) -> list[Result]:
    """``[solve(p) for p in problems]``, the problems side by side on ``threads`` (default: the process's
    cores) threads. The pool lives for one call: a dozen thread starts cost far less than one large
    assignment, and no idle threads outlive the step (dataloader workers fork later)."""
    threads = min(len(problems), threads or matching_threads())
    if threads <= 1:
        return [solve(p) for p in problems]
    with ThreadPoolExecutor(threads, thread_name_prefix="hungarian") as pool:
        return list(pool.map(solve, problems))
