"""Load and fuzzing against a real server: no request lost, no server error, still ready afterwards."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import httpx
import pytest

from tests.serve_helpers import encode, running_server, scene


@pytest.fixture(scope="module")
def server(tiny_onnx, tmp_path_factory):
    with running_server(tiny_onnx, tmp_path_factory.mktemp("serve") / "server.log", max_batch=4,
                        max_wait_ms=10) as url:
        yield url


def test_500_requests_at_concurrency_16_lose_none(server):
    images = [encode(scene(96, 96, seed=i), "PNG") for i in range(8)]

    async def drive() -> list[int]:
        limit = asyncio.Semaphore(16)
        async with httpx.AsyncClient(timeout=120) as client:
            async def one(i: int) -> int:
                async with limit:
                    res = await client.post(server + "/detect", files={"file": ("x.png", images[i % 8], "image/png")})
                    return res.status_code

            return await asyncio.gather(*(one(i) for i in range(500)))

    statuses = asyncio.run(drive())
    assert statuses.count(200) == 500, {s: statuses.count(s) for s in set(statuses)}
    assert httpx.get(server + "/readyz").status_code == 200
    metrics = httpx.get(server + "/metrics").text
    count = float(re.search(r"^detrdistill_batch_size_count (\S+)", metrics, re.M).group(1))
    total = float(re.search(r"^detrdistill_batch_size_sum (\S+)", metrics, re.M).group(1))
    assert total >= 500 and total / count > 1.2  # concurrent requests were coalesced into batches


def test_schemathesis_finds_no_server_error(server, tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", server + "/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "25", "--seed", "1", "--request-timeout", "60"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert httpx.get(server + "/readyz").status_code == 200
