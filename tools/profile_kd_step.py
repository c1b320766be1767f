"""Where a DETRDistill training step spends its time, in one process on one set of batches.

``make bench-kd`` times whole training runs per switch; this answers the follow-up question (which part of
the step costs what) without a profiler's overhead: the distiller with every loss off, each loss alone and
all of them are stepped in interleaved rounds on the same batches (so machine drift hits all alike), and the
full step's sections are wall-timed around the distiller's own methods.

    python tools/profile_kd_step.py --config configs/distill/detrdistill_dino_synthetic.py
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.bench.kd_matrix import ENTRIES, KD_OFF  # noqa: E402  (the switches bench-kd trains with)

VARIANTS = {
    "KD off (student + teacher forward)": KD_OFF,
    "logits KD only": ENTRIES["logits_only"],
    "feature KD only": ENTRIES["feature_only"],
    "query prior only": ENTRIES["query_prior_only"],
    "DETRDistill (all three)": ENTRIES["detrdistill"],
}
SECTIONS = ("_teacher_forward", "_teacher_targets", "_logits_kd", "_feature_kd", "_query_prior")


def build(model_cfg: dict, switches: dict):
    from mmdet.registry import MODELS

    cfg = copy.deepcopy(model_cfg)
    for key, value in switches.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    model = MODELS.build(cfg)
    model.init_weights()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, optimizer


def time_sections(model, sections: dict[str, list[float]]) -> None:
    """Wrap the full model's section methods (instance attributes, so other variants stay untouched)."""
    for name in SECTIONS:
        method = getattr(model, name)

        def timed(*args, _method=method, _name=name, **kwargs):
            start = time.perf_counter()
            result = _method(*args, **kwargs)
            sections[_name].append(time.perf_counter() - start)
            return result

        setattr(model, name, timed)


def step(model, optimizer, batch, sections: dict[str, list[float]] | None = None) -> float:
    data = model.data_preprocessor(batch, True)
    start = time.perf_counter()
    losses = model(**data, mode="loss")
    forward = time.perf_counter()
    optimizer.zero_grad()
    sum(losses.values()).backward()
    backward = time.perf_counter()
    optimizer.step()
    if sections is not None:
        sections["forward + losses"].append(forward - start)
        sections["backward"].append(backward - forward)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/distill/detrdistill_dino_synthetic.py")
    parser.add_argument("--batches", type=int, default=4, help="training batches per round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all variants")
    args = parser.parse_args()

    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import compress.distill  # noqa: F401  (registers DETRDistiller and the detector fixes)

    init_default_scope("mmdet")
    cfg = Config.fromfile(args.config)
    torch.manual_seed(0)
    loader = iter(Runner.build_dataloader(cfg.train_dataloader))
    batches = [next(loader) for _ in range(args.batches + 1)]
    models = {name: build(cfg.model.to_dict(), switches) for name, switches in VARIANTS.items()}
    full = list(VARIANTS)[-1]
    sections: dict[str, list[float]] = defaultdict(list)
    for model, optimizer in models.values():
        step(model, optimizer, batches[0])  # warm-up: allocator, lazy init
    time_sections(models[full][0], sections)
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for name, (model, optimizer) in models.items():
            for batch in batches[1:]:
                times[name].append(step(model, optimizer, batch, sections if name == full else None))

    floor = statistics.median(times[list(VARIANTS)[0]])
    print("| step | s/step (median) | vs KD off |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {statistics.median(values) / floor:.2f} |")
    steps = len(times[full])
    print(f"\n| {full}: section | ms/step |\n|---|---|")
    for name, values in sections.items():
        print(f"| {name.strip('_')} | {1000 * sum(values) / steps:.1f} |")


if __name__ == "__main__":
    main()
