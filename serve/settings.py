"""Server settings: flags of ``python -m serve`` or ``DETRDISTILL_*`` environment variables (flags win)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DETRDISTILL_", protected_namespaces=())

    model_path: Path = Field(Path("work_dirs/export/student.onnx"),
                             description=".onnx file, TensorRT engine or model .pth, by backend")
    backend: Literal["onnxruntime", "tensorrt", "pytorch"] = "onnxruntime"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    threads: int | None = Field(None, ge=1, description="intra-op threads of the model (default: all cores)")
    max_batch: int = Field(4, ge=1, le=256, description="images coalesced into one model call")
    max_wait_ms: float = Field(0.0, ge=0, le=1000, description="how long a batch waits to fill; 0 batches "
                               "what queued up while the model ran, adding no latency at low load")
    queue_size: int = Field(64, ge=1, description="images waiting for the model; beyond it requests get 429")
    request_timeout_s: float = Field(30.0, gt=0)
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="per image file")
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1, description="whole request body")
    max_files: int = Field(16, ge=1)
    max_pixels: int = Field(40_000_000, ge=1, description="decoded pixels per image (decompression bombs)")
    min_side: int = Field(4, ge=1, description="smallest accepted image side in pixels")
    default_score_threshold: float = Field(0.3, ge=0, le=1)
    api_key: str | None = Field(None, description="when set, /detect needs header X-API-Key")
    cors_origins: list[str] = Field(default_factory=list, description="CORS is off unless origins are listed")
