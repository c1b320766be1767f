"""The HTTP API against a real uvicorn server running the exported tiny student."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serve_helpers import encode, post_detect, running_server, scene


@pytest.fixture(scope="module")
def server(tiny_onnx, tmp_path_factory):
    with running_server(tiny_onnx, tmp_path_factory.mktemp("serve") / "server.log", max_batch=3) as url:
        yield url


@pytest.fixture(scope="module")
def val_images(tiny_dataset):
    coco = json.loads((tiny_dataset / "annotations/instances_val.json").read_text())
    return [tiny_dataset / "val" / img["file_name"] for img in coco["images"]]


def test_health_ready_model(server):
    assert httpx.get(server + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server + "/readyz").json() == {"status": "ready"}
    info = httpx.get(server + "/model").json()
    assert info["backend"] == "onnxruntime" and info["provider"] == "CPUExecutionProvider"
    assert info["classes"][0] == "circle" and info["input_size"] == [96, 96] and len(info["version"]) == 12
    assert info["default_score_threshold"] == 0.3  # the server's setting, which the web page starts from


def test_detections_equal_the_offline_evaluator(server, tiny_onnx, tiny_dataset):
    """Same images through HTTP and through the evaluator's own path (ValImages + ONNX Runtime + rescale)."""
    import onnxruntime as ort

    from compress.contract import ModelContract
    from compress.export.verify import ValImages
    from compress.runtime.preprocess import to_original_pixels

    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    contract = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map)
    images = ValImages.load(tiny_dataset / "annotations/instances_val.json", tiny_dataset / "val", contract)
    boxes, scores, labels = session.run(["boxes", "scores", "labels"], {"images": images.arrays})
    coco = json.loads((tiny_dataset / "annotations/instances_val.json").read_text())
    for i, img in enumerate(coco["images"]):
        content = (tiny_dataset / "val" / img["file_name"]).read_bytes()
        got = post_detect(server, content, img["file_name"], {"score_threshold": 0}).json()["images"][0]
        assert (got["width"], got["height"]) == images.sizes[i]
        ref_boxes = to_original_pixels(boxes[i], images.sizes[i], contract)
        assert len(got["detections"]) == contract.top_k
        np.testing.assert_allclose([d["box"] for d in got["detections"]], ref_boxes, atol=0.011)
        np.testing.assert_allclose([d["score"] for d in got["detections"]], scores[i], atol=1e-5)
        assert [d["label_id"] for d in got["detections"]] == labels[i].tolist()
        assert [d["label"] for d in got["detections"]] == [contract.classes[k] for k in labels[i]]


def test_several_files_answer_in_order(server, val_images):
    contents = [p.read_bytes() for p in val_images[:3]]
    files = [("files", (f"img{i}.png", c, "image/png")) for i, c in enumerate(contents)]
    body = httpx.post(server + "/detect", files=files, params={"score_threshold": 0}, timeout=60).json()
    assert [im["file"] for im in body["images"]] == ["img0.png", "img1.png", "img2.png"]
    for content, result in zip(contents, body["images"]):
        alone = post_detect(server, content, params={"score_threshold": 0}).json()["images"][0]
        assert alone["detections"] == result["detections"]
    timings = body["timings"]
    assert timings["total_ms"] >= timings["inference_ms"] > 0 and timings["decode_ms"] > 0


def test_boxes_are_in_original_pixels_after_exif_rotation(server):
    image = scene(160, 80)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees clockwise
    tagged = post_detect(server, encode(image, "PNG", exif=exif.tobytes()), "tagged.png", {"score_threshold": 0})
    upright = post_detect(server, encode(image.transpose(Image.Transpose.ROTATE_270), "PNG"), "upright.png",
                          {"score_threshold": 0})
    result = tagged.json()["images"][0]
    assert (result["width"], result["height"]) == (80, 160)
    assert result["detections"] == upright.json()["images"][0]["detections"]
    boxes = np.array([d["box"] for d in result["detections"]])
    assert (boxes[:, [0, 2]] <= 80.01).all() and (boxes[:, [1, 3]] <= 160.01).all() and (boxes >= 0).all()


def test_filters(server, val_images):
    content = val_images[0].read_bytes()
    everything = post_detect(server, content, params={"score_threshold": 0}).json()["images"][0]["detections"]
    distinct = sorted({d["score"] for d in everything})
    cut = (distinct[len(distinct) // 2 - 1] + distinct[len(distinct) // 2]) / 2  # away from rounding ties
    some = post_detect(server, content, params={"score_threshold": cut}).json()["images"][0]["detections"]
    assert some == [d for d in everything if d["score"] >= cut]
    top2 = post_detect(server, content, params={"score_threshold": 0, "max_detections": 2}).json()
    assert top2["images"][0]["detections"] == everything[:2]
    wanted = everything[0]["label"]
    only = post_detect(server, content, params={"score_threshold": 0, "classes": f"{wanted},5"}).json()
    labels = {d["label"] for d in only["images"][0]["detections"]}
    assert wanted in labels and labels <= {wanted, "hexagon"}
    bad = post_detect(server, content, params={"classes": "dog"})
    assert bad.status_code == 422 and "unknown class 'dog'" in bad.json()["error"]


@pytest.mark.parametrize("fmt,mime", [("png", "image/png"), ("jpeg", "image/jpeg")])
def test_format_image_draws_boxes(server, val_images, fmt, mime):
    content = val_images[0].read_bytes()
    res = post_detect(server, content, params={"format": fmt, "score_threshold": 0})
    assert res.status_code == 200 and res.headers["content-type"] == mime
    drawn = Image.open(io.BytesIO(res.content)).convert("RGB")
    original = Image.open(io.BytesIO(content)).convert("RGB")
    assert drawn.size == original.size
    assert np.abs(np.asarray(drawn, np.int16) - np.asarray(original, np.int16)).max() > 100  # boxes drawn


def test_metrics_count_requests_and_batches(server, val_images):
    post_detect(server, val_images[0].read_bytes())
    text = httpx.get(server + "/metrics").text
    assert 'detrdistill_requests_total{route="/detect",status="200"}' in text
    assert "detrdistill_batch_size_count" in text and "detrdistill_request_latency_seconds_bucket" in text
    assert 'detrdistill_model_info{backend="onnxruntime"' in text
    assert "detrdistill_requests_in_flight" in text and "detrdistill_queue_depth" in text


def test_openapi_schema_describes_detect(server):
    schema = httpx.get(server + "/openapi.json").json()
    detect = schema["paths"]["/detect"]["post"]
    params = {p["name"]: p for p in detect["parameters"]}
    assert {"score_threshold", "max_detections", "classes", "format"} <= set(params)
    assert params["score_threshold"]["schema"]["anyOf"][0]["maximum"] == 1
    body = detect["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    assert {"file", "files"} <= set(schema["components"]["schemas"][body]["properties"])
    assert detect["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("DetectResponse")
    assert {"400", "413", "415", "422", "429", "503", "504"} <= set(detect["responses"])
    detection = schema["components"]["schemas"]["Detection"]["properties"]
    assert {"box", "score", "label", "label_id"} == set(detection)


def test_cors_is_off_by_default(server, val_images):
    res = httpx.get(server + "/healthz", headers={"Origin": "https://example.com"})
    assert "access-control-allow-origin" not in res.headers
