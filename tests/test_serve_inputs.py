"""Bad and unusual uploads: never a 500; a clear one-line JSON error, or a valid conversion."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serve_helpers import encode, post_detect, running_server, scene


@pytest.fixture(scope="module")
def server(tiny_onnx, tmp_path_factory):
    with running_server(tiny_onnx, tmp_path_factory.mktemp("serve") / "server.log") as url:
        yield url


def assert_clean_error(res: httpx.Response, status: int, fragment: str) -> None:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and fragment in body["error"], body
    assert "\n" not in body["error"] and "Traceback" not in body["error"] and "/tmp" not in body["error"]


def png_bytes() -> bytes:
    return encode(scene(), "PNG")


def corrupt_png() -> bytes:
    data = bytearray(png_bytes())
    start = data.index(b"IDAT") + 8
    data[start:start + 40] = bytes(40)  # zeroed compressed data: the zlib stream no longer decodes
    return bytes(data)


def bomb_png(width: int = 10_000, height: int = 5_000) -> bytes:
    """A tiny file that decodes to 50 M pixels: a 1-bit PNG of zeros."""
    return encode(Image.new("1", (width, height)), "PNG")


BAD_UPLOADS = {
    "empty file": (b"", "x.png", 400, "the file is empty"),
    "text named .jpg": (b"hello, not an image\n" * 20, "photo.jpg", 415, "not a supported image"),
    "truncated JPEG": (encode(scene(256, 256, seed=3), "JPEG", quality=95)[:5000], "cut.jpg", 400,
                       "truncated or corrupt"),
    "corrupt PNG": (corrupt_png(), "bad.png", 400, "truncated or corrupt"),
    "GIF": (encode(scene(), "GIF"), "anim.gif", 415, "GIF images are not accepted"),
    "1x1 image": (encode(Image.new("RGB", (1, 1)), "PNG"), "dot.png", 400, "1x1 is too small"),
    "decompression bomb": (bomb_png(), "bomb.png", 413, "exceed the limit of 40,000,000 pixels"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_gets_clear_4xx(server, case):
    content, name, status, fragment = BAD_UPLOADS[case]
    assert_clean_error(post_detect(server, content, name), status, fragment)


def test_oversized_upload_is_413(server):
    content = b"\xff\xd8\xff" + bytes(11 * 2**20)
    assert_clean_error(post_detect(server, content, "big.jpg"), 413, "over the 10.0 MiB limit per image")


def test_request_size_is_refused_before_the_body_is_read(server):
    """A declared 100 MB body is answered 413 at once: the server does not wait for it."""
    host = urlparse(server)
    with socket.create_connection((host.hostname, host.port), timeout=10) as sock:
        sock.sendall(b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 100000000\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):  # the server answers and closes without reading a body byte
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "request body over the 32.0 MiB limit" in reply


def test_streamed_body_over_the_limit_is_413(server):
    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(40):
            yield bytes(2**20)

    res = httpx.post(server + "/detect", content=chunks(), timeout=60,
                     headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_clean_error(res, 413, "request body over the 32.0 MiB limit")


def test_no_file_wrong_type_and_empty_body(server):
    assert_clean_error(httpx.post(server + "/detect", data={"x": "1"}, files={"other": ("a", b"b")}), 400,
                       "no file")
    assert_clean_error(httpx.post(server + "/detect", json={"file": "x"}), 415, "multipart/form-data")
    assert_clean_error(httpx.post(server + "/detect"), 415, "an empty body")


@pytest.mark.parametrize("value", ["2", "-0.1", "abc", "nan"])
def test_bad_score_threshold_is_422(server, value):
    res = post_detect(server, png_bytes(), params={"score_threshold": value})
    assert_clean_error(res, 422, "score_threshold")


def test_format_image_needs_one_file(server):
    files = [("files", ("a.png", png_bytes(), "image/png"))] * 2
    res = httpx.post(server + "/detect", params={"format": "png"}, files=files, timeout=60)
    assert_clean_error(res, 422, "format=png draws one image")


def sixteen_bit() -> bytes:
    arr = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    return encode(Image.fromarray(arr), "PNG")


VALID = {
    "extreme aspect ratio": (encode(scene(1200, 6), "PNG"), (1200, 6)),
    "16-bit": (sixteen_bit(), (64, 48)),
    "grayscale": (encode(scene().convert("L"), "PNG"), (96, 96)),
    "palette": (encode(scene().convert("P"), "PNG"), (96, 96)),
    "RGBA": (encode(scene().convert("RGBA"), "PNG"), (96, 96)),
    "CMYK": (encode(scene().convert("CMYK"), "JPEG"), (96, 96)),
    "WebP": (encode(scene(), "WEBP"), (96, 96)),
    "BMP": (encode(scene(), "BMP"), (96, 96)),
}


@pytest.mark.parametrize("case", list(VALID))
def test_unusual_valid_images_are_converted(server, case):
    content, size = VALID[case]
    res = post_detect(server, content, params={"score_threshold": 0})
    assert res.status_code == 200, res.text
    image = res.json()["images"][0]
    assert (image["width"], image["height"]) == size and len(image["detections"]) == 10


def test_conversions_match_pil_rgb():
    from serve.images import to_rgb

    gray = scene().convert("L")
    assert np.array_equal(np.asarray(to_rgb(gray))[..., 0], np.asarray(gray))
    arr16 = np.array([[0, 257, 65535]], dtype=np.uint16)
    assert np.asarray(to_rgb(Image.fromarray(arr16)))[0, :, 0].tolist() == [0, 1, 255]
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 0, 0]


def test_api_key_and_cors_when_configured(tiny_onnx, tmp_path):
    with running_server(tiny_onnx, tmp_path / "server.log", api_key="s3cret",
                        cors_origins="https://app.example") as url:
        assert_clean_error(post_detect(url, png_bytes()), 401, "X-API-Key")
        assert_clean_error(post_detect(url, png_bytes(), headers={"X-API-Key": "nope"}), 401, "X-API-Key")
        assert post_detect(url, png_bytes(), headers={"X-API-Key": "s3cret"}).status_code == 200
        res = httpx.get(url + "/healthz", headers={"Origin": "https://app.example"})
        assert res.headers["access-control-allow-origin"] == "https://app.example"


def test_overload_is_429_and_timeouts_are_504(tiny_onnx, tmp_path):
    with running_server(tiny_onnx, tmp_path / "server.log", queue_size=1, request_timeout_s=0.0005) as url:
        files = [("files", ("a.png", png_bytes(), "image/png"))] * 2  # two images never fit a queue of one
        res = httpx.post(url + "/detect", files=files, timeout=60)
        assert_clean_error(res, 429, "at capacity")
        assert res.headers["retry-after"] == "1"
        assert_clean_error(post_detect(url, png_bytes()), 504, "did not finish within 0.0005 s")
        assert httpx.get(url + "/readyz").status_code == 200
