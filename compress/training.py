"""Training entry points behind the CLI and tools/: teacher / baseline training, distillation, evaluation.

Everything goes through the real mmengine Runner (checkpoints, resume, AMP, gradient clipping, param-wise
lr multipliers, torchrun launcher); this module only checks inputs first, and writes the user-facing
results afterwards: a plain student model file, a metrics JSON, a results table and training curves.
"""

from __future__ import annotations

import json
import time
from argparse import Namespace
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.runner import Runner

import compress.distill  # noqa: F401,E402  (registrations; configs also import it)
from compress import __version__
from compress.checkpoints import save_model_file, sha256_file
from compress.config import check_datasets, check_num_classes, load_config
from compress.distill.hooks import unwrap
from compress.errors import ConfigError, TrainingError
from compress.evaluation import coco_summary, evaluate_model
from compress.report import plot_training_curves, render_table
from compress.visualize import plot_detections


def prepare_config(args: Namespace) -> Config:
    cfg = load_config(args.config, args.cfg_options)
    cfg.work_dir = args.work_dir or str(Path("work_dirs") / Path(args.config).stem)
    cfg.resume = bool(args.resume)
    cfg.launcher = args.launcher
    if args.amp:
        if not torch.cuda.is_available():
            raise ConfigError("--amp needs a CUDA GPU (mmengine's AmpOptimWrapper does not run on CPU); "
                              "drop --amp on this machine")
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    if not torch.cuda.is_available():
        cfg.env_cfg.setdefault("dist_cfg", {})["backend"] = "gloo"
        if args.launcher == "pytorch" and not torch.distributed.is_initialized():
            # mmengine's pytorch launcher calls torch.cuda.set_device, which a CPU build lacks; a process
            # group that already exists is used as is, so CPU runs under torchrun join it here (gloo).
            torch.distributed.init_process_group(backend="gloo")
            # CPU DDP takes no device ids (mmengine would pass [LOCAL_RANK]); explicit cfg values win
            wrapper = dict(cfg.get("model_wrapper_cfg") or {"type": "MMDistributedDataParallel"})
            wrapper["device_ids"] = None
            cfg.model_wrapper_cfg = wrapper
    check_datasets(cfg)
    return cfg


def run_training(runner: Runner) -> None:
    """``runner.train()``, with divergence reported as one line: once weights are NaN, mmdet's Hungarian
    assigner fails inside scipy before any loss exists for the NaN hook to see."""
    try:
        runner.train()
    except ValueError as exc:
        if "invalid numeric entries" not in str(exc):
            raise
        raise TrainingError(f"training diverged (NaN predictions) at iteration {runner.iter + 1} of "
                            f"{runner.cfg.filename}; lower optim_wrapper.optimizer.lr or check the annotations "
                            f"for degenerate boxes") from None


def detector_of(model: torch.nn.Module) -> torch.nn.Module:
    model = unwrap(model)
    return getattr(model, "student", model)


def build_runner(cfg: Config) -> Runner:
    runner = Runner.from_cfg(cfg)
    check_num_classes(detector_of(runner.model).bbox_head.num_classes, cfg)
    return runner


def final_metrics(runner: Runner, cfg: Config) -> dict[str, float]:
    """The val metrics at the last iteration: reused when the loop just evaluated, else computed."""
    hub = runner.message_hub
    interval = cfg.train_cfg.get("val_interval", 0)
    if interval and runner.iter % interval == 0 and "val/coco/bbox_mAP" in hub.log_scalars:
        return coco_summary({k: v.current() for k, v in hub.log_scalars.items() if k.startswith("val/coco/")})
    return evaluate_model(runner.model, cfg, desc="evaluating student")


# Iterations left out of the mean step time: the first ones pay one-off costs (allocator growth, lazy init,
# a compiled teacher's compilation: seconds, which over bench-kd's 50 timing iterations would read as a cost
# per step). At most half of a short run is left out.
WARMUP_ITERS = 5


def step_time(runner: Runner) -> float | None:
    scalar = runner.message_hub.log_scalars.get("train/time")
    if scalar is None:
        return None
    values = scalar.data[0]
    return round(float(values[min(WARMUP_ITERS, len(values) // 2):].mean()), 4)


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def detector_config_text(source) -> str:
    """The detector's full config as Python text, stored in model files so they rebuild without the repo."""
    cfg = Config.fromfile(str(source)) if isinstance(source, (str, Path)) else Config(dict(model=source))
    return Config(dict(model=cfg.model)).pretty_text


def input_size_or_none(cfg: Config) -> list[int] | None:
    """The (H, W) a deployed copy of the model takes, when the val pipeline fixes one."""
    from compress.export.pipeline import input_size_of

    try:
        return list(input_size_of(cfg))
    except ConfigError:
        return None


def save_detector(model: torch.nn.Module, path: str | Path, config_source, cfg: Config, metrics: dict,
                  half: bool = False) -> str:
    meta = {"config": detector_config_text(config_source),
            "classes": list(cfg.train_dataloader.dataset.get("metainfo", {}).get("classes", [])),
            "metrics": metrics, "project_version": __version__, "input_size": input_size_or_none(cfg),
            "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return save_model_file(model.state_dict(), path, meta, half=half)


def write_run_report(cfg: Config, result: dict, models: dict[str, torch.nn.Module]) -> dict[str, Path]:
    """What every training run leaves in its work dir: metrics.json, curves.png and detections.png."""
    work = Path(cfg.work_dir)
    written = {"metrics": work / "metrics.json", "curves": work / "curves.png", "detections": work / "detections.png"}
    written["metrics"].write_text(json.dumps(result, indent=2))
    plot_training_curves(work, written["curves"])
    plot_detections(models, cfg, written["detections"])
    return written


def train_detector(args: Namespace) -> dict:
    """Train one detector alone (the teacher, or a student baseline) and evaluate it."""
    cfg = prepare_config(args)
    runner = build_runner(cfg)
    run_training(runner)
    metrics = final_metrics(runner, cfg)  # on every rank: evaluation is distributed like training
    if not is_main_process():
        return {}
    model = unwrap(runner.model)
    result = {"config": args.config, "metrics": metrics, "params": num_params(model),
              "step_time_s": step_time(runner), "iterations": runner.iter}
    if getattr(args, "export_to", None):
        result["checkpoint"] = args.export_to
        result["sha256"] = save_detector(model, args.export_to, args.config, cfg, metrics,
                                         half=getattr(args, "half", False))
    write_run_report(cfg, result, {Path(args.config).stem: model})
    print(render_table([{"model": Path(args.config).stem, **metrics, "params (M)": result["params"] / 1e6,
                         "s/step": result["step_time_s"]}]))
    return result


def _teacher_metrics(distiller, cfg: Config) -> dict[str, float]:
    """Teacher AP on this val split, cached next to the teacher checkpoint (keyed by both files)."""
    ckpt = cfg.model.teacher["checkpoint"]
    ann = Path(cfg.val_evaluator.ann_file)
    key = f"{sha256_file(ckpt)}:{sha256_file(ann) if ann.is_file() else ann}"
    cache = Path(str(ckpt) + ".eval.json")
    cached = [None]
    if is_main_process() and cache.is_file():
        content = json.loads(cache.read_text())
        cached[0] = content["metrics"] if content.get("key") == key else None
    broadcast_object_list(cached)  # every rank takes the same branch: evaluation has collectives
    if cached[0] is not None:
        return cached[0]
    metrics = evaluate_model(distiller.teacher, cfg, desc="evaluating teacher")
    if is_main_process():
        cache.write_text(json.dumps({"key": key, "metrics": metrics}, indent=2))
    return metrics


def distill(args: Namespace) -> dict:
    """Train the student with DETRDistill, evaluate teacher and student, write the student model file."""
    cfg = prepare_config(args)
    runner = build_runner(cfg)
    run_training(runner)
    distiller = unwrap(runner.model)
    student_metrics = final_metrics(runner, cfg)  # on every rank: evaluation is distributed like training
    teacher_metrics = _teacher_metrics(distiller, cfg)
    if not is_main_process():
        return {}
    out = Path(getattr(args, "export_to", None) or Path(cfg.work_dir) / "student.pth")
    sha = save_detector(distiller.student, out, cfg.model.student["config"], cfg, student_metrics)
    rows = [
        {"model": "teacher", **teacher_metrics, "params (M)": num_params(distiller.teacher) / 1e6, "s/step": None},
        {"model": "student + DETRDistill", **student_metrics, "params (M)": num_params(distiller.student) / 1e6,
         "s/step": step_time(runner)},
    ]
    result = {"config": args.config, "teacher": rows[0], "student": rows[1], "student_checkpoint": str(out),
              "student_sha256": sha, "iterations": runner.iter}
    written = write_run_report(cfg, result, {"teacher": distiller.teacher, "student + DETRDistill": distiller.student})
    print(render_table(rows))
    print(f"student model: {out}  " + "  ".join(f"{kind}: {path}" for kind, path in written.items()))
    return result


def evaluate_checkpoint(config: str, checkpoint: str, cfg_options: dict | None = None) -> dict[str, float]:
    """COCO-evaluate a detector model file (or a distiller checkpoint's student) on the config's val split."""
    from compress.distill.distiller import build_detector, load_detector_weights

    cfg = load_config(config, cfg_options)
    check_datasets(cfg, splits=("val_dataloader",))
    source = cfg.model.student["config"] if cfg.model.get("type") == "DETRDistiller" else cfg.model.to_dict()
    model = build_detector({"config": source}, "student")
    check_num_classes(model.bbox_head.num_classes, cfg)
    load_detector_weights(model, checkpoint, "student")
    metrics = evaluate_model(model, cfg)
    print(render_table([{"model": Path(checkpoint).name, **metrics, "params (M)": num_params(model) / 1e6}]))
    return metrics
