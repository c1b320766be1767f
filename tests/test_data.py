"""The synthetic dataset generator and COCO annotation validation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from compress.data.coco_check import check_coco_file
from compress.data.synthetic import CLASSES, SyntheticSpec, generate, render_image
from compress.errors import DataError


def test_render_is_deterministic_and_seed_dependent():
    a_img, a_objs = render_image(3, "train", 5)
    b_img, b_objs = render_image(3, "train", 5)
    c_img, _ = render_image(4, "train", 5)
    assert np.array_equal(np.asarray(a_img), np.asarray(b_img)) and a_objs == b_objs
    assert not np.array_equal(np.asarray(a_img), np.asarray(c_img))
    assert not np.array_equal(np.asarray(a_img), np.asarray(render_image(3, "val", 5)[0]))


def test_dataset_is_a_real_detection_problem():
    spec = SyntheticSpec()
    objs = [o for i in range(150) for o in render_image(0, "train", i, spec)[1]]
    counts = [len(render_image(0, "train", i, spec)[1]) for i in range(40)]
    assert min(counts) >= 1 and max(counts) >= 4  # several objects per image
    assert {c for c, _ in objs} == set(range(len(CLASSES)))
    areas = np.array([w * h for _, (x, y, w, h) in objs])
    assert (areas < 32 ** 2).mean() > 0.2 and (areas > 96 ** 2).mean() > 0.02  # COCO small, medium and large
    for _, (x, y, w, h) in objs:
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= spec.image_size and y + h <= spec.image_size


def test_colour_does_not_identify_the_class():
    # the same class appears in many palette colours: mean colours per class overlap heavily
    img, objs = render_image(0, "train", 0)
    per_class: dict[int, list] = {}
    for i in range(120):
        img, objs = render_image(0, "train", i)
        arr = np.asarray(img).astype(float)
        for cat, (x, y, w, h) in objs:
            cx, cy = int(x + w / 2), int(y + h / 2)
            per_class.setdefault(cat, []).append(arr[cy, cx])
    spreads = [np.std(np.array(v), axis=0).mean() for v in per_class.values()]
    assert min(spreads) > 30


def test_generate_writes_valid_coco_and_cli(tmp_path):
    files = generate(tmp_path, seed=0, num_train=4, num_val=2, progress=False,
                     spec=SyntheticSpec(image_size=64, min_size=8, max_size=32))
    coco = check_coco_file(files["train"], tmp_path / "train", CLASSES)
    assert len(coco["images"]) == 4 and coco["annotations"]
    out = tmp_path / "cli"
    res = subprocess.run([sys.executable, "-m", "compress", "generate-data", "--out", str(out), "--num-train", "2",
                          "--num-val", "1", "--image-size", "64"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "annotations" / "instances_val.json").read_text())["images"][0]["width"] == 64


def _write(tmp_path, coco) -> str:
    path = tmp_path / "ann.json"
    path.write_text(coco if isinstance(coco, str) else json.dumps(coco))
    return str(path)


GOOD = {"images": [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10], "area": 100}],
        "categories": [{"id": 1, "name": "circle"}]}


@pytest.mark.parametrize("mutate,message", [
    (lambda c: c.pop("annotations"), "missing or non-list 'annotations'"),
    (lambda c: c["images"][0].pop("width"), "lacks key(s) width"),
    (lambda c: c["annotations"][0].update(bbox=[45, 2, 10, 10]), "outside its 50x40 image"),
    (lambda c: c["annotations"][0].update(bbox=[1, 2, -3, 10]), "negative width or height"),
    (lambda c: c["annotations"][0].update(bbox=[1, 2, float("nan"), 10]), "finite numbers, got [1, 2, nan, 10]"),
    (lambda c: c["annotations"][0].update(bbox=[1, 2, True, 10]), "finite numbers"),
    (lambda c: c["annotations"][0].pop("area"), "annotations[0] lacks key(s) area"),
    (lambda c: c["annotations"][0].update(area="100"), "area must be a finite number"),
    (lambda c: c["annotations"][0].update(category_id=7), "unknown category_id 7"),
    (lambda c: c["annotations"][0].update(image_id=9), "unknown image_id 9"),
    (lambda c: c["annotations"][0].update(bbox="1,2,3,4"), "bbox must be"),
])
def test_malformed_coco_gives_one_line_error(tmp_path, mutate, message):
    coco = json.loads(json.dumps(GOOD))
    mutate(coco)
    path = _write(tmp_path, coco)
    with pytest.raises(DataError) as err:
        check_coco_file(path)
    assert message in str(err.value) and path in str(err.value) and "\n" not in str(err.value)


def test_boxes_under_one_pixel_are_noted_not_refused(tmp_path, capsys):
    """COCO train2017 holds two boxes of height 0 (e.g. annotation 918, [296.65, 388.33, 1.03, 0.0]); mmdet's
    CocoDataset leaves boxes under 1 px out of training, so the check must let the file through."""
    coco = json.loads(json.dumps(GOOD))
    coco["annotations"] += [{"id": 918, "image_id": 1, "category_id": 1, "bbox": [29.65, 38.33, 1.03, 0.0],
                             "area": 0.0},
                            {"id": 919, "image_id": 1, "category_id": 1, "bbox": [3, 3, 0.5, 9], "area": 4.5}]
    path = _write(tmp_path, coco)
    check_coco_file(path)
    assert capsys.readouterr().out == (f"note: {path}: 2 box(es) under 1 px wide or high, or of zero area (e.g. "
                                       f"annotation id 918), are left out of training, as mmdet's CocoDataset does\n")
    # what the note says: mmdet's CocoDataset keeps the good box only
    from mmdet.datasets import CocoDataset

    dataset = CocoDataset(ann_file=path, data_prefix=dict(img=str(tmp_path)), metainfo=dict(classes=("circle",)),
                          pipeline=[], lazy_init=False)
    assert [inst["bbox"] for inst in dataset.get_data_info(0)["instances"]] == [[1, 2, 11, 12]]
    capsys.readouterr()  # pycocotools' own loading lines
    check_coco_file(_write(tmp_path, GOOD))
    assert capsys.readouterr().out == ""


def test_coco_file_missing_unparsable_and_class_mismatch(tmp_path):
    with pytest.raises(DataError, match="annotation file not found"):
        check_coco_file(tmp_path / "nope.json")
    with pytest.raises(DataError, match="not valid JSON"):
        check_coco_file(_write(tmp_path, "{not json"))
    with pytest.raises(DataError, match="differ from the config's classes"):
        check_coco_file(_write(tmp_path, GOOD), classes=("square",))
    check_coco_file(_write(tmp_path, GOOD), classes=("circle",))
