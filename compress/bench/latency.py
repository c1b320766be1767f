"""``python -m compress bench``: latency of teacher and student on every backend present, with their AP.

For each model: its verified ONNX export (made here when absent), then PyTorch eager, ONNX Runtime and, where
TensorRT and a GPU exist, a TensorRT engine; batch 1 and the serving batch; model-only (``runner.infer`` on a
preprocessed batch) and end to end (PNG bytes -> decode -> preprocess -> model -> boxes in original pixels).
One process, one run, models and backends interleaved per batch size, so ratios compare like with like.
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from compress.bench.stats import time_calls
from compress.errors import BackendError
from compress.runtime.preprocess import preprocess


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gflops(detector, input_size: tuple[int, int]) -> float | None:
    """Forward GFLOPs at batch 1 (mmengine's counter: multiply-adds as FLOPs, as mmdet reports them)."""
    import torch
    from mmengine.analysis import FlopAnalyzer

    from compress.export.wrapper import DeployableDetector

    try:
        wrapper = DeployableDetector(detector, input_size).eval()
        with torch.no_grad():
            analyzer = FlopAnalyzer(wrapper, torch.zeros(1, 3, *input_size))
            analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return round(analyzer.total() / 1e9, 3)
    except Exception:  # the counter cannot trace every mmcv op; the table says n/a rather than failing
        return None


def ensure_onnx(name: str, checkpoint: str, config: str, out_dir: Path, val_images: int) -> tuple[Path, dict]:
    """The model's verified ONNX export and its report; exported here when absent or made from another model file."""
    from compress.checkpoints import sha256_file
    from compress.export.pipeline import export_and_verify

    onnx_path = out_dir / f"{name}.onnx"
    report = Path(str(onnx_path) + ".json")
    current = report.is_file() and onnx_path.is_file() and json.loads(report.read_text())["contract"].get(
        "source_sha256") == sha256_file(checkpoint)
    if not current:  # absent, or exported from another model file
        print(f"[bench] exporting {name} ({checkpoint}) to {onnx_path}", flush=True)
        export_and_verify(config, checkpoint, str(onnx_path), val_images=val_images)
    return onnx_path, json.loads(report.read_text())


def load_backends(checkpoint: str, onnx_path: Path, engine_dir: Path, threads: int | None,
                  serving_batch: int) -> dict:
    from compress.runtime.onnx_runner import OnnxRunner
    from compress.runtime.torch_runner import TorchRunner

    onnx_runner = OnnxRunner(onnx_path, threads=threads)
    runners = {"pytorch": TorchRunner(checkpoint, threads=threads, input_size=onnx_runner.contract.input_size,
                                      top_k=onnx_runner.contract.top_k),
               "onnxruntime": onnx_runner}
    try:
        from compress.export.tensorrt_build import EngineSpec, build_engine
        from compress.runtime.tensorrt_runner import TensorRTRunner

        spec = EngineSpec(str(onnx_path), onnx_runner.contract.input_size, "fp16", 1, 1, serving_batch)
        path, _, _ = build_engine(spec, engine_dir, onnx_runner.contract.__dict__)
        runners["tensorrt-fp16"] = TensorRTRunner(path)
    except BackendError as err:
        print(f"[bench] TensorRT skipped: {str(err).split('. ')[0]}", flush=True)
    return runners


def measure(runner, images: list[bytes], batch: int, runs: int, warmup: int) -> dict:
    # Real val images, not zeros: two-stage DETRs pick their queries from the image, and an all-zero input
    # makes every backend's work (and cache behaviour) unlike deployment.
    arrays = np.stack([preprocess(Image.open(io.BytesIO(images[j % len(images)])), runner.contract)
                       for j in range(batch)])
    model_only = time_calls(lambda: runner.infer(arrays), runs, warmup, items_per_call=batch)
    state = {"i": 0}

    def end_to_end():
        start = state["i"]
        state["i"] += batch
        decoded = [Image.open(io.BytesIO(images[(start + j) % len(images)])).convert("RGB") for j in range(batch)]
        return runner.detect(decoded)

    return {"model_only": model_only, "end_to_end": time_calls(end_to_end, runs, warmup, items_per_call=batch)}


def run_bench(config: str, models: dict[str, str], batches: tuple[int, ...] = (1, 4), runs: int = 100,
              warmup: int = 10, threads: int | None = None, out: str = "work_dirs/bench/latency",
              export_dir: str = "work_dirs/export", val_images: int = 50) -> dict:
    import onnxruntime
    import torch

    from compress.config import load_config

    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(config)
    ds = cfg.val_dataloader.dataset
    img_dir = Path(ds.data_root or "") / ds.data_prefix["img"]
    images = [p.read_bytes() for p in sorted(img_dir.glob("*"))[:32]]
    rows, info = [], {}
    for name, checkpoint in models.items():
        onnx_path, report = ensure_onnx(name, checkpoint, config, Path(export_dir), val_images)
        runners = load_backends(checkpoint, onnx_path, Path(export_dir) / "engines", threads, max(batches))
        detector = runners["pytorch"].wrapper.detector
        info[name] = {"checkpoint": checkpoint, "onnx": str(onnx_path),
                      "params_m": round(sum(p.numel() for p in detector.parameters()) / 1e6, 3),
                      "gflops": gflops(detector, runners["onnxruntime"].contract.input_size),
                      "ap": {"pytorch": report["ap_pytorch"]["AP"], "onnxruntime": report["ap_onnxruntime"]["AP"]},
                      "ap_val_images": report["val_images"], "runners": runners}
    for batch in batches:
        for name in models:
            for backend, runner in info[name]["runners"].items():
                print(f"[bench] {name} {backend} batch {batch}: {runs} runs", flush=True)
                timing = measure(runner, images, batch, runs, warmup)
                rows.append({"model": name, "backend": backend, "provider": getattr(runner, "provider", ""),
                             "batch": batch, **timing, "ap": info[name]["ap"].get(backend.split("-")[0]),
                             "params_m": info[name]["params_m"], "gflops": info[name]["gflops"]})
    for entry in info.values():
        entry.pop("runners")
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "config": config, "runs": runs, "warmup": warmup,
              "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
              "libraries": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
              "threads": {"torch": torch.get_num_threads(), "onnxruntime_intra_op": threads or "default (all cores)"},
              "models": info, "rows": rows, "targets": targets(rows, models)}
    from compress.bench.report import write_latency_reports

    result["table"] = write_latency_reports(result, Path(out))
    return result


def targets(rows: list[dict], models: dict[str, str]) -> list[dict]:
    """The issue's targets, from batch-1 model-only p50s measured in this run."""
    p50 = {(r["model"], r["backend"]): r["model_only"]["p50_ms"] for r in rows if r["batch"] == 1}
    out = []
    names = list(models)
    student = "student" if "student" in names else names[-1]
    if (student, "pytorch") in p50 and (student, "onnxruntime") in p50:
        ratio = p50[(student, "pytorch")] / p50[(student, "onnxruntime")]
        out.append({"target": "ONNX Runtime >= 2x faster than PyTorch eager (student, batch 1)",
                    "measured": round(ratio, 2), "met": ratio >= 2.0})
    if "teacher" in names:
        for backend in ("pytorch", "onnxruntime"):
            if ("teacher", backend) in p50 and (student, backend) in p50:
                ratio = p50[("teacher", backend)] / p50[(student, backend)]
                out.append({"target": f"student >= 2x faster than teacher on {backend} (batch 1)",
                            "measured": round(ratio, 2), "met": ratio >= 2.0})
    return out
