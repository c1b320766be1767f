"""``create_app``: the FastAPI application around one loaded runner.

The model loads (or arrives loaded from ``python -m serve``) and warms up in the background at start-up:
``/healthz`` answers at once, ``/readyz`` turns 200 when the first batch of every size has run.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from PIL import Image

from compress import __version__
from compress.errors import DetrDistillError
from compress.runtime import Runner, load_runner
from serve.batcher import MicroBatcher
from serve.errors import install_error_handlers
from serve.metrics import Metrics
from serve.middleware import BodyLimitMiddleware, MetricsMiddleware
from serve.routes import router
from serve.settings import Settings

log = logging.getLogger("serve")


@dataclass
class ServerState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    runner: Runner | None = None
    batcher: MicroBatcher | None = None
    ready: bool = False
    failure: str | None = None

    async def start(self, runner: Runner | None) -> None:
        s = self.settings
        try:
            self.runner = runner or await asyncio.to_thread(load_runner, s.model_path, s.backend, s.threads)
            await asyncio.to_thread(self.runner.warm_up, s.max_batch)
        except DetrDistillError as err:
            self.failure = str(err)
            log.error("model not loaded: %s", err)
            return
        self.batcher = MicroBatcher(self.runner, s.max_batch, s.max_wait_ms, s.queue_size,
                                    on_batch=self.metrics.batch_size.observe)
        self.batcher.start()
        self.metrics.model.info({k: str(v) for k, v in self.runner.describe().items()})
        self.ready = True
        log.info("ready: %s", self.runner.describe())


def create_app(settings: Settings | None = None, runner: Runner | None = None) -> FastAPI:
    settings = settings or Settings()
    state = ServerState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # PIL's own decompression-bomb check stays on behind ours (never disabled, only aligned).
        Image.MAX_IMAGE_PIXELS = settings.max_pixels
        starting = asyncio.create_task(state.start(runner))
        yield
        starting.cancel()
        if state.batcher:
            await state.batcher.stop()

    app = FastAPI(title="detrdistill detector", version=__version__, lifespan=lifespan,
                  description="Object detection with a DETRDistill-compressed DETR-family model. "
                              "Boxes are [x1, y1, x2, y2] in the uploaded image's pixels.")
    app.state.server = state
    install_error_handlers(app)
    app.include_router(router)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app
