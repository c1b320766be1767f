"""Verification of an exported model on real val images: tensor parity at several batch sizes and COCO AP
of ONNX Runtime next to PyTorch's (pycocotools on the same images, same preprocessing)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from compress.contract import ModelContract
from compress.export.onnx_export import OUTPUTS, ParityError, compare_outputs
from compress.export.wrapper import DeployableDetector
from compress.runtime.preprocess import preprocess, to_original_pixels


@dataclass
class ValImages:
    """The val split's images and ids, loaded once for parity and AP checks."""

    ann_file: Path
    image_ids: list[int]
    arrays: np.ndarray  # (N, 3, H, W)
    sizes: list[tuple[int, int]]  # original (width, height)

    @classmethod
    def load(cls, ann_file: str | Path, img_dir: str | Path, contract: ModelContract, limit: int | None = None
             ) -> ValImages:
        coco = json.loads(Path(ann_file).read_text())
        images = coco["images"][:limit] if limit else coco["images"]
        arrays, sizes = [], []
        for img in images:
            with Image.open(Path(img_dir) / img["file_name"]) as im:
                sizes.append(im.size)
                arrays.append(preprocess(im, contract))
        return cls(Path(ann_file), [img["id"] for img in images], np.stack(arrays), sizes)


def torch_outputs(detector: torch.nn.Module, contract: ModelContract, batch: np.ndarray) -> list[np.ndarray]:
    wrapper = DeployableDetector(detector, contract.input_size, contract.top_k, with_raw=True)
    with torch.no_grad():
        return [t.numpy() for t in wrapper(torch.from_numpy(batch))]


def check_parity(session, detector: torch.nn.Module, contract: ModelContract, images: ValImages,
                 batch_sizes: tuple[int, ...], atol: float = 1e-4, rtol: float = 1e-3) -> dict[int, float]:
    """Max abs diff of the raw query outputs per batch size; raises ParityError beyond tolerance."""
    result = {}
    for bs in batch_sizes:
        batch = images.arrays[:bs]
        if len(batch) < bs:
            batch = np.concatenate([batch] * (bs // len(batch) + 1))[:bs]
        ref = torch_outputs(detector, contract, batch)
        got = session.run(list(OUTPUTS), {"images": batch})
        if got[0].shape[0] != bs:
            raise ParityError(f"ONNX model returned batch {got[0].shape[0]} for an input batch of {bs}")
        result[bs] = compare_outputs(ref[3:], got[3:], atol=atol, rtol=rtol)
    return result


def coco_ap(predict, images: ValImages, contract: ModelContract, batch_size: int = 4, desc: str = "AP"
            ) -> dict[str, float]:
    """COCO AP (0-100) of ``predict(batch) -> (boxes, scores, labels)`` on ``images``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from compress.evaluation import coco_summary

    gt = COCO(str(images.ann_file))
    cat_ids = sorted(gt.getCatIds())
    results = []
    for start in tqdm(range(0, len(images.image_ids), batch_size), desc=desc, unit="batch"):
        boxes, scores, labels = predict(images.arrays[start:start + batch_size])[:3]
        for i, (b, s, lab) in enumerate(zip(boxes, scores, labels)):
            b = to_original_pixels(b, images.sizes[start + i], contract)
            for (x0, y0, x1, y1), score, label in zip(b, s, lab):
                results.append({"image_id": images.image_ids[start + i], "category_id": cat_ids[int(label)],
                                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                                "score": float(score)})
    if not results:
        return {k: 0.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.params.imgIds = images.image_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    names = ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"]
    return coco_summary(dict(zip(names, evaluator.stats[:6])))
