"""TensorRT engine backend: deserialises an engine built by ``python -m compress export-trt`` and runs it with
torch CUDA tensors as I/O buffers. The contract travels in the engine's JSON sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compress.contract import ModelContract
from compress.errors import BackendError
from compress.export.tensorrt_env import require_tensorrt
from compress.runtime.base import Runner


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, path: str | Path):
        trt = require_tensorrt()
        import torch

        sidecar = Path(str(path) + ".json")
        if not sidecar.is_file():
            raise BackendError(f"{path} has no sidecar {sidecar.name}; rebuild it with `make export-trt`")
        info = json.loads(sidecar.read_text())
        self.contract = ModelContract.from_dict(info["contract"])
        self.provider = f"TensorRT {trt.__version__} {info['precision']}"
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise BackendError(f"{path} does not deserialise with TensorRT {trt.__version__} on this GPU; "
                               f"rebuild it here with `make export-trt`")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self._torch = torch
        self._trt = trt

    def infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the engine (the raw per-query outputs too, for parity checks)."""
        torch = self._torch
        trt = self._trt
        images = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).cuda()
        self.context.set_input_shape("images", tuple(images.shape))
        self.context.set_tensor_address("images", images.data_ptr())
        outputs = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
                continue
            dtype = torch.from_numpy(np.zeros(0, trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            outputs[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return {name: t.cpu().numpy() for name, t in outputs.items()}

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self.infer_all(batch)
        return out["boxes"], out["scores"], out["labels"].astype(np.int64)
