"""ONNX Runtime backend: explicit providers (TensorRT -> CUDA -> CPU), the contract from the file's metadata."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compress.contract import ModelContract
from compress.errors import BackendError
from compress.runtime.base import Runner

log = logging.getLogger("compress.runtime")

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
OUTPUT_NAMES = ["boxes", "scores", "labels"]


def choose_providers(requested: str | Sequence[str], available: Sequence[str]) -> list[str]:
    """``'auto'``: every preferred provider this onnxruntime build has, best first. An explicit list keeps
    its order; entries the build lacks are dropped with a warning (the CPU provider is always last resort)."""
    wanted = list(PREFERENCE) if requested == "auto" else [requested] if isinstance(requested, str) else list(
        requested)
    unknown = [p for p in wanted if p not in available]
    if requested != "auto" and unknown:
        log.warning("onnxruntime here lacks %s (it has %s); install onnxruntime-gpu for CUDA/TensorRT",
                    ", ".join(unknown), ", ".join(available))
    chosen = [p for p in wanted if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class OnnxRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, providers: str | Sequence[str] = "auto"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("onnxruntime is not installed; `pip install onnxruntime` (CPU) or "
                               "`onnxruntime-gpu` (CUDA, TensorRT), or `make setup`") from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 2  # ORT itself warns when nodes fall back to the CPU provider
        if threads:
            options.intra_op_num_threads = threads
        # Idle worker threads sleep instead of spinning: in a server the cores they would burn between
        # calls decode the next request (measured: no slower per call on the 2-core machine).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chosen = choose_providers(providers, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types for unreadable files
            raise BackendError(f"{path} is not a loadable ONNX model ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "classes" not in meta:
            raise BackendError(f"{path} carries no detrdistill contract in its metadata; export it with "
                               f"`python -m compress export-onnx`")
        self.contract = ModelContract.from_metadata(meta)
        self.provider = self.session.get_providers()[0]
        log.info("%s loaded on %s (asked for %s)", Path(path).name, self.provider, ", ".join(chosen))
        if self.provider != chosen[0]:
            log.warning("%s: %s was requested but the session runs on %s", Path(path).name, chosen[0],
                        self.provider)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, scores, labels = self.session.run(OUTPUT_NAMES, {"images": np.ascontiguousarray(batch, np.float32)})
        return boxes, scores, labels

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "provider": self.provider}
