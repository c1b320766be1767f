"""Small registered fixes to mmdet detectors (instances only; mmdet's own classes stay untouched)."""

from compress.models.dino import AnyWidthDINO

__all__ = ["AnyWidthDINO"]
