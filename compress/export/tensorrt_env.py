"""Whether TensorRT and a CUDA GPU are here, and the one paragraph that says what to do when they are not."""

from __future__ import annotations

from compress.errors import BackendError

INSTALL_HELP = (
    "TensorRT engines need the tensorrt Python package (TensorRT 10 or 11) and an NVIDIA GPU with CUDA. "
    "Install them with `make setup FLAVOUR=gpu` (pip install tensorrt onnxruntime-gpu, from NVIDIA's package "
    "index) on a CUDA machine, or use the Docker image, which has both. Without them the ONNX model and "
    "ONNX Runtime work everywhere: `make export` writes work_dirs/export/student.onnx and the server's default "
    "backend is onnxruntime.")


def require_tensorrt():
    """The ``tensorrt`` module, or a BackendError naming what is missing (library or GPU) and the way out."""
    try:
        import tensorrt
    except ImportError:
        raise BackendError(f"TensorRT is not installed here. {INSTALL_HELP}") from None
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        raise BackendError(f"TensorRT {tensorrt.__version__} is installed but no CUDA GPU is visible. "
                           f"{INSTALL_HELP}")
    return tensorrt
