"""``python -m compress <command>``: parse, call one function, exit.

Every anticipated failure is a ``DetrDistillError`` whose one-line message is printed without a traceback
(exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from mmengine.config import DictAction

from compress.errors import CheckpointError, ConfigError, DetrDistillError

DEFAULT_DISTILL = "configs/distill/detrdistill_dino_synthetic.py"
DEFAULT_TEACHER = "configs/detectors/dino256_r18w16_synthetic_teacher.py"
DEFAULT_STUDENT = "configs/detectors/dino128_r18w16_synthetic_student.py"


def _add_train_args(p: argparse.ArgumentParser, config: str) -> None:
    p.add_argument("--config", default=config, help="mmengine config file")
    p.add_argument("--work-dir", default=None, help="output folder (default work_dirs/<config name>)")
    p.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in the work dir")
    p.add_argument("--amp", action="store_true", help="automatic mixed precision (GPU)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, metavar="KEY=VALUE",
                   help="override config keys, e.g. train_cfg.max_iters=100 (unknown keys are refused)")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compress", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate-data", help="write the synthetic COCO-format dataset")
    g.add_argument("--out", default="data/synthetic")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--num-train", type=int, default=2000)
    g.add_argument("--num-val", type=int, default=200)
    g.add_argument("--image-size", type=int, default=192)

    t = sub.add_parser("train-teacher", help="train a detector alone (the teacher, or a student baseline)")
    _add_train_args(t, DEFAULT_TEACHER)
    t.add_argument("--export-to", default=None,
                   help="also write the final model as a plain {meta, state_dict} file here")
    t.add_argument("--half", action="store_true", help="store the exported model file in float16")

    d = sub.add_parser("distill", help="train the student with DETRDistill and evaluate teacher and student")
    _add_train_args(d, DEFAULT_DISTILL)
    d.add_argument("--export-to", default=None, help="student model file (default <work-dir>/student.pth)")

    e = sub.add_parser("evaluate", help="COCO-evaluate a model file on the config's val split")
    e.add_argument("--config", required=True, help="detector (or distiller) config")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, metavar="KEY=VALUE")
    x = sub.add_parser("export-onnx", help="export a model file to ONNX (decoding in the graph) and verify it")
    x.add_argument("--config", default=DEFAULT_DISTILL, help="config whose val split and input size to use")
    x.add_argument("--checkpoint", default="work_dirs/distill/student.pth", help="model file to export")
    x.add_argument("--out", default="work_dirs/export/student.onnx")
    x.add_argument("--top-k", type=int, default=100)
    x.add_argument("--opset", type=int, default=17)
    x.add_argument("--max-batch", type=int, default=4)
    x.add_argument("--val-images", type=int, default=50, help="val images for parity and AP (0 = all)")
    x.add_argument("--simplify", action="store_true",
                   help="simplify the graph with onnxslim; kept only if parity and AP still hold")

    r = sub.add_parser("export-trt", help="TensorRT engines (FP32, FP16) from the ONNX export, verified")
    r.add_argument("--onnx", default="work_dirs/export/student.onnx")
    r.add_argument("--config", default=DEFAULT_DISTILL, help="config whose val split to check AP on")
    r.add_argument("--out-dir", default="work_dirs/export/engines")
    r.add_argument("--precision", nargs="+", choices=["fp32", "fp16"], default=["fp32", "fp16"])
    r.add_argument("--opt-batch", type=int, default=1)
    r.add_argument("--max-batch", type=int, default=4)
    r.add_argument("--workspace-mb", type=int, default=2048)
    r.add_argument("--val-images", type=int, default=50, help="val images for parity and AP (0 = all)")

    tr = sub.add_parser("export-triton", help="a Triton model repository for an .onnx export or an engine")
    tr.add_argument("--model", default="work_dirs/export/student.onnx")
    tr.add_argument("--repo", default="work_dirs/triton")
    tr.add_argument("--name", default="detrdistill")
    tr.add_argument("--max-batch", type=int, default=4)
    tr.add_argument("--max-queue-delay-us", type=int, default=2000)
    tr.add_argument("--instances", type=int, default=1)

    b = sub.add_parser("bench", help="latency of teacher and student on every backend present, with AP")
    b.add_argument("--config", default=DEFAULT_DISTILL, help="config whose val split and input size to use")
    b.add_argument("--teacher", default="checkpoints/teacher_dino_synthetic.pth", help="'' to skip")
    b.add_argument("--student", default="work_dirs/distill/student.pth")
    b.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch 1 and the serving batch")
    b.add_argument("--runs", type=int, default=100, help="timed runs per entry (after --warmup)")
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    b.add_argument("--out", default="work_dirs/bench/latency", help="writes OUT.json, OUT.md, OUT.png")
    b.add_argument("--export-dir", default="work_dirs/export", help="where the models' ONNX exports live")

    k = sub.add_parser("bench-kd", help="DETRDistill vs student alone, its components alone, FitNet and MGD")
    k.add_argument("--config", default=DEFAULT_DISTILL, help="distill config (teacher, student, data)")
    k.add_argument("--student-config", default=DEFAULT_STUDENT, help="the student trained alone (baseline)")
    k.add_argument("--quick", action="store_true", help="1 seed, 300 iterations (under 45 min on 2 cores)")
    k.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (quick: 0)")
    k.add_argument("--iters", type=int, default=None, help="default 1500, the `make distill` schedule (quick: 300)")
    k.add_argument("--val-interval", type=int, default=None, help="default iters / 3 (quick: iters / 2)")
    k.add_argument("--timing-iters", type=int, default=None, help="iterations per timing run (default 50)")
    k.add_argument("--timing-rounds", type=int, default=None,
                   help="interleaved timing rounds, median per entry (default 3; quick: 2; 0: AP runs only, "
                        "e.g. one entry per machine, timed together in a later run that reuses them)")
    k.add_argument("--entries", nargs="+", default=None,
                   help="entries to train (default: every entry but the opt-in detrdistill_contrastive)")
    k.add_argument("--jobs", type=int, default=1,
                   help="training runs side by side, each on cores / jobs threads (2 on a 2-core CPU: about "
                        "1.45x the throughput); the timing phase always runs alone")
    k.add_argument("--out", default="work_dirs/bench_kd")
    return parser


def exit_code(action: Callable[[], object]) -> int:
    """Run ``action``; an anticipated failure becomes its one-line message on stderr and exit code 2.
    A process group that ``action`` opened (torchrun) is closed whatever happens."""
    try:
        action()
    except DetrDistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        close_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_code(lambda: run_command(args))


def close_process_group() -> None:
    """Under torchrun, tear the process group down before exit: a rank that returns early (only rank 0 writes
    the results) otherwise exits with gloo's threads alive and can abort ("terminate called without an
    active exception", SIGABRT), failing the whole launch.

    ``destroy_process_group`` alone is not enough: the runner's DDP wrapper sits in reference cycles and keeps
    the group alive until a later garbage collection, possibly the interpreter's own teardown, where gloo's
    destructor aborts (pytorch/pytorch#179291). Collecting first makes ``destroy`` drop the last reference,
    so the group dies here, with the interpreter intact."""
    if "torch" not in sys.modules:
        return
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def run_command(args: argparse.Namespace) -> None:
    if args.command == "generate-data":
        from compress.data.synthetic import SyntheticSpec, generate

        files = generate(args.out, seed=args.seed, num_train=args.num_train, num_val=args.num_val,
                         spec=SyntheticSpec.for_size(args.image_size))
        for split, path in files.items():
            print(f"{split}: {path}")
    elif args.command == "train-teacher":
        from compress.training import train_detector

        train_detector(args)
    elif args.command == "distill":
        from compress.training import distill

        distill(args)
    elif args.command == "export-onnx":
        from compress.export.pipeline import export_and_verify

        report = export_and_verify(args.config, args.checkpoint, args.out, top_k=args.top_k, opset=args.opset,
                                   max_batch=args.max_batch, val_images=args.val_images or None,
                                   simplify=args.simplify)
        print(f"wrote {report['onnx']}: parity max abs diff {report['parity_max_abs_diff']}, AP PyTorch "
              f"{report['ap_pytorch']['AP']} vs ONNX Runtime {report['ap_onnxruntime']['AP']} "
              f"on {report['val_images']} val images")
        if "simplify" in report:
            print(f"simplify: {report['simplify']}")
    elif args.command == "export-trt":
        from compress.export.pipeline import export_tensorrt

        for rep in export_tensorrt(args.onnx, args.config, args.out_dir, tuple(args.precision), args.opt_batch,
                                   args.max_batch, args.workspace_mb, args.val_images or None):
            print(f"{'reused' if rep['reused'] else 'built'} {rep['engine']}: AP {rep['ap_tensorrt']['AP']} vs "
                  f"ONNX Runtime {rep['ap_onnxruntime']['AP']} (delta {rep['ap_delta']}), max abs diff "
                  f"{rep['parity_max_abs_diff_vs_onnxruntime']}")
    elif args.command == "export-triton":
        from compress.export.triton import write_triton_repo

        folder = write_triton_repo(args.model, args.repo, args.name, args.max_batch, args.max_queue_delay_us,
                                   args.instances)
        print(f"wrote {folder}: run `tritonserver --model-repository {folder.parent}`")
    elif args.command == "bench":
        from compress.bench.latency import run_bench

        models = {k: v for k, v in (("teacher", args.teacher), ("student", args.student)) if v}
        for name, path in models.items():
            if not Path(path).is_file():
                raise CheckpointError(f"{name} model file not found: {path}; `make distill` writes the student, "
                                      f"`make teacher` the teacher")
        result = run_bench(args.config, models, tuple(args.batch), args.runs, args.warmup, args.threads, args.out,
                           args.export_dir)
        print(result["table"])
        print(f"wrote {args.out}.json, {args.out}.md, {args.out}.png")
    elif args.command == "bench-kd":
        from compress.bench.kd_matrix import ALL_ENTRIES, run_bench_kd

        unknown = sorted(set(args.entries or []) - set(ALL_ENTRIES))
        if unknown:
            raise ConfigError(f"unknown bench-kd entries {unknown}; choose from {', '.join(ALL_ENTRIES)}")
        if args.timing_rounds is not None and args.timing_rounds < 0:
            raise ConfigError(f"--timing-rounds must be >= 0, got {args.timing_rounds}")
        if args.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
        iters = args.iters or (300 if args.quick else 1500)
        report = run_bench_kd(args.config, args.student_config, args.out,
                              args.seeds or ([0] if args.quick else [0, 1, 2]), iters,
                              args.val_interval or iters // (2 if args.quick else 3),
                              args.timing_iters or (30 if args.quick else 50), args.entries,
                              (2 if args.quick else 3) if args.timing_rounds is None else args.timing_rounds,
                              args.jobs)
        print(report["table"])
        print(f"wrote {args.out}/bench_kd.json, .md, .png")
    elif args.command == "evaluate":
        from compress.training import evaluate_checkpoint

        evaluate_checkpoint(args.config, args.checkpoint, args.cfg_options)


def finish(status: int) -> NoReturn:
    """Exit with ``status``; a torchrun worker leaves without interpreter teardown. Even with the group
    destroyed, objects that mmengine and DDP leave behind can hold gloo state whose C++ destructors run
    during teardown and abort the rank (SIGABRT after a finished run, seen in CI), which torchrun reports as
    a failed launch. Every output file is closed by now; only the log handlers and std streams need flushing."""
    if "LOCAL_RANK" not in os.environ:
        sys.exit(status)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    finish(main())
