"""``python -m compress <command>``: parse, call one function, exit.

Every anticipated failure is a ``DetrDistillError`` whose one-line message is printed without a traceback
(exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from mmengine.config import DictAction

from compress.errors import DetrDistillError

DEFAULT_DISTILL = "configs/distill/detrdistill_dino_synthetic.py"
DEFAULT_TEACHER = "configs/detectors/dino256_r18w16_synthetic_teacher.py"


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
    return parser


def exit_code(action: Callable[[], object]) -> int:
    """Run ``action``; an anticipated failure becomes its one-line message on stderr and exit code 2."""
    try:
        action()
    except DetrDistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_code(lambda: run_command(args))


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
                                   max_batch=args.max_batch, val_images=args.val_images or None)
        print(f"wrote {report['onnx']}: parity max abs diff {report['parity_max_abs_diff']}, AP PyTorch "
              f"{report['ap_pytorch']['AP']} vs ONNX Runtime {report['ap_onnxruntime']['AP']} "
              f"on {report['val_images']} val images")
    elif args.command == "evaluate":
        from compress.training import evaluate_checkpoint

        evaluate_checkpoint(args.config, args.checkpoint, args.cfg_options)


if __name__ == "__main__":
    sys.exit(main())
