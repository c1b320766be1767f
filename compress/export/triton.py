"""``python -m compress export-triton``: a Triton Inference Server model repository for an exported model.

Layout ``<repo>/<name>/config.pbtxt`` + ``<repo>/<name>/1/model.onnx`` (or ``model.plan`` for a TensorRT
engine). Triton then does what ``serve/`` does for one process, across GPUs and replicas: dynamic batching
with a short queue delay, health and Prometheus metrics. The model contract (classes, mean/std, input size,
box format) rides along as a config parameter so clients can preprocess and label without the repo.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from compress.contract import ModelContract
from compress.errors import BackendError


def read_contract(model: Path) -> tuple[ModelContract, str]:
    """(contract, Triton platform) of an .onnx file (metadata) or a TensorRT engine (its JSON sidecar)."""
    if model.suffix == ".onnx":
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
        if "classes" not in meta:
            raise BackendError(f"{model} carries no detrdistill contract; export it with `python -m compress "
                               f"export-onnx`")
        return ModelContract.from_metadata(meta), "onnxruntime_onnx"
    sidecar = Path(str(model) + ".json")
    if model.suffix in (".engine", ".plan") and sidecar.is_file():
        return ModelContract.from_dict(json.loads(sidecar.read_text())["contract"]), "tensorrt_plan"
    raise BackendError(f"{model} is neither an .onnx export nor a TensorRT engine with its .json sidecar")


def config_pbtxt(name: str, platform: str, contract: ModelContract, max_batch: int, max_queue_delay_us: int,
                 instances: int) -> str:
    height, width = contract.input_size
    k = contract.top_k
    preferred = sorted({b for b in (2, 4, 8, 16, max_batch) if b <= max_batch})
    escaped = json.dumps(json.dumps(contract.__dict__, default=list))
    return f"""name: "{name}"
platform: "{platform}"
max_batch_size: {max_batch}
input [
  {{ name: "images" data_type: TYPE_FP32 dims: [ 3, {height}, {width} ] }}
]
output [
  {{ name: "boxes" data_type: TYPE_FP32 dims: [ {k}, 4 ] }},
  {{ name: "scores" data_type: TYPE_FP32 dims: [ {k} ] }},
  {{ name: "labels" data_type: TYPE_INT64 dims: [ {k} ] }}
]
dynamic_batching {{
  preferred_batch_size: [ {", ".join(map(str, preferred))} ]
  max_queue_delay_microseconds: {max_queue_delay_us}
}}
instance_group [ {{ count: {instances} kind: KIND_AUTO }} ]
parameters {{ key: "detrdistill_contract" value: {{ string_value: {escaped} }} }}
"""


def write_triton_repo(model: str | Path, repo: str | Path, name: str = "detrdistill", max_batch: int = 4,
                      max_queue_delay_us: int = 2000, instances: int = 1) -> Path:
    model = Path(model)
    if not model.is_file():
        raise BackendError(f"model not found: {model}; `make export` writes work_dirs/export/student.onnx")
    if max_batch < 1:
        raise BackendError(f"max_batch must be >= 1, got {max_batch}")
    contract, platform = read_contract(model)
    folder = Path(repo) / name
    version = folder / "1"
    try:
        version.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BackendError(f"cannot write the Triton repository at {folder}: {err.strerror}") from None
    shutil.copyfile(model, version / ("model.onnx" if platform == "onnxruntime_onnx" else "model.plan"))
    (folder / "config.pbtxt").write_text(config_pbtxt(name, platform, contract, max_batch, max_queue_delay_us,
                                                      instances))
    return folder
