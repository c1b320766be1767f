"""Does the target-aware feature-KD mask land on the objects? Per teacher stage and feature level, the share
of the map inside the GT boxes against the share of the loss weight (psi^2) the mask puts there, for the
official cosine mask and the box mask (``feature_kd.mask``), on a few training batches through the trained
teacher.

    python tools/feature_mask_focus.py --config configs/distill/detrdistill_dino_synthetic.py [--batches 8]

A weight share no higher than the area share means the mask is blind to the objects: the teacher's decoder
queries do not point the way its features do at the objects they found, and the "target-aware" loss is an
evenly spread feature imitation (FitNet at a smaller scale). Training-free: seconds on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.distill.losses.feature_kd import MASKS, weight_in_boxes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/distill/detrdistill_dino_synthetic.py")
    parser.add_argument("--batches", type=int, default=8, help="training batches to average over")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()

    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import compress.distill  # noqa: F401  (registers DETRDistiller and the detector fixes)

    init_default_scope("mmdet")
    cfg = Config.fromfile(args.config)
    torch.manual_seed(0)
    distiller = MODELS.build(cfg.model.to_dict())
    distiller.eval()
    loader = iter(Runner.build_dataloader(cfg.train_dataloader))
    sums: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])
    sizes: dict[int, tuple] = {}
    for _ in range(args.batches):
        data = distiller.data_preprocessor(next(loader), True)
        samples = data["data_samples"]
        teacher = distiller._teacher_forward(data["inputs"], samples)
        gts, metas = [s.gt_instances for s in samples], [s.metainfo for s in samples]
        boxes = [gt.bboxes for gt in gts]  # tensors: the data preprocessor converts box types (boxtype2tensor)
        maps = list(teacher.feats) if distiller.feature_cfg.source == "neck" else teacher.encoder_maps()
        for mask in MASKS:
            distiller.feature_cfg = dataclasses.replace(distiller.feature_cfg, mask=mask)
            for level, stages in enumerate(distiller._quality_masks(teacher, maps, gts, metas)):
                for stage, psi in enumerate(stages):
                    area, weight = weight_in_boxes(psi, boxes, metas[0]["batch_input_shape"])
                    sums[(mask, stage, level)][0] += area / args.batches
                    sums[(mask, stage, level)][1] += weight / args.batches
                    sizes[level] = tuple(psi.shape[-2:])
    rows = [{"mask": mask, "stage": stage, "level": level, "size": list(sizes[level]), "gt_area": round(a, 3),
             "weight_in_gt": round(w, 3), "enrichment": round(w / a, 2) if a else None}
            for (mask, stage, level), (a, w) in sums.items()]
    print(f"feature-KD mask focus: {args.config}, {args.batches} batches, source {distiller.feature_cfg.source}\n")
    print("| mask | teacher stage | level | H x W | GT boxes' share of the map | loss weight (psi^2) in them | "
          "enrichment |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mask']} | {r['stage']} | {r['level']} | {r['size'][0]} x {r['size'][1]} | {r['gt_area']} | "
              f"{r['weight_in_gt']} | {r['enrichment']} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"config": args.config, "batches": args.batches, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
