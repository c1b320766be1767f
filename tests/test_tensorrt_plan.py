"""TensorRT logic that needs no TensorRT: profiles, precision plans, cache keys, sidecars, the clear error."""

from __future__ import annotations

import json

import pytest

from compress.errors import BackendError, ConfigError
from compress.export.tensorrt_build import (
    FP32_OPS,
    EngineSpec,
    cache_key,
    engine_path,
    precision_plan,
    profile_shapes,
    sidecar,
)
from tests.run_helpers import run_cli

SPEC = EngineSpec("work/student.onnx", (192, 160), "fp16", 1, 2, 8, 1024)
KEY_ARGS = ("a" * 64, "10.3.0", "NVIDIA H100", "9.0")


def test_profile_varies_only_the_batch():
    assert profile_shapes(SPEC) == {"min": (1, 3, 192, 160), "opt": (2, 3, 192, 160), "max": (8, 3, 192, 160)}


@pytest.mark.parametrize("kwargs,match", [
    (dict(precision="int8"), "precision must be one of fp32, fp16"),
    (dict(opt_batch=9), "1 <= min <= opt <= max"),
    (dict(min_batch=0), "1 <= min <= opt <= max"),
    (dict(workspace_mb=8), "workspace_mb 8 is too small"),
])
def test_bad_specs_are_refused(kwargs, match):
    base = dict(onnx="x.onnx", input_size=(192, 192), precision="fp16", min_batch=1, opt_batch=1, max_batch=4)
    with pytest.raises(ConfigError, match=match):
        EngineSpec(**{**base, **kwargs})


def test_precision_plan_per_tensorrt_generation():
    assert precision_plan(10, "fp32") == precision_plan(11, "fp32")
    assert not precision_plan(10, "fp32").builder_fp16_flag and not precision_plan(11, "fp32").cast_onnx_to_fp16
    trt10 = precision_plan(10, "fp16")
    assert trt10.builder_fp16_flag and not trt10.cast_onnx_to_fp16
    trt11 = precision_plan(11, "fp16")  # strongly typed: no FP16 flag exists, the graph is cast instead
    assert not trt11.builder_fp16_flag and trt11.cast_onnx_to_fp16
    assert {"LayerNormalization", "Softmax", "Sigmoid", "TopK"} <= set(trt11.keep_fp32_ops) == set(FP32_OPS)


def test_cache_key_changes_with_every_input_and_only_then():
    key = cache_key(*KEY_ARGS, SPEC)
    assert key == cache_key(*KEY_ARGS, EngineSpec(**SPEC.__dict__)) and len(key) == 64
    variants = [
        cache_key("b" * 64, *KEY_ARGS[1:], SPEC),
        cache_key(KEY_ARGS[0], "10.4.0", *KEY_ARGS[2:], SPEC),
        cache_key(*KEY_ARGS[:2], "NVIDIA T4", KEY_ARGS[3], SPEC),
        cache_key(*KEY_ARGS[:3], "7.5", SPEC),
        cache_key(*KEY_ARGS, EngineSpec(**{**SPEC.__dict__, "precision": "fp32"})),
        cache_key(*KEY_ARGS, EngineSpec(**{**SPEC.__dict__, "max_batch": 16})),
        cache_key(*KEY_ARGS, EngineSpec(**{**SPEC.__dict__, "workspace_mb": 2048})),
    ]
    assert len({key, *variants}) == 1 + len(variants)
    path = engine_path("engines", SPEC, key)
    assert path.name == f"student.fp16.{key[:12]}.engine" and path.parent.name == "engines"


def test_sidecar_records_where_the_engine_came_from():
    info = sidecar(SPEC, "k" * 64, "11.0.1", "NVIDIA H100", "9.0", {"classes": ["a"]}, "f" * 64, 12.34)
    assert info["tensorrt"] == "11.0.1" and info["gpu"] == "NVIDIA H100" and info["compute_capability"] == "9.0"
    assert info["precision"] == "fp16" and info["plan"]["cast_onnx_to_fp16"] is True
    assert info["profile"] == {"min": [1, 3, 192, 160], "opt": [2, 3, 192, 160], "max": [8, 3, 192, 160]}
    assert info["onnx_sha256"] == "f" * 64 and info["contract"] == {"classes": ["a"]}
    json.dumps(info)


def test_missing_tensorrt_is_one_clear_paragraph(tmp_path):
    from compress.export.tensorrt_env import require_tensorrt

    with pytest.raises(BackendError) as err:
        require_tensorrt()
    message = str(err.value)
    assert message.startswith("TensorRT is not installed here.") and "\n" not in message
    assert "make setup FLAVOUR=gpu" in message and "ONNX Runtime work everywhere" in message
    res = run_cli("export-trt", "--onnx", str(tmp_path / "student.onnx"))
    assert res.returncode == 2 and res.stderr.startswith("error: TensorRT is not installed here.")
    assert res.stderr.strip().count("\n") == 0
