"""The runner interface, the detections it returns, and the one function that picks a backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from compress.contract import ModelContract
from compress.errors import BackendError
from compress.runtime.preprocess import preprocess, to_original_pixels

BACKENDS = ("onnxruntime", "tensorrt", "pytorch")


@dataclass
class Detections:
    """One image's detections in its original pixels: boxes (K, 4) xyxy, scores (K,), labels (K,) int."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def filtered(self, score_threshold: float = 0.0, max_detections: int | None = None,
                 label_ids: Sequence[int] | None = None) -> Detections:
        keep = self.scores >= score_threshold
        if label_ids is not None:
            keep &= np.isin(self.labels, np.asarray(list(label_ids), dtype=self.labels.dtype))
        idx = np.flatnonzero(keep)[:max_detections]  # scores arrive sorted, so this keeps the best
        return Detections(self.boxes[idx], self.scores[idx], self.labels[idx])


class Runner(ABC):
    """A loaded detector: ``infer`` takes the contract's input batch and returns its three outputs."""

    backend: str = ""
    contract: ModelContract

    @abstractmethod
    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 3, H, W) float32 -> boxes (N, K, 4) xyxy input pixels, scores (N, K), labels (N, K) int64."""

    def describe(self) -> dict[str, str]:
        """What a response or a benchmark row says about the model that produced it."""
        return {"name": self.contract.model_name, "version": self.contract.source_sha256[:12],
                "backend": self.backend, "project_version": self.contract.project_version}

    def detect(self, images: Sequence[Image.Image]) -> list[Detections]:
        """End to end: preprocess, one batched inference, boxes back to each image's original pixels."""
        batch = np.stack([preprocess(im, self.contract) for im in images])
        return self.postprocess(self.infer(batch), [im.size for im in images])

    def postprocess(self, outputs: tuple[np.ndarray, np.ndarray, np.ndarray],
                    sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        boxes, scores, labels = outputs
        return [Detections(to_original_pixels(boxes[i], size, self.contract), scores[i], labels[i].astype(np.int64))
                for i, size in enumerate(sizes)]

    def warm_up(self, max_batch: int = 1) -> None:
        """Run every batch size once so the first request pays no allocation or kernel selection."""
        height, width = self.contract.input_size
        for n in sorted({1, max_batch}):
            self.infer(np.zeros((n, 3, height, width), np.float32))


def load_runner(path: str | Path, backend: str = "onnxruntime", threads: int | None = None,
                providers: str | Sequence[str] = "auto") -> Runner:
    """Open ``path`` with ``backend``: an .onnx file (onnxruntime), an engine (tensorrt) or a model file
    written by ``python -m compress distill`` (pytorch)."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not Path(path).is_file():
        hint = {"onnxruntime": "`make export` writes work_dirs/export/student.onnx",
                "tensorrt": "`make export-trt` writes work_dirs/export/student.engine",
                "pytorch": "`make distill` writes work_dirs/distill/student.pth"}[backend]
        raise BackendError(f"model file not found: {path}; {hint}")
    if backend == "onnxruntime":
        from compress.runtime.onnx_runner import OnnxRunner

        return OnnxRunner(path, threads=threads, providers=providers)
    if backend == "tensorrt":
        from compress.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(path)
    from compress.runtime.torch_runner import TorchRunner

    return TorchRunner(path, threads=threads)
