"""One runner interface over the backends that execute an exported detector (ONNX Runtime, TensorRT, PyTorch).

Export checks, benchmarks and the server all call ``runner.infer(batch)``; nothing else differs per backend.
This package imports neither torch nor mmdet at module level, so a serving process stays lean.
"""

from __future__ import annotations

from compress.runtime.base import BACKENDS, Detections, Runner, load_runner

__all__ = ["BACKENDS", "Detections", "Runner", "load_runner"]
