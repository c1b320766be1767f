"""Upload bytes -> an RGB PIL image, with every limit checked before the expensive step it protects.

Order: byte size (before decoding), format sniffed from the bytes (not the file name or declared type),
pixel count from the header (before decoding the pixels; PIL's own bomb check stays on behind it), full
decode (truncated or corrupt data), EXIF orientation, then conversion of every valid mode to RGB.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from serve.errors import ServeError

FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP"}
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def decode_image(data: bytes, name: str, max_bytes: int, max_pixels: int, min_side: int) -> Image.Image:
    """Decoded, upright RGB image, or a ServeError (4xx) saying what is wrong with ``name``."""
    if not data:
        raise ServeError(400, f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise ServeError(413, f"{name}: {len(data) / 2**20:.1f} MiB is over the {max_bytes / 2**20:.1f} MiB "
                              f"limit per image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ServeError(413, f"{name}: decoding it would exceed the limit of {max_pixels:,} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ServeError(415, f"{name}: not a supported image ({', '.join(FORMATS.values())})") from None
    if image.format not in FORMATS:
        raise ServeError(415, f"{name}: {image.format} images are not accepted; send "
                              f"{', '.join(FORMATS.values())}")
    width, height = image.size
    if width * height > max_pixels:
        raise ServeError(413, f"{name}: {width}x{height} is {width * height:,} pixels; decoding it would exceed the "
                              f"limit of {max_pixels:,} pixels")
    if min(width, height) < min_side:
        raise ServeError(400, f"{name}: {width}x{height} is too small; both sides must be at least "
                              f"{min_side} pixels")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError):
        raise ServeError(400, f"{name}: the {FORMATS[image.format]} data is truncated or corrupt") from None
    return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, 16-bit, palette, alpha and CMYK images to 8-bit RGB (alpha dropped, as mmcv's loader does)."""
    if image.mode in SIXTEEN_BIT:
        arr = np.asarray(image, dtype=np.float64)  # 0..65535, scaled to 8 bits like OpenCV's colour loading
        image = Image.fromarray(np.clip(arr / 257.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")
