"""Boxes drawn in their class colour where the detections are, at the panel's scale."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from compress.visualize import class_colour, draw_boxes
from tests.conftest import REPO


def test_box_outline_in_class_colour_at_scale():
    image = Image.new("RGB", (100, 80), (128, 128, 128))
    drawn = draw_boxes(image, [[20, 30, 60, 70]], [2], ["triangle 0.50"], scale=2.0)
    pixels = np.asarray(drawn)
    assert drawn.size == (200, 160)
    colour = class_colour(2)
    # the outline runs along the scaled box (x 40..120, y 60..140); below the caption on the left edge
    assert tuple(pixels[120, 40]) == colour and tuple(pixels[140, 80]) == colour and tuple(pixels[100, 120]) == colour
    assert tuple(pixels[100, 80]) == (128, 128, 128)  # inside the box: untouched
    assert tuple(pixels[10, 10]) == (128, 128, 128)  # outside every box: untouched
    assert np.asarray(image).max() == 128  # the caller's image is not drawn on


def test_neighbouring_classes_get_distinct_colours():
    colours = [class_colour(i) for i in range(6)]
    assert len(set(colours)) == 6
    assert min(sum(abs(a - b) for a, b in zip(colours[i], colours[i + 1])) for i in range(5)) > 100


def test_the_server_draws_without_torch_or_mmdet():
    """serve/render.py uses this module; an ONNX Runtime server must not pay for torch and mmdet."""
    code = "import sys, serve.app; print(sorted({'torch', 'mmdet', 'mmengine'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
