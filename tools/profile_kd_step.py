"""Where a DETRDistill training step spends its time, in one process on one set of batches.

``make bench-kd`` times whole training runs per switch; this answers the follow-up question (which part of
the step costs what) without a profiler's overhead: the distiller with every loss off, each loss alone and
all of them are stepped in interleaved rounds on the same batches (so machine drift hits all alike), and the
full step's sections are wall-timed around the distiller's own methods.

    python tools/profile_kd_step.py --config configs/distill/detrdistill_dino_synthetic.py [--device cuda]
        [--sections-of "DETRDistill, teacher compiled + bf16 autocast" --teacher-ops 25]

Paper-size pairs (``configs/coco/distill``) need neither COCO, a trained teacher nor an ImageNet download:
``--random-init`` times them with random weights (step time depends on shapes, not on weights) and
``--cfg-options`` points their dataloader at any COCO-format folder, whose images the COCO pipeline rescales
to the paper's 800-1333 px.

On a GPU every timed region ends in ``torch.cuda.synchronize()``, so kernels are counted where they run.
"""

from __future__ import annotations

import argparse
import copy
import logging
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.bench.kd_matrix import ENTRIES, KD_OFF, OPTIONAL_ENTRIES, STUDENT, TIMING  # noqa: E402  (bench-kd's switches)

FULL = "DETRDistill (all three)"
CACHED = "DETRDistill, teacher outputs cached (all hits)"
# The first is the reference of the ratios; None = the student config alone (no distiller).
VARIANTS = {
    "KD off (student + teacher forward)": KD_OFF,
    STUDENT: TIMING[STUDENT],
    "logits KD only": ENTRIES["logits_only"],
    "feature KD only": ENTRIES["feature_only"],
    "query prior only": ENTRIES["query_prior_only"],
    FULL: ENTRIES["detrdistill"],
    "DETRDistill + contrastive term": OPTIONAL_ENTRIES["detrdistill_contrastive"],
    # bench-kd's variants of the full step, under their bench-kd labels
    **{label: switches for label, switches in TIMING.items() if label.startswith(("DETRDistill, ", "official"))},
    # the teacher's outputs read from its cache (model.teacher.cache_mb): every image timed was seen before
    CACHED: {"teacher": {"cache_mb": 1024}},
    f"{CACHED}, teacher compiled + bf16": {
        "teacher": {**TIMING["DETRDistill, teacher compiled + bf16 autocast"]["teacher"], "cache_mb": 1024}},
}
# _match_stages: the student-teacher matching that logits KD on matched points (and the contrastive term, when
# on) use; _query_pairs: the pairing of logits KD on the teacher's queries (the default), no matching
SECTIONS = ("_teacher_forward", "_teacher_targets", "_match_stages", "_query_pairs", "_logits_kd", "_feature_kd",
            "_query_prior", "_contrastive_kd")


def with_random_weights(model_cfg: dict, folder: Path) -> dict:
    """The distiller config with no weights read: no pretrained backbones, and as the teacher's checkpoint a
    randomly initialised teacher written to ``folder`` (the distiller insists on a checkpoint)."""
    from compress.distill.distiller import build_detector, detector_model_cfg

    cfg = copy.deepcopy(model_cfg)
    for role in ("teacher", "student"):
        detector = detector_model_cfg(cfg[role]["config"], role)
        if isinstance(detector.get("backbone"), dict):
            detector["backbone"]["init_cfg"] = None
        cfg[role] = {**cfg[role], "config": detector}
    cfg["student"].pop("checkpoint", None)
    cfg["teacher"]["checkpoint"] = str(folder / "random_teacher.pth")
    teacher = build_detector(cfg["teacher"], "teacher")
    teacher.init_weights()  # mmdet allocates some parameters (DETR's level_embed) uninitialised until this
    torch.save(teacher.state_dict(), cfg["teacher"]["checkpoint"])
    return cfg


def build(model_cfg: dict, switches: dict | None, device: str):
    from mmdet.registry import MODELS

    from compress.distill.distiller import detector_model_cfg

    if switches is None:  # the student alone, as bench-kd's baseline trains it
        cfg = detector_model_cfg(model_cfg["student"]["config"], "student")
    else:
        cfg = copy.deepcopy(model_cfg)
        for key, value in switches.items():
            cfg[key] = {**cfg.get(key, {}), **value}
    model = MODELS.build(cfg).to(device)
    model.init_weights()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, optimizer


def time_sections(model, sections: dict[str, list[float]]) -> None:
    """Wrap the full model's section methods (instance attributes, so other variants stay untouched)."""
    for name in SECTIONS:
        method = getattr(model, name)

        def timed(*args, _method=method, _name=name, **kwargs):
            start = clock()
            result = _method(*args, **kwargs)
            sections[_name].append(clock() - start)
            return result

        setattr(model, name, timed)


def clock() -> float:
    """Wall time once queued GPU work has finished (a plain timer would count kernel launches only)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def step(model, optimizer, batch, sections: dict[str, list[float]] | None = None) -> float:
    data = model.data_preprocessor(batch, True)
    start = clock()
    losses = model(**data, mode="loss")
    forward = clock()
    optimizer.zero_grad()
    sum(v for k, v in losses.items() if "loss" in k).backward()
    backward = clock()
    optimizer.step()
    if sections is not None:
        sections["forward + losses"].append(forward - start)
        sections["backward"].append(backward - forward)
    return clock() - start


def teacher_ops(model, batches: list, top: int, cuda: bool) -> list[tuple[str, str, float, float]]:
    """The teacher's no-grad forward split by operator (torch.profiler, grouped by input shapes): (op, shapes,
    ms per forward, calls per forward) of the ``top`` costliest by self time, then the sum over all ops.

    Why next to the sections: the teacher's forward is the one section that bf16 and compilation act on, and
    whether it can shrink further depends on how much of it is matrix products (already at the hardware's
    rate: their shapes give the FLOPs) against the elementwise work around them."""
    from torch.profiler import ProfilerActivity, profile

    datas = [model.data_preprocessor(batch, True) for batch in batches]
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities, record_shapes=True) as prof:
        for data in datas:
            model._teacher_forward(data["inputs"], data["data_samples"])
        clock()
    events = prof.key_averages(group_by_input_shape=True)

    def self_us(event) -> float:
        return event.self_device_time_total if cuda else event.self_cpu_time_total

    def name(event) -> str:  # inductor names each compiled graph by a hash
        return re.sub(r"^## Call CompiledFxGraph \w+ ##$", "inductor graph (fused kernels)", event.key)

    forwards = len(datas)
    rows = [(name(event), str(event.input_shapes), self_us(event) / 1000 / forwards, event.count / forwards)
            for event in sorted(events, key=self_us, reverse=True)[:top]]
    total = sum(self_us(event) for event in events) / 1000 / forwards
    return [*rows, ("all ops", "", total, sum(event.count for event in events) / forwards)]


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a count of 1 or more, got {value}")
    return value


def main() -> None:
    from mmengine.config import Config, DictAction

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/distill/detrdistill_dino_synthetic.py")
    parser.add_argument("--batches", type=int, default=4, help="training batches per round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all variants")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        metavar="NAME", help=f"a subset of {list(VARIANTS)} (the first is always timed)")
    parser.add_argument("--sections-of", default=FULL, metavar="NAME",
                        choices=[name for name, switches in VARIANTS.items() if switches is not None],
                        help="the distiller variant whose step is split into sections (e.g. a bf16 teacher's)")
    parser.add_argument("--teacher-ops", type=at_least_one, default=0, metavar="N",
                        help="also profile the --sections-of variant's teacher forward: its N costliest operators")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--random-init", action="store_true",
                        help="random weights: no teacher checkpoint or pretrained backbone is read")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config keys (key=value), e.g. the train dataloader's data_root")
    args = parser.parse_args()
    chosen = {name: VARIANTS[name] for name in VARIANTS
              if name in {*args.variants, *list(VARIANTS)[:1], args.sections_of}}

    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import compress.distill  # noqa: F401  (registers DETRDistiller and the detector fixes)

    init_default_scope("mmdet")
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    torch.manual_seed(0)
    loader = iter(Runner.build_dataloader(cfg.train_dataloader))
    batches = [next(loader) for _ in range(args.batches + 1)]
    with tempfile.TemporaryDirectory() as folder:
        model_cfg = with_random_weights(cfg.model.to_dict(), Path(folder)) if args.random_init else cfg.model.to_dict()
        models = {name: build(model_cfg, switches, args.device) for name, switches in chosen.items()}
    sections: dict[str, list[float]] = defaultdict(list)
    for model, optimizer in models.values():
        step(model, optimizer, batches[0])  # warm-up: allocator, lazy init, cuDNN autotuning
        if getattr(model, "teacher_cache", None) is not None:  # the timed batches' images, seen once
            for batch in batches[1:]:
                step(model, optimizer, batch)
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for name, (model, optimizer) in models.items():
            for batch in batches[1:]:
                times[name].append(step(model, optimizer, batch))
    # The sections in a pass of their own: on a GPU their synchronisations would slow the timed steps.
    model, optimizer = models[args.sections_of]
    cuda = args.device.startswith("cuda")
    ops = teacher_ops(model, batches[1:], args.teacher_ops, cuda) if args.teacher_ops else []
    time_sections(model, sections)
    for batch in batches[1:]:
        step(model, optimizer, batch, sections)

    floor = statistics.median(times[list(chosen)[0]])
    student = statistics.median(times[STUDENT]) if STUDENT in times else None
    print(f"device: {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    print("| step | s/step (median) | vs KD off | vs student alone |\n|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        vs_student = f"{median / student:.2f}" if student else "-"
        print(f"| {name} | {median:.4f} | {median / floor:.2f} | {vs_student} |")
    steps = len(batches) - 1
    print(f"\n| {args.sections_of}: section | ms/step |\n|---|---|")
    for name, values in sections.items():
        print(f"| {name.strip('_')} | {1000 * sum(values) / steps:.1f} |")
    if ops:
        print(f"\n| {args.sections_of}: teacher forward, operator | input shapes | "
              f"self {'device' if cuda else 'CPU'} ms/forward | calls/forward |\n|---|---|---|---|")
        for name, shapes, ms, calls in ops:
            print(f"| {name} | {shapes} | {ms:.2f} | {calls:g} |")


if __name__ == "__main__":
    main()
