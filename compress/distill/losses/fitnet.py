"""FitNet feature distillation (Romero et al., 2015) as the plain baseline: MSE between the teacher's
features and the adapted student's, every position weighted equally (DETRDistill's mask set to 1)."""

from __future__ import annotations

import torch


def fitnet_loss(teacher_feats: list[torch.Tensor], student_feats: list[torch.Tensor]) -> torch.Tensor:
    """sum over levels of mean((F_T - phi(F_S))^2); feats (B, C, H, W)."""
    total = student_feats[0].new_zeros(())
    for f_t, f_s in zip(teacher_feats, student_feats):
        total = total + ((f_t - f_s) ** 2).mean()
    return total
