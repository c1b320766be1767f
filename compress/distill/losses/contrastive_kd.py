"""Contrastive query distillation: the extra term of the official DETRDistill release (not in the paper).

Each student decoder query matched to a teacher prediction by the logits-KD Hungarian matching forms a
positive pair with that teacher query's decoder embedding; every other matched pair of the batch is a
negative. Both embeddings go through their own projection head into a shared space, are L2-normalised and
scored with InfoNCE (cross-entropy over the batch's pairs, temperature 0.07). Official defaults: projection
width 512, weight 0.2 per decoder stage, on in the released config. The loss pulls the student's query
*representations* towards the teacher's, where logits KD only pulls its outputs (boxes, classes).

Heads: a linear map to the projection width, then Linear -> BatchNorm -> ReLU -> Linear (the official
head's order). They exist only during training and are dropped with the distiller at export.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ContrastiveKDConfig:
    enable: bool = False
    weight: float = 0.2
    temperature: float = 0.07
    proj_dims: int = 512

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"contrastive_kd.temperature must be > 0, got {self.temperature!r}")
        if not (isinstance(self.proj_dims, int) and self.proj_dims > 0):
            raise ValueError(f"contrastive_kd.proj_dims must be a positive int, got {self.proj_dims!r}")


def info_nce(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over pairs i of -log softmax_j(cos(teacher_i, student_j) / T)[i]; shapes (P, D), (P, D).

    Row i asks teacher query i to pick its own matched student among all the batch's matched students."""
    logits = F.normalize(teacher, dim=-1) @ F.normalize(student, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def projection(in_dims: int, dims: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dims, dims), nn.Linear(dims, dims), nn.BatchNorm1d(dims),
                         nn.ReLU(inplace=True), nn.Linear(dims, dims))


class ContrastiveHead(nn.Module):
    """Student and teacher projection heads (their widths may differ) and the InfoNCE between them."""

    def __init__(self, student_dims: int, teacher_dims: int, dims: int = 512) -> None:
        super().__init__()
        self.student = projection(student_dims, dims)
        self.teacher = projection(teacher_dims, dims)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        if len(student) < 2:  # no negatives (and BatchNorm needs two rows): nothing to contrast
            return student.sum() * 0
        return info_nce(self.student(student), self.teacher(teacher), temperature)
