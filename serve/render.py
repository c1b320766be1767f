"""Detections drawn on the image (``/detect?format=png|jpeg``), one colour per class."""

from __future__ import annotations

import colorsys
import io

from PIL import Image, ImageDraw

from serve.schemas import ImageResult


def class_colour(label_id: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((label_id * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def render(image: Image.Image, result: ImageResult, fmt: str) -> bytes:
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 300))
    for det in result.detections:
        colour = class_colour(det.label_id)
        x1, y1, x2, y2 = det.box
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{det.label} {det.score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        draw.rectangle((left, top, right, bottom), fill=colour)
        draw.text((x1, y1), text, fill=(0, 0, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG" if fmt == "png" else "JPEG", quality=90)
    return buf.getvalue()
