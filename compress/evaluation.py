"""COCO evaluation (pycocotools through mmdet's CocoMetric), shared by training, export and benchmarks.

AP values are reported on the usual 0-100 scale under short keys (AP, AP50, AP75, APs, APm, APl).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from mmdet.registry import METRICS
from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.evaluator import Evaluator
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from tqdm import tqdm

_KEYS = {"bbox_mAP": "AP", "bbox_mAP_50": "AP50", "bbox_mAP_75": "AP75", "bbox_mAP_s": "APs",
         "bbox_mAP_m": "APm", "bbox_mAP_l": "APl"}


def coco_summary(metrics: dict) -> dict[str, float]:
    """mmdet's ``coco/bbox_mAP``-style keys (0-1) -> {AP, AP50, ...} on 0-100."""
    out = {}
    for key, value in metrics.items():
        short = _KEYS.get(key.split("/")[-1])
        if short is not None:
            out[short] = round(100.0 * float(value), 2)
    return out


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode for the duration, then back to the mode it had: called between training steps, a model must
    leave as it came."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, cfg: Config, desc: str = "evaluating") -> dict[str, float]:
    """COCO metrics of ``model`` (an mmengine model with val_step) on ``cfg.val_dataloader``."""
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "mmdet")):  # also outside a Runner
        loader = Runner.build_dataloader(cfg.val_dataloader)
        evaluator = Evaluator(METRICS.build(cfg.val_evaluator))
    evaluator.dataset_meta = loader.dataset.metainfo
    with eval_mode(model):
        for data in tqdm(loader, desc=desc, unit="batch", disable=not is_main_process()):
            evaluator.process(data_samples=model.val_step(data), data_batch=data)
    return coco_summary(evaluator.evaluate(len(loader.dataset)))
