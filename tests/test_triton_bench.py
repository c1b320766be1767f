"""Triton repository export and the latency benchmark, on the tiny exported models."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from compress.errors import BackendError
from compress.export.triton import write_triton_repo
from tests.run_helpers import run_cli


def test_triton_repository_for_onnx(tiny_onnx, tmp_path):
    import onnxruntime as ort

    res = run_cli("export-triton", "--model", str(tiny_onnx), "--repo", str(tmp_path / "repo"), "--name", "det",
                  "--max-batch", "8")
    assert res.returncode == 0, res.stderr[-2000:]
    config = (tmp_path / "repo/det/config.pbtxt").read_text()
    assert 'name: "det"' in config and 'platform: "onnxruntime_onnx"' in config
    assert "max_batch_size: 8" in config and "dims: [ 3, 96, 96 ]" in config
    assert 'name: "boxes" data_type: TYPE_FP32 dims: [ 10, 4 ]' in config
    assert 'name: "labels" data_type: TYPE_INT64 dims: [ 10 ]' in config
    assert re.search(r"dynamic_batching \{\s+preferred_batch_size: \[ 2, 4, 8 \]\s+max_queue_delay_microseconds: 2000",
                     config)
    contract = json.loads(json.loads(re.search(r'string_value: (".*") }', config).group(1)))
    assert contract["classes"][0] == "circle" and contract["input_size"] == [96, 96]
    session = ort.InferenceSession(str(tmp_path / "repo/det/1/model.onnx"), providers=["CPUExecutionProvider"])
    boxes = session.run(["boxes"], {"images": np.zeros((8, 3, 96, 96), np.float32)})[0]
    assert boxes.shape == (8, 10, 4)


def test_triton_errors(tmp_path, tiny_onnx):
    with pytest.raises(BackendError, match="model not found"):
        write_triton_repo(tmp_path / "none.onnx", tmp_path / "repo")
    stray = tmp_path / "model.engine"
    stray.write_bytes(b"x")
    with pytest.raises(BackendError, match="neither an .onnx export nor a TensorRT engine with its .json sidecar"):
        write_triton_repo(stray, tmp_path / "repo")
    (tmp_path / "file").write_text("")
    with pytest.raises(BackendError, match="cannot write the Triton repository"):
        write_triton_repo(tiny_onnx, tmp_path / "file")


def test_bench_teacher_and_student_side_by_side(tiny_pair, tiny_student, tmp_path):
    config, student = tiny_student
    out = tmp_path / "bench" / "latency"
    res = run_cli("bench", "--config", str(config), "--teacher", str(tiny_pair["ckpt"]), "--student", str(student),
                  "--batch", "1", "2", "--runs", "3", "--warmup", "1", "--threads", "1", "--out", str(out),
                  "--export-dir", str(tmp_path / "export"))
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["model"], r["backend"], r["batch"]): r for r in result["rows"]}
    assert set(rows) == {(m, b, n) for m in ("teacher", "student") for b in ("pytorch", "onnxruntime")
                         for n in (1, 2)}
    for row in rows.values():
        assert row["model_only"]["n"] == 3 and row["model_only"]["p50_ms"] > 0
        assert row["end_to_end"]["p50_ms"] > 0 and row["params_m"] > 0
    assert result["models"]["teacher"]["params_m"] > result["models"]["student"]["params_m"]
    assert {t["target"].split(" (")[0] for t in result["targets"]} >= {
        "ONNX Runtime >= 2x faster than PyTorch eager", "student >= 2x faster than teacher on onnxruntime"}
    assert result["machine"]["cores"] and result["libraries"]["onnxruntime"]
    table = out.with_suffix(".md").read_text()
    assert "| student | onnxruntime | 1 |" in table and "TensorRT" not in table
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "TensorRT skipped" in res.stdout
    assert sorted(p.name for p in (tmp_path / "export").glob("*.onnx")) == ["student.onnx", "teacher.onnx"]
