"""The Dockerfile (linted with hadolint, consistent with the local install) and the server's command line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.run_helpers import subprocess_env

DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    res = subprocess.run([hadolint, "--failure-threshold", "info", str(REPO / "Dockerfile")], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_matches_the_local_install():
    setup = (REPO / "tools/setup_env.sh").read_text()
    for pin in re.findall(r'"(torch==[\d.]+|mmcv==[\d.]+)"', setup):
        assert pin in DOCKERFILE, f"{pin} from tools/setup_env.sh is not what the image installs"
    assert "--no-build-isolation" in DOCKERFILE and "FORCE_CUDA=1" in DOCKERFILE
    assert re.search(r"^FROM nvidia/cuda:.*runtime.* AS runtime$", DOCKERFILE, re.M)  # multi-stage, CUDA runtime
    assert DOCKERFILE.count("\nFROM ") + DOCKERFILE.startswith("FROM ") >= 2
    user = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", DOCKERFILE, re.M)
    assert 'CMD ["python3", "-m", "serve"]' in DOCKERFILE


def run_serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serve", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env=subprocess_env())


def test_serve_cli_errors_are_one_line(tmp_path):
    missing = run_serve("--model-path", str(tmp_path / "nothing.onnx"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "`make export` writes" in missing.stderr
    bad = run_serve("--max-batch", "0")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "max_batch" in bad.stderr
    engine = tmp_path / "student.engine"
    engine.write_bytes(b"x")
    trt = run_serve("--model-path", str(engine), "--backend", "tensorrt")
    assert trt.returncode == 2 and "TensorRT is not installed here" in trt.stderr


def test_settings_come_from_the_environment(monkeypatch):
    from serve.settings import Settings

    monkeypatch.setenv("DETRDISTILL_MAX_BATCH", "8")
    monkeypatch.setenv("DETRDISTILL_API_KEY", "k")
    settings = Settings()
    assert settings.max_batch == 8 and settings.api_key == "k" and settings.cors_origins == []
