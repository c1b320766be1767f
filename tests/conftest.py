"""Shared fixtures: tiny real batches and datasets from the synthetic generator, tiny teachers on disk."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    """Config paths are relative to the repository root, as when a user runs make there."""
    monkeypatch.chdir(REPO)


def make_batch(batch_size: int = 2, size: int = 96, seed: int = 0, split: str = "train") -> dict:
    """A real detection batch (synthetic images + GT) in the form mmdet's data preprocessor takes."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from compress.data.synthetic import SyntheticSpec, render_image

    spec = SyntheticSpec(image_size=size, min_size=8, max_size=size / 2, min_objects=1, max_objects=4)
    inputs, samples = [], []
    for i in range(batch_size):
        img, objs = render_image(seed, split, i, spec)
        arr = np.asarray(img)[:, :, ::-1].copy()  # BGR like mmcv's loader
        inputs.append(torch.from_numpy(arr).permute(2, 0, 1).contiguous())
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             pad_shape=(size, size), scale_factor=(1.0, 1.0), img_id=i))
        gt = InstanceData()
        gt.bboxes = torch.tensor([[x, y, x + w, y + h] for _, (x, y, w, h) in objs], dtype=torch.float32)
        gt.labels = torch.tensor([c for c, _ in objs], dtype=torch.long)
        sample.gt_instances = gt
        samples.append(sample)
    return {"inputs": inputs, "data_samples": samples}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A small synthetic COCO dataset at 96 px (16 train, 8 val images)."""
    from compress.data.synthetic import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=1, num_train=16, num_val=8, progress=False,
             spec=SyntheticSpec(image_size=96, min_size=8, max_size=48, min_objects=1, max_objects=4))
    return root


def save_random_detector(model_cfg: dict, path: Path, seed: int = 0) -> Path:
    """A randomly initialised detector saved as a {meta, state_dict} file (a stand-in trained teacher)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from compress.checkpoints import save_model_file

    register_all_modules()
    torch.manual_seed(seed)
    model = MODELS.build(copy.deepcopy(model_cfg))
    model.init_weights()
    from mmengine.config import Config

    from compress.data.synthetic import CLASSES

    meta = {"note": "random init for tests", "config": Config(dict(model=model_cfg)).pretty_text,
            "classes": list(CLASSES)}
    save_model_file(model.state_dict(), path, meta=meta)
    return path


from tests.run_helpers import tiny_onnx, tiny_pair, tiny_student  # noqa: E402,F401  (session fixtures shared by modules)
