"""The HTTP routes. Each parses and validates, then delegates: images -> batcher -> response."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from compress.runtime.preprocess import preprocess
from serve.batcher import Overloaded
from serve.errors import ServeError
from serve.images import decode_image
from serve.render import render
from serve.schemas import Detection, DetectResponse, ErrorResponse, ImageResult, ModelInfo, ServedModel, Status, Timings

router = APIRouter()
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="needed only when the server is started with an API key")
INDEX_HTML = Path(__file__).with_name("static") / "index.html"
ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in {
    400: "empty, truncated, corrupt or too small image; no file", 401: "missing or wrong API key",
    413: "image or request over the size or pixel limits", 415: "not a supported image, or not multipart",
    422: "invalid parameter", 429: "queue full, retry after the Retry-After seconds",
    503: "model not loaded yet", 504: "inference did not finish within the request timeout"}.items()}


def server(request: Request):
    return request.app.state.server


def ready_state(request: Request):
    state = server(request)
    if not state.ready:
        raise ServeError(503, state.failure or "the model is still loading; retry shortly", {"Retry-After": "2"})
    return state


def check_api_key(request: Request, key: str | None = Depends(api_key_header)) -> None:
    expected = server(request).settings.api_key
    if expected and key != expected:
        raise ServeError(401, "missing or wrong X-API-Key header")


def parse_classes(spec: str | None, classes: list[str]) -> list[int] | None:
    """``"circle,3"`` -> label ids; names and ids mix; None keeps every class."""
    if spec is None or not spec.strip():
        return None
    ids = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token.isdigit() and int(token) < len(classes):
            ids.append(int(token))
        elif token in classes:
            ids.append(classes.index(token))
        else:
            raise ServeError(422, f"classes: unknown class {token[:50]!r}; known: {', '.join(classes)}")
    return ids


def model_info(state) -> ModelInfo:
    d = state.runner.describe()
    contract = state.runner.contract
    return ModelInfo(name=d["name"], version=d["version"], backend=d["backend"], provider=d.get("provider", ""),
                     classes=contract.classes, input_size=list(contract.input_size))


@router.post("/detect", response_model=DetectResponse, responses={
    **ERRORS, 200: {"content": {"image/png": {}, "image/jpeg": {}},
                    "description": "detections as JSON, or the image with boxes drawn when format is png/jpeg"}})
async def detect(
        request: Request,
        file: UploadFile | None = File(None, description="one image: JPEG, PNG, WebP or BMP"),
        files: list[UploadFile] | None = File(None, description="several images, answered in order"),
        score_threshold: float | None = Query(None, ge=0, le=1, description="default: the server's setting"),
        max_detections: int = Query(100, ge=1, le=1000, description="per image, best scores first"),
        classes: str | None = Query(None, max_length=2000, description="comma-separated class names or ids"),
        format: Literal["json", "png", "jpeg"] = Query("json", description="png/jpeg: the image with boxes"),
        _auth: None = Depends(check_api_key)):
    started = time.perf_counter()
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ServeError(415, f"POST /detect takes multipart/form-data with the image in field `file` (or "
                              f"several in `files`), not {content_type[:100] or 'an empty body'}")
    state = ready_state(request)
    settings, runner = state.settings, state.runner
    uploads = ([file] if file is not None else []) + list(files or [])
    if not uploads:
        raise ServeError(400, "no file: send the image as multipart field `file` (or several in `files`)")
    if len(uploads) > settings.max_files:
        raise ServeError(413, f"{len(uploads)} files in one request; the limit is {settings.max_files}")
    if format != "json" and len(uploads) != 1:
        raise ServeError(422, f"format={format} draws one image; send exactly one file")
    label_ids = parse_classes(classes, runner.contract.classes)
    threshold = settings.default_score_threshold if score_threshold is None else score_threshold

    def prepare(data: bytes, name: str):
        image = decode_image(data, name, settings.max_upload_bytes, settings.max_pixels, settings.min_side)
        return image, preprocess(image, runner.contract)

    names = [(upload.filename or f"file {i}")[:100] for i, upload in enumerate(uploads)]
    decoded = [await run_in_threadpool(prepare, await upload.read(), name) for upload, name in zip(uploads, names)]
    decode_s = time.perf_counter() - started
    try:
        futures = state.batcher.submit([array for _, array in decoded])
    except Overloaded:
        raise ServeError(429, "the server is at capacity; retry after a second", {"Retry-After": "1"}) from None
    try:
        results = await asyncio.wait_for(asyncio.gather(*futures), settings.request_timeout_s)
    except asyncio.TimeoutError:
        for fut in futures:
            fut.cancel()
        raise ServeError(504, f"inference did not finish within {settings.request_timeout_s:g} s") from None
    state.metrics.images.inc(len(results))
    images = []
    for name, (image, _), result in zip(names, decoded, results):
        det = runner.postprocess(result.outputs, [image.size])[0].filtered(threshold, max_detections, label_ids)
        images.append(ImageResult(
            file=name, width=image.width, height=image.height, detections=[
                Detection(box=[round(float(v), 2) for v in box], score=round(float(score), 5),
                          label=runner.contract.classes[int(label)], label_id=int(label))
                for box, score, label in zip(det.boxes, det.scores, det.labels)]))
    if format != "json":
        content = await run_in_threadpool(render, decoded[0][0], images[0], format)
        return Response(content, media_type=f"image/{format}")
    timings = Timings(decode_ms=round(decode_s * 1e3, 3), queue_ms=round(max(r.queue_s for r in results) * 1e3, 3),
                      inference_ms=round(max(r.inference_s for r in results) * 1e3, 3),
                      total_ms=round((time.perf_counter() - started) * 1e3, 3))
    return DetectResponse(model=model_info(state), images=images, timings=timings)


@router.get("/healthz", response_model=Status, summary="the process is alive")
async def healthz():
    return Status(status="ok")


@router.get("/readyz", response_model=Status, responses={503: ERRORS[503]},
            summary="the model is loaded and warmed up")
async def readyz(request: Request):
    ready_state(request)
    return Status(status="ready")


@router.get("/model", response_model=ServedModel, responses={503: ERRORS[503]}, summary="the served model")
async def model(request: Request):
    state = ready_state(request)
    return ServedModel(**model_info(state).model_dump(),
                       default_score_threshold=state.settings.default_score_threshold)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request):
    state = server(request)
    state.metrics.queue_depth.set(state.batcher.depth() if state.batcher else 0)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def index():
    return HTMLResponse(INDEX_HTML.read_text())


@router.get("/favicon.ico", include_in_schema=False)
async def favicon():
    return Response(status_code=204)
