"""Validate a COCO instances file before mmdet or pycocotools touch it.

Why: mmdet and pycocotools fail on malformed annotations with KeyErrors deep in a dataloader worker or,
worse, train silently on broken boxes. One pass here turns each defect into a one-line ``DataError``
naming the file, the offending record and the fix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from compress.errors import DataError

_REQUIRED = {"images": ("id", "file_name", "width", "height"),
             "annotations": ("id", "image_id", "category_id", "bbox", "area"),  # mmdet and pycocotools read area
             "categories": ("id", "name")}
_OUTSIDE_TOLERANCE_PX = 0.5  # rounding in converters; more than this is a wrong box or a wrong image size


def check_coco_file(ann_file: str | Path, img_dir: str | Path | None = None,
                    classes: tuple[str, ...] | None = None) -> dict:
    """Return the parsed file, or raise ``DataError`` on the first defect.

    Boxes must be finite, have no negative side and lie inside their image (0.5 px tolerance). Boxes under
    1 px wide or high are not defects: real COCO has them (train2017 holds two of height 0) and mmdet's
    CocoDataset leaves them out of training, so they only get a one-line note. ``classes``, when given, must
    name exactly the file's categories in order.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}; run `python -m compress generate-data` "
                        f"for the embedded dataset or fix data_root/ann_file in the config")
    try:
        coco = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); regenerate or repair the file") from None
    if not isinstance(coco, dict):
        raise DataError(f"{path}: top level must be an object with images/annotations/categories")
    for section, keys in _REQUIRED.items():
        if not isinstance(coco.get(section), list):
            raise DataError(f"{path}: missing or non-list '{section}' section; a COCO instances file needs "
                            f"'images', 'annotations' and 'categories'")
        for i, rec in enumerate(coco[section]):
            missing = [k for k in keys if not isinstance(rec, dict) or k not in rec]
            if missing:
                raise DataError(f"{path}: {section}[{i}] lacks key(s) {', '.join(missing)}")
    images = {img["id"]: img for img in coco["images"]}
    cat_ids = {c["id"] for c in coco["categories"]}
    below_one_pixel = []
    for ann in coco["annotations"]:
        where = f"{path}: annotation id {ann['id']}"
        img = images.get(ann["image_id"])
        if img is None:
            raise DataError(f"{where} refers to unknown image_id {ann['image_id']}")
        if ann["category_id"] not in cat_ids:
            raise DataError(f"{where} has unknown category_id {ann['category_id']}")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite_number(v) for v in bbox)):
            raise DataError(f"{where}: bbox must be [x, y, w, h] finite numbers, got {bbox!r}")
        if not _finite_number(ann["area"]):
            raise DataError(f"{where}: area must be a finite number, got {ann['area']!r}")
        x, y, w, h = bbox
        if w < 0 or h < 0:
            raise DataError(f"{where}: box {bbox} has a negative width or height; bbox is [x, y, width, height]")
        if w < 1 or h < 1 or ann["area"] <= 0:
            below_one_pixel.append(ann["id"])
        tol = _OUTSIDE_TOLERANCE_PX
        if x < -tol or y < -tol or x + w > img["width"] + tol or y + h > img["height"] + tol:
            raise DataError(f"{where}: box {bbox} lies outside its {img['width']}x{img['height']} image "
                            f"{img['file_name']}; clip it to the image")
    if below_one_pixel:
        print(f"note: {path}: {len(below_one_pixel)} box(es) under 1 px wide or high, or of zero area (e.g. "
              f"annotation id {below_one_pixel[0]}), are left out of training, as mmdet's CocoDataset does")
    if classes is not None:
        names = tuple(c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"]))
        if names != tuple(classes):
            raise DataError(f"{path}: categories {names} differ from the config's classes {tuple(classes)}; "
                            f"set metainfo.classes to the file's categories")
    if img_dir is not None and not Path(img_dir).is_dir():
        raise DataError(f"image folder not found: {img_dir}; fix data_root/data_prefix in the config")
    return coco


def _finite_number(value) -> bool:
    """JSON numbers only: Python's json reads NaN and Infinity, and bool is an int subclass."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
