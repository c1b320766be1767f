"""The teacher's encoder under torch.compile: the same outputs as eager, and a distillation step trains."""

from __future__ import annotations

import math

import pytest
import torch

from compress.errors import ConfigError
from tests.conftest import make_batch
from tests.distill_helpers import build_distiller, run_steps
from tests.tiny import tiny_model


@pytest.mark.parametrize("device", [
    "cpu",
    # inductor's Triton kernels, and mmcv's CUDA deformable attention inside the compiled encoder
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")),
])
def test_compiled_teacher_encoder_matches_eager_and_trains(tmp_path, device):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    distiller = build_distiller(tmp_path, tiny_model("dino"), tiny_model("dino", width=4),
                                teacher_options={"compile": True}).to(device)
    losses = run_steps(distiller, steps=1)[0]
    assert all(math.isfinite(float(v)) for v in losses.values())
    assert counters["stats"]["unique_graphs"] > 0  # dynamo really compiled the encoder
    data = distiller.data_preprocessor(make_batch(2, 96, seed=5), True)
    compiled = distiller._teacher_forward(data["inputs"], data["data_samples"])
    distiller.teacher.encoder._compiled_call_impl = None  # nn.Module.compile's hook: back to eager
    eager = distiller._teacher_forward(data["inputs"], data["data_samples"])
    for name in ("memory", "cls_scores", "bbox_preds"):
        assert getattr(compiled, name).device.type == device
        torch.testing.assert_close(getattr(compiled, name), getattr(eager, name), atol=1e-4, rtol=1e-4)


def test_bad_compile_value_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        build_distiller(tmp_path, tiny_model("deformable"), tiny_model("deformable"), teacher_options={"compile": 1})
    text = str(err.value)
    assert "\n" not in text and "model.teacher.compile must be True or False, got 1" in text


def test_a_teacher_without_an_encoder_cannot_be_compiled():
    from compress.distill.distiller import compile_encoder

    with pytest.raises(ConfigError) as err:
        compile_encoder(torch.nn.Linear(2, 2))
    assert str(err.value) == "model.teacher.compile: Linear has no transformer encoder to compile"
