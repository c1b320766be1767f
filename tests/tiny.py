"""Tiny real mmdet DETR-family models for tests, derived from mmdet's own shipped COCO configs.

Why from mmdet's configs: the tests then exercise exactly the model definitions users start from, only
shrunk (ResNet-18 at a small base width, few layers, few queries, small embeddings) so a training step
takes a fraction of a second on a CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path

import mmdet
from mmengine.config import Config

MMDET_CONFIGS = Path(mmdet.__file__).parent / ".mim" / "configs"
FAMILIES = {
    "detr": "detr/detr_r50_8xb2-150e_coco.py",
    "deformable": "deformable_detr/deformable-detr_r50_16xb2-50e_coco.py",
    "deformable_refine": "deformable_detr/deformable-detr-refine_r50_16xb2-50e_coco.py",
    "deformable_two_stage": "deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco.py",
    "conditional": "conditional_detr/conditional-detr_r50_8xb2-50e_coco.py",
    "dab": "dab_detr/dab-detr_r50_8xb2-50e_coco.py",
    "dino": "dino/dino-4scale_r50_8xb2-12e_coco.py",
}
# mmdet crashes at embed_dims != 256 for these (hard-coded sine widths), see the integration notes.
NEEDS_256 = {"dino", "conditional", "deformable_two_stage"}


def _replace(node, key: str, value) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                node[k] = value
            else:
                _replace(v, key, value)
    elif isinstance(node, list):
        for v in node:
            _replace(v, key, value)


def _output_channels(backbone: dict) -> list[int]:
    """Channels of each backbone output, measured by running it once (no per-architecture tables)."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    net = MODELS.build(copy.deepcopy(backbone))
    net.eval()  # (mmdet's MobileNetV2.train returns None, so no chaining)
    with torch.no_grad():
        outs = net(torch.zeros(1, 3, 64, 64))
    return [o.shape[1] for o in outs]


def tiny_model(family: str, *, embed_dims: int | None = None, enc_layers: int = 1, dec_layers: int = 2,
               num_queries: int = 20, num_classes: int = 6, depth: int = 18, width: int = 8,
               backbone: dict | None = None) -> dict:
    """A model dict of ``family`` shrunk for CPU tests (random init, no pretrained weights)."""
    model = copy.deepcopy(Config.fromfile(str(MMDET_CONFIGS / FAMILIES[family])).model.to_dict())
    dims = embed_dims or (256 if family in NEEDS_256 else 64)
    bb = model["backbone"]
    if backbone is None:
        bb.update(depth=depth, base_channels=width, init_cfg=None, frozen_stages=-1, norm_eval=False,
                  norm_cfg=dict(type="BN", requires_grad=True))
        expansion = 1 if depth < 50 else 4
        channels = [width * expansion * 2 ** i for i in bb["out_indices"]]
    else:
        model["backbone"] = backbone
        channels = _output_channels(backbone)
    model["neck"]["in_channels"] = channels
    model["neck"]["out_channels"] = dims
    for key, value in (("embed_dims", dims), ("feedforward_channels", 2 * dims), ("num_feats", dims // 2),
                       ("num_classes", num_classes)):
        _replace(model, key, value)
    model["bbox_head"]["embed_dims"] = dims
    model["encoder"]["num_layers"] = enc_layers
    model["decoder"]["num_layers"] = dec_layers
    model["num_queries"] = num_queries
    if family == "dino":
        model["dn_cfg"]["group_cfg"]["num_dn_queries"] = 10
    model["test_cfg"] = dict(max_per_img=min(20, num_queries * num_classes))
    return model
