"""A real uvicorn server in a subprocess (``python -m serve``) and images built for the upload tests."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.run_helpers import subprocess_env


@contextmanager
def running_server(model: Path, log: Path, **settings) -> Iterator[str]:
    """A real server (one model thread) for the duration of a test; a start-up failure fails the test."""
    from serve.process import ServerFailed, server_process

    try:
        with server_process(model, log, env=subprocess_env(), threads=1, **settings) as url:
            yield url
    except ServerFailed as err:
        pytest.fail(str(err))


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def scene(width: int = 96, height: int = 96, seed: int = 0) -> Image.Image:
    """A textured RGB image (random blocks) so detections and colours are not degenerate."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.NEAREST)


def post_detect(url: str, content: bytes, name: str = "image.png", params: dict | None = None,
                **kwargs) -> httpx.Response:
    return httpx.post(url + "/detect", files={"file": (name, content, "application/octet-stream")},
                      params=params or {}, timeout=60, **kwargs)
