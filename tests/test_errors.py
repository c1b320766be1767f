"""Each anticipated failure is one clear line naming the file and the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from compress.errors import CheckpointError, ConfigError, DataError, TrainingError
from tests.distill_helpers import build_distiller
from tests.tiny import tiny_model


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and len(text) < 400
    return text


def test_missing_teacher_checkpoint(tmp_path):
    from mmdet.registry import MODELS

    import compress.distill  # noqa: F401

    with pytest.raises(CheckpointError) as err:
        MODELS.build(dict(type="DETRDistiller", teacher=dict(config=tiny_model("deformable"),
                                                             checkpoint=str(tmp_path / "none.pth")),
                          student=dict(config=tiny_model("deformable"))))
    assert "teacher checkpoint not found" in _one_line(err) and "make teacher" in str(err.value)


def test_unreadable_and_mismatched_teacher_checkpoint(tmp_path):
    from mmdet.registry import MODELS

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        MODELS.build(dict(type="DETRDistiller", teacher=dict(config=tiny_model("deformable"), checkpoint=str(bad)),
                          student=dict(config=tiny_model("deformable"))))
    assert "unreadable" in _one_line(err) and str(bad) in str(err.value)
    # a DAB-DETR checkpoint given to a Deformable DETR teacher config
    build_distiller(tmp_path, tiny_model("dab"), tiny_model("dab"))
    with pytest.raises(CheckpointError) as err:
        MODELS.build(dict(type="DETRDistiller",
                          teacher=dict(config=tiny_model("deformable"), checkpoint=str(tmp_path / "teacher.pth")),
                          student=dict(config=tiny_model("deformable"))))
    assert "does not fit the teacher config" in _one_line(err)


def test_teacher_checkpoint_with_nan_weights(tmp_path):
    from mmdet.registry import MODELS

    import compress.distill  # noqa: F401
    from tests.conftest import save_random_detector

    path = save_random_detector(tiny_model("deformable"), tmp_path / "diverged.pth")
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"]["bbox_head.cls_branches.0.bias"][0] = float("nan")
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        MODELS.build(dict(type="DETRDistiller", teacher=dict(config=tiny_model("deformable"), checkpoint=str(path)),
                          student=dict(config=tiny_model("deformable"))))
    # shared heads (no box refinement) alias one bias under several names; the first is named
    assert "has NaN or inf values in" in _one_line(err) and "(e.g. bbox_head.cls_branches.0.bias)" in str(err.value)
    assert "diverged" in str(err.value) and "make teacher" in str(err.value)


def test_class_count_mismatch(tmp_path):
    with pytest.raises(ConfigError) as err:
        build_distiller(tmp_path, tiny_model("deformable", num_classes=6), tiny_model("deformable", num_classes=5))
    assert "teacher has 6 classes but student has 5" in _one_line(err)


def test_unknown_loss_key_and_bad_mode(tmp_path):
    with pytest.raises(ConfigError) as err:
        build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable"), logits_kd=dict(wieght=2.0))
    assert "unknown key(s) ['wieght'] in model.logits_kd" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable"), feature_kd=dict(source="fpn"))
    assert "feature_kd.source" in _one_line(err)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True, text=True, timeout=300)


def test_cli_unknown_config_key_is_one_line():
    res = _cli("distill", "--cfg-options", "train_cfg.max_itres=5")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "unknown config key 'train_cfg.max_itres'" in res.stderr and "max_iters" in res.stderr


def test_cli_missing_dataset_is_one_line(tmp_path):
    res = _cli("train-teacher", "--cfg-options", f"train_dataloader.dataset.data_root={tmp_path}/nowhere/")
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0
    assert "annotation file not found" in res.stderr and "generate-data" in res.stderr


def test_cli_missing_config_file():
    res = _cli("distill", "--config", "configs/nope.py")
    assert res.returncode == 2 and "config file not found: configs/nope.py" in res.stderr
    res = subprocess.run([sys.executable, "tools/train.py", "configs/nope.py"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip() == "error: config file not found: configs/nope.py; " \
        "configs live under configs/"


def test_dataset_class_count_mismatch(tiny_dataset, tmp_path):
    from compress.config import check_num_classes, load_config

    cfg = load_config("configs/detectors/dino128_r18w16_synthetic_student.py")
    with pytest.raises(ConfigError) as err:
        check_num_classes(5, cfg)
    assert "predicts 5 classes but the dataset has 6" in _one_line(err)


def test_malformed_dataset_through_the_config(tmp_path):
    from compress.config import check_datasets, load_config

    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text('{"images": []}')
    cfg = load_config("configs/detectors/dino128_r18w16_synthetic_student.py",
                      {"train_dataloader.dataset.data_root": str(tmp_path) + "/"})
    with pytest.raises(DataError) as err:
        check_datasets(cfg, splits=("train_dataloader",))
    assert "missing or non-list 'annotations'" in _one_line(err)


def test_nan_loss_stops_with_one_line():
    from types import SimpleNamespace

    from compress.distill.hooks import NaNLossHook

    runner = SimpleNamespace(iter=41, cfg=SimpleNamespace(filename="configs/x.py"))
    NaNLossHook().after_train_iter(runner, 0, outputs={"loss": torch.tensor(1.0)})
    with pytest.raises(TrainingError) as err:
        NaNLossHook().after_train_iter(runner, 0, outputs={"loss": torch.tensor(float("nan")),
                                                           "loss_cls": torch.tensor(0.5)})
    assert "non-finite loss (loss) at iteration 42 of configs/x.py" in _one_line(err)
    assert "lr" in str(err.value)


def test_missing_init_checkpoint_is_one_line(tiny_pair):
    """A student whose init_cfg names a missing file (the inherit recipe's backbone source, say) fails when
    training starts, where mmengine loads it, through the project's checkpoint loader."""
    from tests.run_helpers import run_cli, write_distill_config

    student = tiny_pair["root"] / "student_missing_init.py"
    student.write_text(f"_base_ = [{str(tiny_pair['student'])!r}]\n"
                       "model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='nowhere/bb.pth', "
                       "prefix='backbone.')))\n")
    pair = {**tiny_pair, "student": student}
    config = write_distill_config(pair, "missing_init", iters=1, val_interval=1, ckpt_interval=1)
    res = run_cli("distill", "--config", str(config), "--work-dir", str(tiny_pair["root"] / "missing_init"))
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1] == ("error: checkpoint not found: nowhere/bb.pth; train it first "
                                                   "or fix the path in the config")


def test_teacher_without_assigner_is_one_line_where_its_assignment_is_needed(tmp_path):
    """The query prior and the split matching reuse the teacher's own GT assignment; a teacher config without
    train_cfg.assigner stops at build time, and builds when neither is on."""
    teacher = {k: v for k, v in tiny_model("deformable").items() if k != "train_cfg"}
    student = tiny_model("deformable")
    with pytest.raises(ConfigError) as err:
        build_distiller(tmp_path, teacher, student)
    assert "no train_cfg.assigner" in _one_line(err)
    with pytest.raises(ConfigError) as err:  # the contrastive term alone, on the split matching
        build_distiller(tmp_path, teacher, student, query_prior=dict(enable=False),
                        logits_kd=dict(enable=False, mode="split"), contrastive_kd=dict(enable=True))
    assert "no train_cfg.assigner" in _one_line(err)
    build_distiller(tmp_path, teacher, student, query_prior=dict(enable=False))


def test_query_prior_schedule_hook_rejects_a_bad_iteration_and_a_distiller_without_the_group(tmp_path):
    from types import SimpleNamespace

    from compress.distill.hooks import QueryPriorScheduleHook

    with pytest.raises(ConfigError) as err:
        QueryPriorScheduleHook(until_iter=0)
    assert "until_iter must be >= 1, got 0" in _one_line(err)
    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable"),
                                query_prior=dict(enable=False))
    with pytest.raises(ConfigError) as err:
        QueryPriorScheduleHook(until_iter=5).before_train(SimpleNamespace(model=distiller))
    assert "query_prior.enable=True" in _one_line(err)


def test_loss_weight_schedule_hook_rejects_a_bad_section_iteration_or_decay():
    from compress.distill.hooks import LossWeightScheduleHook

    for kwargs, message in [(dict(section="feature", until_iter=5), "section must be one of"),
                            (dict(section="feature_kd", until_iter=0), "until_iter must be >= 1, got 0"),
                            (dict(section="feature_kd", until_iter=5, decay="cosine"), "decay must be one of")]:
        with pytest.raises(ConfigError) as err:
            LossWeightScheduleHook(**kwargs)
        assert message in _one_line(err)


def test_loss_weight_schedule_hook_scales_the_configured_weight_and_skips_a_disabled_section(tmp_path):
    """Linear: the configured weight times 1 - iter / until_iter, zero from until_iter on (until_iter=None:
    the loop's max_iters); a section the model has off (a bench-kd entry with the component switched off) is
    left alone, with a warning."""
    from types import SimpleNamespace

    from compress.distill.hooks import LossWeightScheduleHook

    distiller = build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable"),
                                feature_kd=dict(weight=4.0), query_prior=dict(enable=False))
    warnings = []
    runner = SimpleNamespace(model=distiller, iter=0, logger=SimpleNamespace(warning=warnings.append))
    hook = LossWeightScheduleHook(section="feature_kd", until_iter=8)
    hook.before_train(runner)
    seen = []
    for it in (0, 2, 6, 8, 12):
        runner.iter = it
        hook.before_train_iter(runner, batch_idx=it)
        seen.append(distiller.feature_cfg.weight)
    assert seen == pytest.approx([4.0, 3.0, 1.0, 0.0, 0.0])
    assert not warnings
    step = LossWeightScheduleHook(section="feature_kd", until_iter=8, decay="step")
    assert [step.factor(it) for it in (0, 7, 8, 9)] == [1.0, 1.0, 0.0, 0.0]
    to_the_end = LossWeightScheduleHook(section="feature_kd")  # until the loop's max_iters
    runner.max_iters = 4
    to_the_end.before_train(runner)
    assert [to_the_end.factor(it) for it in (0, 1, 3, 4)] == pytest.approx([1.0, 0.75, 0.25, 0.0])
    off = LossWeightScheduleHook(section="query_prior", until_iter=8)
    off.before_train(runner)
    off.before_train_iter(runner, batch_idx=0)
    assert distiller.query_cfg.weight == 1.0 and "no enabled query_prior loss" in warnings[0]


def test_query_prior_schedule_hook_under_ddp_needs_find_unused_parameters(tmp_path):
    """After the switch a narrower student's query projection gets no gradient, which DDP rejects unless told;
    a one-process gloo group stands in for torchrun, with mmengine's real wrapper."""
    from types import SimpleNamespace

    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel

    from compress.distill.hooks import QueryPriorScheduleHook
    from serve.process import free_port

    distiller = build_distiller(tmp_path, tiny_model("deformable", embed_dims=128),
                                tiny_model("deformable", embed_dims=64))
    assert distiller.query_proj is not None
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        hook = QueryPriorScheduleHook(until_iter=5)
        with pytest.raises(ConfigError) as err:
            hook.before_train(SimpleNamespace(model=MMDistributedDataParallel(module=distiller)))
        assert "find_unused_parameters=True" in _one_line(err)
        hook.before_train(SimpleNamespace(model=MMDistributedDataParallel(module=distiller,
                                                                          find_unused_parameters=True)))
    finally:
        dist.destroy_process_group()
