"""The runner layer: provider choice, backends agreeing with each other, the micro-batcher's queue."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from compress.errors import BackendError
from compress.runtime import load_runner
from compress.runtime.onnx_runner import choose_providers
from serve.batcher import MicroBatcher, Overloaded

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_provider_preference_and_fallback(caplog):
    assert choose_providers("auto", GPU_BUILD) == GPU_BUILD
    assert choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with caplog.at_level("WARNING", logger="compress.runtime"):
        chosen = choose_providers(["CUDAExecutionProvider"], ["CPUExecutionProvider"])
    assert chosen == ["CPUExecutionProvider"]
    assert "lacks CUDAExecutionProvider" in caplog.text and "onnxruntime-gpu" in caplog.text


def test_onnx_runner_logs_its_provider(tiny_onnx, caplog):
    with caplog.at_level("INFO", logger="compress.runtime"):
        runner = load_runner(tiny_onnx, "onnxruntime", threads=1)
    assert runner.provider == "CPUExecutionProvider"
    assert "student.onnx loaded on CPUExecutionProvider" in caplog.text
    assert runner.describe()["backend"] == "onnxruntime"


def test_pytorch_and_onnx_backends_agree(tiny_onnx, tiny_student):
    onnx_runner = load_runner(tiny_onnx, "onnxruntime", threads=1)
    torch_runner = load_runner(tiny_student[1], "pytorch", threads=1)
    assert torch_runner.contract.input_size == onnx_runner.contract.input_size == (96, 96)
    assert torch_runner.contract.classes == onnx_runner.contract.classes
    batch = np.random.default_rng(0).normal(size=(2, 3, 96, 96)).astype(np.float32)
    ref = torch_runner.infer(batch)
    got = onnx_runner.infer(batch)
    np.testing.assert_allclose(got[1][:, :10], ref[1][:, :10], atol=1e-4)
    np.testing.assert_allclose(got[0][:, :10], ref[0][:, :10], atol=1e-2)


def test_backend_errors_are_one_line(tmp_path):
    with pytest.raises(BackendError, match="model file not found: .*`make export` writes"):
        load_runner(tmp_path / "missing.onnx")
    with pytest.raises(BackendError, match="unknown backend 'tflite'"):
        load_runner(tmp_path / "x", "tflite")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="junk.onnx is not a loadable ONNX model"):
        load_runner(junk)
    engine = tmp_path / "student.engine"
    engine.write_bytes(b"x")
    with pytest.raises(BackendError, match="TensorRT is not installed here.*ONNX Runtime work everywhere"):
        load_runner(engine, "tensorrt")


def test_batcher_coalesces_and_bounds_its_queue(tiny_onnx):
    runner = load_runner(tiny_onnx, "onnxruntime", threads=1)
    image = np.zeros((3, 96, 96), np.float32)

    async def scenario():
        batcher = MicroBatcher(runner, max_batch=4, max_wait_ms=200, queue_size=3)
        batcher.start()
        # Three concurrent images within max_wait: one model call of three.
        results = await asyncio.gather(*batcher.submit([image]), *batcher.submit([image, image]))
        assert [r.batch_size for r in results] == [3, 3, 3]
        # Hold the model thread, fill the queue; the next request is refused instead of queued.
        release = threading.Event()
        batcher.executor.submit(release.wait)
        waiting = batcher.submit([image])  # taken by the worker, which then waits for the model thread
        await asyncio.sleep(0.3)
        queued = batcher.submit([image, image, image])
        with pytest.raises(Overloaded):
            batcher.submit([image])
        release.set()
        done = await asyncio.gather(*waiting, *queued)
        assert [r.batch_size for r in done] == [1, 3, 3, 3]
        await batcher.stop()

    asyncio.run(scenario())
