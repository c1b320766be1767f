"""Every config in the repository parses and builds; distiller configs build both of their detectors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import compress.distill  # noqa: F401
from compress.distill.distiller import build_detector
from tests.conftest import REPO, save_random_detector

CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.py")
                 if "_base_" not in p.parts and not p.name.startswith("_"))


def test_configs_are_found():
    assert len(CONFIGS) >= 10
    assert "configs/distill/detrdistill_dino_synthetic.py" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == "mmdet"
    assert "compress.distill" in cfg.custom_imports["imports"]
    if cfg.model.type == "DETRDistiller":
        torch.manual_seed(0)
        teacher = build_detector(dict(config=cfg.model.teacher["config"]), "teacher")
        student = build_detector(dict(config=cfg.model.student["config"]), "student")
        assert teacher.bbox_head.num_classes == student.bbox_head.num_classes
        assert getattr(teacher.bbox_head, "assigner", None) is not None  # needed by query-prior
    else:
        build_detector(dict(config=cfg.model.to_dict()), "model")


def test_embedded_default_distiller_builds_with_its_pair(tmp_path):
    from mmdet.registry import MODELS

    cfg = Config.fromfile("configs/distill/detrdistill_dino_synthetic.py")
    teacher_cfg = Config.fromfile(cfg.model.teacher["config"]).model.to_dict()
    ckpt = save_random_detector(teacher_cfg, tmp_path / "teacher.pth")
    cfg.model.teacher["checkpoint"] = str(ckpt)
    distiller = MODELS.build(cfg.model)
    assert distiller.teacher.embed_dims == 256 and distiller.student.embed_dims == 128
    assert distiller.query_proj.weight.shape == (128, 256)
    n_student = sum(p.numel() for p in distiller.student.parameters())
    n_teacher = sum(p.numel() for p in distiller.teacher.parameters())
    assert n_student < 0.5 * n_teacher
    assert Path(cfg.model.student["config"]).is_file()
