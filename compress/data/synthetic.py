"""Synthetic COCO-format detection dataset, deterministic from a seed.

Why synthetic: no dataset can be downloaded at run time here, and the distillation pipeline needs a
detection problem that a CPU-sized teacher learns to a clearly non-trivial but imperfect mAP within
minutes. The task is built to resist shortcuts:

* classes are shapes, drawn in colours from one shared palette, so colour never identifies a class;
* object sizes are log-uniform from about 10 px to about half the image (COCO small, medium, large);
* several objects per image, allowed to overlap partially (each keeps at least half of its box visible);
* backgrounds are textured (gradients, stripes, blotches, pixel noise);
* distractor shapes that are not classes (rings, crescents, thin lines, ellipses) share the palette.

Every image is generated from its own ``numpy`` generator seeded by (seed, split, index), so any single
image can be regenerated without the others and the files are byte-identical across runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "hexagon")
PALETTE: tuple[tuple[int, int, int], ...] = (
    (220, 50, 47), (38, 139, 210), (133, 153, 0), (181, 137, 0), (211, 54, 130),
    (108, 113, 196), (42, 161, 152), (240, 240, 240), (30, 30, 30), (203, 75, 22),
)
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SyntheticSpec:
    """Difficulty knobs; the defaults are the embedded default dataset."""

    image_size: int = 192
    min_objects: int = 2
    max_objects: int = 6
    min_size: float = 10.0
    max_size: float = 128.0
    num_distractors: tuple[int, int] = (1, 4)
    max_covered: float = 0.5
    noise_std: float = 8.0

    @classmethod
    def for_size(cls, image_size: int) -> SyntheticSpec:
        """The default difficulty at another image size (object sizes scale with the image)."""
        scale = image_size / cls.image_size
        return cls(image_size=image_size, min_size=max(6.0, cls.min_size * scale), max_size=cls.max_size * scale)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a class shape inscribed in a circle of radius ``r``."""
    if kind == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
    elif kind == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif kind == "hexagon":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(6) * math.pi / 3]
    elif kind == "star":
        pts = [((1.0 if i % 2 == 0 else 0.45) * math.cos(a), (1.0 if i % 2 == 0 else 0.45) * math.sin(a))
               for i, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)]
    elif kind == "cross":
        w = 0.33
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
               (-1, -w), (-w, -w)]
    else:
        raise ValueError(f"not a polygon class: {kind}")
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _background(rng: np.random.Generator, size: int, spec: SyntheticSpec) -> Image.Image:
    """Cluttered texture: a colour gradient, stripes at a random angle and soft blotches."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(40, 215, size=(2, 3))
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    angle = rng.uniform(0, math.pi)
    freq = rng.uniform(6, 30)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * freq * 2 * math.pi)
    img += stripes[..., None] * rng.uniform(5, 30)
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(3, 9))):
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(size * 0.05, size * 0.3)
        colour = tuple(int(v) for v in rng.uniform(30, 225, 3))
        draw.ellipse([x - r, y - r * rng.uniform(0.4, 1), x + r, y + r], fill=colour)
    return canvas.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(2, 6))))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    base = np.array(PALETTE[int(rng.integers(len(PALETTE)))], dtype=np.float32)
    return tuple(int(v) for v in np.clip(base + rng.normal(0, 12, 3), 0, 255))


def _draw_distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """A shape that is not a class and must not be detected as one."""
    kind = rng.integers(4)
    x, y = rng.uniform(0, size, 2)
    r = float(np.exp(rng.uniform(math.log(6), math.log(size * 0.3))))
    colour = _colour(rng)
    if kind == 0:  # ring
        draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=max(1, int(r / 4)))
    elif kind == 1:  # crescent
        draw.pieslice([x - r, y - r, x + r, y + r], start=float(rng.uniform(0, 360)),
                      end=float(rng.uniform(0, 360)), fill=colour)
    elif kind == 2:  # line
        x2, y2 = rng.uniform(0, size, 2)
        draw.line([x, y, x2, y2], fill=colour, width=int(rng.integers(1, 4)))
    else:  # flat ellipse
        draw.ellipse([x - r, y - r * 0.35, x + r, y + r * 0.35], fill=colour)


def render_image(seed: int, split: str, index: int, spec: SyntheticSpec = SyntheticSpec()
                 ) -> tuple[Image.Image, list[tuple[int, list[float]]]]:
    """Render one image; returns it and its objects as (category index, [x, y, w, h])."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    size = spec.image_size
    canvas = _background(rng, size, spec)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(spec.num_distractors[0], spec.num_distractors[1] + 1))):
        _draw_distractor(draw, rng, size)
    # Objects are placed back to front; a later object may cover at most `max_covered` of an earlier box.
    objects: list[tuple[int, list[float]]] = []
    occupancy = np.zeros((size, size), dtype=np.int16) - 1
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    for _ in range(n * 4):
        if len(objects) == n:
            break
        diameter = float(np.exp(rng.uniform(math.log(spec.min_size), math.log(spec.max_size))))
        r = diameter / 2
        cx, cy = rng.uniform(r, size - r, 2)
        x0, y0, x1, y1 = (int(max(0, math.floor(cx - r))), int(max(0, math.floor(cy - r))),
                          int(min(size, math.ceil(cx + r))), int(min(size, math.ceil(cy + r))))
        covered = occupancy[y0:y1, x0:x1]
        ok = True
        for j in np.unique(covered[covered >= 0]):
            jx, jy, jw, jh = objects[j][1]
            area = max(jw * jh, 1.0)
            if (covered == j).sum() / area > spec.max_covered:
                ok = False
                break
        if not ok:
            continue
        cat = int(rng.integers(len(CLASSES)))
        kind = CLASSES[cat]
        colour = _colour(rng)
        angle = float(rng.uniform(0, 2 * math.pi))
        if kind == "circle":
            box = [cx - r, cy - r, cx + r, cy + r]
            draw.ellipse(box, fill=colour)
        else:
            pts = _polygon(kind, cx, cy, r, angle)
            draw.polygon(pts, fill=colour)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            box = [min(xs), min(ys), max(xs), max(ys)]
        # Where this object covers earlier ones, re-check they stay visible enough: the occupancy map
        # stores the topmost object per pixel, which is what COCO's visibility would see.
        bx0, by0 = max(0.0, box[0]), max(0.0, box[1])
        bx1, by1 = min(float(size), box[2]), min(float(size), box[3])
        occupancy[int(by0):int(math.ceil(by1)), int(bx0):int(math.ceil(bx1))] = len(objects)
        objects.append((cat, [round(bx0, 2), round(by0, 2), round(bx1 - bx0, 2), round(by1 - by0, 2)]))
    pixels = np.asarray(canvas).astype(np.float32)
    pixels += rng.normal(0, spec.noise_std, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), objects


def generate(out_dir: str | Path, seed: int = 0, num_train: int = 2000, num_val: int = 200,
             spec: SyntheticSpec = SyntheticSpec(), progress: bool = True) -> dict[str, Path]:
    """Write ``{out_dir}/{split}/*.png`` and ``{out_dir}/annotations/instances_{split}.json``.

    Returns the annotation file of each split. Existing complete splits are kept (the JSON is written
    last, so its presence means the split is complete).
    """
    from tqdm import tqdm

    out = Path(out_dir)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)]
    for split, count in (("train", num_train), ("val", num_val)):
        ann_file = out / "annotations" / f"instances_{split}.json"
        files[split] = ann_file
        if ann_file.exists() and len(json.loads(ann_file.read_text())["images"]) == count:
            continue
        (out / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for idx in tqdm(range(count), desc=f"generating {split}", disable=not progress, unit="img"):
            img, objs = render_image(seed, split, idx, spec)
            name = f"{idx:06d}.png"
            img.save(out / split / name)
            images.append({"id": idx + 1, "file_name": name, "width": spec.image_size,
                           "height": spec.image_size})
            for cat, (x, y, w, h) in objs:
                annotations.append({"id": len(annotations) + 1, "image_id": idx + 1, "category_id": cat + 1,
                                    "bbox": [x, y, w, h], "area": round(w * h, 2), "iscrowd": 0})
        coco = {"info": {"description": f"detrdistill synthetic shapes, seed {seed}"},
                "images": images, "annotations": annotations, "categories": categories}
        ann_file.write_text(json.dumps(coco))
    return files
