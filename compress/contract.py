"""ModelContract: what a deployed detector expects and returns; the single interface between export and serve.

Stored as ONNX metadata (string key/value pairs, JSON-encoded values) so an exported file is
self-describing: a runtime needs nothing else to preprocess images and read the outputs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from compress import __version__


@dataclass
class ModelContract:
    """Input: ``images`` (N, 3, H, W) float32, RGB, (pixel - mean) / std, resized to ``input_size`` (H, W)
    without keeping the aspect ratio. Outputs: ``boxes`` (N, K, 4) xyxy in input pixels, ``scores`` (N, K),
    ``labels`` (N, K) int64 indices into ``classes``."""

    classes: list[str]
    input_size: tuple[int, int]
    mean: list[float]
    std: list[float]
    top_k: int = 100
    box_format: str = "xyxy_input_pixels"
    channel_order: str = "RGB"
    source_sha256: str = ""
    model_name: str = ""
    project_version: str = __version__
    extra: dict = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        return {k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> ModelContract:
        """From plain JSON values (an engine sidecar, decoded metadata); unknown keys are ignored."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "input_size": tuple(known["input_size"])})

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ModelContract:
        return cls.from_dict({k: json.loads(v) for k, v in meta.items() if k in cls.__dataclass_fields__})
