"""ONNX export with in-graph decoding: contract metadata, dynamic batch, parity with PyTorch, AP delta."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compress.contract import ModelContract
from compress.errors import CheckpointError, ConfigError
from compress.export.onnx_export import ParityError, compare_outputs
from tests.run_helpers import run_cli


def test_export_verifies_parity_and_ap(tiny_onnx):
    import onnx
    import onnxruntime as ort

    out = tiny_onnx
    report = json.loads(out.with_suffix(".onnx.json").read_text())
    assert set(report["parity_max_abs_diff"]) == {"1", "2", "3"}
    assert max(report["parity_max_abs_diff"].values()) < 1e-4
    assert report["ap_delta"] <= 0.2 and report["val_images"] == 8
    model = onnx.load(str(out))
    assert model.opset_import[0].version >= 17
    assert not [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]  # no custom ops
    contract = ModelContract.from_metadata({p.key: p.value for p in model.metadata_props})
    assert contract.classes[0] == "circle" and contract.input_size == (96, 96) and contract.top_k == 10
    assert len(contract.source_sha256) == 64
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 2, 3):
        boxes, scores, labels = session.run(["boxes", "scores", "labels"],
                                            {"images": np.random.randn(batch, 3, 96, 96).astype(np.float32)})
        assert boxes.shape == (batch, 10, 4) and scores.shape == (batch, 10) and labels.dtype == np.int64
        assert (boxes >= 0).all() and (boxes <= 96).all() and (np.diff(scores, axis=1) <= 1e-6).all()


def test_parity_failure_is_loud():
    ref = [np.zeros((1, 5, 6), np.float32), np.zeros((1, 5, 4), np.float32)]
    bad = [ref[0] + 1e-2, ref[1]]
    assert compare_outputs(ref, [r.copy() for r in ref]) == 0.0
    with pytest.raises(ParityError, match="query_probs: max abs diff 0.01"):
        compare_outputs(ref, bad)


def test_export_errors(tiny_student, tmp_path):
    from compress.export.onnx_export import export_onnx
    from compress.export.pipeline import load_model_file

    config, ckpt = tiny_student
    with pytest.raises(CheckpointError, match="model file not found"):
        load_model_file(tmp_path / "missing.pth")
    torch.save({"state_dict": {}}, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="carries no model config"):
        load_model_file(tmp_path / "bare.pth")
    detector, _ = load_model_file(ckpt)
    contract = ModelContract(classes=["a"] * 6, input_size=(96, 96), mean=[0, 0, 0], std=[1, 1, 1])
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot write"):
        export_onnx(detector, contract, tmp_path / "file" / "x.onnx")
    with pytest.raises(ConfigError, match="opset 15 is too old"):
        export_onnx(detector, contract, tmp_path / "x.onnx", opset=15)


def test_simplified_export_is_kept_only_with_parity(tiny_student, tmp_path):
    import onnx

    config, ckpt = tiny_student
    out = tmp_path / "slim.onnx"
    res = run_cli("export-onnx", "--config", str(config), "--checkpoint", str(ckpt), "--out", str(out),
                  "--top-k", "10", "--val-images", "4", "--simplify")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "slim.onnx.json").read_text())["simplify"]
    before, after = report["nodes_before_after"]
    assert report["applied"] is True and after < before and len(onnx.load(str(out)).graph.node) == after
    assert max(report["parity_max_abs_diff"].values()) < 1e-4
    assert not (tmp_path / "slim.slim.onnx").exists()
    model = onnx.load(str(out))
    assert {p.key for p in model.metadata_props} >= {"classes", "input_size", "mean", "std", "source_sha256"}
