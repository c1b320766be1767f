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
    if cfg.model.type in ("DETRDistiller", "AnyWidthDINO"):  # project-registered types need the import
        assert "compress.distill" in cfg.custom_imports["imports"]
    if cfg.model.type == "DETRDistiller":
        torch.manual_seed(0)
        teacher = build_detector(dict(config=cfg.model.teacher["config"]), "teacher")
        student = build_detector(dict(config=cfg.model.student["config"]), "student")
        assert teacher.bbox_head.num_classes == student.bbox_head.num_classes
        assert getattr(teacher.bbox_head, "assigner", None) is not None  # needed by query-prior
    else:
        build_detector(dict(config=cfg.model.to_dict()), "model")


def shipped_teachers() -> list[tuple[str, str]]:
    """(teacher config, checkpoint) of every distill config whose teacher checkpoint is in the repository."""
    pairs = set()
    for path in CONFIGS:
        teacher = Config.fromfile(path).model.get("teacher")
        if teacher and (REPO / teacher["checkpoint"]).is_file():
            pairs.add((teacher["config"], teacher["checkpoint"]))
    return sorted(pairs)


def test_both_shipped_teachers_are_found():
    assert {ckpt for _, ckpt in shipped_teachers()} == {"checkpoints/teacher_dino_synthetic.pth",
                                                        "checkpoints/teacher_dino_synthetic_4000it.pth"}


@pytest.mark.parametrize(("config", "checkpoint"), shipped_teachers())
def test_shipped_teacher_is_the_model_its_config_builds(config, checkpoint):
    """A checkpoint that does not fit its config would load with missing keys or fail on a shape at train time."""
    from compress.checkpoints import load_state_dict_file

    expected = build_detector(dict(config=config), "teacher").state_dict()
    state = load_state_dict_file(REPO / checkpoint)
    assert state.keys() == expected.keys()
    assert [k for k in state if state[k].shape != expected[k].shape] == []


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


def test_long_recipe_is_the_schedule_bench_kd_measured(tmp_path):
    """The README quotes bench-kd's `--iters 3000` runs for this recipe; a drift in either would quote figures
    of another training."""
    from compress.bench.kd_matrix import derived_config

    preset = Config.fromfile("configs/distill/detrdistill_dino_synthetic_long.py")
    measured = Config.fromfile(str(derived_config(
        tmp_path / "c.py", "configs/distill/detrdistill_dino_synthetic_teacher_4000it.py", None, 3000, 1000, 0)))
    for key in ("model", "train_cfg", "param_scheduler", "optim_wrapper", "train_dataloader", "val_evaluator"):
        assert preset[key] == measured[key], key
    assert preset.model.teacher["checkpoint"] == "checkpoints/teacher_dino_synthetic_4000it.pth"
    assert preset.param_scheduler[0]["milestones"] == [2550]


def lr_of_params(model: torch.nn.Module, optim_wrapper: dict) -> dict[int, float]:
    """The lr mmengine's optimizer builder gives each parameter (by id) under ``optim_wrapper``'s paramwise_cfg."""
    from mmengine.optim import build_optim_wrapper

    groups = build_optim_wrapper(model, optim_wrapper).optimizer.param_groups
    return {id(p): group["lr"] for group in groups for p in group["params"]}


def test_paper_lr_multipliers_reach_the_student_through_the_distiller(tmp_path):
    """The COCO recipe's paramwise_cfg (x0.1 for backbone, sampling offsets, reference points) matches the
    distiller's 'student.'-prefixed parameter names, and the teacher is not in the optimizer at all."""
    from tests.distill_helpers import build_distiller
    from tests.tiny import tiny_model

    recipe = Config.fromfile("configs/coco/distill/detrdistill_deformable-detr_r101-to-r50_coco.py")
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable", width=4))
    lr_of = lr_of_params(distiller, recipe.optim_wrapper)
    base_lr = recipe.optim_wrapper.optimizer.lr
    named = dict(distiller.named_parameters())
    assert lr_of[id(named["student.backbone.conv1.weight"])] == pytest.approx(0.1 * base_lr)
    offsets = [n for n in named if "sampling_offsets" in n]
    assert offsets and all(lr_of[id(named[n])] == pytest.approx(0.1 * base_lr) for n in offsets)
    assert lr_of[id(named["student.bbox_head.cls_branches.0.weight"])] == pytest.approx(base_lr)
    assert not set(map(id, distiller.teacher.parameters())) & set(lr_of)
    assert recipe.optim_wrapper.clip_grad.max_norm == 0.1 and recipe.optim_wrapper.optimizer.weight_decay == 1e-4


def test_inherit_student_starts_from_the_teachers_backbone():
    """The shipped teacher's backbone tensors (BN statistics included) land in the student at init_weights,
    the point where the Runner initialises, not at build; the neck has another width and stays the student's."""
    from mmdet.registry import MODELS

    from compress.checkpoints import load_state_dict_file

    cfg = Config.fromfile("configs/distill/detrdistill_dino_synthetic_inherit.py")
    teacher_state = load_state_dict_file(cfg.model.teacher["checkpoint"])
    torch.manual_seed(0)
    distiller = MODELS.build(cfg.model)
    backbone = distiller.student.backbone.state_dict()
    assert not torch.equal(backbone["conv1.weight"], teacher_state["backbone.conv1.weight"])
    distiller.init_weights()
    backbone = distiller.student.backbone.state_dict()
    assert len(backbone) > 50
    for name, value in backbone.items():
        assert torch.equal(value, teacher_state[f"backbone.{name}"]), name
    neck = distiller.student.neck.convs[0].conv.weight
    assert neck.shape[0] == 128 != teacher_state["neck.convs.0.conv.weight"].shape[0]


def test_frozen_bn_student_keeps_the_inherited_statistics_and_trains_its_backbone_slower():
    """The COCO recipe for a pretrained backbone: in train mode the inherited BN statistics stay put (with
    train-mode BN at batch 4 they drift, and the student alone lost 40 % of its AP), the stem and first stage
    get no gradient, and the distiller's optimizer gives the student's backbone a tenth of the lr."""
    from mmdet.registry import MODELS

    cfg = Config.fromfile("configs/distill/detrdistill_dino_synthetic_inherit_frozen_bn.py")
    torch.manual_seed(0)
    distiller = MODELS.build(cfg.model)
    distiller.init_weights()
    distiller.train()
    backbone = distiller.student.backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items() if "running_" in k}
    backbone(torch.rand(2, 3, 64, 64))
    after = backbone.state_dict()
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())
    assert not any(p.requires_grad for p in [*backbone.conv1.parameters(), *backbone.layer1.parameters()])
    assert not backbone.layer2[0].bn1.weight.requires_grad and backbone.layer2[0].conv1.weight.requires_grad

    lr_of = lr_of_params(distiller, cfg.optim_wrapper)
    named = dict(distiller.named_parameters())
    base = cfg.optim_wrapper.optimizer.lr
    assert lr_of[id(named["student.backbone.layer2.0.conv1.weight"])] == pytest.approx(0.1 * base)
    assert lr_of[id(named["student.neck.convs.0.conv.weight"])] == pytest.approx(base)
