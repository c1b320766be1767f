"""Run ``python -m serve`` as a child process and wait until it is ready: for benchmarks and tests that
drive a real server over HTTP from another process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class ServerFailed(RuntimeError):
    """The child server exited or did not become ready; the message ends with its log tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as res:
            return res.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def server_process(model: str | Path, log: str | Path, timeout_s: float = 120, env: dict | None = None,
                   **settings) -> Iterator[str]:
    """Start the server on a free port with ``settings`` as flags, yield its base URL once /readyz is 200."""
    port = free_port()
    args = [sys.executable, "-m", "serve", "--model-path", str(model), "--port", str(port)]
    for key, value in settings.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env or os.environ.copy(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while not is_ready(url):
            if proc.poll() is not None:
                raise ServerFailed(f"server exited with {proc.returncode}: {Path(log).read_text()[-2000:]}")
            if time.time() > deadline:
                raise ServerFailed(f"server not ready in {timeout_s:g} s: {Path(log).read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
