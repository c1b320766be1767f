"""``python -m compress export-onnx``: model file -> ONNX with contract -> verified (parity + AP) or refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config

from compress.checkpoints import sha256_file
from compress.config import load_config
from compress.contract import ModelContract
from compress.errors import CheckpointError, ConfigError
from compress.export.onnx_export import OUTPUTS, ParityError, export_onnx
from compress.export.verify import ValImages, check_parity, coco_ap, torch_outputs


def load_model_file(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild a detector from a project model file (its config travels in ``meta``) and load its weights."""
    from compress.distill.distiller import build_detector, load_detector_weights

    if not Path(path).is_file():
        raise CheckpointError(f"model file not found: {path}; `make distill` writes work_dirs/distill/student.pth")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    meta = ckpt.get("meta", {}) if isinstance(ckpt, dict) else {}
    if "config" not in meta:
        raise CheckpointError(f"{path} carries no model config in its meta; export a file written by "
                              f"`python -m compress distill` or `train-teacher --export-to`")
    model_cfg = Config.fromstring(meta["config"], file_format=".py").model.to_dict()
    model = build_detector({"config": model_cfg}, "model")
    load_detector_weights(model, str(path), "model")
    return model.eval(), meta


def input_size_of(cfg: Config) -> tuple[int, int]:
    """(H, W) from the val pipeline's Resize (mmdet writes scale as (W, H))."""
    for step in cfg.val_dataloader.dataset.pipeline:
        if step["type"] == "Resize":
            width, height = step["scale"]
            return int(height), int(width)
    raise ConfigError(f"{cfg.filename}: the val pipeline has no Resize step to fix the export input size")


def build_contract(detector: torch.nn.Module, checkpoint: str | Path, classes, input_size: tuple[int, int],
                   top_k: int = 100) -> ModelContract:
    """The contract of ``detector`` loaded from ``checkpoint``; its normalisation is the model's own."""
    pre = detector.data_preprocessor
    if len(classes) != detector.bbox_head.num_classes:
        raise ConfigError(f"{checkpoint} predicts {detector.bbox_head.num_classes} classes but names "
                          f"{len(classes)}; export with the config it was trained with")
    return ModelContract(classes=list(classes), input_size=tuple(input_size), mean=pre.mean.flatten().tolist(),
                         std=pre.std.flatten().tolist(), top_k=top_k, source_sha256=sha256_file(checkpoint),
                         model_name=Path(checkpoint).stem)


def export_and_verify(config: str, checkpoint: str, out: str, top_k: int = 100, opset: int = 17,
                      max_batch: int = 4, val_images: int | None = 50, ap_tolerance: float = 0.2,
                      simplify: bool = False) -> dict:
    cfg = load_config(config)
    detector, meta = load_model_file(checkpoint)
    classes = meta.get("classes") or cfg.train_dataloader.dataset.metainfo.classes
    contract = build_contract(detector, checkpoint, classes, input_size_of(cfg), top_k)
    started = time.time()
    path = export_onnx(detector, contract, out, opset=opset)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ds = cfg.val_dataloader.dataset
    images = ValImages.load(Path(ds.data_root or "") / ds.ann_file,
                            Path(ds.data_root or "") / ds.data_prefix["img"], contract, limit=val_images)
    parity = check_parity(session, detector, contract, images, tuple(sorted({1, 2, max_batch})))
    ap_torch = coco_ap(lambda b: torch_outputs(detector, contract, b), images, contract, desc="AP PyTorch")
    ap_onnx = coco_ap(lambda b: session.run(list(OUTPUTS[:3]), {"images": b}), images, contract,
                      desc="AP ONNX Runtime")
    delta = abs(ap_torch["AP"] - ap_onnx["AP"])
    report = {"onnx": str(path), "sha256": sha256_file(path), "opset": opset, "contract": contract.__dict__,
              "parity_max_abs_diff": parity, "ap_pytorch": ap_torch, "ap_onnxruntime": ap_onnx,
              "ap_delta": round(delta, 3), "val_images": len(images.image_ids),
              "seconds": round(time.time() - started, 1)}
    if simplify and delta <= ap_tolerance:
        from compress.export.simplify import simplify_onnx

        report["simplify"] = simplify_onnx(path, detector, contract, images, tuple(sorted({1, 2, max_batch})),
                                           ap_onnx["AP"], ap_tolerance)
        report["sha256"] = sha256_file(path)
    Path(str(path) + ".json").write_text(json.dumps(report, indent=2, default=list))
    if delta > ap_tolerance:
        raise ParityError(f"ONNX Runtime AP {ap_onnx['AP']} vs PyTorch {ap_torch['AP']} on {config}'s val "
                          f"split differs by {delta:.2f} > {ap_tolerance}; the export is not usable")
    return report


def export_tensorrt(onnx_path: str, config: str, out_dir: str, precisions: tuple[str, ...] = ("fp32", "fp16"),
                    opt_batch: int = 1, max_batch: int = 4, workspace_mb: int = 2048,
                    val_images: int | None = 50, ap_tolerance: float = 0.2) -> list[dict]:
    """Engines from a verified ONNX export, each checked like the ONNX path: raw-output parity against ONNX
    Runtime and COCO AP on the val split (FP16 reports its own AP delta; only FP32 must be within tolerance)."""
    from compress.export.tensorrt_build import EngineSpec, build_engine
    from compress.export.tensorrt_env import require_tensorrt
    from compress.runtime.onnx_runner import OnnxRunner
    from compress.runtime.tensorrt_runner import TensorRTRunner

    require_tensorrt()  # the one-paragraph error before any work
    cfg = load_config(config)
    reference = OnnxRunner(onnx_path)
    contract = reference.contract
    ds = cfg.val_dataloader.dataset
    images = ValImages.load(Path(ds.data_root or "") / ds.ann_file,
                            Path(ds.data_root or "") / ds.data_prefix["img"], contract, limit=val_images)
    ap_onnx = coco_ap(reference.infer, images, contract, desc="AP ONNX Runtime")
    reports = []
    for precision in precisions:
        spec = EngineSpec(str(onnx_path), contract.input_size, precision, 1, opt_batch, max_batch, workspace_mb)
        path, info, reused = build_engine(spec, out_dir, contract.__dict__)
        engine = TensorRTRunner(path)
        diffs = {}
        for bs in sorted({1, 2, max_batch}):
            batch = np.resize(images.arrays, (bs, *images.arrays.shape[1:]))
            ref = reference.session.run(list(OUTPUTS[3:]), {"images": batch})
            got = engine.infer_all(batch)
            diffs[bs] = max(float(np.abs(r - got[n]).max()) for r, n in zip(ref, OUTPUTS[3:]))
        ap = coco_ap(engine.infer, images, contract, desc=f"AP TensorRT {precision}")
        report = {"engine": str(path), "reused": reused, "precision": precision, "sidecar": info,
                  "parity_max_abs_diff_vs_onnxruntime": diffs, "ap_onnxruntime": ap_onnx, "ap_tensorrt": ap,
                  "ap_delta": round(abs(ap["AP"] - ap_onnx["AP"]), 3)}
        Path(str(path) + ".report.json").write_text(json.dumps(report, indent=2, default=list))
        reports.append(report)
        if precision == "fp32" and (report["ap_delta"] > ap_tolerance or max(diffs.values()) > 1e-3):
            raise ParityError(f"the FP32 engine {path} disagrees with ONNX Runtime (max abs diff "
                              f"{max(diffs.values()):.2e}, AP delta {report['ap_delta']}); do not deploy it")
    return reports
