"""Request and response models: they are the OpenAPI schema, so they are exact about units and formats."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Detection(BaseModel):
    box: list[float] = Field(..., min_length=4, max_length=4,
                             description="[x1, y1, x2, y2] in the original image's pixels (after EXIF orientation)")
    score: float = Field(..., ge=0, le=1)
    label: str
    label_id: int = Field(..., ge=0, description="index into the model's class list")


class ImageResult(BaseModel):
    file: str = Field(..., description="the uploaded file's name")
    width: int
    height: int
    detections: list[Detection]


class ModelInfo(BaseModel):
    name: str
    version: str = Field(..., description="first 12 hex digits of the source checkpoint's SHA-256")
    backend: str
    provider: str = Field(..., description="execution provider or device the model runs on")
    classes: list[str]
    input_size: list[int] = Field(..., description="[height, width] the model takes")


class ServedModel(ModelInfo):
    """GET /model: the model plus the server setting a client needs to show what /detect would return."""
    default_score_threshold: float = Field(..., description="the threshold /detect applies when the request "
                                           "names none; the web page's slider starts there")


class Timings(BaseModel):
    decode_ms: float = Field(..., description="decoding and preprocessing all images")
    queue_ms: float = Field(..., description="waiting for a batch slot")
    inference_ms: float = Field(..., description="the model call that served these images")
    total_ms: float


class DetectResponse(BaseModel):
    model: ModelInfo
    images: list[ImageResult]
    timings: Timings


class ErrorResponse(BaseModel):
    error: str = Field(..., description="one line saying what is wrong")


class Status(BaseModel):
    status: str
