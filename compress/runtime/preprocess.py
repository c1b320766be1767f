"""Image -> model input and model output -> original pixels, exactly as the contract says.

One function each, shared by the offline evaluator (``compress.export.verify``), the benchmarks and the
server, so a detection served over HTTP is the detection the evaluator scored.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from compress.contract import ModelContract


def preprocess(image: Image.Image, contract: ModelContract) -> np.ndarray:
    """RGB image -> (3, H, W) float32: resized to the contract's input size (aspect not kept), then
    (pixel - mean) / std. Images already at the input size are not resampled at all, which makes this
    identical to mmdet's test pipeline on the embedded dataset."""
    height, width = contract.input_size
    rgb = image.convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.BILINEAR)
    arr = np.asarray(rgb, dtype=np.float32)
    arr = (arr - np.asarray(contract.mean, np.float32)) / np.asarray(contract.std, np.float32)
    return arr.transpose(2, 0, 1).copy()


def to_original_pixels(boxes_xyxy: np.ndarray, original_size: tuple[int, int], contract: ModelContract
                       ) -> np.ndarray:
    """(K, 4) xyxy boxes in model-input pixels -> the original image's pixels (``original_size`` = (W, H))."""
    height, width = contract.input_size
    ow, oh = original_size
    return boxes_xyxy * np.asarray([ow / width, oh / height, ow / width, oh / height], dtype=np.float32)
