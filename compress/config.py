"""Loading mmengine configs with the checks mmengine leaves out.

Why: mmengine accepts any ``--cfg-options`` key (a typo silently adds a new, unused key) and fails on a
missing dataset deep inside a dataloader. Here unknown override keys, missing data and a class count that
differs from the dataset's are one-line ``ConfigError``/``DataError`` messages before anything is built.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmengine.config import Config

from compress.data.coco_check import check_coco_file
from compress.errors import ConfigError


def _check_override_key(cfg: Config, key: str, path: str) -> None:
    node = cfg.to_dict()
    walked = []
    for part in key.split("."):
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            where = ".".join(walked) or "the top level"
            choices = sorted(node.keys())[:12] if isinstance(node, dict) else []
            raise ConfigError(f"unknown config key '{key}' for {path}: '{part}' is not in {where}"
                              + (f" (valid: {', '.join(map(str, choices))})" if choices else ""))
        walked.append(part)


def load_config(path: str | Path, cfg_options: dict | None = None) -> Config:
    """Read a config file and apply overrides whose keys must already exist."""
    if not Path(path).is_file():
        raise ConfigError(f"config file not found: {path}; configs live under configs/")
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:  # syntax errors, bad _base_ paths, failed custom imports
        raise ConfigError(f"cannot read config {path}: {type(exc).__name__}: {exc}") from None
    for key in cfg_options or {}:
        _check_override_key(cfg, key, str(path))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def dataset_classes(cfg: Config) -> tuple[str, ...] | None:
    meta = cfg.get("train_dataloader", {}).get("dataset", {}).get("metainfo") or {}
    classes = meta.get("classes")
    return tuple(classes) if classes else None


def check_datasets(cfg: Config, splits: tuple[str, ...] = ("train_dataloader", "val_dataloader")) -> None:
    """Validate each split's annotation file and image folder (COCO datasets with data_root)."""
    classes = dataset_classes(cfg)
    for split in splits:
        ds = cfg.get(split, {}).get("dataset")
        if not ds or "ann_file" not in ds:
            continue
        root = ds.get("data_root") or ""
        ann = os.path.join(root, ds["ann_file"])
        img_dir = os.path.join(root, (ds.get("data_prefix") or {}).get("img", ""))
        check_coco_file(ann, img_dir, classes)


def check_num_classes(model_num_classes: int, cfg: Config) -> None:
    classes = dataset_classes(cfg)
    if classes is not None and len(classes) != model_num_classes:
        raise ConfigError(f"{cfg.filename}: the model predicts {model_num_classes} classes but the dataset "
                          f"has {len(classes)} ({', '.join(classes)}); set bbox_head.num_classes="
                          f"{len(classes)} in the detector config(s)")
