"""Build a DETRDistiller from tiny teacher/student model dicts, with the teacher saved to disk."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import make_batch, save_random_detector


def build_distiller(tmp_path: Path, teacher_cfg: dict, student_cfg: dict, teacher_autocast: str | None = None,
                    teacher_options: dict | None = None, **sections):
    from mmdet.registry import MODELS

    import compress.distill  # noqa: F401

    ckpt = save_random_detector(teacher_cfg, tmp_path / "teacher.pth")
    distiller = MODELS.build(dict(type="DETRDistiller", teacher=dict(config=teacher_cfg, checkpoint=str(ckpt),
                                                                             autocast=teacher_autocast,
                                                                             **(teacher_options or {})),
                                  student=dict(config=student_cfg), **sections))
    distiller.init_weights()  # as the Runner does before training
    return distiller


def teacher_snapshot(distiller) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in distiller.teacher.state_dict().items()}


def run_steps(distiller, steps: int = 2, batch_size: int = 2, size: int = 96) -> list[dict]:
    """Real optimisation steps (AdamW) through the distiller's data preprocessor; returns each step's losses."""
    opt = torch.optim.AdamW([p for p in distiller.parameters() if p.requires_grad], lr=1e-4)
    distiller.train()
    history = []
    for step in range(steps):
        data = distiller.data_preprocessor(make_batch(batch_size, size, seed=step), True)
        losses = distiller(**data, mode="loss")
        total = sum(v for k, v in losses.items() if "loss" in k)
        opt.zero_grad()
        total.backward()
        history.append({k: v.detach() for k, v in losses.items()})
        history[-1]["_grad_norm"] = torch.stack([p.grad.norm() for p in distiller.student.parameters()
                                                 if p.grad is not None]).norm()
        opt.step()
    return history
