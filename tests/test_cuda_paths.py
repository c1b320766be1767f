"""GPU paths, run where a CUDA GPU is present (skipped on the CPU-only CI machine). Each was first run on an
H100 (README, "Checked on a GPU"), where the last two failed before their fixes."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_batch
from tests.distill_helpers import build_distiller, run_steps
from tests.run_helpers import run_cli, write_distill_config
from tests.tiny import tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_mmcv_cuda_deformable_attention_matches_its_reference():
    """The compiled CUDA op (used for every DETR-family model on a GPU) against mmcv's PyTorch version."""
    from mmcv.ops.multi_scale_deform_attn import (
        MultiScaleDeformableAttnFunction,
        multi_scale_deformable_attn_pytorch,
    )

    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = torch.tensor([[12, 12], [6, 6], [3, 3]], device="cuda")
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    tokens = int((shapes[:, 0] * shapes[:, 1]).sum())
    options = dict(device="cuda", dtype=torch.float64, generator=gen)
    value = torch.randn(2, tokens, 4, 8, **options).requires_grad_()
    locations = torch.rand(2, 10, 4, 3, 2, 2, **options).requires_grad_()
    weights = torch.rand(2, 10, 4, 3, 2, **options).softmax(-1).requires_grad_()
    out = MultiScaleDeformableAttnFunction.apply(value, shapes, starts, locations, weights, 64)
    ref = multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (value, weights), grad), torch.autograd.grad(ref, (value, weights), grad)):
        torch.testing.assert_close(a, b)


def test_distiller_trains_on_cuda_and_its_teacher_evaluates_there(tmp_path):
    distiller = build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4)).cuda()
    losses = run_steps(distiller, steps=1)[0]
    assert all(torch.isfinite(v).all() for v in losses.values())
    data = distiller.teacher.data_preprocessor(make_batch(2, 96, split="val"), False)  # CPU batch in
    assert data["inputs"].is_cuda
    assert len(distiller.teacher.predict(data["inputs"], data["data_samples"])) == 2


def test_bf16_teacher_runs_on_cuda(tmp_path):
    """mmcv's CUDA deformable attention has no bf16 kernel; the teacher keeps that op in float32."""
    distiller = build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4),
                                teacher_autocast="bfloat16").cuda()
    data = distiller.data_preprocessor(make_batch(2, 96), True)
    taps = distiller._teacher_forward(data["inputs"], data["data_samples"])
    assert taps.cls_scores.dtype == torch.float32 and taps.cls_scores.is_cuda


def test_teacher_cache_keeps_host_copies_and_hands_the_batch_back_on_the_gpu(tmp_path):
    distiller = build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4),
                                teacher_options={"cache_mb": 64}).cuda()
    losses = run_steps(distiller, steps=2)  # run_steps' batches repeat on a second call, below
    again = run_steps(distiller, steps=2)
    assert distiller.teacher_cache.hits == 4 and float(again[-1]["teacher_cache_hit_rate"]) == 0.5
    assert all(t.device.type == "cpu" for r in distiller.teacher_cache.entries.values() for t in r["feats"])
    assert losses[-1]["teacher_cache_hit_rate"].is_cuda
    data = distiller.data_preprocessor(make_batch(2, 96), True)
    taps = distiller._teacher_forward(data["inputs"], data["data_samples"])
    assert taps.cls_scores.is_cuda and taps.feats[0].is_cuda


def test_bench_kd_on_cuda_reports_the_cards_peak_memory(tiny_pair, tmp_path):
    """On a GPU the RSS misses what the teacher's forward costs on the card: the matrix reports the card's peak
    (mmengine's logged max_memory_allocated) too, and a distillation run holds more than the student alone."""
    import json

    config = write_distill_config(tiny_pair, "benchkd_cuda", iters=4, val_interval=4, ckpt_interval=4)
    out = tmp_path / "bench"
    res = run_cli("bench-kd", "--config", str(config), "--student-config", str(tiny_pair["student"]), "--seeds",
                  "0", "--iters", "4", "--val-interval", "4", "--timing-rounds", "0", "--entries", "baseline",
                  "detrdistill", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads((out / "bench_kd.json").read_text())["rows"]
    assert rows["baseline"]["peak_gpu_mb"] > 0 and rows["detrdistill"]["peak_gpu_vs_baseline"] > 1.0
    assert "peak GPU memory vs baseline" in (out / "bench_kd.md").read_text()
