"""Tiny end-to-end training setups: detector/distiller config files in a temp folder, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, save_random_detector

TINY_DETECTOR = """
_base_ = ['{repo}/configs/detectors/dino128_r18w16_synthetic_student.py']
model = dict(backbone=dict(base_channels={width}), neck=dict(in_channels={channels}),
             encoder=dict(num_layers=1), decoder=dict(num_layers=2), num_queries=20,
             dn_cfg=dict(group_cfg=dict(num_dn_queries=10)))
"""
TINY_DISTILL = """
_base_ = ['{repo}/configs/distill/detrdistill_dino_synthetic.py']
data_root = '{data}/'
image_size = (96, 96)
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5), dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='PackDetInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
model = dict(teacher=dict(config='{teacher}', checkpoint='{ckpt}'), student=dict(config='{student}'))
max_iters = {iters}
train_cfg = dict(max_iters=max_iters, val_interval={val_interval})
param_scheduler = [dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[max_iters], gamma=0.1)]
default_hooks = dict(checkpoint=dict(interval={ckpt_interval}, max_keep_ckpts=10), logger=dict(interval=1))
"""


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory, tiny_dataset):
    from mmengine.config import Config

    import compress.distill  # noqa: F401

    root = tmp_path_factory.mktemp("pair")
    teacher = root / "teacher.py"
    teacher.write_text(TINY_DETECTOR.format(repo=REPO, width=8, channels=[16, 32, 64]))
    student = root / "student.py"
    student.write_text(TINY_DETECTOR.format(repo=REPO, width=4, channels=[8, 16, 32]))
    ckpt = save_random_detector(Config.fromfile(str(teacher)).model.to_dict(), root / "teacher.pth")
    return {"teacher": teacher, "student": student, "ckpt": ckpt, "data": tiny_dataset, "root": root}


def write_distill_config(pair: dict, name: str, iters: int, val_interval: int, ckpt_interval: int) -> Path:
    path = pair["root"] / f"{name}.py"
    path.write_text(TINY_DISTILL.format(repo=REPO, data=pair["data"], teacher=pair["teacher"],
                                        student=pair["student"], ckpt=pair["ckpt"], iters=iters,
                                        val_interval=val_interval, ckpt_interval=ckpt_interval))
    return path


def subprocess_env() -> dict:
    from compress.bench.kd_matrix import with_repo_on_path

    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": with_repo_on_path(os.environ.get("PYTHONPATH"))}


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=subprocess_env())


@pytest.fixture(scope="session")
def tiny_student(tiny_pair, tmp_path_factory):
    """A real (briefly distilled) student model file and the config of its data."""
    config = write_distill_config(tiny_pair, "export", iters=2, val_interval=2, ckpt_interval=2)
    work = tmp_path_factory.mktemp("export_work")
    res = run_cli("distill", "--config", str(config), "--work-dir", str(work))
    assert res.returncode == 0, res.stderr[-2000:]
    return config, work / "student.pth"


@pytest.fixture(scope="session")
def tiny_onnx(tiny_student, tmp_path_factory) -> Path:
    """The tiny student exported and verified by the CLI (top-K 10, max batch 3)."""
    config, ckpt = tiny_student
    out = tmp_path_factory.mktemp("onnx") / "student.onnx"
    res = run_cli("export-onnx", "--config", str(config), "--checkpoint", str(ckpt), "--out", str(out),
                  "--max-batch", "3", "--top-k", "10", "--val-images", "0")
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def logged_train_rows(pair: dict, tmp_path: Path, name: str, extra: str, iters: int = 4) -> dict[int, dict]:
    """Distil ``iters`` iterations of the tiny pair with ``extra`` config lines appended (custom hooks, say)
    through the CLI; each iteration's logged values, unsmoothed."""
    config = write_distill_config(pair, name, iters=iters, val_interval=iters, ckpt_interval=iters)
    config.write_text(config.read_text() + f"{extra}\nlog_processor = dict(window_size=1)\n")
    work = tmp_path / "work"
    res = run_cli("distill", "--config", str(config), "--work-dir", str(work))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in next(work.glob("*/vis_data/scalars.json")).read_text().splitlines()]
    train = {row["iter"]: row for row in rows if "loss" in row}
    assert sorted(train) == list(range(1, iters + 1))
    return train
