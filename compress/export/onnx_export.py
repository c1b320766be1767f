"""ONNX export (opset 17, TorchScript exporter) with the contract in the metadata, then verification.

Why the legacy exporter: torch.export (dynamo=True) fails on mmdet's DETR heads (data-dependent Python);
``dynamo=False`` exports all seven variants with a dynamic batch and no custom ops (deformable attention
becomes GridSample, which needs opset >= 16).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from compress.contract import ModelContract
from compress.errors import ConfigError, DetrDistillError
from compress.export.wrapper import DeployableDetector

OUTPUTS = ("boxes", "scores", "labels", "query_probs", "query_boxes")


class ParityError(DetrDistillError):
    """The exported model disagrees with PyTorch beyond tolerance."""


def export_onnx(detector: torch.nn.Module, contract: ModelContract, out_path: str | Path, opset: int = 17
                ) -> Path:
    """Write the ONNX file: input ``images``, outputs boxes / scores / labels (+ raw query outputs)."""
    if opset < 16:
        raise ConfigError(f"opset {opset} is too old: deformable attention needs GridSample (opset >= 16)")
    out = Path(out_path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch()
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}; choose a writable --out path") from None
    height, width = contract.input_size
    wrapper = DeployableDetector(detector, (height, width), contract.top_k, with_raw=True)
    dummy = torch.randn(2, 3, height, width)
    dynamic = {name: {0: "batch"} for name in ("images", *OUTPUTS)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (dummy,), str(out), input_names=["images"], output_names=list(OUTPUTS),
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    import onnx

    model = onnx.load(str(out))
    for key, value in contract.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(out))
    onnx.checker.check_model(str(out))
    return out


def compare_outputs(reference: list[np.ndarray], candidate: list[np.ndarray], atol: float = 1e-4,
                    rtol: float = 1e-3, what: str = "ONNX Runtime") -> float:
    """Largest absolute difference on the raw query outputs; raises ParityError beyond tolerance."""
    worst = 0.0
    for name, ref, got in zip(OUTPUTS[3:], reference, candidate):
        diff = float(np.abs(ref - got).max()) if ref.size else 0.0
        worst = max(worst, diff)
        if not np.allclose(ref, got, atol=atol, rtol=rtol):
            raise ParityError(f"{what} differs from PyTorch on {name}: max abs diff {diff:.3g} "
                              f"(atol {atol}, rtol {rtol}); the export is not usable")
    return worst
