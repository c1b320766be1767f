"""Detections drawn on images: the server's ``/detect?format=png`` and the picture a training run leaves.

A table of AP says how much better the distilled student is; the picture says what it gets right and wrong
(missed small objects, class confusions, loose boxes), which is what a user checks before deploying it.
The drawing needs PIL only: the server imports it without torch or mmdet.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageOps

if TYPE_CHECKING:
    import torch

# Each panel is drawn at least this many pixels on its longer side, so 192 px images keep readable labels.
PANEL_PX = 384


def class_colour(label_id: int) -> tuple[int, int, int]:
    """Golden-ratio hues: neighbouring class ids get far-apart colours (the web page uses the same rule)."""
    r, g, b = colorsys.hsv_to_rgb((label_id * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], label_ids: Sequence[int],
               texts: Sequence[str], scale: float = 1.0) -> Image.Image:
    """A copy of ``image`` (resized by ``scale``) with each box outlined in its class colour and captioned."""
    canvas = image.convert("RGB")
    if scale != 1.0:
        canvas = canvas.resize((round(canvas.width * scale), round(canvas.height * scale)), Image.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 300))
    for box, label_id, text in zip(boxes, label_ids, texts, strict=True):
        colour = class_colour(int(label_id))
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        draw.rectangle(draw.textbbox((x1, y1), text), fill=colour)
        draw.text((x1, y1), text, fill=(0, 0, 0))
    return canvas


def plot_detections(models: dict[str, torch.nn.Module], cfg, out_png: str | Path, num_images: int = 4) -> Path:
    """Ground truth next to each model's detections on the first ``num_images`` val images.

    Each model shows its k highest-scoring boxes, k = the image's object count, instead of a score threshold:
    the embedded CPU-sized teacher and student score their hits around 0.2-0.35, where the usual 0.3 shows
    them nearly empty, and one threshold rarely suits two models. Scores are printed on the boxes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope

    from compress.evaluation import eval_mode

    with DefaultScope.overwrite_default_scope(cfg.get("default_scope", "mmdet")):
        dataset = DATASETS.build(cfg.val_dataloader.dataset)
    classes = list(dataset.metainfo["classes"])
    count = min(num_images, len(dataset))
    fig, axes = plt.subplots(count, 1 + len(models), figsize=(3.2 * (1 + len(models)), 3.2 * count), squeeze=False)
    for row in range(count):
        info = dataset.get_data_info(row)
        with Image.open(info["img_path"]) as stored:
            image = ImageOps.exif_transpose(stored)  # as mmdet's loader turns it (a loaded copy)
        scale = max(1.0, PANEL_PX / max(image.size))
        truth = [inst for inst in info["instances"] if not inst.get("ignore_flag", 0)]
        k = max(1, len(truth))
        panels = {f"ground truth: {len(truth)} objects": draw_boxes(
            image, [inst["bbox"] for inst in truth], [inst["bbox_label"] for inst in truth],
            [classes[inst["bbox_label"]] for inst in truth], scale)}
        batch = pseudo_collate([dataset[row]])
        for name, model in models.items():
            with eval_mode(model), torch.no_grad():
                pred = model.val_step(batch)[0].pred_instances
            best = pred[pred.scores.argsort(descending=True)[:k]].cpu()
            panels[f"{name}: top {k}"] = draw_boxes(
                image, best.bboxes.tolist(), best.labels.tolist(),
                [f"{classes[int(label)]} {float(score):.2f}" for label, score in zip(best.labels, best.scores)], scale)
        for ax, (title, panel) in zip(axes[row], panels.items()):
            ax.imshow(panel)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"first {count} val images; each model's k best boxes, k = the image's object count", fontsize=10)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
