"""ONNX -> TensorRT engine: one optimisation profile, FP32 or FP16, a timing cache and a JSON sidecar.

Engines are specific to a TensorRT version and a GPU, so the file name carries a key over everything that
makes an engine differ (ONNX hash, TensorRT version, GPU, compute capability, precision, profile): a present
engine is reused, never rebuilt. The planning functions here need no TensorRT and are tested on any machine;
``build_engine`` imports it lazily and fails with one paragraph where it (or a GPU) is missing.

FP16 differs by TensorRT generation: TensorRT 10 takes the FP16 builder flag and picks per layer; TensorRT 11
is strongly typed only (no FP16 flag), so the ONNX itself is cast to FP16 with the numerically sensitive
operators kept in FP32 (RF-DETR silently built FP32 engines on TensorRT 11 by setting the flag anyway).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from compress.errors import BackendError, ConfigError

PRECISIONS = ("fp32", "fp16")
# Kept in FP32 when the graph is cast for a strongly typed build: normalisation, its reductions, the
# attention/score non-linearities and the decode's top-K (FP16 collapse is the most reported DETR export bug).
FP32_OPS = ("LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Softmax", "Sigmoid", "TopK", "GridSample", "Exp",
            "Log")


@dataclass(frozen=True)
class EngineSpec:
    onnx: str
    input_size: tuple[int, int]
    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 4
    workspace_mb: int = 2048

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"the profile needs 1 <= min <= opt <= max batch, got {self.min_batch} / "
                              f"{self.opt_batch} / {self.max_batch}")
        if self.workspace_mb < 64:
            raise ConfigError(f"workspace_mb {self.workspace_mb} is too small for a DETR engine; use >= 64")


def profile_shapes(spec: EngineSpec) -> dict[str, tuple[int, int, int, int]]:
    """The ``images`` input's min / opt / max shapes: only the batch dimension varies."""
    height, width = spec.input_size
    return {name: (batch, 3, height, width)
            for name, batch in (("min", spec.min_batch), ("opt", spec.opt_batch), ("max", spec.max_batch))}


@dataclass(frozen=True)
class PrecisionPlan:
    """How a precision is obtained on a given TensorRT major version."""

    builder_fp16_flag: bool
    cast_onnx_to_fp16: bool
    keep_fp32_ops: tuple[str, ...] = ()


def precision_plan(trt_major: int, precision: str) -> PrecisionPlan:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return PrecisionPlan(False, False)
    if trt_major >= 11:
        return PrecisionPlan(False, True, FP32_OPS)
    return PrecisionPlan(True, False)


def cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: str, spec: EngineSpec) -> str:
    """Stable hex key over everything that makes two engines differ."""
    material = {"onnx": onnx_sha256, "tensorrt": trt_version, "gpu": gpu_name, "cc": compute_capability,
                "precision": spec.precision, "profile": profile_shapes(spec), "workspace_mb": spec.workspace_mb}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def engine_path(out_dir: str | Path, spec: EngineSpec, key: str) -> Path:
    return Path(out_dir) / f"{Path(spec.onnx).stem}.{spec.precision}.{key[:12]}.engine"


def sidecar(spec: EngineSpec, key: str, trt_version: str, gpu_name: str, compute_capability: str,
            contract: dict, onnx_sha256: str, build_seconds: float) -> dict:
    """What the engine is and where it came from; the runtime reads the contract from here."""
    return {"tensorrt": trt_version, "gpu": gpu_name, "compute_capability": compute_capability,
            "precision": spec.precision,
            "plan": asdict(precision_plan(int(trt_version.split(".")[0]), spec.precision)),
            "profile": {k: list(v) for k, v in profile_shapes(spec).items()}, "workspace_mb": spec.workspace_mb,
            "onnx": spec.onnx, "onnx_sha256": onnx_sha256, "cache_key": key, "contract": contract,
            "build_seconds": round(build_seconds, 1), "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def cast_to_fp16(onnx_path: str | Path, out_path: str | Path, keep_fp32_ops: tuple[str, ...]) -> Path:
    """FP16 copy of the graph for strongly typed TensorRT, sensitive ops and the I/O kept in FP32."""
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise BackendError("FP16 for TensorRT 11 casts the ONNX graph with onnxconverter-common; "
                           "`pip install onnxconverter-common`") from None
    model = float16.convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True,
                                             op_block_list=list(keep_fp32_ops))
    onnx.save(model, str(out_path))
    return Path(out_path)


def build_engine(spec: EngineSpec, out_dir: str | Path, contract: dict) -> tuple[Path, dict, bool]:
    """Build (or reuse) the engine for ``spec``; returns (path, sidecar, reused)."""
    from compress.checkpoints import sha256_file
    from compress.export.tensorrt_env import require_tensorrt

    trt = require_tensorrt()
    import torch

    gpu = torch.cuda.get_device_name(0)
    cc = "{}.{}".format(*torch.cuda.get_device_capability(0))
    onnx_sha = sha256_file(spec.onnx)
    key = cache_key(onnx_sha, trt.__version__, gpu, cc, spec)
    path = engine_path(out_dir, spec, key)
    meta_path = Path(str(path) + ".json")
    if path.is_file() and meta_path.is_file():
        return path, json.loads(meta_path.read_text()), True
    path.parent.mkdir(parents=True, exist_ok=True)
    plan = precision_plan(int(trt.__version__.split(".")[0]), spec.precision)
    source = Path(spec.onnx)
    if plan.cast_onnx_to_fp16:
        source = cast_to_fp16(spec.onnx, path.with_suffix(".fp16.onnx"), plan.keep_fp32_ops)
    started = time.time()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") and plan.cast_onnx_to_fp16:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(source.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT {trt.__version__} cannot parse {source}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    if plan.builder_fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    cache_file = Path(out_dir) / f"timing.{trt.__version__}.{cc}.cache"
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    shapes = profile_shapes(spec)
    profile.set_shape("images", shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT {trt.__version__} failed to build an engine from {source}; see its log")
    path.write_bytes(bytes(serialized))
    cache_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    info = sidecar(spec, key, trt.__version__, gpu, cc, contract, onnx_sha, time.time() - started)
    meta_path.write_text(json.dumps(info, indent=2))
    return path, info, False
