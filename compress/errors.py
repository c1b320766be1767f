"""Error types whose message is one line naming the file and the fix.

Why a hierarchy: the CLI prints ``str(err)`` of any ``DetrDistillError`` and exits 2 without a traceback,
so every anticipated failure (bad config, bad data, bad checkpoint) is one clear line for the user.
"""

from __future__ import annotations


class DetrDistillError(Exception):
    """Base class: the message is the whole user-facing explanation, on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class ConfigError(DetrDistillError):
    """A config is missing a key, has an unknown key, or its parts disagree."""


class DataError(DetrDistillError):
    """A dataset path or annotation file is missing or malformed."""


class CheckpointError(DetrDistillError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class TrainingError(DetrDistillError):
    """Training diverged (a NaN or infinite loss)."""


class BackendError(DetrDistillError):
    """An exported model file or an inference backend (ONNX Runtime, TensorRT, CUDA) is missing or unusable."""
