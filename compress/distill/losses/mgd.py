"""Masked Generative Distillation (Yang et al., ECCV 2022) as a feature-KD baseline.

The adapted student feature is randomly masked per spatial position (ratio ``mask_ratio``, 0.65 in MGD
for detection), a small generation block (3x3 conv, ReLU, 3x3 conv) must regenerate the teacher's full
feature from it, and the loss is the MSE of that generation. The generator is trained with the student and
dropped at export: it only exists to shape the student's features.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class MGDGenerator(nn.Sequential):
    def __init__(self, channels: int):
        super().__init__(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 3, padding=1))


def random_keep_mask(feature: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """(B, 1, H, W) of 0/1: each position is dropped with probability ``mask_ratio``."""
    b, _, h, w = feature.shape
    noise = torch.rand((b, 1, h, w), generator=generator, device=feature.device)
    return (noise >= mask_ratio).to(feature.dtype)


def mgd_loss(teacher_feats: list[torch.Tensor], student_feats: list[torch.Tensor],
             generators: nn.ModuleList, mask_ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """sum over levels of mean((G(phi(F_S) * M) - F_T)^2)."""
    total = student_feats[0].new_zeros(())
    for f_t, f_s, gen in zip(teacher_feats, student_feats, generators):
        regenerated = gen(f_s * random_keep_mask(f_s, mask_ratio, generator))
        total = total + ((regenerated - f_t) ** 2).mean()
    return total
