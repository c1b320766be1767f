"""The real mmengine Runner end to end on a tiny dataset: distill via the CLI, resume after a kill,
two-process distributed training (gloo), a diverging run stopped with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="module")
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


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=_env())


def test_distill_cli_end_to_end(tiny_pair, tmp_path):
    config = write_distill_config(tiny_pair, "e2e", iters=4, val_interval=4, ckpt_interval=4)
    work = tmp_path / "work"
    res = run_cli("distill", "--config", str(config), "--work-dir", str(work))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| teacher |" in res.stdout and "| student + DETRDistill |" in res.stdout
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["iterations"] == 4
    for role in ("teacher", "student"):
        assert 0.0 <= metrics[role]["AP"] <= 100.0 and "AP50" in metrics[role] and "APl" in metrics[role]
    assert (work / "curves.png").stat().st_size > 1000
    # the student file is a plain mmdet model: no teacher, no optimizer, its config and metrics inside
    ckpt = torch.load(work / "student.pth", map_location="cpu", weights_only=False)
    assert set(ckpt) == {"meta", "state_dict"}
    assert not any(k.startswith(("teacher", "student.")) for k in ckpt["state_dict"])
    assert "AnyWidthDINO" in ckpt["meta"]["config"] and ckpt["meta"]["classes"][0] == "circle"
    res = run_cli("evaluate", "--config", str(config), "--checkpoint", str(work / "student.pth"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{metrics['student']['AP']:.2f}" in res.stdout or metrics["student"]["AP"] == 0
    # intermediate checkpoints hold the student and adapters only
    full = torch.load(work / "iter_4.pth", map_location="cpu", weights_only=False)
    assert not any(k.startswith("teacher") for k in full["state_dict"])
    assert any(k.startswith("student.") for k in full["state_dict"]) and "optimizer" in full


@pytest.mark.slow
def test_resume_after_kill_restores_iteration_and_optimizer(tiny_pair, tmp_path):
    config = write_distill_config(tiny_pair, "resume", iters=16, val_interval=100, ckpt_interval=4)
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "compress", "distill", "--config", str(config), "--work-dir", str(work)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (work / "iter_4.pth").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # let the checkpoint finish writing
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (work / "iter_4.pth").exists() and not (work / "iter_16.pth").exists()
    saved = torch.load(work / "iter_4.pth", map_location="cpu", weights_only=False)
    res = run_cli("distill", "--config", str(config), "--work-dir", str(work), "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed" in res.stdout + res.stderr
    final = torch.load(work / "iter_16.pth", map_location="cpu", weights_only=False)
    assert final["meta"]["iter"] == 16
    steps = {int(s["step"]) for s in final["optimizer"]["state"].values()}
    assert steps == {16}  # AdamW counted every step: the state was restored at 4, not restarted
    assert {int(s["step"]) for s in saved["optimizer"]["state"].values()} == {4}
    assert json.loads((work / "metrics.json").read_text())["iterations"] == 16


@pytest.mark.slow
def test_two_process_distributed_training_gloo(tiny_pair, tmp_path):
    config = write_distill_config(tiny_pair, "dist", iters=3, val_interval=3, ckpt_interval=3)
    work = tmp_path / "work"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
                          "-m", "compress", "distill", "--config", str(config), "--work-dir", str(work),
                          "--launcher", "pytorch"], capture_output=True, text=True, timeout=600, cwd=REPO,
                         env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Distributed launcher: pytorch" in res.stdout + res.stderr or "world_size: 2" in res.stdout + res.stderr
    assert json.loads((work / "metrics.json").read_text())["iterations"] == 3
    assert (work / "student.pth").exists()


def test_diverging_run_stops_with_one_line(tiny_pair, tmp_path):
    config = write_distill_config(tiny_pair, "nan", iters=30, val_interval=100, ckpt_interval=100)
    res = run_cli("distill", "--config", str(config), "--work-dir", str(tmp_path / "w"), "--cfg-options",
                  "optim_wrapper.optimizer.lr=1e12", "optim_wrapper.clip_grad=None")
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: non-finite loss") and "lower optim_wrapper.optimizer.lr" in last


def test_amp_without_gpu_is_refused(tiny_pair):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: AMP is allowed")
    config = write_distill_config(tiny_pair, "amp", iters=2, val_interval=2, ckpt_interval=2)
    res = run_cli("distill", "--config", str(config), "--amp")
    assert res.returncode == 2 and "--amp needs a CUDA GPU" in res.stderr
