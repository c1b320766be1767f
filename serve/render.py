"""Detections drawn on the image (``/detect?format=png|jpeg``), one colour per class."""

from __future__ import annotations

import io

from PIL import Image

from compress.visualize import draw_boxes
from serve.schemas import ImageResult


def render(image: Image.Image, result: ImageResult, fmt: str) -> bytes:
    dets = result.detections
    canvas = draw_boxes(image, [d.box for d in dets], [d.label_id for d in dets],
                        [f"{d.label} {d.score:.2f}" for d in dets])
    buf = io.BytesIO()
    canvas.save(buf, format="PNG" if fmt == "png" else "JPEG", quality=90)
    return buf.getvalue()
