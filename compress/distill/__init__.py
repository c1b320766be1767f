"""DETRDistill on mmdet: importing this registers the distiller and hooks (configs name it in custom_imports)."""

from compress import (
    checkpoints,  # noqa: F401  (registers the trusted local checkpoint loader)
    models,  # noqa: F401  (AnyWidthDINO)
)
from compress.distill import hooks  # noqa: F401
from compress.distill.distiller import DETRDistiller

__all__ = ["DETRDistiller"]
