"""Micro-batching: concurrent requests share one model call, like Triton's dynamic batcher.

Each image is one queue item. A single worker task takes the first waiting item, gathers more until
``max_batch`` items or ``max_wait_ms`` have passed, and runs the model in a one-thread executor, so the event
loop never blocks and the model never runs twice at once (it uses every core itself). The queue is bounded:
when it is full a request is refused at once (429 with Retry-After) instead of waiting without limit.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from compress.runtime import Runner


class Overloaded(Exception):
    """The queue is full."""


@dataclass
class Item:
    array: np.ndarray  # (3, H, W) model input
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchResult:
    """One image's raw outputs and how long it waited and ran."""

    outputs: tuple[np.ndarray, np.ndarray, np.ndarray]
    queue_s: float
    inference_s: float
    batch_size: int


class MicroBatcher:
    def __init__(self, runner: Runner, max_batch: int, max_wait_ms: float, queue_size: int, on_batch=None):
        self.runner = runner
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=queue_size)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.on_batch = on_batch or (lambda size: None)
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    def depth(self) -> int:
        return self.queue.qsize()

    def submit(self, arrays: list[np.ndarray]) -> list[asyncio.Future]:
        """Queue every image of one request, or none of them (Overloaded) when they do not all fit."""
        if self.queue.maxsize - self.queue.qsize() < len(arrays):
            raise Overloaded
        loop = asyncio.get_running_loop()
        items = [Item(a, loop.create_future()) for a in arrays]
        for item in items:
            self.queue.put_nowait(item)
        return [item.future for item in items]

    async def _gather_batch(self) -> list[Item]:
        batch = [await self.queue.get()]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [item for item in batch if not item.future.done()]  # timed-out requests are dropped

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather_batch()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                boxes, scores, labels = await loop.run_in_executor(
                    self.executor, self.runner.infer, np.stack([item.array for item in batch]))
            except Exception as exc:  # a model failure fails this batch's requests, not the server
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            took = time.perf_counter() - started
            self.on_batch(len(batch))
            for i, item in enumerate(batch):
                if not item.future.done():
                    item.future.set_result(BatchResult((boxes[i:i + 1], scores[i:i + 1], labels[i:i + 1]),
                                                       started - item.enqueued, took, len(batch)))
