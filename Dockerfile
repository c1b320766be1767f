# syntax=docker/dockerfile:1
# GPU image of detrdistill: CUDA torch, mmcv 2.1.0 built with its CUDA ops, mmdet 3.3, onnxruntime-gpu and
# TensorRT; runs the HTTP server (python -m serve) as a non-root user. Mirrors tools/setup_env.sh FLAVOUR=gpu.
#   docker build -t detrdistill .
#   docker run --gpus all -p 8000:8000 -v $PWD/work_dirs:/app/work_dirs detrdistill
# Pass DETRDISTILL_BACKEND=tensorrt and DETRDISTILL_MODEL_PATH=<engine> to serve an engine built in the image.

ARG CUDA_VERSION=12.4.1
ARG UBUNTU=ubuntu22.04

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-${UBUNTU} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential git \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Same order as tools/setup_env.sh: torch first, then mmcv built against it without build isolation.
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cu124 \
    && pip install numpy==2.2.6 wheel==0.45.1 ninja==1.11.1.4 "setuptools<81"
ENV FORCE_CUDA=1 MMCV_WITH_OPS=1 TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0"
RUN MAX_JOBS=8 pip install --no-build-isolation "mmcv==2.1.0"
WORKDIR /app
COPY pyproject.toml README.md ./
COPY compress ./compress
COPY serve ./serve
COPY configs ./configs
COPY tools ./tools
# hadolint ignore=DL3013
RUN pip install ".[serve,gpu]"

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-${UBUNTU} AS runtime
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    DETRDISTILL_HOST=0.0.0.0 DETRDISTILL_PORT=8000 DETRDISTILL_MODEL_PATH=/app/work_dirs/export/student.onnx
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 detrdistill
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build --chown=detrdistill:detrdistill /app /app
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["python3", "-m", "serve"]
