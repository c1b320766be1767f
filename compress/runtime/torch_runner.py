"""PyTorch eager backend: the model file as trained, through the same deployable wrapper the ONNX export traces.

It serves as the reference in benchmarks (eager vs ONNX Runtime) and lets the server run a checkpoint
directly when no export exists yet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.errors import BackendError
from compress.runtime.base import Runner


class TorchRunner(Runner):
    backend = "pytorch"

    def __init__(self, path: str | Path, threads: int | None = None, top_k: int = 100,
                 input_size: tuple[int, int] | None = None):
        import torch

        from compress.export.pipeline import build_contract, load_model_file
        from compress.export.wrapper import DeployableDetector

        if threads:
            torch.set_num_threads(threads)
        detector, meta = load_model_file(path)
        size = input_size or meta.get("input_size")
        if not size:
            raise BackendError(f"{path} does not record its input size (written before meta.input_size "
                               f"existed); pass input_size or export it with `python -m compress export-onnx`")
        self.contract = build_contract(detector, path, meta.get("classes", []), tuple(size), top_k)
        self.wrapper = DeployableDetector(detector, self.contract.input_size, top_k).eval()
        self.provider = "cpu"
        self._torch = torch

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._torch.no_grad():
            boxes, scores, labels = self.wrapper(self._torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
        return boxes.numpy(), scores.numpy(), labels.numpy()
